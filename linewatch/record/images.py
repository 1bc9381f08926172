"""The archived images of a decision: the frame as the model saw it, and both masks.

    images/<YYYY-MM-DD>/<camera>/<session[:8]>-<frame_id>.<png|jpg>       the model input (RGB)
    images/<YYYY-MM-DD>/<camera>/<session[:8]>-<frame_id>.anomaly.png     the anomaly mask (0..255)
    images/<YYYY-MM-DD>/<camera>/<session[:8]>-<frame_id>.adhesive.png    the adhesive mask

The date is the decision's local date. The frame's path, relative to the archive folder, is the
journal row's `image` (one row, one frame; `mask_paths` derives the masks' paths from it). Masks are
stored at the model's output size (1/8 of the input); `linewatch archive export` scales them up.

A file under its name is whole: each is written as `<name>.part` and renamed once written (`os.replace`),
the masks first and the frame last, so a frame on disk has its masks. A writer killed mid-file leaves
only a `.part` file, which the next recorder removes when it opens the folder (`remove_partial`).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from linewatch import HEADS

IMAGES_DIR = "images"
FORMATS = ("png", "jpg")
PARTIAL = ".part"
"""Suffix of a file being written (module doc)."""


def frame_path(camera: str, session: str, frame_id: int, t_decision_ns: int, fmt: str) -> str:
    """The frame's path relative to the archive folder (module doc)."""
    day = time.strftime("%Y-%m-%d", time.localtime(t_decision_ns / 1e9))
    return f"{IMAGES_DIR}/{day}/{camera}/{session[:8]}-{int(frame_id)}.{fmt}"


def mask_paths(frame: str) -> dict[str, str]:
    """Head -> mask path (relative), for the frame path a journal row names."""
    stem = frame.rsplit(".", 1)[0]
    return {head: f"{stem}.{head}.png" for head in HEADS}


def write_frame(root: Path, rel: str, image: np.ndarray, masks: np.ndarray | None, *, quality: int = 95,
                png_compression: int = 1) -> int:
    """Write the frame (RGB uint8 HxWx3) and, when given, its masks (float [2, h, w] in [0, 1]); the bytes
    written. Raises OSError when a file cannot be written (a full disk, a read-only folder)."""
    import cv2

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if rel.endswith(".jpg") else \
        [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    files = []
    if masks is not None:
        m = np.clip(masks * 255.0 + 0.5, 0, 255).astype(np.uint8)
        for i, mrel in enumerate(mask_paths(rel).values()):
            files.append((root / mrel, m[i], [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]))
    files.append((path, bgr, params))  # last: a frame on disk has its masks
    total = 0
    for p, data, prm in files:
        ok, buf = cv2.imencode(p.suffix, data, prm)
        if not ok:
            raise OSError(f"{p}: OpenCV could not encode the image")
        _write_whole(p, buf.tobytes())
        total += int(buf.size)
    return total


def _write_whole(path: Path, data: bytes) -> None:
    """`data` into `path`, through `<path>.part` renamed once written: never a cut file under its name."""
    part = path.with_name(path.name + PARTIAL)
    try:
        with open(part, "wb") as f:
            f.write(data)
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise


def remove_partial(root: Path) -> int:
    """Delete the `.part` files under `<root>/images` (left by a writer that was killed); how many."""
    removed = 0
    for dirpath, _, names in os.walk(root / IMAGES_DIR):
        for n in names:
            if n.endswith(PARTIAL):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, n))
                    removed += 1
    return removed


def remove_frame(root: Path, rel: str) -> int:
    """Delete a frame and its masks; the bytes freed (files already gone count 0)."""
    freed = 0
    for r in (rel, *mask_paths(rel).values()):
        p = root / r
        try:
            freed += p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            continue
    return freed


def folder_bytes(root: Path) -> int:
    """Bytes of every file under `<root>/images` (measured once, at start)."""
    total = 0
    for dirpath, _, names in os.walk(root / IMAGES_DIR):
        for n in names:
            try:
                total += os.stat(os.path.join(dirpath, n)).st_size
            except OSError:
                continue
    return total


def remove_empty_dirs(root: Path) -> None:
    """Remove the date and camera folders rotation emptied."""
    base = root / IMAGES_DIR
    if not base.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(base), key=lambda t: -len(t[0])):
        p = Path(dirpath)
        if p != base:
            try:
                p.rmdir()
            except OSError:
                pass
