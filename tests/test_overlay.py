"""The overlay (`linewatch.pipeline.overlay`): mask contours of both heads drawn over the frame, in BGR."""

from __future__ import annotations

import numpy as np
import pytest

H, W = 64, 96
"""A frame's size; the masks are 1/8 of it, as the model's."""


def test_overlay_draws_contours_of_both_heads() -> None:
    from linewatch.pipeline.overlay import COLORS_BGR, draw_overlay

    img = np.full((H, W, 3), 128, np.uint8)
    masks = np.zeros((2, H // 8, W // 8), np.float32)
    masks[0, 2:5, 2:5] = 0.9  # anomaly region: pixels 16..40
    out = draw_overlay(img, masks, scores=None)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    red = np.all(out == COLORS_BGR[0], axis=2)
    green = np.all(out == COLORS_BGR[1], axis=2)
    assert red.any() and not green.any()
    ys, xs = np.nonzero(red)
    assert 10 <= ys.min() and ys.max() <= 46 and 10 <= xs.min() and xs.max() <= 46
    assert np.array_equal(out[0, 0], [128, 128, 128]), "pixels away from contours keep the image"
    masks[1, 5:7, 6:10] = 1.0
    out = draw_overlay(img, masks, thresholds=(0.95, 0.5), scores=(0.1, 0.9))
    assert np.all(out == COLORS_BGR[1], axis=2).any(), "adhesive contour drawn"
    with pytest.raises(ValueError, match="masks must be"):
        draw_overlay(img, masks[:1])


def test_overlay_is_bgr() -> None:
    from linewatch.pipeline.overlay import draw_overlay

    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    out = draw_overlay(img, np.zeros((2, H // 8, W // 8), np.float32))
    assert out[0, 0, 2] == 200 and out[0, 0, 0] == 0
