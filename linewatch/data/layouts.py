"""Readers of the dataset layouts people already have, beside the linewatch folder format.

MVTec AD layout (one category)::

    DIR/train/good/<name>.png
    DIR/test/good/<name>.png
    DIR/test/<defect>/<name>.png
    DIR/ground_truth/<defect>/<name>_mask.png      optional per image

Class folders without a table::

    DIR/good/<name>.png    (or ok/)                defect-free
    DIR/bad/<name>.png     (or ng/)                defective
    DIR/bad/<name>_mask.png or DIR/masks/<name>.png    optional masks of the defective images

Both read as anomaly labels (1 defective, 0 defect-free), the defect masks as anomaly masks, and
adhesive unknown; a sample's name is made unique from its folders (`test_scratch_000`), its group is
the defect class. MVTec's own split has no defective image in `train` (it is made for unsupervised
methods), so, like a class-folder tree, it gets a deterministic stratified split (per class, names
ordered by SHA-1, `test_fraction` of each class `test`, the next `VAL_FRACTION` `val` — for the
threshold and the model choice —, the rest `train`); a warning says so.
`linewatch data convert` writes either as the folder format.
"""

from __future__ import annotations

from pathlib import Path

from linewatch.data.dataset import IMAGE_EXTS, Problem, Sample, assign_test_split, name_order

GOOD_DIRS = ("good", "ok")
BAD_DIRS = ("bad", "ng")
MASK_SUFFIX = "_mask"
VAL_FRACTION = 0.15
"""Share of each class in the assigned `val` split (after `test`)."""


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.stem.endswith(MASK_SUFFIX)]


def _name(*parts: str) -> str:
    return "_".join(p.replace(" ", "-") for p in parts)


def is_mvtec(root: Path) -> bool:
    return (root / "train" / "good").is_dir() and (root / "test").is_dir()


def is_class_folders(root: Path) -> bool:
    names = {d.name.lower() for d in root.iterdir() if d.is_dir()}
    return bool(names & set(GOOD_DIRS)) and bool(names & set(BAD_DIRS))


def scan_mvtec(root: Path, problems: list[Problem], test_fraction: float) -> list[Sample]:
    found: list[tuple[str, str, Path, Path | None, int]] = []  # name, group, image, mask, label
    for part in ("train", "test"):
        for d in sorted(p for p in (root / part).iterdir() if p.is_dir()):
            label = 0 if d.name == "good" else 1
            for img in _images(d):
                mask = root / "ground_truth" / d.name / f"{img.stem}{MASK_SUFFIX}.png"
                found.append((_name(part, d.name, img.stem), d.name, img, mask if mask.is_file() else None, label))
    gt = root / "ground_truth"
    if gt.is_dir():
        images = {(img.parent.name, img.stem) for _, _, img, _, _ in found}
        for d in sorted(p for p in gt.iterdir() if p.is_dir()):
            for m in _images_or_masks(d):
                stem = m.stem[: -len(MASK_SUFFIX)] if m.stem.endswith(MASK_SUFFIX) else m.stem
                if (d.name, stem) not in images:
                    problems.append(Problem("warning", str(m), f"mask without image (no test/{d.name}/{stem}.*): "
                                            "ignored"))
    return _split(root, found, problems, test_fraction, "the MVTec split has no defective image in train")


def scan_class_folders(root: Path, problems: list[Problem], test_fraction: float) -> list[Sample]:
    found: list[tuple[str, str, Path, Path | None, int]] = []
    flat = root / "masks"
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in (*GOOD_DIRS, *BAD_DIRS)):
        label = 0 if d.name.lower() in GOOD_DIRS else 1
        for img in _images(d):
            mask: Path | None = None
            if label:
                beside = [p for p in d.glob(f"{img.stem}{MASK_SUFFIX}.*") if p.suffix.lower() in IMAGE_EXTS]
                in_masks = [p for p in flat.glob(f"{img.stem}.*") if p.suffix.lower() in IMAGE_EXTS]
                mask = next(iter(beside + in_masks), None)
            found.append((_name(d.name, img.stem), d.name.lower(), img, mask, label))
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() not in (*GOOD_DIRS, *BAD_DIRS, "masks")):
        problems.append(Problem("warning", str(d), f"folder {d.name!r} is ignored: class folders are "
                                f"{'/'.join(GOOD_DIRS)} (defect-free) and {'/'.join(BAD_DIRS)} (defective)"))
    return _split(root, found, problems, test_fraction, "class folders carry no split")


def _images_or_masks(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS]


def _split(root: Path, found: list[tuple[str, str, Path, Path | None, int]], problems: list[Problem],
           test_fraction: float, why: str) -> list[Sample]:
    if not found:
        return []
    by_group: dict[str, list[str]] = {}
    for name, group, *_ in found:
        by_group.setdefault(group, []).append(name)
    splits: dict[str, str] = {}
    for names in by_group.values():
        assigned = assign_test_split(names, test_fraction)
        rest = [n for n in name_order(names) if assigned[n] == "train"]
        for n in rest[: round(VAL_FRACTION * len(names))]:
            assigned[n] = "val"
        splits.update(assigned)
    problems.append(Problem("warning", str(root),
                            f"{why}: a stratified split was assigned ({test_fraction:.0%} of each class test, "
                            f"{VAL_FRACTION:.0%} val, by SHA-1 of the name); `linewatch data convert` writes it "
                            "into labels.csv to edit"))
    return [Sample(name, splits[name], group, img, {"anomaly": mask, "adhesive": None},
                   {"anomaly": label, "adhesive": None}) for name, group, img, mask, label in found]
