"""Checking a dataset: every problem at once, the counts per class, split and label, and what would
silently hurt training (`linewatch data check`).

`check_dataset(path)` reads a dataset the way `linewatch.data.dataset.open_dataset` does (any layout
it reads) and, unlike it, does not stop at the first problem: it decodes every image and mask and
returns a `CheckReport` of every error and warning (each naming the file and what to do) with the
counts. It raises DatasetError only when the path is not a dataset at all.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import HEADS
from linewatch.data.dataset import (
    MT_TEST_FRACTION,
    Problem,
    Sample,
    label_problem,
    read_image,
    read_mask,
    scan_dataset,
)
from linewatch.data.input_size import ASPECT_TOLERANCE, aspect_distortion, input_budget, suggest_input_size
from linewatch.errors import DatasetError


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


def check_dataset(path: str | Path, *, mt_test_fraction: float = MT_TEST_FRACTION,
                  layout: str | None = None, input_hw: tuple[int, int] | None = None) -> CheckReport:
    """Check every sample (structure and pixels) and report all problems and counts at once.

    Besides what is wrong it reports what would silently hurt training, each with what to do: defective
    images without a mask, masks that are not binary, image sizes and aspect against the model input
    (`input_hw`, default the shipped model's), class balance, duplicate images, a split without positives.
    Raises DatasetError only when ``path`` is not a dataset at all.
    """
    root = Path(path)
    kind, samples, problems = scan_dataset(root, mt_test_fraction, layout)
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
            problem = label_problem(s.labels[h], h, m, p)
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
