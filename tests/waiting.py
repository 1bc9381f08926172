"""Waiting in tests: `wait_until`, the one helper for "until this holds, or fail after a timeout".

Threads, processes and sockets run at their own pace, the more so on a loaded machine: a test waits
for the state it needs, never for a time. The timeout only bounds a failure, so it is generous
(30 s by default); a passing test costs only the time the condition takes to hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(cond: Callable[[], T], timeout: float = 30.0, what: str | Callable[[], str] = "the condition",
               interval: float = 0.002) -> T:
    """Call `cond` until it returns a truthy value, and return that value.

    Fails (AssertionError naming `what`: a string, or a callable asked at the time of the failure for
    the state worth reporting) when `timeout` seconds pass first; `cond` is called once more at the
    end, so a timeout never hides a condition that holds. `interval` is the pause between two calls
    (0 for a `cond` that blocks by itself, such as a socket poll with a timeout).
    """
    end = time.monotonic() + timeout
    while True:
        late = time.monotonic() >= end
        got = cond()
        if got:
            return got
        if late:
            raise AssertionError(f"waited {timeout:g} s for {what() if callable(what) else what}")
        if interval:
            time.sleep(interval)
