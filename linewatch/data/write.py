"""Writing datasets in the folder format (`linewatch.data.dataset`): one sample at a time
(`write_sample`, `append_label_row`), or one dataset from several (`merge_datasets`,
`linewatch data merge`).

Names are checked (letters, digits and ``. _ + -``, starting with a letter or digit), splits and
labels too, before anything is written; PNG writing is deterministic.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import HEADS
from linewatch.data.dataset import COLUMNS, LABELS_FILE, SPLITS, Sample, open_dataset
from linewatch.errors import DatasetError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise DatasetError(
            f"sample name {name!r} is not allowed (letters, digits and . _ + - only, starting with a letter or digit)"
        )


def _as_per_head(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {h: None for h in HEADS}
    if isinstance(value, Mapping):
        unknown = set(value) - set(HEADS)
        if unknown:
            raise DatasetError(f"{what}: unknown head(s) {sorted(unknown)} (allowed: {', '.join(HEADS)})")
        return {h: value.get(h) for h in HEADS}
    seq = list(value)
    if len(seq) != len(HEADS):
        raise DatasetError(f"{what}: expected {len(HEADS)} values (one per head {HEADS}), got {len(seq)}")
    return dict(zip(HEADS, seq, strict=True))


def write_sample(
    root: str | Path,
    name: str,
    split: str,
    image: np.ndarray,
    masks: Mapping[str, np.ndarray | None] | Sequence[np.ndarray | None] | np.ndarray | None,
    labels: Mapping[str, int | None] | Sequence[int | None],
    *,
    group: str | None = None,
    png_compression: int = 3,
    append_label: bool = True,
) -> Path:
    """Write one sample in the folder format and append its row to labels.csv; returns the image path.

    With ``append_label=False`` only the image and mask files are written; the caller appends the
    row later with `append_label_row` (parallel writers let one process own labels.csv).

    ``image`` is H x W x 3 uint8 RGB (or H x W grayscale). ``masks`` per head (a mapping, a
    sequence or a [2, H, W] array; None = no mask file): written as PNG with 0/255. ``labels`` per
    head: 1, 0 or None (blank). ``group`` adds a ``group`` column value (the header gets the
    column when labels.csv is created by this call with a group). PNG writing is deterministic.
    """
    import cv2

    root = Path(root)
    _check_name(name)
    if split not in SPLITS:
        raise DatasetError(f"split {split!r} is not allowed (allowed: {', '.join(SPLITS)})")
    lab = _as_per_head(labels, f"labels of {name!r}")
    for h, v in lab.items():
        if v not in (0, 1, None):
            raise DatasetError(f"label {h}={v!r} of {name!r} is not allowed (allowed: 1, 0, None)")
    mk = _as_per_head(masks, f"masks of {name!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise DatasetError(
            f"image of {name!r}: expected uint8 H x W x 3 RGB or H x W, got {image.dtype} {image.shape}"
        )
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    (root / "images").mkdir(parents=True, exist_ok=True)
    img_path = root / "images" / f"{name}.png"
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(img_path), bgr, params):
        raise DatasetError(f"{img_path}: could not write the image")
    for h in HEADS:
        m = mk[h]
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {h} of {name!r}: shape {m.shape} differs from the image's {image.shape[:2]}"
            )
        (root / "masks" / h).mkdir(parents=True, exist_ok=True)
        mp = root / "masks" / h / f"{name}.png"
        if not cv2.imwrite(str(mp), np.where(m > 0, 255, 0).astype(np.uint8), params):
            raise DatasetError(f"{mp}: could not write the mask")
    if append_label:
        append_label_row(root, name, split, lab, group=group)
    return img_path


def append_label_row(
    root: str | Path,
    name: str,
    split: str,
    labels: Mapping[str, int | None] | Sequence[int | None],
    *,
    group: str | None = None,
) -> None:
    """Append one row to ``root``/labels.csv (created with its header by the first row)."""
    root = Path(root)
    lab = _as_per_head(labels, f"labels of {name!r}")
    labels_path = root / LABELS_FILE
    new = not labels_path.exists()
    if new:
        header = list(COLUMNS) + (["group"] if group is not None else [])
    else:
        with open(labels_path, newline="", encoding="utf-8") as f:
            header = [c.strip() for c in next(csv.reader(f), [])]
    row = {"name": name, "split": split, "group": group or ""}
    row.update({h: "" if lab[h] is None else str(lab[h]) for h in HEADS})
    with open(labels_path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        if new:
            writer.writerow(header)
        writer.writerow([row.get(c, "") for c in header])


def merge_datasets(
    out: str | Path,
    sources: Sequence[tuple[str | Path, Sequence[str] | None, str | None]],
    *,
    copy: bool = False,
    layout: str | None = None,
) -> Counter[tuple[str, str]]:
    """Write one folder-format dataset at ``out`` from the samples of several datasets.

    ``sources`` holds (dataset path, splits to take or None for all, split to file them under or None
    to keep theirs) — e.g. a synthetic training mix, a line's own images and a validation set of its
    own seed in one training folder (``layout`` names the sources' layout, else each is detected).
    Images and masks are symbolic links to the originals (absolute
    paths), or copies with ``copy=True``; labels and groups are carried over. A name taken twice, a
    split that is not allowed, or an ``out`` that already holds a labels.csv is refused before
    anything is written. Returns the count of samples per (split, anomaly label).
    """
    import shutil

    out = Path(out)
    if (out / LABELS_FILE).exists():
        raise DatasetError(f"{out / LABELS_FILE} already exists: merge into a new folder")
    picked: list[tuple[Sample, str]] = []
    seen: dict[str, str] = {}
    for path, splits, as_split in sources:
        for s_name in [*(splits or ()), *([as_split] if as_split else [])]:
            if s_name not in SPLITS:
                raise DatasetError(f"{path}: split {s_name!r} is not allowed (allowed: {', '.join(SPLITS)})")
        ds = open_dataset(path, layout=layout)
        for s in ds.samples:
            if splits is not None and s.split not in splits:
                continue
            _check_name(s.name)
            if s.name in seen:
                raise DatasetError(f"sample name {s.name!r} is in both {seen[s.name]} and {path}")
            seen[s.name] = str(path)
            picked.append((s, as_split or s.split))
    if not picked:
        raise DatasetError("merge: the sources give no samples (check the splits asked for)")

    def place(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(src, dst)
        else:
            dst.symlink_to(src.resolve())

    counts: Counter[tuple[str, str]] = Counter()
    for s, split in picked:
        place(s.image_path, out / "images" / f"{s.name}{s.image_path.suffix}")
        for h in HEADS:
            mp = s.mask_paths[h]
            if mp is not None:
                place(mp, out / "masks" / h / f"{s.name}{mp.suffix}")
        append_label_row(out, s.name, split, s.labels, group=s.group)
        counts[(split, "?" if s.labels[HEADS[0]] is None else str(s.labels[HEADS[0]]))] += 1
    return counts
