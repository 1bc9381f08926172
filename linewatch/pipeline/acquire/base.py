"""What every acquisition source shares: the `Source` protocol and the acquisition thread loop.

A source owns one thread. The loop (`BaseSource._run`) asks the concrete source for the next raw
frame (`_grab`), claims a ring slot, has its `FrameWriter` (`acquire.frames`) convert + crop +
resize the frame straight into the slot and commits it. A frame that gets no slot is reported as a
`DROP_FULL` record; a frame that cannot be converted (wrong size, truncated buffer, unreadable
file: `CorruptFrame`) as a `DROP_CORRUPT` record plus a structlog warning naming the reason, and
the thread keeps going. `SourceDown` from `_grab` (a lost camera) makes the state "down" and the
loop reopens the source with exponential backoff (capped), counting reconnects. `fps` > 0 paces
the grabs (`acquire.pacer.Pacer`).

States: "starting" (opening / preparing), "up" (delivering), "down" (lost, reopening), and "done"
(the thread ended: stop requested, or a finite source ran out of frames).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import structlog

from linewatch.errors import LinewatchError
from linewatch.pipeline.acquire.frames import ROI, CorruptFrame, FrameWriter
from linewatch.pipeline.acquire.pacer import Pacer
from linewatch.pipeline.ring import DROP_CORRUPT, DROP_FULL, DROP_LOST, UNKNOWN_TRUTH, Ring

log = structlog.get_logger("linewatch.acquire")

Truth = tuple[int, int]
"""Ground truth (anomaly, adhesive) a frame carries into the ring; -1 = unknown."""

STATE_STARTING = "starting"
STATE_UP = "up"
STATE_DOWN = "down"
STATE_DONE = "done"


class SourceError(LinewatchError):
    """A source cannot be set up: the message names the file / device / feature and what is allowed."""


class NoFrame(Exception):
    """`_grab` got nothing this time (e.g. a fetch timeout on a triggered camera): just try again."""


class SourceDown(Exception):
    """The device is lost (fetch failed / timed out for too long): the loop reopens it with backoff."""


@runtime_checkable
class Source(Protocol):
    """One camera (real, simulated or replayed) feeding one ring through its own thread."""

    camera: str
    """Camera id (profile name), used in logs and decisions."""
    state: str
    """"starting" | "up" | "down" | "done"."""

    @property
    def frames_seen(self) -> int:
        """Frames that arrived from the device (committed + dropped)."""
        ...

    def start(self, ring: Ring, camera_index: int, stop_event: threading.Event) -> threading.Thread:
        """Start the acquisition thread writing into `ring` as camera `camera_index`; returns it."""
        ...


# --- the acquisition thread ---------------------------------------------------------------------
@dataclass(slots=True)
class SourceCounters:
    """Per-source counters (monotonic)."""

    frames_seen: int = 0
    """Frames that arrived (committed + dropped)."""
    committed: int = 0
    dropped_full: int = 0
    dropped_corrupt: int = 0
    dropped_lost: int = 0
    """Frames the device numbered but never delivered (DROP_LOST records)."""
    errors: int = 0
    """Exceptions caught in the loop (corrupt frames and device errors)."""
    reconnects: int = 0
    """Successful reopenings after the source went down."""
    late_ticks: int = 0
    """Pacing: times the loop fell more than a frame period behind and re-synchronised."""


@dataclass(slots=True)
class Grab:
    """One raw frame from `_grab`. `image` is in `pixel_format`; `release` (if any) is called after
    the frame was written (e.g. to requeue a camera buffer)."""

    image: Any
    pixel_format: str
    t_capture_ns: int
    truth: Truth = UNKNOWN_TRUTH
    lost_before: int = 0
    """Frames the device numbered before this one but never delivered (each gets a DROP_LOST record)."""
    release: Any = None


class _RateLimitedWarning:
    """structlog warning at most once per `interval` seconds per key (e.g. the same corrupt-frame
    reason on every frame), counting the suppressed ones."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, event: str, **kw: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 1000:  # many distinct reasons: forget the old ones
            self._last.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            kw["suppressed_since_last"] = suppressed
        log.warning(event, **kw)


def _checked_roi(camera: str, roi: Sequence[int] | None) -> ROI | None:
    """`roi` as an (x, y, w, h) tuple; SourceError naming the camera when it is not one."""
    if roi is None:
        return None
    v = tuple(int(x) for x in roi)
    if len(v) != 4 or v[2] < 1 or v[3] < 1 or v[0] < 0 or v[1] < 0:
        raise SourceError(f"camera {camera!r}: roi={v} must be (x, y, w, h) with x, y >= 0 and w, h >= 1")
    return v[0], v[1], v[2], v[3]


class BaseSource:
    """The acquisition thread shared by every source (see the module doc).

    Subclasses implement `_open()` (called in the thread, idempotent, may raise SourceDown),
    `_grab() -> Grab | None` (None = end of stream; raise NoFrame when nothing came this time,
    CorruptFrame for a bad frame, SourceDown for a lost device) and `_close()` (idempotent);
    optionally `_prepare()` (synchronous checks in `start`). `fps` > 0 paces `_grab` calls on a
    monotonic schedule.
    """

    kind = "base"
    max_consecutive_errors = 50
    """Unexpected `_grab` exceptions in a row after which the source is treated as down and reopened."""

    def __init__(
        self,
        camera: str,
        *,
        roi: Sequence[int] | None = None,
        fps: float = 0.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        if fps < 0:
            raise SourceError(f"camera {camera!r}: fps={fps} must be >= 0 (0 = as fast as possible)")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise SourceError(f"camera {camera!r}: reconnect_min_s={reconnect_min_s}, reconnect_max_s={reconnect_max_s}: "
                              "need 0 < min <= max")
        self.camera = camera
        self.roi = _checked_roi(camera, roi)
        self.fps = float(fps)
        self.reconnect_min_s = float(reconnect_min_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self.state = STATE_STARTING
        self.counters = SourceCounters()
        self.writer = FrameWriter(self.roi)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """The exception that ended the thread, if one did (also logged)."""
        self._next_id = 0
        self._warn = _RateLimitedWarning()
        self._log = log.bind(camera=camera, source=self.kind)

    # Source protocol -----------------------------------------------------------------------------
    @property
    def frames_seen(self) -> int:
        return self.counters.frames_seen

    def start(self, ring: Ring, camera_index: int, stop_event: threading.Event) -> threading.Thread:
        if self.thread is not None:
            raise RuntimeError(f"source {self.camera!r} was already started")
        self._prepare()
        self.thread = threading.Thread(
            target=self._run, args=(ring, camera_index, stop_event), name=f"lw-acquire-{self.camera}", daemon=True
        )
        self.thread.start()
        return self.thread

    def status(self) -> dict[str, Any]:
        """State and counters, for heartbeats."""
        return {"camera": self.camera, "source": self.kind, "state": self.state, **asdict(self.counters)}

    # To implement --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Checks run in the caller's thread by `start` (raise SourceError for a configuration
        that can never work, so the daemon fails at once with a clear message)."""

    def _open(self) -> None:
        """Prepare the source (in the thread). May raise SourceDown to be retried with backoff."""

    def _grab(self) -> Grab | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        """Release the device / files. Must not raise."""

    # The loop ------------------------------------------------------------------------------------
    def _run(self, ring: Ring, cam: int, stop: threading.Event) -> None:
        try:
            self._loop(ring, cam, stop)
        except BaseException as exc:  # noqa: BLE001 - a thread must log what ends it
            self.error = exc
            self._log.exception("acquisition thread failed", error=str(exc))
        finally:
            self._close()
            self.state = STATE_DONE
            self._log.info("acquisition stopped", **asdict(self.counters))

    def _reopen(self, stop: threading.Event, first_error: str) -> bool:
        """Close, then open again with exponential backoff until it works or stop is set."""
        self.state = STATE_DOWN
        self._log.warning("source down", reason=first_error)
        delay = self.reconnect_min_s
        while not stop.is_set():
            self._close()
            if stop.wait(delay):
                return False
            try:
                self._open()
            except SourceDown as exc:
                self._log.warning("reopen failed", reason=str(exc), retry_in_s=min(delay * 2, self.reconnect_max_s))
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            self.counters.reconnects += 1
            self.state = STATE_UP
            self._log.info("source up again", reconnects=self.counters.reconnects)
            return True
        return False

    def _loop(self, ring: Ring, cam: int, stop: threading.Event) -> None:
        self.state = STATE_STARTING
        try:
            self._open()
        except SourceDown as exc:
            if not self._reopen(stop, str(exc)):
                return
        self.state = STATE_UP
        self._log.info("acquisition started", fps=self.fps or "max", roi=self.roi)
        pacer = Pacer(self.fps)
        c = self.counters
        consecutive = 0
        while not stop.is_set():
            if not pacer.wait(stop):
                break
            c.late_ticks = pacer.late_ticks
            try:
                grab = self._grab()
            except NoFrame:
                continue
            except CorruptFrame as exc:
                c.errors += 1
                t_ns = exc.t_capture_ns if exc.t_capture_ns is not None else time.time_ns()
                self._drop_corrupt(ring, cam, t_ns, exc.truth, str(exc), None)
                continue
            except SourceDown as exc:
                c.errors += 1
                if not self._reopen(stop, str(exc)):
                    break
                pacer.restart()
                continue
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the thread
                c.errors += 1
                consecutive += 1
                self._drop_corrupt(ring, cam, time.time_ns(), UNKNOWN_TRUTH, f"{type(exc).__name__}: {exc}", None)
                if consecutive >= self.max_consecutive_errors:
                    consecutive = 0
                    if not self._reopen(stop, f"{self.max_consecutive_errors} errors in a row, last: {exc!r}"):
                        break
                    pacer.restart()
                continue
            consecutive = 0
            if grab is None:
                self._log.info("end of stream")
                break
            self._deliver(ring, cam, grab)

    def _deliver(self, ring: Ring, cam: int, g: Grab) -> None:
        c = self.counters
        try:
            for _ in range(g.lost_before):
                fid = self._next_id
                self._next_id += 1
                c.frames_seen += 1
                c.dropped_lost += 1
                ring.drop(cam, fid, g.t_capture_ns, DROP_LOST, UNKNOWN_TRUTH)
            fid = self._next_id
            self._next_id += 1
            c.frames_seen += 1
            slot = ring.claim()
            if slot is None:
                c.dropped_full += 1
                ring.drop(cam, fid, g.t_capture_ns, DROP_FULL, g.truth)
                return
            try:
                self.writer.write(g.image, g.pixel_format, ring.images[slot])
            except Exception as exc:  # noqa: BLE001 - any failure on one frame drops that frame only
                c.errors += 1
                self._drop_corrupt(ring, cam, g.t_capture_ns, g.truth, f"{type(exc).__name__}: {exc}", slot, fid)
                return
            ring.commit(slot, cam, fid, g.t_capture_ns, g.truth)
            c.committed += 1
        finally:
            if g.release is not None:
                try:
                    g.release()
                except Exception as exc:  # noqa: BLE001
                    self._warn("release", "buffer release failed", error=str(exc))

    def _drop_corrupt(
        self, ring: Ring, cam: int, t_ns: int, truth: Truth, reason: str, slot: int | None, fid: int | None = None
    ) -> None:
        c = self.counters
        if fid is None:
            fid = self._next_id
            self._next_id += 1
            c.frames_seen += 1
        c.dropped_corrupt += 1
        ring.drop(cam, fid, t_ns, DROP_CORRUPT, truth, slot=slot)
        self._warn(reason, "corrupt frame dropped", frame_id=fid, reason=reason)
