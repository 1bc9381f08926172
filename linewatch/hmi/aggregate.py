"""What the operator page shows, computed from a daemon's message stream (pure: no sockets, no web).

`Aggregator.feed(msg)` takes every decoded message (`linewatch.protocol.Message`, all four topics) in
the order received; `snapshot()` is the page's state as one JSON-ready dict; `overlay(camera)` the JPEG
to show for a camera. Both clocks are injected: `clock` (monotonic seconds: heartbeat freshness, rates,
the reject hold) and `wall` (epoch seconds: which hour, shift and minute "now" is); `localtime` turns
epoch seconds into local time (time.localtime; tests pass time.gmtime).

Per camera: the latest overlay, except that the last reject's overlay is held `hold_reject_s` (3 s)
against later pass overlays; its state (the heartbeat's `cameras`); decisions/s over the last
`rate_window_s`; capture -> decision latency p50/p99 over the last `latency_window` decisions; fail-safe
rejects. For the station, counted from `decision` messages since the aggregator started: inspected,
passed, rejected by reason (a reject counts once under each of its "+"-joined reasons), yield % since
start, this hour and this shift (buckets by each decision's own `t_decision_ns` in local time, shifts
as in `linewatch archive stats`: `linewatch.record.read.shift_of`), rejects per minute over the last
60 minutes (oldest first).

The banner is the fail-safe a gateway applies (docs/protocol.md §4-5), worst first:
- `waiting`: no heartbeat yet; `silent`: none for more than `heartbeat_timeout` s (default
  3 x the last heartbeat's `interval_s`, 3 s before the first): the daemon is gone or cut off;
- `stopped`: the final heartbeat of a clean stop came, and nothing since; `stopping`: a heartbeat said
  `stopping`;
- `gap`: a sequence number jumped (messages lost) in the last `gap_hold_s` s (also a lost tail, told
  by the final heartbeat's `sent`);
- `degraded`: the daemon reports `degraded`; `ok` otherwise.
`failsafe` is true for waiting, silent, stopped, stopping and gap (cells may pass uninspected).
A new `session` is a daemon restart: sequence baselines reset (not a gap), counters go on.
Thread-safe: `feed` may run in the subscriber's thread while `snapshot` runs in the server's.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linewatch.errors import SettingError
from linewatch.protocol import TOPIC_DECISION, TOPIC_HEARTBEAT, TOPIC_OVERLAY, Message
from linewatch.record.read import DEFAULT_SHIFTS, shift_of

BANNER_STATES: tuple[str, ...] = ("waiting", "silent", "stopped", "stopping", "gap", "degraded", "ok")
"""Worst first; the first five are fail-safe states."""
FAILSAFE_STATES = frozenset(BANNER_STATES[:5])
DEFAULT_INTERVAL_S = 1.0
"""The heartbeat period assumed before the first heartbeat says its own `interval_s`."""
MINUTES = 60


def parse_shifts(shifts: Sequence[str]) -> list[int]:
    """Shift starts "HH:MM" -> minutes of the day; SettingError naming `shifts` and the bad value."""
    out: list[int] = []
    for s in shifts:
        try:
            h, m = str(s).split(":")
            v = int(h) * 60 + int(m)
        except ValueError:
            v = -1
        if not 0 <= v < 24 * 60:
            raise SettingError(f"`shifts` {s!r}: must be a time of day HH:MM (00:00 .. 23:59)")
        out.append(v)
    if not out:
        raise SettingError("`shifts`: give at least one shift start (HH:MM)")
    return out


def _tally(n: int, rejected: int) -> dict[str, Any]:
    return {"inspected": n, "passed": n - rejected, "rejected": rejected,
            "yield_pct": round(100.0 * (n - rejected) / n, 3) if n else None}


RECENT_REJECTS = 50
"""Rejects a snapshot lists (`recent_rejects`, newest last): the page shows the newest and times each one
it has not seen from its decision to its display (the browser test's latency figure)."""


@dataclass(slots=True)
class _Camera:
    state: str = "unknown"
    decisions: int = 0
    rejects: int = 0
    failsafe: int = 0
    times: deque[float] = field(default_factory=deque)
    latency_ms: deque[float] = field(default_factory=deque)
    overlay: bytes | None = None
    overlay_header: dict[str, Any] | None = None
    overlay_t: float = 0.0
    held_reject_t: float | None = None
    last_frame_id: int | None = None


class Aggregator:
    """The operator page's state from a message stream; see the module docstring."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 localtime: Callable[[float], time.struct_time] = time.localtime,
                 shifts: Sequence[str] = DEFAULT_SHIFTS, heartbeat_timeout: float | None = None,
                 hold_reject_s: float = 3.0, rate_window_s: float = 5.0, latency_window: int = 1000,
                 gap_hold_s: float = 10.0) -> None:
        if heartbeat_timeout is not None and not heartbeat_timeout > 0:
            raise SettingError(f"`heartbeat_timeout` {heartbeat_timeout}: must be > 0 seconds (or None: 3 x interval_s)")
        for name, v in (("hold_reject_s", hold_reject_s), ("rate_window_s", rate_window_s), ("gap_hold_s", gap_hold_s)):
            if not v > 0:
                raise SettingError(f"`{name}` {v}: must be > 0 seconds")
        if latency_window < 1:
            raise SettingError(f"`latency_window` {latency_window}: must be >= 1 decisions")
        self.clock, self.wall, self.localtime = clock, wall, localtime
        self.shifts = [str(s) for s in shifts]
        self._starts = parse_shifts(self.shifts)
        self.heartbeat_timeout = heartbeat_timeout
        self.hold_reject_s, self.rate_window_s, self.gap_hold_s = hold_reject_s, rate_window_s, gap_hold_s
        self.latency_window = int(latency_window)
        self._lock = threading.Lock()
        self._t0 = clock()
        self._cams: dict[str, _Camera] = {}
        self._total = [0, 0]
        self._by_reason: Counter[str] = Counter()
        self._hours: dict[str, list[int]] = {}
        self._shifts_seen: dict[str, list[int]] = {}
        self._minutes: dict[int, int] = {}
        self._heartbeat: dict[str, Any] | None = None
        self._t_heartbeat: float | None = None
        self._last_decision: dict[str, Any] | None = None
        self._recent_rejects: deque[dict[str, Any]] = deque(maxlen=RECENT_REJECTS)
        self._session: str | None = None
        self._next_seq: dict[str, int] = {}
        self._gaps = 0
        self._missing: Counter[str] = Counter()
        self._t_gap: float | None = None
        self._last_gap: dict[str, Any] | None = None
        self._restarts = 0
        self.errors = 0
        self.messages = 0
        self.on_reject: Callable[[], None] | None = None
        """Called after a message that counted a reject, in the feeding thread, outside the lock (the event
        stream's push; it must not block)."""

    @property
    def rejects(self) -> int:
        """Rejects seen so far (a plain read: the event stream polls it to push a new reject at once)."""
        return self._total[1]

    # ------------------------------------------------------------------ input

    def feed(self, msg: Message) -> None:
        """Take one message (any topic), in the order received."""
        with self._lock:
            rejects = self._total[1]
            self._feed(msg)
            counted = self._total[1] != rejects
        hook = self.on_reject
        if counted and hook is not None:
            hook()

    def _feed(self, msg: Message) -> None:
        """`feed` under the lock."""
        now = self.clock()
        self.messages += 1
        self._track(msg, now)
        h = msg.header
        if msg.topic == TOPIC_HEARTBEAT:
            self._heartbeat = h
            self._t_heartbeat = now
            if h.get("final"):
                self._check_tail(h, now)
            for cam, state in dict(h.get("cameras") or {}).items():
                self._cam(str(cam)).state = str(state)
        elif msg.topic == TOPIC_DECISION:
            self._decision(h, now)
        elif msg.topic == TOPIC_OVERLAY and msg.payload:
            self._overlay(h, msg.payload, now)

    def protocol_error(self, _exc: object = None) -> None:
        """Count a message that broke the protocol (the subscriber's `on_error`)."""
        with self._lock:
            self.errors += 1

    def _cam(self, camera: str) -> _Camera:
        c = self._cams.get(camera)
        if c is None:
            c = self._cams[camera] = _Camera()
        return c

    def _track(self, msg: Message, now: float) -> None:
        """Sequence numbers as `linewatch.subscribe.Subscriber` tracks them: a jump is a gap."""
        session = str(msg.header.get("session"))
        if session != self._session:
            if self._session is not None:
                self._restarts += 1
            self._session = session
            self._next_seq.clear()
        seq = int(msg.header.get("seq", 0))
        expected = self._next_seq.get(msg.topic)
        if expected is not None and seq > expected:
            self._gap(msg.topic, expected, seq, now)
        self._next_seq[msg.topic] = seq + 1

    def _gap(self, topic: str, expected: int, received: int, now: float) -> None:
        self._gaps += 1
        self._missing[topic] += received - expected
        self._t_gap = now
        self._last_gap = {"topic": topic, "expected": expected, "received": received, "missing": received - expected}

    def _check_tail(self, header: dict[str, Any], now: float) -> None:
        for topic, total in dict(header.get("sent") or {}).items():
            expected = self._next_seq.get(topic)
            if expected is not None and int(total) > expected:
                self._gap(topic, expected, int(total), now)
                self._next_seq[topic] = int(total)

    def _decision(self, h: dict[str, Any], now: float) -> None:
        self._last_decision = h
        reject = h.get("decision") == "reject"
        if reject:
            self._recent_rejects.append({"camera": h.get("camera"), "frame_id": h.get("frame_id"),
                                         "reason": h.get("reason"), "t_decision_ns": h.get("t_decision_ns")})
        cam = self._cam(str(h.get("camera")))
        cam.decisions += 1
        cam.rejects += reject
        cam.failsafe += bool(h.get("failsafe"))
        cam.last_frame_id = int(h.get("frame_id", -1))
        cam.times.append(now)
        lat = (int(h["t_decision_ns"]) - int(h["t_capture_ns"])) / 1e6
        cam.latency_ms.append(lat)
        while len(cam.latency_ms) > self.latency_window:
            cam.latency_ms.popleft()
        self._expire(cam, now)
        self._total[0] += 1
        self._total[1] += reject
        if reject:
            for part in str(h.get("reason", "")).split("+"):
                self._by_reason[part] += 1
        t_s = int(h["t_decision_ns"]) / 1e9
        hour, shift = self._buckets(t_s)
        for key, acc in ((hour, self._hours), (shift, self._shifts_seen)):
            a = acc.setdefault(key, [0, 0])
            a[0] += 1
            a[1] += reject
            if len(acc) > 8:  # only the current (and a late decision's previous) bucket is shown
                del acc[min(acc)]
        if reject:
            minute = int(t_s // 60)
            self._minutes[minute] = self._minutes.get(minute, 0) + 1
            if len(self._minutes) > 2 * MINUTES:
                del self._minutes[min(self._minutes)]

    def _overlay(self, h: dict[str, Any], jpeg: bytes, now: float) -> None:
        cam = self._cam(str(h.get("camera")))
        reject = h.get("decision") == "reject"
        if not reject and cam.held_reject_t is not None and now - cam.held_reject_t < self.hold_reject_s:
            return  # the last reject stays on screen a moment
        cam.overlay, cam.overlay_header, cam.overlay_t = jpeg, h, now
        cam.held_reject_t = now if reject else None

    def _expire(self, cam: _Camera, now: float) -> None:
        while cam.times and cam.times[0] < now - self.rate_window_s:
            cam.times.popleft()

    def _buckets(self, t_s: float) -> tuple[str, str]:
        lt = self.localtime(t_s)
        day = time.strftime("%Y-%m-%d", lt)
        return f"{day} {lt.tm_hour:02d}:00", shift_of(day, lt.tm_hour * 60 + lt.tm_min, self._starts)

    # ------------------------------------------------------------------ output

    def overlay(self, camera: str) -> tuple[bytes, dict[str, Any]] | None:
        """The JPEG to show for `camera` and its overlay header; None before the first one."""
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None or cam.overlay is None or cam.overlay_header is None:
                return None
            return cam.overlay, cam.overlay_header

    def heartbeat(self) -> dict[str, Any] | None:
        """A copy of the latest heartbeat's header (its `pid`: the daemon's process id); None before the first."""
        with self._lock:
            return None if self._heartbeat is None else dict(self._heartbeat)

    def timeout_s(self) -> float:
        """Seconds without a heartbeat after which the daemon counts as silent."""
        if self.heartbeat_timeout is not None:
            return self.heartbeat_timeout
        interval = float((self._heartbeat or {}).get("interval_s") or DEFAULT_INTERVAL_S)
        return 3.0 * interval

    def _banner(self, now: float) -> dict[str, Any]:
        hb, timeout = self._heartbeat, self.timeout_s()
        age = None if self._t_heartbeat is None else now - self._t_heartbeat
        if hb is None:
            state = "waiting"
            text = f"no heartbeat from the daemon yet ({now - self._t0:.1f} s)"
        elif hb.get("final"):
            state, text = "stopped", f"the daemon stopped (station {hb.get('station')!r}): cells pass uninspected"
        elif age is not None and age > timeout:
            state = "silent"
            text = f"no heartbeat for {age:.1f} s (timeout {timeout:g} s): cells pass uninspected"
        elif hb.get("status") == "stopping":
            state, text = "stopping", "the daemon is stopping"
        elif self._t_gap is not None and now - self._t_gap < self.gap_hold_s and self._last_gap is not None:
            g = self._last_gap
            state = "gap"
            text = f"{g['missing']} {g['topic']} message(s) lost (seq {g['expected']} -> {g['received']})"
        elif hb.get("status") == "degraded":
            down = [c for c, s in dict(hb.get("cameras") or {}).items() if s != "up"]
            state = "degraded"
            text = "the daemon reports degraded" + (f" (camera {', '.join(down)} not up)" if down else "")
        else:
            state, text = "ok", "inspecting"
        return {"state": state, "failsafe": state in FAILSAFE_STATES, "text": text}

    def snapshot(self) -> dict[str, Any]:
        """The page's state (module docstring) as a JSON-ready dict."""
        with self._lock:
            now, wall = self.clock(), self.wall()
            hb = self._heartbeat or {}
            d = self._last_decision or {}
            hour_key, shift_key = self._buckets(wall)
            minute_now = int(wall // 60)
            per_minute = [self._minutes.get(m, 0) for m in range(minute_now - MINUTES + 1, minute_now + 1)]
            cameras: dict[str, Any] = {}
            for name in sorted(self._cams):
                c = self._cams[name]
                self._expire(c, now)
                lat = np.fromiter(c.latency_ms, np.float64, len(c.latency_ms))
                oh = c.overlay_header
                cameras[name] = {
                    "state": c.state,
                    "decisions": c.decisions, "rejects": c.rejects, "failsafe": c.failsafe,
                    "decisions_per_s": round(len(c.times) / min(self.rate_window_s, max(now - self._t0, 1e-9)), 2),
                    "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3),
                                   "p99": round(float(np.percentile(lat, 99)), 3)} if lat.size else None,
                    "last_frame_id": c.last_frame_id,
                    "overlay": None if oh is None else {
                        "frame_id": oh.get("frame_id"), "decision": oh.get("decision"), "reason": oh.get("reason"),
                        "width": oh.get("width"), "height": oh.get("height"),
                        "age_s": round(now - c.overlay_t, 3), "held": c.held_reject_t is not None},
                }
            n, rejected = self._total
            age = None if self._t_heartbeat is None else round(now - self._t_heartbeat, 3)
            hour, shift = self._hours.get(hour_key, [0, 0]), self._shifts_seen.get(shift_key, [0, 0])
            return {
                "banner": self._banner(now),
                "heartbeat_age_s": age,
                "heartbeat_timeout_s": self.timeout_s(),
                "station": hb.get("station") or d.get("station"),
                "session": self._session,
                "status": hb.get("status"),
                "version": hb.get("version"),
                "uptime_s": hb.get("uptime_s"),
                "fps": hb.get("fps"),
                "model": {"id": (hb.get("model") or {}).get("id") or d.get("model"),
                          **{k: v for k, v in dict(hb.get("model") or {}).items() if k != "id"}},
                "thresholds": d.get("thresholds"),
                "adhesive_rule": d.get("adhesive_rule"),
                "daemon_counters": dict(hb.get("counters") or {}),
                "archive": hb.get("archive"),
                "reload": hb.get("reload"),
                "decisions": n,
                "passes": n - rejected,
                "rejects": rejected,
                "failsafe": sum(c.failsafe for c in self._cams.values()),
                "by_reason": dict(sorted(self._by_reason.items())),
                "yield": {"since_start": _tally(n, rejected),
                          "hour": {"key": hour_key, **_tally(*hour)},
                          "shift": {"key": shift_key, **_tally(*shift)}},
                "shifts": list(self.shifts),
                "rejects_per_minute": per_minute,
                "recent_rejects": list(self._recent_rejects),
                "cameras": cameras,
                "gaps": {"count": self._gaps, "missing": dict(self._missing), "last": self._last_gap},
                "restarts": self._restarts,
                "protocol_errors": self.errors,
                "messages": self.messages,
                "since_s": round(now - self._t0, 3),
            }
