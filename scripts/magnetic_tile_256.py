"""Make the 256x256 copy of the magnetic-tile dataset that travels to the GPU machine.

    python scripts/magnetic_tile_256.py ../shared/datasets/magnetic-tile .devdata/magnetic-tile-256

Same layout (`MT_<class>/Imgs/<name>.jpg` + `<name>.png`). Images: grayscale, resized by the model
input's rule (`linewatch.preprocess.to_model_input`: training at 256x256 on the copy sees what it
would see on the originals, up to the JPEG re-encoding), JPEG quality 95. Masks: area-resized, then
every pixel with any defect coverage (> 0) is foreground, so thin cracks survive the downscale.
Training resizes to 256x256 anyway (`--input-size 256x256`); this only makes the copy small enough to
carry (35 MB instead of 57 MB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from linewatch.preprocess import to_model_input


def main(src: str, dst: str, size: int = 256) -> int:
    root, out = Path(src), Path(dst)
    n = 0
    for f in sorted(root.glob("MT_*/Imgs/*")):
        if f.suffix not in (".jpg", ".png"):
            continue
        target = out / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        im = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise SystemExit(f"{f}: unreadable")
        if f.suffix == ".jpg":
            small = to_model_input(im, (size, size))[..., 0]  # the model input's rule; grey stays grey
            cv2.imwrite(str(target), small, [cv2.IMWRITE_JPEG_QUALITY, 95])
            n += 1
        else:
            small = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)  # coverage fraction per pixel
            cv2.imwrite(str(target), np.where(small > 0, 255, 0).astype(np.uint8))
    print(f"wrote {n} images to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
