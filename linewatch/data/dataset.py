"""Reading datasets on disk: the linewatch folder format and the magnetic-tile layout (SPEC §4).

Folder format (docs/architecture.md, "Dataset folder format")::

    DIR/
      labels.csv                 name,split,anomaly,adhesive[,group]   (1, 0 or blank = unknown; a head
                                 column left out = unknown for every row, e.g. a station without glue)
      images/<name>.png          RGB or grayscale (.png, .jpg, .jpeg, .bmp, .tif, .tiff)
      masks/anomaly/<name>.png   optional; 0 = background, >0 = foreground; same size as the image
      masks/adhesive/<name>.png  optional

Magnetic-tile layout (Huang et al.)::

    DIR/MT_<class>/Imgs/<name>.jpg   grayscale image
    DIR/MT_<class>/Imgs/<name>.png   anomaly mask

It reads as anomaly = 0 for ``MT_Free`` and 1 otherwise, mask from the PNG, adhesive unknown.
It has no split of its own: a deterministic, stratified one is assigned (per class, the names
ordered by their SHA-1, the first ``round(test_fraction * n)`` are ``test``, the rest ``train``).

A head's pixel supervision is *known* when its mask file exists or its label is 0 (the mask is
then all zeros). :func:`open_dataset` checks the structure (labels table, file names, which
files exist) and raises :class:`~linewatch.errors.DatasetError` on the first problem;
:meth:`Dataset.load_image` / :meth:`Dataset.load_masks` check what needs pixels (readable
image, mask size, label/mask agreement). The other layouts are read by ``linewatch.data.layouts``.

Beside this module: ``linewatch.data.check`` (every problem of a dataset at once, and what would
silently hurt training), ``linewatch.data.write`` (writing the folder format, merging datasets)
and ``linewatch.data.input_size`` (the model input size that suits the images).
"""

from __future__ import annotations

import csv
import hashlib
import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linewatch import HEADS
from linewatch.errors import DatasetError

IMAGE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File name extensions read as images (case-insensitive)."""

LABELS_FILE = "labels.csv"
REQUIRED_COLUMNS: tuple[str, ...] = ("name", "split")
"""Columns labels.csv must have, with at least one head column (``linewatch.HEADS``); a head column left
out reads as unknown for every row; ``group`` is optional; other columns are ignored (with a warning)."""
COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, *HEADS)
"""The columns `write_labels` writes (``group`` when given)."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Allowed values of the ``split`` column."""

DEFAULT_GROUP = "default"
"""Group of a folder-format sample whose labels.csv has no (or a blank) ``group`` value."""

MT_FREE = "MT_Free"
MT_TEST_FRACTION = 0.3
"""Share of each magnetic-tile class assigned to the ``test`` split."""

_LABEL_VALUES = {"1": 1, "0": 0, "": None}


# ----------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Sample:
    """One image of a dataset with, per head (``linewatch.HEADS``), its mask file and label."""

    name: str
    split: str
    group: str
    """Class for stratification: ``MT_Blowhole`` ..., ``synthetic``, or labels.csv's ``group``."""
    image_path: Path
    mask_paths: dict[str, Path | None]
    labels: dict[str, int | None]
    """Per head: 1 (present), 0 (absent) or None (unknown)."""

    def known(self) -> tuple[bool, ...]:
        """Per head: is the pixel supervision known (mask file exists, or label 0)?"""
        return tuple(self.mask_paths[h] is not None or self.labels[h] == 0 for h in HEADS)


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: the file at fault and what is wrong with it."""

    severity: str  # "error" | "warning"
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# ------------------------------------------------------------------------------------ reading


def read_image(path: Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB (grayscale replicated); DatasetError if unreadable."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(
            f"{path}: unreadable image (allowed: {', '.join(IMAGE_EXTS)} files OpenCV can decode)"
        )
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_frame(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """An image file as a model input: RGB uint8 [H, W, 3] at ``hw`` by `linewatch.preprocess.to_model_input`
    (the one rule of training and the line); DatasetError when the file is missing or unreadable."""
    from linewatch.preprocess import to_model_input

    if not path.is_file():
        raise DatasetError(f"{path}: no such image")
    return to_model_input(read_image(path), hw)


def read_mask(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask file as H x W uint8 in {0, 1} (any channel > 0 is foreground).

    Raises DatasetError when the file is unreadable or, given ``shape``, of another size.
    """
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise DatasetError(f"{path}: unreadable mask image")
    if m.ndim == 3:
        m = m.max(axis=2)
    if shape is not None and m.shape[:2] != tuple(shape):
        raise DatasetError(
            f"{path}: mask is {m.shape[1]}x{m.shape[0]} (WxH) but its image is {shape[1]}x{shape[0]}; "
            "a mask must have the size of its image"
        )
    return (m > 0).astype(np.uint8)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file, from the PNG/JPEG header when possible (else by decoding it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return int(h), int(w)
            if head[:2] == b"\xff\xd8":
                f.seek(2)
                while True:
                    marker = f.read(2)
                    if len(marker) < 2 or marker[0] != 0xFF:
                        break
                    code = marker[1]
                    if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
                        continue
                    (length,) = struct.unpack(">H", f.read(2))
                    if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
                        h, w = struct.unpack(">xHH", f.read(5))
                        return int(h), int(w)
                    f.seek(length - 2, 1)
    except (OSError, struct.error):
        pass
    return read_image(path).shape[:2]  # type: ignore[return-value]


def label_problem(label: int | None, head: str, mask: np.ndarray, path: Path) -> Problem | None:
    """A head's label against its mask: an error for label 0 with foreground, a warning for label 1 without."""
    nonempty = bool(mask.any())
    if label == 0 and nonempty:
        return Problem(
            "error",
            str(path),
            f"label {head}=0 conflicts with the mask ({int(mask.sum())} foreground pixels); "
            "a label 0 needs an empty mask (or no mask file)",
        )
    if label == 1 and not nonempty:
        return Problem("warning", str(path), f"label {head}=1 but the mask is empty")
    return None


# ------------------------------------------------------------------------------------ dataset


@dataclass
class Dataset:
    """A dataset on disk: its samples and the readers of their pixels."""

    root: Path
    kind: str
    """One of LAYOUTS."""
    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    def split(self, name: str) -> list[Sample]:
        """The samples of one split (``train``, ``val`` or ``test``), in dataset order."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r} (allowed: {', '.join(SPLITS)})")
        return [s for s in self.samples if s.split == name]

    def groups(self) -> list[str]:
        return sorted({s.group for s in self.samples})

    def load_image(self, s: Sample) -> np.ndarray:
        """H x W x 3 uint8 RGB (grayscale replicated)."""
        return read_image(s.image_path)

    def load_masks(self, s: Sample, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Masks uint8 [2, H, W] in {0, 1} (channel order ``HEADS``) and ``known`` bool [2].

        ``shape`` is the image's (H, W) when the caller has it (saves reading the header). A mask
        of another size, or a non-empty mask with label 0, raises DatasetError.
        """
        if shape is None:
            shape = image_size(s.image_path)
        h, w = int(shape[0]), int(shape[1])
        masks = np.zeros((len(HEADS), h, w), np.uint8)
        known = np.zeros(len(HEADS), bool)
        for i, head in enumerate(HEADS):
            p = s.mask_paths[head]
            if p is not None:
                masks[i] = read_mask(p, (h, w))
                problem = label_problem(s.labels[head], head, masks[i], p)
                if problem is not None and problem.severity == "error":
                    raise DatasetError(str(problem))
                known[i] = True
            elif s.labels[head] == 0:
                known[i] = True
        return masks, known

    def load(self, s: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, masks, known) of one sample."""
        img = self.load_image(s)
        masks, known = self.load_masks(s, img.shape[:2])
        return img, masks, known


LAYOUTS: tuple[str, ...] = ("folder", "magnetic-tile", "mvtec", "class-folders")
"""The layouts `open_dataset` reads (`layout=`, `--layout`); detected when not given."""


def detect_kind(path: Path, layout: str | None = None) -> str:
    """The layout of `path` (one of LAYOUTS), or `layout` checked; DatasetError when it is none of them."""
    from linewatch.data.layouts import is_class_folders, is_mvtec

    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a directory")
    if layout is not None:
        if layout not in LAYOUTS:
            raise DatasetError(f"layout {layout!r} is unknown; allowed: {', '.join(LAYOUTS)}")
        return layout
    if (path / LABELS_FILE).exists() or (path / "images").is_dir():
        return "folder"
    if any(d.is_dir() and d.name.startswith("MT_") and (d / "Imgs").is_dir() for d in path.iterdir()):
        return "magnetic-tile"
    if is_mvtec(path):
        return "mvtec"
    if is_class_folders(path):
        return "class-folders"
    raise DatasetError(
        f"{path}: not a dataset (expected {LABELS_FILE} + images/ (folder format), MT_<class>/Imgs/ "
        "(magnetic-tile), train/good/ + test/<defect>/ (MVTec AD) or good/ + bad/ (class folders))"
    )


def _index_files(folder: Path, problems: list[Problem], what: str) -> dict[str, Path]:
    """stem -> path of the image files in ``folder``; two files with one stem are an error."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTS:
            continue
        if p.stem in out:
            problems.append(
                Problem(
                    "error", str(p), f"duplicate name {p.stem!r}: {what} {out[p.stem].name} has the same name"
                )
            )
            continue
        out[p.stem] = p
    return out


def _scan_folder(root: Path, problems: list[Problem]) -> list[Sample]:
    labels_path = root / LABELS_FILE
    for entry in sorted(root.iterdir()):
        if entry.name not in (LABELS_FILE, "images", "masks") and not entry.name.startswith("."):
            problems.append(Problem("warning", str(entry), f"ignored: the folder format reads {LABELS_FILE}, "
                                    "images/ and masks/<head>/ only"))
    if (root / "masks").is_dir():
        for entry in sorted((root / "masks").iterdir()):
            if entry.is_dir() and entry.name not in HEADS:
                problems.append(Problem("warning", str(entry), f"ignored: mask folders are "
                                        f"{', '.join(f'masks/{h}/' for h in HEADS)}"))
    images = _index_files(root / "images", problems, "image")
    masks = {h: _index_files(root / "masks" / h, problems, "mask") for h in HEADS}
    if not labels_path.exists():
        problems.append(
            Problem("error", str(labels_path), f"missing (columns: {','.join(COLUMNS)})")
        )
        return []
    try:
        text = labels_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem("error", str(labels_path), f"unreadable: {exc}"))
        return []
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    for c in columns:
        if c not in (*COLUMNS, "group"):
            problems.append(Problem("warning", str(labels_path), f"column {c!r} is not one linewatch reads "
                                    f"({', '.join((*COLUMNS, 'group'))}): ignored"))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if not any(h in columns for h in HEADS):
        missing.append(" or ".join(HEADS))
    if missing:
        problems.append(
            Problem(
                "error",
                str(labels_path),
                f"missing column(s) {', '.join(missing)} (header is {','.join(columns) or '(empty)'}; "
                f"required: {','.join(REQUIRED_COLUMNS)} and at least one of {', '.join(HEADS)})",
            )
        )
        return []
    for h in HEADS:
        if h not in columns:
            problems.append(Problem("warning", str(labels_path),
                                    f"no {h} column: {h} is unknown for every image (that head is not trained "
                                    f"or measured); add the column to label it"))
    reader.fieldnames = columns
    rows = list(reader)
    flat = _index_files(root / "masks", problems, "mask")
    if flat:  # the flat layout masks/<name>.png: one head's masks
        in_use = [h for h in HEADS if h in columns and any((r.get(h) or "").strip() for r in rows)]
        if len(in_use) == 1 and not masks[in_use[0]]:
            masks[in_use[0]] = flat
        else:
            problems.append(Problem(
                "warning", str(root / "masks"),
                f"{len(flat)} mask file(s) directly in masks/ are ignored: labels.csv labels "
                f"{' and '.join(in_use) or 'no head'}, so it is not clear whose masks they are; put them in "
                f"{' or '.join(f'masks/{h}/' for h in HEADS)}"))
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows, start=2):
        where = f"{labels_path}:{lineno}"
        name = (row.get("name") or "").strip()
        split = (row.get("split") or "").strip()
        if not name:
            problems.append(Problem("error", where, "empty name"))
            continue
        if name in seen:
            problems.append(Problem("error", where, f"duplicate name {name!r} (first on line {seen[name]})"))
            continue
        seen[name] = lineno
        ok = True
        if split not in SPLITS:
            problems.append(
                Problem(
                    "error",
                    where,
                    f"split {split!r} of {name!r} is not allowed (allowed: {', '.join(SPLITS)})",
                )
            )
            ok = False
        labels: dict[str, int | None] = {}
        for h in HEADS:
            raw = (row.get(h) or "").strip()
            if raw not in _LABEL_VALUES:
                problems.append(
                    Problem(
                        "error", where, f"unknown label value {h}={raw!r} for {name!r} (allowed: 1, 0, blank)"
                    )
                )
                ok = False
            labels[h] = _LABEL_VALUES.get(raw)
        image = images.get(name)
        if image is None:
            problems.append(
                Problem(
                    "error", where, f"no image for {name!r} (expected images/{name}.<{'|'.join(IMAGE_EXTS)}>)"
                )
            )
            ok = False
        if ok and image is not None:
            group = (row.get("group") or "").strip() or DEFAULT_GROUP
            samples.append(Sample(name, split, group, image, {h: masks[h].get(name) for h in HEADS}, labels))
    for stem, p in images.items():
        if stem not in seen:
            problems.append(
                Problem("warning", str(p), f"image {stem!r} has no row in {LABELS_FILE}; ignored")
            )
    for h in HEADS:
        for stem, p in masks[h].items():
            if stem not in images:
                problems.append(Problem("error", str(p), f"mask without image (no images/{stem}.*)"))
    return samples


def name_order(names: Sequence[str]) -> list[str]:
    """`names` ordered by the SHA-1 of each: the deterministic order an assigned split is drawn in."""
    return sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())


def assign_test_split(names: Sequence[str], test_fraction: float) -> dict[str, str]:
    """The split of a layout without one, per name: the first ``round(test_fraction * n)`` names in
    `name_order` are ``test``, the rest ``train`` (callers draw per class: stratified)."""
    ordered = name_order(names)
    n_test = round(test_fraction * len(ordered))
    return {n: ("test" if i < n_test else "train") for i, n in enumerate(ordered)}


def _scan_magnetic_tile(root: Path, problems: list[Problem], test_fraction: float) -> list[Sample]:
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    for cls_dir in sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("MT_")):
        imgs = cls_dir / "Imgs"
        if not imgs.is_dir():
            problems.append(Problem("error", str(cls_dir), "class folder without Imgs/"))
            continue
        group = cls_dir.name
        jpgs: dict[str, Path] = {}
        pngs: dict[str, Path] = {}
        for p in sorted(imgs.iterdir()):
            suffix = p.suffix.lower()
            if suffix == ".png":
                pngs[p.stem] = p
            elif suffix in (".jpg", ".jpeg"):
                if p.stem in jpgs:
                    problems.append(Problem("error", str(p), f"duplicate name {p.stem!r} in {imgs}"))
                    continue
                jpgs[p.stem] = p
        for stem, p in pngs.items():
            if stem not in jpgs:
                problems.append(Problem("error", str(p), f"mask without image (no {stem}.jpg beside it)"))
        splits = assign_test_split(list(jpgs), test_fraction)
        for stem, p in jpgs.items():
            if stem in seen:
                problems.append(Problem("error", str(p), f"duplicate name {stem!r} (also {seen[stem]})"))
                continue
            seen[stem] = p
            labels: dict[str, int | None] = {"anomaly": 0 if group == MT_FREE else 1, "adhesive": None}
            mask_paths: dict[str, Path | None] = {"anomaly": pngs.get(stem), "adhesive": None}
            samples.append(Sample(stem, splits[stem], group, p, mask_paths, labels))
    if not samples and not problems:
        problems.append(Problem("error", str(root), "no images found in MT_<class>/Imgs/"))
    return samples


def scan_dataset(path: str | Path, test_fraction: float = MT_TEST_FRACTION,
                 layout: str | None = None) -> tuple[str, list[Sample], list[Problem]]:
    """(layout, samples, problems) of a dataset: what `open_dataset` and `check_dataset` read it as."""
    from linewatch.data.layouts import scan_class_folders, scan_mvtec

    root = Path(path)
    kind = detect_kind(root, layout)
    problems: list[Problem] = []
    if kind == "folder":
        samples = _scan_folder(root, problems)
    elif kind == "magnetic-tile":
        samples = _scan_magnetic_tile(root, problems, test_fraction)
    elif kind == "mvtec":
        samples = scan_mvtec(root, problems, test_fraction)
    else:
        samples = scan_class_folders(root, problems, test_fraction)
    if not samples and not any(p.severity == "error" for p in problems):
        problems.append(Problem("error", str(root), f"no images found (read as the {kind} layout)"))
    return kind, samples, problems


def open_dataset(path: str | Path, *, mt_test_fraction: float = MT_TEST_FRACTION, layout: str | None = None) -> Dataset:
    """Open a dataset, detecting its layout; DatasetError naming the file on a structural problem.

    Only the structure is checked here (cheap); pixel-level problems surface when a sample is
    loaded, or all at once with :func:`linewatch.data.check.check_dataset`.
    """
    root = Path(path)
    kind, samples, problems = scan_dataset(root, mt_test_fraction, layout)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        more = (
            f" (and {len(errors) - 1} more problem(s); run `linewatch data check {root}`)"
            if len(errors) > 1
            else ""
        )
        raise DatasetError(f"{errors[0]}{more}")
    return Dataset(root=root, kind=kind, samples=samples)
