"""Camera frames into ring slots: camera buffers and pixel formats onto the model input (`FrameWriter`).

`FrameWriter(roi).write(src, pixel_format, slot)` writes one camera frame into an RGB ring slot
[H, W, 3] by the one rule every path shares, `linewatch.preprocess.to_model_input` (ROI crop,
the per-axis resize rule, colour to RGB; stated in docs/architecture.md, "Model input"): crop the
ROI in the source format, resize it there (into the writer's reused scratch buffers), then one
`cv2.cvtColor` into the slot. No full-size intermediate is made for Mono8 / RGB8 / BGR8 / RGBa8 /
BGRa8; Bayer frames are demosaiced after the crop and before resizing (a mosaic cannot be
resized), so they are the one format this module converts itself. `as_image` views a flat camera
buffer as an image; `to_rgb` converts a whole frame.

A frame that cannot be converted (ROI outside the frame, wrong shape or dtype, truncated buffer,
unknown pixel format) raises `CorruptFrame` naming what is wrong; the acquisition loop turns it
into a DROP_CORRUPT record.
"""

from __future__ import annotations

import cv2
import numpy as np

from linewatch.pipeline.ring import UNKNOWN_TRUTH
from linewatch.preprocess import ROI, ImageError, Scratch, crop, to_model_input

# Pixel formats (GenICam PFNC names) the sources deliver, their channels and channel order.
PIXEL_FORMATS = ("Mono8", "RGB8", "BGR8", "RGBa8", "BGRa8", "BayerRG8")
_CHANNELS = {"Mono8": 1, "RGB8": 3, "BGR8": 3, "RGBa8": 4, "BGRa8": 4, "BayerRG8": 1}
_ORDER = {"Mono8": "rgb", "RGB8": "rgb", "BGR8": "bgr", "RGBa8": "rgb", "BGRa8": "bgr"}
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
    if pixel_format == "BayerRG8":
        if dst is None:
            dst = np.empty((*src.shape, 3), np.uint8)
        cv2.cvtColor(src, _BAYER_RG_TO_RGB[(0, 0)], dst=dst)
        return dst
    try:
        return to_model_input(src, src.shape[:2], order=_ORDER[pixel_format], dst=dst)
    except ImageError as exc:
        raise CorruptFrame(str(exc)) from None


class FrameWriter:
    """Converts + crops + resizes camera frames into ring slots by `to_model_input`, reusing its scratch.

    Order of work (cheapest first): crop in the source format, resize in the source format into a
    scratch buffer of the slot's size, then one cvtColor into the slot. Bayer frames are
    demosaiced after the crop and before resizing (a mosaic cannot be resized); an odd ROI origin
    picks the shifted Bayer pattern. Scratch buffers are allocated once per shape and reused.
    """

    def __init__(self, roi: ROI | None = None) -> None:
        self.roi = roi
        self.scratch = Scratch()

    def write(self, src: np.ndarray, pixel_format: str, dst: np.ndarray) -> None:
        """Write `src` (in `pixel_format`) into the RGB slot `dst` [H, W, 3] through the ROI."""
        check_layout(src, pixel_format)
        try:
            if pixel_format != "BayerRG8":
                to_model_input(src, roi=self.roi, order=_ORDER[pixel_format], dst=dst, scratch=self.scratch)
                return
            part = crop(src, self.roi)
            x, y = (self.roi[0], self.roi[1]) if self.roi is not None else (0, 0)
            code = _BAYER_RG_TO_RGB[(y % 2, x % 2)]
            if part.shape[:2] == dst.shape[:2]:
                cv2.cvtColor(part, code, dst=dst)
                return
            rgb = self.scratch.get("demosaiced", (part.shape[0], part.shape[1], 3))
            cv2.cvtColor(part, code, dst=rgb)
            to_model_input(rgb, dst=dst, scratch=self.scratch)
        except ImageError as exc:
            raise CorruptFrame(str(exc)) from None
