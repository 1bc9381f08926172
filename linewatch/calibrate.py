"""Per-head decision thresholds of one station from labelled frames (behind `linewatch calibrate`).

`score_split` runs a model (any backend, through `open_engine`) over a split of a dataset folder:
scores float [N, 2] and labels int [N, 2] (1, 0, -1 = unknown; columns in `linewatch.HEADS` order).
Frames become the model input by `linewatch.preprocess.to_model_input`, the rule of training and
of the acquisition (whole images: the dataset's frames are taken as the station's ROI already, as the
station record keeps them; with `roi`, the camera's own crop is taken first, for its raw full frames). `calibrate` then proposes per head the threshold that maximises balanced accuracy
((TPR + TNR) / 2, the midpoint of the best gap between scores) or, with a target TNR, the lowest
threshold whose TNR (share of negatives with score < t) reaches it; a head without labelled
positives and negatives keeps its current threshold. Proposals are written with 4 decimals: for a TNR
target rounded up (it still holds); for the best balanced accuracy the written value nearest each gap's
midpoint that still lies in that gap (rounding the midpoint up could step past the gap's positive), every
candidate scored as written. The rates reported are always those of the value written.
`save_thresholds` puts them into a profile file's `[decision]` thresholds: a textual edit
(`profile.rewrite_thresholds`: comments and every other line stay), checked to be a valid profile
and replaced atomically.

`recommend` is the same rule applied by training to its validation part (the model's recommended
operating point, written into the checkpoint and the manifest: a profile that leaves a head's threshold
out decides at it). Stated before any score was seen: per head, the threshold with the best balanced
accuracy on the validation part, placed midway between the two adjacent validation scores; among equal
candidates the lowest (a miss costs more than a false reject); a head without labelled positives and
negatives there keeps the paper's 0.7.

Errors: `SettingError` naming the setting (`target_tnr`, `split`) and what is allowed; the profile's
and the engine's own errors (`ProfileError`, `EngineError`, `DatasetError`) as they come.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import DEFAULT_THRESHOLD, HEADS, atomicfile
from linewatch.errors import SettingError

DECIMALS = 4
"""Thresholds are written with this many decimals."""


@dataclass(frozen=True)
class HeadCalibration:
    """One head's current and proposed threshold with the (TPR, TNR) of each on the labelled frames."""

    head: str
    positives: int
    negatives: int
    current: float
    current_rates: tuple[float, float]
    proposed: float | None
    """None: kept (the head needs labelled positives and negatives)."""
    proposed_rates: tuple[float, float] | None

    @property
    def threshold(self) -> float:
        """What the profile gets: the proposal, else the current threshold."""
        return self.current if self.proposed is None else self.proposed


def check_target_tnr(target_tnr: float | None) -> None:
    """`SettingError` unless `target_tnr` is None or in (0, 1]."""
    if target_tnr is not None and not 0.0 < target_tnr <= 1.0:
        raise SettingError(f"`target_tnr` {target_tnr}: must be in (0, 1]")


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
    # one candidate per gap between adjacent scores (lo, hi]: the written value (DECIMALS decimals) nearest its
    # midpoint that lies in the gap, else the nearest above or below it that does; where none does (a gap under
    # 10^-DECIMALS), the midpoint rounded down — a false reject rather than a miss. Each is scored as written.
    lo, hi = np.concatenate(([-np.inf], u)), np.concatenate((u, [np.inf]))
    mids = np.concatenate(([0.0], (u[:-1] + u[1:]) / 2.0, [float(np.nextafter(u[-1], np.inf))]))
    step = 10.0**-DECIMALS
    near, up, down = (np.round(f(mids / step) * step, DECIMALS) for f in (np.round, np.ceil, np.floor))
    inside = [(lo < v) & (v <= hi) for v in (near, up)]
    cands = np.clip(np.where(inside[0], near, np.where(inside[1], up, down)), 0.0, 1.0)
    tpr = (pos[None, :] >= cands[:, None]).mean(axis=1)
    tnr = (neg[None, :] < cands[:, None]).mean(axis=1)
    bal = tpr + tnr
    return float(cands[bal == bal.max()].min())


RECOMMEND_RULE = "max balanced accuracy on validation, midway between adjacent scores, lowest of equals"
"""The rule of `recommend`, as the checkpoint and the manifest name it."""


def recommend(labels: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, Any]]:
    """The recommended operating point per head (`HEADS` order columns) from validation labels [N, 2]
    (1 / 0; NaN or -1 = unknown) and scores [N, 2]: `threshold` (written with `DECIMALS`), the `TPR` and
    `TNR` it gives there, `n_pos`, `n_neg`, and `rule` (RECOMMEND_RULE, or why the paper's 0.7 is kept)."""
    labels = np.nan_to_num(np.asarray(labels, np.float64), nan=-1.0)
    scores = np.asarray(scores, np.float64)
    out: dict[str, dict[str, Any]] = {}
    for j, head in enumerate(HEADS):
        y, s = labels[:, j], scores[:, j]
        t = choose_threshold(y, s)
        rule = RECOMMEND_RULE
        if t is None:
            t, rule = DEFAULT_THRESHOLD, "the paper's 0.7: validation has no labelled positives and negatives"
        else:
            t = written_threshold(t)
        tpr, tnr = rates(y, s, t)
        out[head] = {"threshold": t, "TPR": tpr, "TNR": tnr, "n_pos": int((y == 1).sum()),
                     "n_neg": int((y == 0).sum()), "rule": rule}
    return out


def written_threshold(t: float) -> float:
    """`t` with `DECIMALS` decimals, rounded up (at most 1): what the profile holds."""
    w = round(t, DECIMALS)
    return min(1.0, round(w + 10.0**-DECIMALS, DECIMALS) if w < t else w)


def calibrate(scores: np.ndarray, labels: np.ndarray, current: tuple[float, ...],
              target_tnr: float | None = None) -> list[HeadCalibration]:
    """Per head (`HEADS` order): the current threshold, the proposal (module doc) and their rates."""
    check_target_tnr(target_tnr)
    out = []
    for j, head in enumerate(HEADS):
        y, s = labels[:, j], scores[:, j]
        t = choose_threshold(y, s, target_tnr)
        proposed = None if t is None else written_threshold(t)
        out.append(HeadCalibration(
            head=head, positives=int((y == 1).sum()), negatives=int((y == 0).sum()), current=current[j],
            current_rates=rates(y, s, current[j]), proposed=proposed,
            proposed_rates=None if proposed is None else rates(y, s, proposed),
        ))
    return out


# -- scoring -------------------------------------------------------------------------------------

def collect_scores(engine: Any, dataset: Any, samples: list[Any],
                   roi: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores float [N, 2] of `samples` through `engine`, and labels int [N, 2] (-1 = unknown); `roi`
    (x, y, w, h) is cropped from each image first, as the line does for its camera."""
    from linewatch.preprocess import Scratch, to_model_input

    h, w = engine.input_hw
    batch = np.empty((engine.max_batch, h, w, 3), np.uint8)
    scores = np.zeros((len(samples), 2), np.float32)
    labels = np.full((len(samples), 2), -1, np.int64)
    scratch = Scratch()
    for start in range(0, len(samples), engine.max_batch):
        chunk = samples[start : start + engine.max_batch]
        for i, s in enumerate(chunk):
            to_model_input(dataset.load_image(s), roi=roi, dst=batch[i], scratch=scratch)
            for j, head in enumerate(HEADS):
                v = s.labels.get(head)
                labels[start + i, j] = -1 if v is None else int(v)
        _, sc = engine.infer(batch[: len(chunk)])
        scores[start : start + len(chunk)] = sc[: len(chunk)]
    return scores, labels


def score_split(model: Path, data: str | Path, split: str, *, backend: str, precision: str | None = None,
                max_batch: int = 8, roi: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`collect_scores` of `split` of the dataset folder `data` through `model` on `backend` (`roi`: cropped
    from every image first)."""
    from linewatch.data.dataset import open_dataset
    from linewatch.engines.factory import open_engine, precision_opts, resolve_backend

    ds = open_dataset(data)
    samples = ds.split(split)
    if not samples:
        raise SettingError(f"{data}: split {split!r} has no samples (choose another `split`)")
    engine = open_engine(model, backend=backend, max_batch=max_batch,
                         **precision_opts(resolve_backend(backend), precision))
    try:
        return collect_scores(engine, ds, samples, roi)
    finally:
        engine.close()


# -- writing -------------------------------------------------------------------------------------

def save_manifest_thresholds(model: str | Path, heads: list[HeadCalibration], rule: str, data: str) -> dict[str, Any]:
    """Make the proposals of `heads` the model's recommended thresholds: its manifest's `thresholds` and
    `operating_point` (with `rule`, the rates and `data`, the labelled set they were measured on), for a
    model trained before training chose them. A head without a proposal keeps its entry. The ONNX, its
    sha256 and so the model id stay; the manifest is replaced atomically. Returns the new thresholds."""
    from linewatch import jsonfile
    from linewatch.engines.manifest import load_manifest, manifest_path_for

    man, _ = load_manifest(model, verify=True)
    op = dict(man.operating_point)
    for c in heads:
        if c.proposed is None or c.proposed_rates is None:
            continue
        man.thresholds[c.head] = c.proposed
        op[c.head] = {"threshold": c.proposed, "TPR": c.proposed_rates[0], "TNR": c.proposed_rates[1],
                      "n_pos": c.positives, "n_neg": c.negatives, "rule": rule, "data": data}
    man.operating_point = jsonfile.clean(op)
    man.save(manifest_path_for(Path(model)))
    return dict(man.thresholds)


def save_thresholds(path: str | Path, thresholds: dict[str, float]) -> None:
    """Write `thresholds` (every head) into the profile file `path`: `rewrite_thresholds`, checked to
    parse as a valid profile, then an atomic replace (a running daemon applies it on SIGHUP)."""
    from linewatch.profile import parse_profile, rewrite_thresholds

    path = Path(path)
    new = rewrite_thresholds(path.read_text(encoding="utf-8"), thresholds)
    parse_profile(new, name=str(path), base_dir=path.resolve().parent)  # still a valid profile
    atomicfile.write_text(path, new)
