"""Camera frames into ring slots: pixel formats to RGB, ROI crop and resize (`FrameWriter`).

`FrameWriter(roi).write(src, pixel_format, slot)` writes one camera frame into an RGB ring slot
[H, W, 3]: crop the ROI in the source format, resize it into a scratch buffer of the *slot's* size,
then one `cv2.cvtColor` into the slot. No full-size intermediate is made for Mono8 / RGB8 / BGR8 /
RGBa8 / BGRa8; Bayer frames are demosaiced before resizing (a mosaic cannot be resized). The
helpers it is built from (`fit_into`, `to_rgb`, `as_image`) serve the sources and the offline tools
that fit frames the acquisition's way (`linewatch.engines.quantize`).

A frame that cannot be converted (ROI outside the frame, wrong shape or dtype, truncated buffer,
unknown pixel format) raises `CorruptFrame` naming what is wrong; the acquisition loop turns it
into a DROP_CORRUPT record.
"""

from __future__ import annotations

import cv2
import numpy as np

from linewatch.pipeline.ring import UNKNOWN_TRUTH

ROI = tuple[int, int, int, int]
"""(x, y, w, h) in the source frame's pixels; None = the full frame."""

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


class CorruptFrame(Exception):
    """A frame that cannot be turned into an RGB slot (the message says why). Becomes DROP_CORRUPT.

    A source that knows the frame's capture time or ground truth passes them along.
    """

    def __init__(self, message: str, *, t_capture_ns: int | None = None,
                 truth: tuple[int, int] = UNKNOWN_TRUTH) -> None:
        super().__init__(message)
        self.t_capture_ns = t_capture_ns
        self.truth = truth


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
