"""Stand-ins the daemon tests share: a publisher that keeps every decision, a log that keeps every event."""

from __future__ import annotations

import threading
import time
from collections import Counter


class FakePublisher:
    def __init__(self):
        self.decisions = []
        self.images = 0
        self.started = self.stopped = False
        self.lock = threading.Lock()

    def start(self):
        self.started = True

    def stop(self, drain=True):
        self.stopped = True

    def submit(self, decision, image=None, masks=None):
        with self.lock:
            self.decisions.append(decision)
            self.images += image is not None

    def reasons(self):
        return Counter(d.reason for d in self.decisions)

    def wait_for_decision(self, pred, timeout=30.0):
        """Until a published decision satisfies `pred` (the daemon's threads run at their own pace)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if any(pred(d) for d in self.decisions):
                    return
            time.sleep(0.002)
        raise AssertionError("no such decision within the timeout")

    def wait_for_count(self, n, timeout=30.0):
        """Until at least `n` decisions are published."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.decisions) >= n:
                    return
            time.sleep(0.002)
        raise AssertionError(f"fewer than {n} decisions within the timeout")


class FakeLog:
    def __init__(self):
        self.events: list[tuple[str, str, dict]] = []
        self.seen = threading.Condition()

    def _add(self, level, event, **kw):
        with self.seen:
            self.events.append((level, event, kw))
            self.seen.notify_all()

    def info(self, event, **kw):
        self._add("info", event, **kw)

    def warning(self, event, **kw):
        self._add("warning", event, **kw)

    def error(self, event, **kw):
        self._add("error", event, **kw)

    def exception(self, event, **kw):
        self._add("error", event, **kw)

    def wait_for(self, event, timeout=30.0):
        with self.seen:
            assert self.seen.wait_for(lambda: any(e[1] == event for e in self.events), timeout), f"no {event!r} log"

    def names(self):
        return [e[1] for e in self.events]
