"""The loops a user would write around the plain model, timed like the pipeline (`--baseline`).

- `torch`: the PyTorch model (weights `.pt` beside the ONNX), eager FP32, batch 1, `torch.no_grad()`:
  tensor, normalise, `model(x)`.
- `openvino`: the same ONNX through OpenVINO the way its documentation shows it — `Core()`,
  `compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": p})` at the engine's precision (the
  manifest's INT8 model for int8), one infer request, `infer({0: frame[None]})`.

Both read a frame from the bench's pool, infer it and threshold the scores with the same `Decider`
the pipeline uses; nothing is published. Throughput is counted in 1-s windows as in the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.bench.config import BenchConfig
from linewatch.bench.source import render_pool
from linewatch.bench.stats import percentiles_ms, window_counts, window_summary
from linewatch.errors import SettingError
from linewatch.pipeline.decide import Decider


def _frames(man: Any, cfg: BenchConfig, pool: np.ndarray | None) -> np.ndarray:
    """The bench's pool when it has the model's size, else a fresh one of the profile camera's mix."""
    if pool is not None and tuple(pool.shape[1:3]) == tuple(man.input_hw):
        return pool
    cam = cfg.profile.camera[0]
    hw = (int(man.input_hw[0]), int(man.input_hw[1]))
    fresh, _ = render_pool(min(cfg.pool, 16), hw, seed=getattr(cam, "seed", 0),
                           defect_rate=getattr(cam, "defect_rate", None))
    return fresh


def _timed_loop(one: Callable[[np.ndarray], Any], pool: np.ndarray, cfg: BenchConfig,
                progress: Callable[..., None] | None, sync: Callable[[], None] = lambda: None,
                model_thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Call `one(frame) -> scores` over the pool for the baseline's duration; decide each frame (at the
    profile's thresholds, a head it leaves out at the model's, as the daemon does)."""
    d = cfg.profile.decision
    decider = Decider(d.thresholds.resolve(model_thresholds), d.adhesive_rule, d.deadline_ns)
    dur = cfg.baseline_duration_s if cfg.baseline_duration_s is not None else min(cfg.duration_s, 10.0)
    dur = max(dur, 1.0)
    for k in range(3):  # warm-up (allocators, kernel choice, cudnn autotune)
        one(pool[k % len(pool)])
    sync()
    lat: list[int] = []
    t_done: list[int] = []
    rejects = 0
    t0_ns = time.time_ns()
    t_end = time.monotonic() + dur
    k = 0
    while time.monotonic() < t_end:
        t_cap = time.time_ns()
        rejects += decider.decide("baseline", k, t_cap, one(pool[k % len(pool)])).reject
        t = time.time_ns()
        lat.append(t - t_cap)
        t_done.append(t)
        k += 1
        if progress is not None:
            progress(f"bench: baseline {k} frames, {(t - t0_ns) / 1e9:4.1f}/{dur:g} s")
    win = window_counts(np.asarray(t_done, np.int64), t0_ns, int(dur))
    return {"duration_s": dur, "frames": k, "rejects": rejects, "fps": window_summary(win), "per_window": win,
            "latency_ms": percentiles_ms(np.asarray(lat, np.int64))}


def torch_baseline(model_path: Path | None, engine: Any, cfg: BenchConfig, pool: np.ndarray | None = None,
                   progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """The plain PyTorch loop on the same frames and device (module doc)."""
    import torch

    from linewatch.engines.manifest import load_manifest
    from linewatch.model.export import load_model
    from linewatch.model.resse import normalize

    if model_path is None:
        raise SettingError("`baselines` torch needs a model (its weights .pt beside the ONNX)")
    man, onnx = load_manifest(model_path, verify=False)
    if not man.weights:
        raise SettingError(f"`baselines` torch: the manifest of {onnx} names no weights file (re-export the model "
                         "with `linewatch export`, which writes <stem>.pt)")
    device = "cuda" if str(engine.device).startswith("cuda") else "cpu"
    model = load_model(onnx.parent / man.weights, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def one(frame: np.ndarray) -> list[float]:
        x = normalize(torch.from_numpy(frame).to(device).permute(2, 0, 1).unsqueeze(0))
        return model(x).scores[0].cpu().tolist()

    with torch.no_grad():
        out = _timed_loop(one, _frames(man, cfg, pool), cfg, progress, sync, model_thresholds=man.thresholds)
    return {"what": f"PyTorch {torch.__version__} eager FP32 on {device}, batch 1, torch.no_grad(), "
                    f"{torch.get_num_threads()} intra-op threads: tensor, normalise, model(x), threshold",
            "device": device, **out}


def openvino_baseline(model_path: Path | None, engine: Any, cfg: BenchConfig, pool: np.ndarray | None = None,
                      progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """The plain OpenVINO loop on the same frames, model and precision (module doc)."""
    import openvino as ov

    from linewatch.engines.manifest import load_manifest
    from linewatch.engines.openvino import float_hint, int8_model_path, resolve_precision

    if model_path is None:
        raise SettingError("`baselines` openvino needs a model (an ONNX with its manifest)")
    man, onnx = load_manifest(model_path, verify=False)
    core = ov.Core()
    precision = getattr(engine, "precision", None) if engine.name == "openvino" else None
    precision = resolve_precision(precision, core)
    path = int8_model_path(onnx, man) if precision == "int8" else onnx
    hint = float_hint(precision, core)
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    scores_port = compiled.output("scores")

    def one(frame: np.ndarray) -> np.ndarray:
        return request.infer({0: frame[None]})[scores_port][0]

    out = _timed_loop(one, _frames(man, cfg, pool), cfg, progress, model_thresholds=man.thresholds)
    return {"what": f"OpenVINO {ov.get_version().split('-')[0]} on cpu, {precision}, batch 1, compile_model(onnx, "
                    f"'CPU', INFERENCE_PRECISION_HINT={hint}), request.infer({{0: frame[None]}}), threshold",
            "device": "cpu", "precision": precision, **out}


BASELINE_LOOPS: dict[str, Callable[..., dict[str, Any]]] = {"torch": torch_baseline, "openvino": openvino_baseline}


def compare(report: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Pipeline vs baseline: throughput (median windows, inferred) and latency ratios."""
    p = report["throughput"]["inferred_fps"]["median"]
    b = base["fps"]["median"] or (base["frames"] / base["duration_s"])
    lp, lb = report["latency_ms"]["p50"], base["latency_ms"]["p50"]
    return {"pipeline_fps_median": p, "baseline_fps_median": b,
            "throughput_ratio": round(p / b, 3) if b else None,
            "pipeline_latency_p50_ms": lp, "baseline_latency_p50_ms": lb,
            "latency_p50_ratio": round(lp / lb, 3) if lb else None}
