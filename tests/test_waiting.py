"""`waiting.wait_until`, the tests' one wait: the condition's value back, a failure that names what it
waited for, and a last look at the timeout (timeouts of 0 here: nothing depends on this machine's speed)."""

from __future__ import annotations

import pytest
from waiting import wait_until


def test_wait_until_returns_the_first_truthy_value_of_the_condition() -> None:
    calls: list[int] = []

    def third_call() -> str | None:
        calls.append(1)
        return "ready" if len(calls) == 3 else None

    assert wait_until(third_call, interval=0) == "ready" and len(calls) == 3


def test_wait_until_fails_naming_what_it_waited_for_and_asks_a_callable_at_the_failure() -> None:
    with pytest.raises(AssertionError, match="waited 0 s for the ring to empty"):
        wait_until(lambda: False, 0, "the ring to empty")
    state = {"n": 1}
    with pytest.raises(AssertionError, match="waited 0 s for 5 frames, got 2"):
        wait_until(lambda: state.update(n=2), 0, lambda: f"5 frames, got {state['n']}")


def test_a_condition_that_holds_at_the_timeout_is_no_failure() -> None:
    assert wait_until(lambda: 7, timeout=0) == 7
