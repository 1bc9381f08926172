"""`linewatch calibrate`: per-head decision thresholds of one station from labelled frames.

Runs the model (any backend, through `open_engine`) over a split of a dataset folder, then picks per
head the threshold that maximises balanced accuracy ((TPR + TNR) / 2, the midpoint of the best gap
between scores), or with `--target-tnr` the lowest threshold whose TNR (share of negatives with
score < t) reaches the target. Prints the proposal beside the current thresholds; `--write` puts it
into the profile's `[decision]` thresholds (a textual edit: comments and every other line stay).
Frames are resized to the model's input the way the acquisition does (INTER_AREA when shrinking).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import HEADS
from linewatch.engines.factory import CHOICES as BACKEND_CHOICES
from linewatch.engines.openvino import PRECISIONS
from linewatch.errors import ProfileError, UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="propose per-head thresholds for a station from labelled frames (--write puts them in the profile)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--profile", required=True, metavar="TOML", help="station profile to calibrate (and rewrite)")
    p.add_argument("--data", required=True, metavar="DIR", help="labelled dataset folder (labels.csv + images/)")
    p.add_argument("--model", metavar="ONNX", default=None, help="model (default: the profile's model.path)")
    p.add_argument("--split", default="val", help="split of the dataset to calibrate on (default: val)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="onnxruntime",
                   help="engine backend (default onnxruntime: every backend agrees within 1e-3)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="with --backend openvino: auto, f32, bf16, int8 (calibrate on what the station runs)")
    p.add_argument("--target-tnr", type=float, default=None, metavar="R",
                   help="instead of the best balanced accuracy: the lowest threshold with TNR >= R (e.g. 0.99)")
    p.add_argument("--write", action="store_true", help="write the proposal into the profile's [decision] thresholds")
    p.set_defaults(func=run)


# -- threshold choice ----------------------------------------------------------------------------

def rates(labels: np.ndarray, scores: np.ndarray, t: float) -> tuple[float, float]:
    """(TPR, TNR) at threshold t: positives with score >= t, negatives with score < t."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    tpr = float(np.mean(pos >= t)) if pos.size else math.nan
    tnr = float(np.mean(neg < t)) if neg.size else math.nan
    return tpr, tnr


def choose_threshold(labels: np.ndarray, scores: np.ndarray, target_tnr: float | None = None) -> float | None:
    """The proposed threshold of one head (labels 1/0, -1 = unknown, ignored); None without both classes."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, np.float64)
    keep = (labels == 0) | (labels == 1)
    y, s = labels[keep], scores[keep]
    pos, neg = s[y == 1], s[y == 0]
    if target_tnr is not None:
        if neg.size == 0:
            return None
        k = max(1, math.ceil(target_tnr * neg.size))
        t = float(np.nextafter(np.sort(neg)[k - 1], np.inf))  # the k lowest negatives fall below t
        return float(min(max(t, 0.0), 1.0))
    if pos.size == 0 or neg.size == 0:
        return None
    u = np.unique(s)
    cands = np.concatenate(([0.0], (u[:-1] + u[1:]) / 2.0, [float(np.nextafter(u[-1], np.inf))]))
    cands = np.clip(cands, 0.0, 1.0)
    tpr = (pos[None, :] >= cands[:, None]).mean(axis=1)
    tnr = (neg[None, :] < cands[:, None]).mean(axis=1)
    return float(cands[int(np.argmax(tpr + tnr))])


# -- profile rewrite -----------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_INLINE = re.compile(r"^(\s*thresholds\s*=\s*)\{[^}]*\}(.*)$")


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def rewrite_thresholds(text: str, thresholds: dict[str, float]) -> str:
    """The profile text with `[decision]` thresholds set to `thresholds` (every head of HEADS).

    Handles a `[decision.thresholds]` table, `thresholds = { ... }` or `thresholds.<head> = ...` in
    `[decision]`, and profiles without either (the keys are added). The result is checked by parsing
    it back; `ProfileError` when the edit could not be made safely.
    """
    lines = text.splitlines(keepends=True)
    section: str | None = None
    idx_decision = idx_table = None
    done: set[str] = set()
    out: list[str] = []
    inline_done = False
    for line in lines:
        m = _HEADER.match(line)
        if m and not line.lstrip().startswith("#"):
            section = m.group(1)
            out.append(line)
            if section == "decision":
                idx_decision = len(out)
            elif section == "decision.thresholds":
                idx_table = len(out)
            continue
        if section == "decision":
            mi = _INLINE.match(line)
            if mi:
                inner = ", ".join(f"{h} = {_fmt(thresholds[h])}" for h in HEADS)
                out.append(f"{mi.group(1)}{{ {inner} }}{mi.group(2)}\n")
                inline_done = True
                done.update(HEADS)
                continue
            for h in HEADS:
                md = re.match(rf"^(\s*thresholds\.{h}\s*=\s*)[^#\n]*?(\s*#.*)?$", line.rstrip("\n"))
                if md:
                    line = f"{md.group(1)}{_fmt(thresholds[h])}{md.group(2) or ''}\n"
                    done.add(h)
        elif section == "decision.thresholds":
            for h in HEADS:
                md = re.match(rf"^(\s*{h}\s*=\s*)[^#\n]*?(\s*#.*)?$", line.rstrip("\n"))
                if md:
                    line = f"{md.group(1)}{_fmt(thresholds[h])}{md.group(2) or ''}\n"
                    done.add(h)
        out.append(line)
    missing = [h for h in HEADS if h not in done]
    if missing:
        if idx_table is not None:
            out[idx_table:idx_table] = [f"{h} = {_fmt(thresholds[h])}\n" for h in missing]
        elif idx_decision is not None and not inline_done and len(missing) == len(HEADS):
            inner = ", ".join(f"{h} = {_fmt(thresholds[h])}" for h in HEADS)
            out[idx_decision:idx_decision] = [f"thresholds = {{ {inner} }}\n"]
        elif idx_decision is not None:
            out[idx_decision:idx_decision] = [f"thresholds.{h} = {_fmt(thresholds[h])}\n" for h in missing]
        else:
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            inner = ", ".join(f"{h} = {_fmt(thresholds[h])}" for h in HEADS)
            out.append(f"\n[decision]\nthresholds = {{ {inner} }}\n")
    new = "".join(out)
    try:
        got = tomllib.loads(new).get("decision", {}).get("thresholds", {})
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"could not rewrite the thresholds safely ({exc}); set them by hand") from exc
    if any(abs(float(got.get(h, -1)) - round(thresholds[h], 4)) > 1e-9 for h in HEADS):
        raise ProfileError(f"could not rewrite the thresholds safely (read back {got}); set them by hand")
    return new


# -- scoring -------------------------------------------------------------------------------------

def collect_scores(engine: Any, dataset: Any, samples: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Scores float [N, 2] of `samples` through `engine`, and labels int [N, 2] (-1 = unknown)."""
    import cv2

    h, w = engine.input_hw
    batch = np.empty((engine.max_batch, h, w, 3), np.uint8)
    scores = np.zeros((len(samples), 2), np.float32)
    labels = np.full((len(samples), 2), -1, np.int64)
    for start in range(0, len(samples), engine.max_batch):
        chunk = samples[start : start + engine.max_batch]
        for i, s in enumerate(chunk):
            img = dataset.load_image(s)
            interp = cv2.INTER_AREA if img.shape[0] >= h and img.shape[1] >= w else cv2.INTER_LINEAR
            batch[i] = img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=interp)
            for j, head in enumerate(HEADS):
                v = s.labels.get(head)
                labels[start + i, j] = -1 if v is None else int(v)
        _, sc = engine.infer(batch[: len(chunk)])
        scores[start : start + len(chunk)] = sc[: len(chunk)]
    return scores, labels


def _pct(v: float) -> str:
    return "   n/a" if math.isnan(v) else f"{100 * v:5.1f}%"


def run(args: argparse.Namespace) -> int:
    from linewatch.data.dataset import open_dataset
    from linewatch.engines.factory import open_engine, precision_opts, resolve_backend
    from linewatch.profile import load_profile, parse_profile

    if args.target_tnr is not None and not 0.0 < args.target_tnr <= 1.0:
        raise UsageError(f"--target-tnr {args.target_tnr}: must be in (0, 1]")
    prof_path = Path(args.profile)
    profile = load_profile(prof_path)
    model = Path(args.model) if args.model else profile.model_path()
    ds = open_dataset(args.data)
    samples = ds.split(args.split)
    if not samples:
        raise UsageError(f"{args.data}: split {args.split!r} has no samples (use --split)")
    engine = open_engine(model, backend=args.backend, max_batch=profile.model.max_batch,
                         **precision_opts(resolve_backend(args.backend), args.precision))
    try:
        scores, labels = collect_scores(engine, ds, samples)
    finally:
        engine.close()

    current = profile.decision.thresholds.as_tuple()
    proposal: dict[str, float] = {}
    rule = f"TNR >= {args.target_tnr:.3f}" if args.target_tnr is not None else "best balanced accuracy"
    print(f"calibration of {prof_path} on {args.data} split {args.split!r} ({len(samples)} frames), {model.name}, {rule}")
    print(f"{'head':<9} {'pos':>5} {'neg':>5}  {'current':>8} {'TPR':>6} {'TNR':>6}  {'proposed':>8} {'TPR':>6} {'TNR':>6}")
    for j, head in enumerate(HEADS):
        y, s = labels[:, j], scores[:, j]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        t = choose_threshold(y, s, args.target_tnr)
        cur_tpr, cur_tnr = rates(y, s, current[j])
        if t is None:
            proposal[head] = current[j]
            print(f"{head:<9} {n_pos:>5} {n_neg:>5}  {current[j]:>8.4f} {_pct(cur_tpr)} {_pct(cur_tnr)}  "
                  f"{'(kept)':>8}  needs labelled positives and negatives")
            continue
        # Written with 4 decimals, rounded up: a TNR target still holds, and the rates shown are those
        # of the value written.
        w = round(t, 4)
        proposal[head] = min(1.0, round(w + 1e-4, 4) if w < t else w)
        tpr, tnr = rates(y, s, proposal[head])
        print(f"{head:<9} {n_pos:>5} {n_neg:>5}  {current[j]:>8.4f} {_pct(cur_tpr)} {_pct(cur_tnr)}  "
              f"{proposal[head]:>8.4f} {_pct(tpr)} {_pct(tnr)}")
    if not args.write:
        print("not written (add --write to update the profile)")
        return 0
    text = prof_path.read_text(encoding="utf-8")
    new = rewrite_thresholds(text, proposal)
    parse_profile(new, name=str(prof_path), base_dir=prof_path.resolve().parent)  # still a valid profile
    tmp = prof_path.with_name(f".{prof_path.name}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, prof_path)
    print(f"wrote thresholds anomaly={proposal['anomaly']:.4f} adhesive={proposal['adhesive']:.4f} to {prof_path}; "
          "a running daemon applies them on SIGHUP (systemctl reload linewatch@<station>)")
    return 0
