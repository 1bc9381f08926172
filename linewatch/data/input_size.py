"""The model input size that suits a dataset's images: their typical aspect and size against the
shipped model's pixel budget (`linewatch train` without `--input-size`, `linewatch data check`).

`suggest_input_size(aspect, budget)` is the largest H x W (multiples of 8) within `budget` pixels
whose W/H is closest to `aspect`; `input_budget(pixels)` caps the budget at the shipped model's
(512 x 1224, the CPU speed floor) and at what the images have; `aspect_distortion` says how much an
input size stretches the images (more than `ASPECT_TOLERANCE` distorts them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from linewatch.data.dataset import Sample, image_size
from linewatch.errors import DatasetError

INPUT_PIXEL_BUDGET = 512 * 1224
"""Pixels of the shipped model's input (512x1224): a chosen input size stays within them, which keeps
the CPU speed floor (docs/model.md)."""
ASPECT_TOLERANCE = 0.10
"""An input size that changes the images' aspect ratio (W/H) by more than this distorts them."""


def typical_size(samples: Sequence[Sample], limit: int = 200) -> tuple[float, int]:
    """(median W/H, median pixel count) of (up to `limit` evenly spread) images, from their headers."""
    if not samples:
        raise DatasetError("no images to measure the size of")
    step = max(1, len(samples) // limit)
    sizes = [image_size(s.image_path) for s in samples[::step]]
    return float(np.median([w / h for h, w in sizes])), int(np.median([h * w for h, w in sizes]))


def input_budget(pixels: int) -> int:
    """The pixel budget of a chosen input size: the shipped model's, and never more than the images have
    (upscaling small images costs time and adds nothing)."""
    return min(INPUT_PIXEL_BUDGET, max(64, int(pixels)))


def suggest_input_size(aspect: float, budget: int = INPUT_PIXEL_BUDGET) -> tuple[int, int]:
    """The largest (H, W), multiples of 8, with H x W <= `budget` and W/H closest to `aspect`."""
    best: tuple[float, int, tuple[int, int]] | None = None
    for h in range(8, int((budget / max(aspect, 1e-3)) ** 0.5) + 16, 8):
        w = max(8, round(h * aspect / 8) * 8)
        if h * w > budget:
            continue
        key = (-(h * w) + abs(w / h / aspect - 1) * budget, h, (h, w))
        if best is None or key[0] < best[0]:
            best = key
    assert best is not None
    return best[2]


def aspect_distortion(aspect: float, hw: tuple[int, int]) -> float:
    """How much resizing images of W/H `aspect` to `hw` stretches them (0.1 = 10 %)."""
    return abs(hw[1] / hw[0] / aspect - 1)
