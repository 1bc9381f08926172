"""Statistics of a run: percentiles, 1-s windows, frame accounting, the verdict and exit status."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# statistics


def percentiles_ms(ns: np.ndarray) -> dict[str, float]:
    """n, mean, p50, p95, p99, max of durations in ns, in ms (exact, numpy 'linear' percentiles)."""
    if ns.size == 0:
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p50, p95, p99 = np.percentile(ns, [50, 95, 99])
    return {"n": int(ns.size), "mean": float(ns.mean()) / 1e6, "p50": float(p50) / 1e6, "p95": float(p95) / 1e6,
            "p99": float(p99) / 1e6, "max": float(ns.max()) / 1e6}


def window_counts(t_ns: np.ndarray, t0_ns: int, seconds: int) -> list[int]:
    """How many of `t_ns` fall in each 1-s window [t0 + i s, t0 + (i+1) s), i < seconds."""
    if seconds <= 0:
        return []
    idx = (t_ns - t0_ns) // 1_000_000_000
    idx = idx[(idx >= 0) & (idx < seconds)]
    return np.bincount(idx, minlength=seconds).astype(int).tolist()


def window_summary(counts: list[int]) -> dict[str, float]:
    if not counts:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "mean": 0.0}
    return {"median": float(statistics.median(counts)), "min": float(min(counts)), "max": float(max(counts)),
            "mean": float(sum(counts) / len(counts))}


def frame_accounting(produced: dict[int, int], camera: np.ndarray, frame_id: np.ndarray) -> dict[str, Any]:
    """Compare the ids each camera produced (0 .. produced-1) with the decisions received."""
    missing = duplicates = unexpected = 0
    examples: list[list[int]] = []
    for cam, n in produced.items():
        ids = frame_id[camera == cam]
        ok = ids[(ids >= 0) & (ids < n)]
        unexpected += int(ids.size - ok.size)
        seen = np.bincount(ok, minlength=n) if n else np.zeros(0, np.int64)
        lacking = np.flatnonzero(seen == 0)
        missing += int(lacking.size)
        examples += [[int(cam), int(i)] for i in lacking[: max(0, 10 - len(examples))]]
        duplicates += int(np.clip(seen - 1, 0, None).sum())
    unexpected += int(np.isin(camera, list(produced), invert=True).sum())
    return {"missing": missing, "duplicates": duplicates, "unexpected": unexpected, "missing_examples": examples}


def verdict(report: dict[str, Any], min_fps: float) -> dict[str, Any]:
    """Pass/fail of a report: minimum 1-s window of inferred decisions >= min_fps, every frame decided."""
    failures = []
    tp = report["throughput"]
    if tp["inferred_fps"]["min"] < min_fps:
        failures.append(f"minimum 1-s window {tp['inferred_fps']['min']:g} inferred decisions/s < --min-fps {min_fps:g}")
    fr = report["frames"]
    if fr["missing"]:
        where = ""
        if fr.get("lost_in_transport") is not None:
            where = (f" ({fr.get('not_decided')} not decided by the pipeline, {fr['lost_in_transport']} published "
                     "but not received)")
        failures.append(f"{fr['missing']} frame(s) without a decision at the subscriber{where}")
    if fr["duplicates"] or fr["unexpected"]:
        failures.append(f"{fr['duplicates']} duplicate and {fr['unexpected']} unexpected decision(s)")
    if report["bench"].get("errors"):
        failures.extend(report["bench"]["errors"])
    return {"ok": not failures, "min_fps": min_fps, "failures": failures}


def exit_status(report: dict[str, Any]) -> int:
    """0 when the report's verdict passed, else 1."""
    return 0 if report["verdict"]["ok"] else 1
