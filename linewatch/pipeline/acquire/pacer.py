"""`Pacer`: ticks at a frame rate on an absolute monotonic schedule, for the acquisition sources and
the bench's simulated camera.

`Pacer(fps).wait(stop)` sleeps until the next tick (False when `stop` was set meanwhile); `fps` 0 =
no pacing (never waits). The schedule is absolute, so no drift accumulates; more than a period
behind, it re-syncs to now instead of bursting to catch up and counts a late tick (`late_ticks`).
`restart()` starts the schedule again from now (after a reconnect).
"""

from __future__ import annotations

import threading
import time


class Pacer:
    """Ticks at `fps` on an absolute schedule (module doc); `fps` 0 = no pacing."""

    def __init__(self, fps: float) -> None:
        self.period_ns = int(1e9 / fps) if fps > 0 else 0
        self.next_ns = time.monotonic_ns()
        self.late_ticks = 0

    def restart(self) -> None:
        """Start the schedule again from now (after a reconnect)."""
        self.next_ns = time.monotonic_ns()

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next tick; False when `stop` was set while waiting."""
        if not self.period_ns:
            return True
        now = time.monotonic_ns()
        if now < self.next_ns:
            if stop.wait((self.next_ns - now) / 1e9):
                return False
        elif now - self.next_ns > self.period_ns:
            self.late_ticks += 1
            self.next_ns = now
        self.next_ns += self.period_ns
        return True
