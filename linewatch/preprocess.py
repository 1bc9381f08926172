"""The model input: how a source image becomes what the network sees (`to_model_input`).

One function for every path — training (`model.data.build_cache`), `linewatch evaluate`,
`linewatch calibrate`, `linewatch infer` (`data.dataset.read_frame`), INT8 calibration
(`engines.quantize`), the bench's frame pool, and the line: every acquisition source writes its
frames into the ring through `pipeline.acquire.frames.FrameWriter`, which calls it. A model is
trained, evaluated and calibrated on the bytes the line feeds it.

    to_model_input(src, hw, *, roi=None, order="rgb", dst=None, scratch=None) -> uint8 [H, W, 3] RGB

**Source.** uint8, one of: mono [h, w] or [h, w, 1]; three channels [h, w, 3] in `order` "rgb"
or "bgr" (what `cv2.imread` returns); four channels [h, w, 4] (RGBA, or BGRA with order "bgr"),
the alpha dropped. Image files are read with `cv2.imread(path, cv2.IMREAD_COLOR)` everywhere (a
grayscale file arrives as three equal channels, EXIF orientation applied): the replay source hands
that BGR array over as it is (order "bgr"), the dataset reader converts it to RGB first; the
bytes are the same, since resizing works on each channel alone.

**Work order.** (1) crop `roi` = (x, y, w, h) in source pixels (None = the whole image; a ROI
that leaves the image is an `ImageError`); (2) resize the crop, in its own channel layout, to
`hw` by the resize rule below; (3) convert to RGB: mono is replicated into R = G = B, BGR
swapped, alpha dropped. Resizing before converting touches a third of the bytes for mono.

**The resize rule, per axis.** Each axis is filtered by what happens to it: an axis that shrinks
is box-averaged (`cv2.INTER_AREA`: every source pixel weighs by the share of the output pixel it
covers, so a thin scratch is attenuated, never skipped or aliased); an axis that grows is
interpolated linearly (`cv2.INTER_LINEAR`); an axis that keeps its size is left alone. One
`cv2.resize` cannot do that in the mixed case (one axis shrinks, the other grows, e.g. a
1000×700 (W×H) frame into 1224×512): OpenCV's INTER_AREA then falls back to a two-tap
interpolation for *both* axes (it area-averages only when no axis grows), and INTER_LINEAR
takes the two nearest source rows of the shrinking axis, weighing the rows unevenly (aliasing).
So:

* same size: a copy;
* no axis grows: one `cv2.resize(INTER_AREA)`;
* no axis shrinks: one `cv2.resize(INTER_LINEAR)`;
* mixed: `INTER_AREA` along the shrinking axis into a uint8 intermediate (the other axis kept),
  then `INTER_LINEAR` along the growing axis (on the smaller intermediate).

The aspect ratio is not preserved (pick a ROI with the model's aspect ratio). Masks are not
images: training reduces them by their own rule (`model.data.resize_mask_max`, "any pixel under
the cell") over the same geometry (the whole image onto the input size, pixel centres aligned as
`cv2.resize` aligns them).

**No per-frame allocation with `dst`.** `dst` (a ring slot) receives the result (`cv2.resize(...,
dst=)`, `cv2.cvtColor(..., dst=)`); intermediates (the resized mono / BGR / 4-channel crop, the
mixed case's first pass) come from `scratch`, a `Scratch` the caller keeps (one per thread).
Without `dst` a new array is returned; without `scratch` intermediates are allocated per call
(the offline tools).

Errors: `ImageError` (a `ValueError`) naming the value and what is allowed (shape, dtype,
channels, order, ROI, size). The acquisition turns it into a corrupt frame (DROP_CORRUPT).
Needs OpenCV and numpy only (the runtime imports this module; never torch).
"""

from __future__ import annotations

import cv2
import numpy as np

ROI = tuple[int, int, int, int]
"""(x, y, w, h) in the source image's pixels; None = the whole image."""

ORDERS = ("rgb", "bgr")
"""Channel orders of a 3- or 4-channel source."""

# (channels, order) -> the cvtColor code into RGB; absent: the source is RGB already.
_TO_RGB = {
    (1, "rgb"): cv2.COLOR_GRAY2RGB,
    (1, "bgr"): cv2.COLOR_GRAY2RGB,
    (3, "bgr"): cv2.COLOR_BGR2RGB,
    (4, "rgb"): cv2.COLOR_RGBA2RGB,
    (4, "bgr"): cv2.COLOR_BGRA2RGB,
}


class ImageError(ValueError):
    """A source image, ROI, size or destination that `to_model_input` cannot use (the message says why)."""


class Scratch:
    """Intermediate buffers of `to_model_input`, allocated once per (use, shape) and reused.

    Not thread-safe: one per thread (each acquisition source's `FrameWriter` has its own).
    """

    MAX_BUFFERS = 8
    """Frames of ever-changing size: past this many buffers, the old ones are forgotten."""

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def get(self, use: str, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised uint8 buffer of `shape` for `use` (the same array on every call)."""
        key = (use, shape)
        buf = self._bufs.get(key)
        if buf is None:
            if len(self._bufs) >= self.MAX_BUFFERS:
                self._bufs.clear()
            buf = self._bufs[key] = np.empty(shape, np.uint8)
        return buf

    def buffers(self) -> dict[tuple[str, tuple[int, ...]], np.ndarray]:
        """The buffers held now (for tests: they are reused, not reallocated)."""
        return dict(self._bufs)


def _buffer(scratch: Scratch | None, use: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape, np.uint8) if scratch is None else scratch.get(use, shape)


def check_roi(roi: ROI | None, image_h: int, image_w: int) -> None:
    """`ImageError` unless `roi` is None or lies inside an image_h x image_w image."""
    if roi is None:
        return
    x, y, w, h = roi
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > image_w or y + h > image_h:
        raise ImageError(
            f"ROI (x={x}, y={y}, w={w}, h={h}) does not fit the {image_w}x{image_h} (WxH) frame "
            f"(need x, y >= 0, w, h >= 1, x + w <= {image_w}, y + h <= {image_h})"
        )


def crop(src: np.ndarray, roi: ROI | None) -> np.ndarray:
    """A view of `src` inside `roi` (x, y, w, h); `src` itself when roi is None."""
    check_roi(roi, src.shape[0], src.shape[1])
    if roi is None:
        return src
    x, y, w, h = roi
    return src[y : y + h, x : x + w]


def resize_into(src: np.ndarray, dst: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """Resize `src` into `dst` (same channel layout, uint8) by the per-axis rule (module doc); returns `dst`."""
    sh, sw = src.shape[:2]
    dh, dw = dst.shape[:2]
    if (sh, sw) == (dh, dw):
        np.copyto(dst, src)
        return dst
    if dh <= sh and dw <= sw:
        return _resize(src, dst, cv2.INTER_AREA)
    if dh >= sh and dw >= sw:
        return _resize(src, dst, cv2.INTER_LINEAR)
    # mixed: box-average the shrinking axis first (the second pass then works on fewer pixels)
    mid_hw = (dh, sw) if dh < sh else (sh, dw)
    mid = _buffer(scratch, "shrunk", mid_hw + src.shape[2:])
    _resize(src, mid, cv2.INTER_AREA)
    return _resize(mid, dst, cv2.INTER_LINEAR)


def _resize(src: np.ndarray, dst: np.ndarray, interpolation: int) -> np.ndarray:
    out = cv2.resize(src, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=interpolation)
    if out is not dst and not np.shares_memory(out, dst):  # OpenCV could not write into dst (not contiguous)
        np.copyto(dst, out.reshape(dst.shape))
    return dst


def _source(src: np.ndarray) -> np.ndarray:
    """`src` checked, with [h, w, 1] viewed as [h, w]."""
    if not isinstance(src, np.ndarray):
        raise ImageError(f"source image is a {type(src).__name__}; need a numpy array")
    if src.dtype != np.uint8:
        raise ImageError(f"source image dtype {src.dtype}; allowed: uint8")
    if src.ndim == 3 and src.shape[2] == 1:
        src = src[..., 0]
    if not (src.ndim == 2 or (src.ndim == 3 and src.shape[2] in (3, 4))) or src.size == 0:
        raise ImageError(f"source image shape {src.shape}; allowed: [h, w], [h, w, 1], [h, w, 3], [h, w, 4] "
                         "with h, w >= 1")
    return src


def _target(hw: tuple[int, int] | None, dst: np.ndarray | None) -> tuple[int, int]:
    if dst is not None:
        if dst.dtype != np.uint8 or dst.ndim != 3 or dst.shape[2] != 3:
            raise ImageError(f"dst is {dst.dtype} {dst.shape}; need uint8 [H, W, 3]")
        if hw is not None and tuple(hw) != dst.shape[:2]:
            raise ImageError(f"dst is {dst.shape[0]}x{dst.shape[1]} (HxW) but hw = {tuple(hw)}")
        return int(dst.shape[0]), int(dst.shape[1])
    if hw is None:
        raise ImageError("to_model_input needs hw (height, width) or dst")
    if len(hw) != 2 or int(hw[0]) < 1 or int(hw[1]) < 1:
        raise ImageError(f"hw = {tuple(hw)}; need (height, width) with both >= 1")
    return int(hw[0]), int(hw[1])


def to_model_input(
    src: np.ndarray,
    hw: tuple[int, int] | None = None,
    *,
    roi: ROI | None = None,
    order: str = "rgb",
    dst: np.ndarray | None = None,
    scratch: Scratch | None = None,
) -> np.ndarray:
    """`src` as the model input: RGB uint8 [H, W, 3] at `hw` (or `dst`'s size), written into `dst`
    when given (returned), else into a new array. Crop, resize rule, colour: the module doc."""
    if order not in ORDERS:
        raise ImageError(f"order {order!r}; allowed: {', '.join(ORDERS)}")
    h, w = _target(hw, dst)
    part = crop(_source(src), roi)
    if dst is None:
        dst = np.empty((h, w, 3), np.uint8)
    channels = 1 if part.ndim == 2 else part.shape[2]
    code = _TO_RGB.get((channels, order))
    if code is None:  # RGB already: resize straight into dst
        return resize_into(part, dst, scratch)
    if part.shape[:2] != (h, w):
        small = _buffer(scratch, "resized", (h, w) if channels == 1 else (h, w, channels))
        part = resize_into(part, small, scratch)
    out = cv2.cvtColor(part, code, dst=dst)
    if out is not dst and not np.shares_memory(out, dst):  # OpenCV could not write into dst (not contiguous)
        np.copyto(dst, out)
    return dst
