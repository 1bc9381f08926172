"""The paper's metrics (§4.3, SPEC §3), per head, numpy only.

    AP_pos  average precision, positives as the positive class, the score as confidence
    AP_neg  average precision, negatives as the positive class, 1 − score as confidence
    TPR_t   share of positives with score ≥ t
    TNR_t   share of negatives with score < t          (t = 0.7 by default)

Average precision is scikit-learn's `average_precision_score`: the step-wise sum over the PR
curve, AP = Σ_n (R_n − R_{n−1}) · P_n over the distinct score thresholds in decreasing order
(no interpolation). Samples whose label is unknown (NaN / None) are left out of that head.
A metric without any sample to measure is NaN (reported as such, never as 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from linewatch import DEFAULT_THRESHOLD, HEADS

__all__ = ["DEFAULT_THRESHOLD", "all_metrics", "average_precision", "head_metrics", "markdown_table", "pr_curve"]


def pr_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at each distinct score, thresholds decreasing.

    Point i counts every sample with score ≥ thresholds[i] as predicted positive.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last_of_value]
    fps = (last_of_value + 1) - tps
    total_pos = tps[-1] if tps.size else 0.0
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / total_pos if total_pos > 0 else np.full_like(tps, np.nan)
    return precision, recall, s[last_of_value]


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """AP = Σ (R_n − R_{n−1}) P_n (sklearn's definition). NaN when there is no positive sample."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if y.size == 0 or y.sum() == 0:
        return math.nan
    precision, recall, _ = pr_curve(y, score)
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def _known(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = np.asarray([np.nan if v is None else v for v in np.asarray(labels, dtype=object).ravel()], np.float64)
    sc = np.asarray(scores, dtype=np.float64).ravel()
    if lab.shape != sc.shape:
        raise ValueError(f"labels {lab.shape} and scores {sc.shape} differ in shape")
    keep = ~np.isnan(lab)
    return lab[keep], sc[keep]


def head_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Metrics of one head. `labels` 1 / 0 / NaN-or-None (unknown, left out); `scores` in [0, 1]."""
    y, s = _known(labels, scores)
    pos, neg = y == 1, y == 0
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    t = float(threshold)
    return {
        "AP_pos": average_precision(pos, s),
        "AP_neg": average_precision(neg, 1.0 - s),
        f"TPR_{t:g}": float(np.mean(s[pos] >= t)) if n_pos else math.nan,
        f"TNR_{t:g}": float(np.mean(s[neg] < t)) if n_neg else math.nan,
        "n_pos": n_pos,
        "n_neg": n_neg,
        "n_unknown": int(np.asarray(labels, dtype=object).size - y.size),
        "threshold": t,
    }


def all_metrics(
    labels: np.ndarray, scores: np.ndarray, threshold: float | dict[str, float] = DEFAULT_THRESHOLD
) -> dict[str, dict[str, Any]]:
    """Per head (`linewatch.HEADS`): labels [N, 2] (NaN = unknown) and scores [N, 2]."""
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    out = {}
    for c, head in enumerate(HEADS):
        t = threshold[head] if isinstance(threshold, dict) else threshold
        out[head] = head_metrics(labels[:, c], scores[:, c], t)
    return out


def _pct(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown_table(metrics: dict[str, dict[str, Any]], title: str = "") -> str:
    """One row per head: AP_pos / AP_neg / TPR_t / TNR_t in percent, counts; a column t when the heads
    are measured at different thresholds (e.g. a model's recommended ones)."""
    lines = [f"### {title}", ""] if title else []
    ts = [m["threshold"] for m in metrics.values()]
    same = all(t == ts[0] for t in ts)
    label = f"{ts[0]:g}" if same else "t"
    lines += [
        f"| head | AP_pos | AP_neg | TPR_{label} | TNR_{label} |" + ("" if same else " t |")
        + " positives | negatives | unknown |",
        "|---|---:|---:|---:|---:|" + ("" if same else "---:|") + "---:|---:|---:|",
    ]
    for head, m in metrics.items():
        t = m["threshold"]
        lines.append(
            f"| {head} | {_pct(m['AP_pos'])} | {_pct(m['AP_neg'])} | {_pct(m[f'TPR_{t:g}'])} | "
            f"{_pct(m[f'TNR_{t:g}'])} |" + ("" if same else f" {t:g} |")
            + f" {m['n_pos']} | {m['n_neg']} | {m['n_unknown']} |"
        )
    return "\n".join(lines) + "\n"
