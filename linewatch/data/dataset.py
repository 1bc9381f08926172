"""Datasets on disk: the linewatch folder format and the magnetic-tile layout (SPEC §4).

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
image, mask size, label/mask agreement). :func:`check_dataset` does all of it for every sample
and reports every problem at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
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


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found: problems and counts per class, split and label."""

    root: str
    kind: str
    n_images: int = 0
    problems: list[Problem] = field(default_factory=list)
    per_group: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_split: dict[str, int] = field(default_factory=dict)
    per_head: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per head: counts of labels ``1``, ``0``, ``unknown``, mask files ``masks`` and ``empty_masks``."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings are allowed)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "kind": self.kind,
            "ok": self.ok,
            "n_images": self.n_images,
            "per_head": self.per_head,
            "per_split": self.per_split,
            "per_group": self.per_group,
            "errors": [{"path": p.path, "message": p.message} for p in self.errors],
            "warnings": [{"path": p.path, "message": p.message} for p in self.warnings],
        }

    def format(self, max_problems: int = 50) -> str:
        """Human-readable report (at most ``max_problems`` lines per severity)."""
        out = io.StringIO()
        w = out.write
        w(f"dataset {self.root} ({self.kind}): {self.n_images} images\n")
        a = self.per_head.get("anomaly", {})
        h = self.per_head.get("adhesive", {})
        if a:
            w(
                f"  anomaly : {a['1']} defective, {a['0']} defect-free, {a['unknown']} unknown; "
                f"{a['masks']} mask files ({a['empty_masks']} empty)\n"
            )
        if h:
            w(
                f"  adhesive: {h['1']} present, {h['0']} absent, {h['unknown']} unknown; "
                f"{h['masks']} mask files ({h['empty_masks']} empty)\n"
            )
        if self.per_split:
            w("  splits  : " + ", ".join(f"{k} {v}" for k, v in sorted(self.per_split.items())) + "\n")
        if self.per_group:
            width = max(12, *(len(g) for g in self.per_group))
            w(f"  {'class':<{width}}  images  anomaly 1/0/?   adhesive 1/0/?\n")
            for g, c in sorted(self.per_group.items()):
                an = "{}/{}/{}".format(*c["anomaly"])
                ad = "{}/{}/{}".format(*c["adhesive"])
                w(f"  {g:<{width}}  {c['images']:>6}  {an:<15} {ad}\n")
        for label, items in (("warnings", self.warnings), ("errors", self.errors)):
            w(f"{label} ({len(items)})" + (":\n" if items else "\n"))
            for p in items[:max_problems]:
                w(f"  {p}\n")
            if len(items) > max_problems:
                w(f"  ... and {len(items) - max_problems} more\n")
        w("OK\n" if self.ok else f"FAILED: {len(self.errors)} error(s)\n")
        return out.getvalue()


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
    """An image file as a model input: RGB uint8 [H, W, 3] resized to ``hw`` (INTER_AREA when an axis
    shrinks, else INTER_LINEAR); DatasetError when the file is missing or unreadable."""
    import cv2

    if not path.is_file():
        raise DatasetError(f"{path}: no such image")
    rgb = read_image(path)
    h, w = hw
    if rgb.shape[:2] != (h, w):
        shrink = rgb.shape[0] > h or rgb.shape[1] > w
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb)


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


def _label_problem(label: int | None, head: str, mask: np.ndarray, path: Path) -> Problem | None:
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
                problem = _label_problem(s.labels[head], head, masks[i], p)
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


def _mt_split(names: Sequence[str], test_fraction: float) -> dict[str, str]:
    ordered = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
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
        splits = _mt_split(list(jpgs), test_fraction)
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


def _scan(path: Path, test_fraction: float, layout: str | None = None) -> tuple[str, list[Sample], list[Problem]]:
    from linewatch.data.layouts import scan_class_folders, scan_mvtec

    root = Path(path)
    kind = detect_kind(root, layout)
    problems: list[Problem] = []
    if kind == "folder":
        samples = _scan_folder(root, problems)
    elif kind == "magnetic-tile":
        samples = _scan_magnetic_tile(root, problems, test_fraction)
    elif kind == "mvtec":
        samples = scan_mvtec(root, problems, _mt_split, test_fraction)
    else:
        samples = scan_class_folders(root, problems, _mt_split, test_fraction)
    if not samples and not any(p.severity == "error" for p in problems):
        problems.append(Problem("error", str(root), f"no images found (read as the {kind} layout)"))
    return kind, samples, problems


def open_dataset(path: str | Path, *, mt_test_fraction: float = MT_TEST_FRACTION, layout: str | None = None) -> Dataset:
    """Open a dataset, detecting its layout; DatasetError naming the file on a structural problem.

    Only the structure is checked here (cheap); pixel-level problems surface when a sample is
    loaded, or all at once with :func:`check_dataset`.
    """
    root = Path(path)
    kind, samples, problems = _scan(root, mt_test_fraction, layout)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        more = (
            f" (and {len(errors) - 1} more problem(s); run `linewatch data check {root}`)"
            if len(errors) > 1
            else ""
        )
        raise DatasetError(f"{errors[0]}{more}")
    return Dataset(root=root, kind=kind, samples=samples)


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


def check_dataset(path: str | Path, *, mt_test_fraction: float = MT_TEST_FRACTION,
                  layout: str | None = None, input_hw: tuple[int, int] | None = None) -> CheckReport:
    """Check every sample (structure and pixels) and report all problems and counts at once.

    Besides what is wrong it reports what would silently hurt training, each with what to do: defective
    images without a mask, masks that are not binary, image sizes and aspect against the model input
    (`input_hw`, default the shipped model's), class balance, duplicate images, a split without positives.
    Raises DatasetError only when ``path`` is not a dataset at all.
    """
    root = Path(path)
    kind, samples, problems = _scan(root, mt_test_fraction, layout)
    sizes: Counter[tuple[int, int]] = Counter()
    digests: dict[str, list[str]] = {}
    not_binary: list[str] = []
    report = CheckReport(root=str(root), kind=kind, problems=problems)
    report.n_images = len(samples)
    per_head = {h: {"1": 0, "0": 0, "unknown": 0, "masks": 0, "empty_masks": 0} for h in HEADS}
    per_group: dict[str, dict[str, Any]] = {}
    splits: Counter[str] = Counter()
    for s in samples:
        splits[s.split] += 1
        g = per_group.setdefault(s.group, {"images": 0, **{h: [0, 0, 0] for h in HEADS}})
        g["images"] += 1
        for h in HEADS:
            lab = s.labels[h]
            key = "unknown" if lab is None else str(lab)
            per_head[h][key] += 1
            g[h][{"1": 0, "0": 1, "unknown": 2}[key]] += 1
        try:
            shape = read_image(s.image_path).shape[:2]
            sizes[(int(shape[0]), int(shape[1]))] += 1
            digests.setdefault(hashlib.sha1(s.image_path.read_bytes()).hexdigest(), []).append(s.name)
        except DatasetError as exc:
            report.problems.append(Problem("error", str(s.image_path), str(exc).split(": ", 1)[-1]))
            shape = None
        for h in HEADS:
            p = s.mask_paths[h]
            if p is None:
                continue
            per_head[h]["masks"] += 1
            try:
                m = read_mask(p, shape)
            except DatasetError as exc:
                report.problems.append(Problem("error", str(p), str(exc).split(": ", 1)[-1]))
                continue
            if not m.any():
                per_head[h]["empty_masks"] += 1
            if _distinct_values(p) > 2:
                not_binary.append(p.name)
            problem = _label_problem(s.labels[h], h, m, p)
            if problem is not None:
                report.problems.append(problem)
    report.per_head = per_head
    report.per_group = per_group
    report.per_split = dict(splits)
    report.problems += _training_risks(root, samples, sizes, digests, not_binary, input_hw)
    return report


def _distinct_values(path: Path) -> int:
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return 0 if raw is None else int(np.unique(raw).size)


def _training_risks(root: Path, samples: Sequence[Sample], sizes: Counter[tuple[int, int]],
                    digests: dict[str, list[str]], not_binary: list[str],
                    input_hw: tuple[int, int] | None) -> list[Problem]:
    """What would silently hurt training (check_dataset's doc), as warnings saying what to do."""
    out: list[Problem] = []
    r = str(root)
    for h in HEADS:
        unmasked = [s.name for s in samples if s.labels[h] == 1 and s.mask_paths[h] is None]
        if unmasked:
            out.append(Problem("warning", r, f"{len(unmasked)} defective image(s) ({h}=1) have no {h} mask "
                               f"(e.g. {', '.join(unmasked[:3])}): they train the decision stage only, not the "
                               f"segmentation; add masks as masks/{h}/<name>.png"))
    if not_binary:
        out.append(Problem("warning", r, f"{len(not_binary)} mask(s) have more than two values (e.g. "
                           f"{', '.join(not_binary[:3])}; JPEG artefacts or soft edges): every value > 0 counts "
                           "as foreground; save masks as PNG with 0 and one foreground value"))
    if sizes:
        hw = input_hw or (512, 1224)
        (sh, sw), _ = sizes.most_common(1)[0]
        aspect = float(np.median([w / h for (h, w), n in sizes.items() for _ in range(n)]))
        pixels = int(np.median([h * w for (h, w), n in sizes.items() for _ in range(n)]))
        if len(sizes) > 1:
            out.append(Problem("warning", r, f"{len(sizes)} image sizes (most common {sh}x{sw}): each is resized "
                               f"to the model input {hw[0]}x{hw[1]}; resize or crop them alike if they should be"))
        if aspect_distortion(aspect, hw) > ASPECT_TOLERANCE:
            sug = suggest_input_size(aspect, input_budget(pixels))
            out.append(Problem("warning", r, f"the images' aspect (W/H {aspect:.2f}) differs from the model input "
                               f"{hw[0]}x{hw[1]} (W/H {hw[1] / hw[0]:.2f}) by {aspect_distortion(aspect, hw):.0%}: "
                               f"they would be stretched; train with --input-size {sug[0]}x{sug[1]} (or leave "
                               "--input-size out: `linewatch train` chooses it from the images)"))
    dupes = [names for names in digests.values() if len(names) > 1]
    if dupes:
        out.append(Problem("warning", r, f"{len(dupes)} image(s) stored twice under other names (e.g. "
                           f"{' = '.join(dupes[0][:3])}): in two splits they leak the test into training; "
                           "keep one"))
    by_split: dict[str, list[Sample]] = {}
    for s in samples:
        by_split.setdefault(s.split, []).append(s)
    for h in HEADS:
        for split, ss in sorted(by_split.items()):
            labelled = [int(v) for s in ss if (v := s.labels[h]) is not None]
            if not labelled:
                continue
            pos = sum(labelled)
            if pos == 0:
                out.append(Problem("warning", r, f"split {split!r} has no image with {h}=1 among {len(labelled)} "
                                   f"labelled: {h}'s AP and TPR cannot be measured there (and not learnt, if it "
                                   "is train); move some defective images into it"))
            elif min(pos, len(labelled) - pos) < 0.1 * len(labelled):
                out.append(Problem("warning", r, f"split {split!r} is imbalanced for {h}: {pos} of {len(labelled)} "
                                   f"labelled images are 1; the 0.7 threshold then favours the majority class "
                                   "(calibrate, or balance the split)"))
    return out


# ------------------------------------------------------------------------------------ writing


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
