"""The overlay encoder: the publisher's pool of overlay buffers and the thread that JPEG-encodes them.

    enc = OverlayEncoder(pool=8, shape=(H, W), jpeg_quality=85, deliver=put)  # put(EncodedOverlay) -> bool
    enc.start()
    slot = enc.copy_in(image, masks)   # any thread, never blocks: -1 = no overlay (counted in `skipped`)
    enc.submit(decision, slot)         # the thread draws and encodes it, then calls deliver(...)
    enc.release(slot)                  # ... or gives the slot back unencoded (its decision was lost)
    enc.stop(drain=True)               # encodes what was submitted, then the thread ends

`copy_in` copies the image (uint8 HxWx3 RGB) and the masks (float [2, h, w], anomaly then adhesive,
values in [0, 1]) into a free slot of a preallocated pool (`pool` slots; allocated in the constructor
when `shape=(H, W)` is given — the engine's input size, masks then [2, H/8, W/8] — else at the first
image, sized by it), so the caller may reuse its buffers as soon as the call returns. No free slot, an
image of another shape than the pool's, or an image that is not uint8 HxWx3: -1, and the overlay is
counted in `skipped`. Masks of another shape than the pool's are left out (the plain image is sent).

The thread (`linewatch-overlays`) takes (decision, slot) pairs in submit order; for each it draws the
mask contours and scores (`linewatch.pipeline.overlay.draw_overlay`; without masks the plain image, in
BGR), JPEG-encodes at `jpeg_quality`, frees the slot and hands an `EncodedOverlay` to `deliver`. An
encode that fails (logged) or a `deliver` that returns False (its queue is full) counts in `skipped`.
The encoder owns no socket: what becomes of an encoded overlay is the deliverer's business.
`stop(drain=False)` gives the submitted slots back without encoding them.

Thread-safety: `copy_in`, `submit`, `release` and `skipped` may be called from any thread, also under
the caller's own lock: the encoder holds its lock for a few list operations and never calls `deliver`
under it. OpenCV is imported at the first encode.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from linewatch import HEADS
from linewatch.pipeline.decide import Decision

log = structlog.get_logger(__name__)

_STOP = object()  # queue sentinel


@dataclass(slots=True)
class EncodedOverlay:
    """One encoded overlay: the decision it shows, the JPEG bytes and the image size in pixels."""

    decision: Decision
    jpeg: bytes
    width: int
    height: int


class OverlayEncoder:
    """The pool of overlay buffers and the encoder thread; see the module docstring.

    pool: number of slots (0 = no overlays). shape: (H, W) to allocate the pool now, None = at the
    first image. jpeg_quality: 1..100. deliver: called from the encoder thread with each overlay;
    returns False when it could not take it.
    """

    def __init__(self, pool: int, shape: tuple[int, int] | None = None, jpeg_quality: int = 85, *,
                 deliver: Callable[[EncodedOverlay], bool]) -> None:
        if pool < 0:
            raise ValueError(f"overlay_pool = {pool}: must be >= 0 (0 = no overlays)")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality = {jpeg_quality}: must be in 1..100")
        self._size = int(pool)
        self._jpeg_quality = int(jpeg_quality)
        self._deliver = deliver
        self._lock = threading.Lock()  # free slots, skipped
        self._skipped = 0
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._has_masks = [False] * self._size
        self._free: list[int] = list(range(self._size))
        if shape is not None:
            h, w = (int(v) for v in shape)
            if h < 1 or w < 1:
                raise ValueError(f"overlay_shape must be (height, width) > 0, got {shape}")
            self._allocate((h, w, 3), (len(HEADS), -(-h // 8), -(-w // 8)))
        self._todo: queue.SimpleQueue[Any] = queue.SimpleQueue()  # (decision, slot); <= pool size
        self._thread: threading.Thread | None = None
        self._discard = False

    @property
    def skipped(self) -> int:
        """Overlays wanted but not produced: no slot, wrong image, failed encode, refused delivery."""
        with self._lock:
            return self._skipped

    # ------------------------------------------------------------------ caller side

    def copy_in(self, image: np.ndarray, masks: np.ndarray | None) -> int:
        """Copy an image (and its masks) into a free slot; the slot, or -1 (counted in `skipped`)."""
        image = np.asarray(image)
        with self._lock:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or self._size == 0:
                self._skipped += 1
                return -1
            if self._images is None:
                self._allocate(image.shape, None if masks is None else np.shape(masks))
            pool = self._images
            assert pool is not None
            if image.shape != pool.shape[1:] or not self._free:
                self._skipped += 1
                return -1
            slot = self._free.pop()
            if masks is not None and self._masks is None:
                self._allocate(None, np.shape(masks))
        np.copyto(pool[slot], image)  # the slot is this caller's until submit/release: no lock needed
        has_masks = False
        if masks is not None:
            assert self._masks is not None
            if np.shape(masks) == self._masks.shape[1:]:
                np.copyto(self._masks[slot], masks, casting="unsafe")
                has_masks = True
        self._has_masks[slot] = has_masks
        return slot

    def submit(self, decision: Decision, slot: int) -> None:
        """Queue a filled slot for the encoder thread (never blocks)."""
        self._todo.put((decision, slot))

    def release(self, slot: int) -> None:
        """Give a slot back unencoded."""
        with self._lock:
            self._free.append(slot)

    def start(self) -> OverlayEncoder:
        """Start the encoder thread."""
        self._thread = threading.Thread(target=self._run, name="linewatch-overlays", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain: bool = True, timeout: float = 5.0) -> None:
        """End the thread: drain=True encodes (and delivers) what was submitted first. Waits up to timeout."""
        if self._thread is None:
            return
        if not drain:
            self._discard = True
        self._todo.put(_STOP)
        self._thread.join(max(timeout, 0.0))
        self._thread = None

    # ------------------------------------------------------------------ encoder thread

    def _run(self) -> None:
        while True:
            entry = self._todo.get()
            if entry is _STOP:
                return
            d, slot = entry
            if self._discard:  # stop(drain=False): give the slot back, encode nothing
                self.release(slot)
                continue
            item = self.encode(d, slot)
            if item is not None and not self._deliver(item):
                with self._lock:
                    self._skipped += 1

    def encode(self, d: Decision, slot: int) -> EncodedOverlay | None:
        """Draw + JPEG-encode one filled slot and free it (what the thread does per submitted slot).

        None when encoding failed (logged, counted in `skipped`)."""
        import cv2

        from linewatch.pipeline.overlay import draw_overlay

        try:
            assert self._images is not None
            image = self._images[slot]
            masks = self._masks[slot] if self._masks is not None and self._has_masks[slot] else None
            if masks is None:
                drawn = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            else:  # BGR, mask contours at pixel value 0.5, scores written in the corner
                drawn = draw_overlay(image, masks, scores=d.scores)
            ok, jpeg = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality])
            if not ok:
                raise RuntimeError("cv2.imencode returned False")
        except Exception as exc:
            log.warning("overlay skipped", frame_id=d.frame_id, camera=d.camera, error=str(exc))
            with self._lock:
                self._skipped += 1
            return None
        finally:
            self.release(slot)
        height, width = drawn.shape[:2]
        return EncodedOverlay(d, jpeg.tobytes(), int(width), int(height))

    def _allocate(self, image_shape: tuple[int, ...] | None, mask_shape: tuple[int, ...] | None) -> None:
        # zero-filled, not np.empty: touching the pages now keeps page faults out of copy_in()
        if image_shape is not None:
            self._images = np.zeros((self._size, *image_shape), np.uint8)
            self._images.fill(0)
        if mask_shape is not None:
            self._masks = np.zeros((self._size, *mask_shape), np.float32)
            self._masks.fill(0)
