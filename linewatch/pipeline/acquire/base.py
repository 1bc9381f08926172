"""What every acquisition source shares: the `Source` protocol, ROI crop + resize into a ring slot,
pixel-format conversion to RGB, and the acquisition thread loop.

A source owns one thread. The loop (`BaseSource._run`) asks the concrete source for the next raw
frame (`_grab`), claims a ring slot, converts + crops + resizes the frame straight into the slot
(`FrameWriter.write`, no full-size intermediate for RGB8/Mono8/BGR8/RGBa8 beyond a scratch buffer
of the *output* size) and commits it. A frame that gets no slot is reported as a `DROP_FULL`
record; a frame that cannot be converted (wrong size, truncated buffer, unreadable file) as a
`DROP_CORRUPT` record plus a structlog warning naming the reason, and the thread keeps going.
`SourceDown` from `_grab` (a lost camera) makes the state "down" and the loop reopens the source
with exponential backoff (capped), counting reconnects.

States: "starting" (opening / preparing), "up" (delivering), "down" (lost, reopening), and "done"
(the thread ended: stop requested, or a finite source ran out of frames).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import structlog

from linewatch.errors import LinewatchError
from linewatch.pipeline.ring import DROP_CORRUPT, DROP_FULL, DROP_LOST, Ring

log = structlog.get_logger("linewatch.acquire")

ROI = tuple[int, int, int, int]
"""(x, y, w, h) in the source frame's pixels; None = the full frame."""

Truth = tuple[int, int]
UNKNOWN: Truth = (-1, -1)

STATE_STARTING = "starting"
STATE_UP = "up"
STATE_DOWN = "down"
STATE_DONE = "done"

# Pixel formats (GenICam PFNC names) the sources deliver and how they become RGB.
PIXEL_FORMATS = ("Mono8", "RGB8", "BGR8", "RGBa8", "BGRa8", "BayerRG8")
_CHANNELS = {"Mono8": 1, "RGB8": 3, "BGR8": 3, "RGBa8": 4, "BGRa8": 4, "BayerRG8": 1}
_TO_RGB = {
    "Mono8": cv2.COLOR_GRAY2RGB,
    "BGR8": cv2.COLOR_BGR2RGB,
    "RGBa8": cv2.COLOR_RGBA2RGB,
    "BGRa8": cv2.COLOR_BGRA2RGB,
}
# OpenCV's classic Bayer codes are named after the second row's 2nd/3rd pixels: a sensor whose
# top-left 2x2 is R G / G B (GenICam BayerRG8) is OpenCV's "BayerBG". A ROI at an odd x / y shifts
# the pattern: index by (y % 2, x % 2).
_BAYER_RG_TO_RGB = {
    (0, 0): cv2.COLOR_BayerBG2RGB,  # RGGB
    (0, 1): cv2.COLOR_BayerGB2RGB,  # GRBG
    (1, 0): cv2.COLOR_BayerGR2RGB,  # GBRG
    (1, 1): cv2.COLOR_BayerRG2RGB,  # BGGR
}


class SourceError(LinewatchError):
    """A source cannot be set up: the message names the file / device / feature and what is allowed."""


class CorruptFrame(Exception):
    """A frame that cannot be turned into an RGB slot (the message says why). Becomes DROP_CORRUPT.

    A source that knows the frame's capture time or ground truth passes them along.
    """

    def __init__(self, message: str, *, t_capture_ns: int | None = None, truth: Truth = (-1, -1)) -> None:
        super().__init__(message)
        self.t_capture_ns = t_capture_ns
        self.truth = truth


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
    frames_seen: int
    """Frames that arrived from the device (committed + dropped)."""

    def start(self, ring: Ring, camera_index: int, stop_event: threading.Event) -> threading.Thread:
        """Start the acquisition thread writing into `ring` as camera `camera_index`; returns it."""
        ...


# --- geometry and pixel formats -----------------------------------------------------------------
def check_roi(roi: ROI | None, frame_h: int, frame_w: int) -> None:
    """Raise CorruptFrame when `roi` does not lie inside a frame_h x frame_w frame."""
    if roi is None:
        return
    x, y, w, h = roi
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > frame_w or y + h > frame_h:
        raise CorruptFrame(
            f"ROI (x={x}, y={y}, w={w}, h={h}) does not fit the {frame_w}x{frame_h} (WxH) frame"
        )


def crop(src: np.ndarray, roi: ROI | None) -> np.ndarray:
    """A view of `src` inside `roi` (x, y, w, h); the whole array when roi is None."""
    check_roi(roi, src.shape[0], src.shape[1])
    if roi is None:
        return src
    x, y, w, h = roi
    return src[y : y + h, x : x + w]


def interpolation_for(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """INTER_AREA when shrinking (both axes), INTER_LINEAR when any axis grows."""
    if dst_hw[0] <= src_hw[0] and dst_hw[1] <= src_hw[1]:
        return cv2.INTER_AREA
    return cv2.INTER_LINEAR


def fit_into(src: np.ndarray, roi: ROI | None, dst: np.ndarray) -> np.ndarray:
    """Crop `roi` (x, y, w, h; None = full frame) out of `src` and resize it into `dst` in place.

    `src` and `dst` have the same channel layout (both [H, W, C] with the same C, or both 2-D).
    INTER_AREA for downscaling, INTER_LINEAR for upscaling; a same-size crop is a plain copy.
    Writes straight into `dst` (a ring slot view): no intermediate allocation. Returns `dst`.
    """
    part = crop(src, roi)
    if part.ndim != dst.ndim or (dst.ndim == 3 and part.shape[2] != dst.shape[2]):
        raise CorruptFrame(f"frame of shape {src.shape} does not match the destination layout {dst.shape}")
    if part.dtype != dst.dtype:
        raise CorruptFrame(f"frame dtype {src.dtype}, expected {dst.dtype}")
    dst_hw = (dst.shape[0], dst.shape[1])
    if part.shape[:2] == dst_hw:
        np.copyto(dst, part)
        return dst
    out = cv2.resize(part, (dst_hw[1], dst_hw[0]), dst=dst, interpolation=interpolation_for(part.shape[:2], dst_hw))
    if out is not dst and not np.shares_memory(out, dst):  # pragma: no cover - OpenCV refused dst
        np.copyto(dst, out)
    return dst


def as_image(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """View a flat camera buffer as [height, width] or [height, width, C] for `pixel_format`.

    Raises CorruptFrame when the buffer is too short (truncated frame) or the format unknown.
    """
    c = channels_of(pixel_format)
    need = width * height * c
    flat = data.reshape(-1)
    if flat.dtype != np.uint8:
        raise CorruptFrame(f"{pixel_format} buffer has dtype {flat.dtype}, expected uint8")
    if width < 1 or height < 1 or flat.size < need:
        raise CorruptFrame(
            f"{pixel_format} buffer of {flat.size} bytes is too short for {width}x{height} (needs {need})"
        )
    flat = flat[:need]
    return flat.reshape(height, width) if c == 1 else flat.reshape(height, width, c)


def channels_of(pixel_format: str) -> int:
    try:
        return _CHANNELS[pixel_format]
    except KeyError:
        raise CorruptFrame(
            f"unsupported pixel format {pixel_format!r}; supported: {', '.join(PIXEL_FORMATS)}"
        ) from None


def check_layout(src: np.ndarray, pixel_format: str) -> None:
    """Raise CorruptFrame when `src`'s shape/dtype does not match `pixel_format`."""
    c = channels_of(pixel_format)
    ok = src.dtype == np.uint8 and src.size > 0 and (
        src.ndim == 2 if c == 1 else (src.ndim == 3 and src.shape[2] == c)
    )
    if not ok:
        raise CorruptFrame(f"{pixel_format} frame with shape {src.shape} and dtype {src.dtype}")


def to_rgb(src: np.ndarray, pixel_format: str, dst: np.ndarray | None = None) -> np.ndarray:
    """Convert a whole frame to RGB uint8 [H, W, 3] (into `dst` when given, via cv2 dst=)."""
    check_layout(src, pixel_format)
    h, w = src.shape[:2]
    if dst is None:
        dst = np.empty((h, w, 3), dtype=np.uint8)
    elif dst.shape != (h, w, 3) or dst.dtype != np.uint8:
        raise ValueError(f"to_rgb dst is {dst.dtype} {dst.shape}, need uint8 {(h, w, 3)}")
    if pixel_format == "RGB8":
        np.copyto(dst, src)
    elif pixel_format == "BayerRG8":
        cv2.cvtColor(src, _BAYER_RG_TO_RGB[(0, 0)], dst=dst)
    else:
        cv2.cvtColor(src, _TO_RGB[pixel_format], dst=dst)
    return dst


def mono8_to_rgb(src: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    return to_rgb(src, "Mono8", dst)


def bgr8_to_rgb(src: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    return to_rgb(src, "BGR8", dst)


def rgba8_to_rgb(src: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    return to_rgb(src, "RGBa8", dst)


def bayer_rg8_to_rgb(src: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    return to_rgb(src, "BayerRG8", dst)


class FrameWriter:
    """Converts + crops + resizes camera frames into ring slots, reusing its scratch buffers.

    Order of work (cheapest first): crop in the source format, resize in the source format into a
    scratch buffer of the slot's size, then one cvtColor into the slot. Bayer frames are
    demosaiced before resizing (a mosaic cannot be resized); an odd ROI origin picks the shifted
    Bayer pattern. Scratch buffers are allocated once per (shape) and reused.
    """

    def __init__(self, roi: ROI | None = None) -> None:
        self.roi = roi
        self._scratch: dict[tuple[int, ...], np.ndarray] = {}

    def _buf(self, shape: tuple[int, ...]) -> np.ndarray:
        buf = self._scratch.get(shape)
        if buf is None:
            if len(self._scratch) > 8:  # frames of ever-changing size: do not hoard buffers
                self._scratch.clear()
            buf = self._scratch[shape] = np.empty(shape, dtype=np.uint8)
        return buf

    def write(self, src: np.ndarray, pixel_format: str, dst: np.ndarray) -> None:
        """Write `src` (in `pixel_format`) into the RGB slot `dst` [H, W, 3] through the ROI."""
        check_layout(src, pixel_format)
        part = crop(src, self.roi)
        dst_hw = (dst.shape[0], dst.shape[1])
        same = part.shape[:2] == dst_hw
        if pixel_format == "RGB8":
            fit_into(part, None, dst)
        elif pixel_format == "BayerRG8":
            x, y = (self.roi[0], self.roi[1]) if self.roi is not None else (0, 0)
            code = _BAYER_RG_TO_RGB[(y % 2, x % 2)]
            if same:
                cv2.cvtColor(part, code, dst=dst)
            else:
                rgb = self._buf((part.shape[0], part.shape[1], 3))
                cv2.cvtColor(part, code, dst=rgb)
                fit_into(rgb, None, dst)
        else:
            code = _TO_RGB[pixel_format]
            if same:
                cv2.cvtColor(part, code, dst=dst)
            else:
                c = _CHANNELS[pixel_format]
                small = self._buf(dst_hw if c == 1 else (*dst_hw, c))
                fit_into(part, None, small)
                cv2.cvtColor(small, code, dst=dst)


class Pacer:
    """Ticks at `fps` on an absolute schedule (no drift accumulates); `fps` 0 = no pacing.

    More than a period behind, it re-syncs to now instead of bursting to catch up, and counts a
    late tick. Shared by the acquisition sources and the bench's simulated camera.
    """

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

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class Grab:
    """One raw frame from `_grab`. `image` is in `pixel_format`; `release` (if any) is called after
    the frame was written (e.g. to requeue a camera buffer)."""

    image: Any
    pixel_format: str
    t_capture_ns: int
    truth: Truth = UNKNOWN
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
        roi: ROI | None = None,
        fps: float = 0.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        if fps < 0:
            raise SourceError(f"camera {camera!r}: fps={fps} must be >= 0 (0 = as fast as possible)")
        if roi is not None:
            roi = tuple(int(v) for v in roi)  # type: ignore[assignment]
            if len(roi) != 4 or roi[2] < 1 or roi[3] < 1 or roi[0] < 0 or roi[1] < 0:
                raise SourceError(f"camera {camera!r}: roi={roi} must be (x, y, w, h) with x, y >= 0 and w, h >= 1")
        self.camera = camera
        self.roi = roi
        self.fps = float(fps)
        self.reconnect_min_s = float(reconnect_min_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self.state = STATE_STARTING
        self.counters = SourceCounters()
        self.writer = FrameWriter(roi)
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
        return {"camera": self.camera, "source": self.kind, "state": self.state, **self.counters.as_dict()}

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
            self._log.info("acquisition stopped", **self.counters.as_dict())

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
                self._drop_corrupt(ring, cam, time.time_ns(), UNKNOWN, f"{type(exc).__name__}: {exc}", None)
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
                ring.drop(cam, fid, g.t_capture_ns, DROP_LOST, UNKNOWN)
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
