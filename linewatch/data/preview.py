"""Contact sheets: images downscaled in a grid, masks outlined, a caption per tile.

`contact_sheet` draws one from arrays, `write_png` writes it, `write_preview` does both for the first
samples of a dataset folder (what `linewatch synth --preview` and `linewatch demo --out` write).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from linewatch import HEADS

ANOMALY_COLOUR = (255, 40, 40)  # RGB red
ADHESIVE_COLOUR = (40, 230, 40)  # RGB green


def _outline(
    tile: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int, margin: int
) -> None:
    """Outline ``mask`` (full resolution) on ``tile``, ``margin`` tile pixels outside it (keeps it visible)."""
    import cv2

    h, w = tile.shape[:2]
    m = cv2.resize((mask > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    if not m.any():
        # a region smaller than a tile pixel vanishes with nearest-neighbour: use max-pooling instead
        small = cv2.resize((mask > 0).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        m = (small > 0).astype(np.uint8)
    if not m.any():
        return
    if margin > 0:
        m = cv2.dilate(m, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tile, contours, -1, colour, thickness, cv2.LINE_AA)


def contact_sheet(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    cols: int = 3,
    tile_width: int = 408,
    captions: Sequence[str] | None = None,
    gap: int = 4,
    outline_thickness: int = 1,
) -> np.ndarray:
    """A grid of the images (RGB uint8, H x W x 3 or H x W) downscaled to ``tile_width``.

    ``masks[i]`` is a [2, H, W] array (anomaly, adhesive) or None; the anomaly mask is outlined
    in red (3 tile pixels outside it, so the anomaly itself stays visible), the adhesive mask in
    green (1 pixel outside). ``captions[i]`` is drawn in a band under tile ``i``.
    Returns the sheet as H x W x 3 uint8 RGB.
    """
    import cv2

    if not images:
        raise ValueError("contact_sheet needs at least one image")
    cols = max(1, min(cols, len(images)))
    rows = (len(images) + cols - 1) // cols
    h0, w0 = images[0].shape[:2]
    tile_h = max(1, round(h0 * tile_width / w0))
    cap_h = 18 if captions is not None else 0
    sheet = np.full((rows * (tile_h + cap_h + gap) + gap, cols * (tile_width + gap) + gap, 3), 24, np.uint8)
    for i, img in enumerate(images):
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        tile = np.ascontiguousarray(cv2.resize(img, (tile_width, tile_h), interpolation=cv2.INTER_AREA))
        m = masks[i] if masks is not None else None
        if m is not None:
            _outline(tile, m[1], ADHESIVE_COLOUR, outline_thickness, 1)
            _outline(tile, m[0], ANOMALY_COLOUR, outline_thickness, 3)
        r, c = divmod(i, cols)
        y = gap + r * (tile_h + cap_h + gap)
        x = gap + c * (tile_width + gap)
        sheet[y : y + tile_h, x : x + tile_width] = tile
        if captions is not None:
            cv2.putText(
                sheet,
                str(captions[i]),
                (x + 3, y + tile_h + cap_h - 5),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.42,
                (230, 230, 230),
                1,
                cv2.LINE_AA,
            )
    return sheet


def write_png(path: str, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (deterministic bytes)."""
    import cv2

    from linewatch.errors import SettingError

    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SettingError(f"{path}: could not write the PNG (does its folder exist, is the suffix .png?)")


def write_preview(dataset_dir: str | Path, png: str | Path, count: int = 12, cols: int = 3) -> None:
    """Contact sheet of the first ``count`` samples of a folder dataset, masks outlined, written to ``png``."""
    from linewatch.data.dataset import open_dataset

    ds = open_dataset(dataset_dir)
    images, masks, captions = [], [], []
    for s in ds.samples[:count]:
        img, m, _known = ds.load(s)
        images.append(img)
        masks.append(m)
        lab = "/".join("?" if s.labels[h] is None else str(s.labels[h]) for h in HEADS)
        captions.append(f"{s.name}  {'/'.join(HEADS)}={lab}")
    write_png(str(png), contact_sheet(images, masks, cols=cols, captions=captions))
