"""Mask-contour overlays: what `linewatch infer --out` writes and the daemon publishes (topic `overlay`).

`draw_overlay(image_rgb, masks)` upsamples each head's mask (1/8 of the frame) to the frame,
thresholds it, and draws the outlines of the regions over the frame: anomaly in red, adhesive in
green, with the scores written in the top-left corner when given.

The result is **BGR** uint8, ready for `cv2.imencode(".jpg", ...)` / `cv2.imwrite`: both users encode
with OpenCV, so the conversion is done once here. Needs OpenCV only (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from linewatch import HEADS

COLORS_BGR: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 0, 255), (0, 200, 0))
"""Outline colour per head, in `linewatch.HEADS` order: anomaly red, adhesive green."""


def draw_overlay(
    image_rgb: np.ndarray,
    masks: np.ndarray,
    thresholds: Sequence[float] = (0.5, 0.5),
    scores: Sequence[float] | None = None,
    thickness: int = 2,
) -> np.ndarray:
    """Frame with the mask contours of both heads (and the scores) drawn on it.

    image_rgb: uint8 [H, W, 3] RGB (or [H, W] grayscale). masks: float [2, h, w], any size (normally
    [H/8, W/8]), values in [0, 1]. thresholds: per head, the mask value a pixel must reach to be inside
    a region. scores: optional per-head scores written as text. Returns a new BGR uint8 [H, W, 3] array.
    """
    img = np.asarray(image_rgb)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image must be uint8 [H, W, 3] RGB or [H, W] grayscale, got {img.dtype} {img.shape}")
    m = np.asarray(masks, dtype=np.float32)
    if m.ndim != 3 or m.shape[0] != len(HEADS):
        raise ValueError(f"masks must be [{len(HEADS)}, h, w], got {list(m.shape)}")
    if len(thresholds) != len(HEADS):
        raise ValueError(f"thresholds must have {len(HEADS)} values (one per head), got {list(thresholds)}")
    out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if img.ndim == 2 else cv2.COLOR_RGB2BGR)
    h, w = out.shape[:2]
    for head in range(len(HEADS)):
        up = cv2.resize(m[head], (w, h), interpolation=cv2.INTER_LINEAR)
        region = (up >= float(thresholds[head])).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, COLORS_BGR[head], thickness, lineType=cv2.LINE_AA)
    if scores is not None:
        scale = max(0.4, min(h, w) / 600.0)
        y = int(24 * scale) + 4
        for head, name in enumerate(HEADS):
            text = f"{name} {float(scores[head]):.3f}"
            org = (8, y)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, COLORS_BGR[head], 1, cv2.LINE_AA)
            y += int(28 * scale) + 4
    return out
