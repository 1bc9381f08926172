"""The loop a user would write with the plain PyTorch model, timed like the pipeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.bench.config import BenchConfig
from linewatch.bench.source import render_pool
from linewatch.bench.stats import percentiles_ms, window_counts, window_summary
from linewatch.errors import UsageError

# --------------------------------------------------------------------------------------------------
# the PyTorch baseline


def torch_baseline(model_path: Path | None, engine: Any, cfg: BenchConfig, pool: np.ndarray | None = None,
                   progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """The plain PyTorch loop on the same frames and device (module doc)."""
    import torch

    from linewatch.engines.manifest import load_manifest
    from linewatch.model.export import load_model
    from linewatch.model.resse import NORM_SCALE, NORM_SHIFT

    if model_path is None:
        raise UsageError("--baseline torch needs a model (its weights .pt beside the ONNX)")
    man, onnx = load_manifest(model_path, verify=False)
    if not man.weights:
        raise UsageError(f"--baseline torch: the manifest of {onnx} names no weights file (re-export the model "
                         "with `linewatch export`, which writes <stem>.pt)")
    weights = onnx.parent / man.weights
    device = "cuda" if str(engine.device).startswith("cuda") else "cpu"
    model = load_model(weights, device=device)
    t_a, t_h = cfg.profile.decision.thresholds.as_tuple()
    rule = cfg.profile.decision.adhesive_rule
    cam = cfg.profile.camera[0]
    if pool is None or tuple(pool.shape[1:3]) != tuple(man.input_hw):
        hw = (int(man.input_hw[0]), int(man.input_hw[1]))
        pool, _ = render_pool(min(cfg.pool, 16), hw, seed=getattr(cam, "seed", 0),
                              defect_rate=getattr(cam, "defect_rate", None))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dur = cfg.baseline_duration_s if cfg.baseline_duration_s is not None else min(cfg.duration_s, 10.0)
    dur = max(dur, 1.0)

    def one(frame: np.ndarray) -> bool:
        x = torch.from_numpy(frame).to(device).permute(2, 0, 1).unsqueeze(0).float() * NORM_SCALE + NORM_SHIFT
        out = model(x)
        s = out.scores[0].cpu().tolist()
        reject = s[0] >= t_a
        if rule == "present":
            reject = reject or s[1] < t_h
        elif rule == "absent":
            reject = reject or s[1] >= t_h
        return reject

    lat: list[int] = []
    t_done: list[int] = []
    with torch.no_grad():
        for k in range(3):  # warm-up (allocator, cudnn autotune)
            one(pool[k % len(pool)])
        sync()
        t0_ns = time.time_ns()
        t_end = time.monotonic() + dur
        k = 0
        while time.monotonic() < t_end:
            t_cap = time.time_ns()
            one(pool[k % len(pool)])
            t = time.time_ns()
            lat.append(t - t_cap)
            t_done.append(t)
            k += 1
            if progress is not None:
                progress(f"bench: baseline {k} frames, {(t - t0_ns) / 1e9:4.1f}/{dur:g} s")
    seconds = int(dur)
    win = window_counts(np.asarray(t_done, np.int64), t0_ns, seconds)
    return {
        "what": f"PyTorch {torch.__version__} eager FP32 on {device}, batch 1, torch.no_grad(), "
                f"{torch.get_num_threads()} intra-op threads: tensor, normalise, model(x), threshold",
        "device": device,
        "duration_s": dur,
        "frames": k,
        "fps": window_summary(win),
        "per_window": win,
        "latency_ms": percentiles_ms(np.asarray(lat, np.int64)),
    }


def compare(report: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Pipeline vs baseline: throughput (median windows, inferred) and latency ratios."""
    p = report["throughput"]["inferred_fps"]["median"]
    b = base["fps"]["median"] or (base["frames"] / base["duration_s"])
    lp, lb = report["latency_ms"]["p50"], base["latency_ms"]["p50"]
    return {"pipeline_fps_median": p, "baseline_fps_median": b,
            "throughput_ratio": round(p / b, 3) if b else None,
            "pipeline_latency_p50_ms": lp, "baseline_latency_p50_ms": lb,
            "latency_p50_ratio": round(lp / lb, 3) if lb else None}
