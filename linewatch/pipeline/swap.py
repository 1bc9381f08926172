"""A new model for a running daemon: opened, warmed and checked beside the one deciding (SIGHUP).

`prepare(profile, running, ...)` opens the profile's model the way the daemon opens one
(`open_profile_engine`: backend, precision, threads, the OpenVINO -> ONNX Runtime fallback), then
refuses it (`SwapRefused`, the message says why) unless every check passes:

1. the manifest's sha256 matches the ONNX (checked when it is opened);
2. its input size is the running model's: the ring's slots are sized for it (another size needs a
   restart), and so is the engine's kind of host memory (`pinned`, GPU engines);
3. warm-up, then scores on `SAMPLE_CELLS` synthetic cells rendered at the input size: finite, in
   [0, 1], and within `tolerance(engine)` of ONNX Runtime FP32 on the same ONNX (the reference);
4. timing: one frame must fit `linewatch.pipeline.infer.batch_limit`'s budget (2 x t(1) <= half the deadline),
   t(1) the fastest of `TIMING_CALLS` calls made while the running model keeps deciding.

What passes is handed to the inference worker, which switches between two batches
(`InferenceWorker.swap`); the daemon closes the replaced engine. `changed_keys` names what differs
between two profiles, key by key, for the "restart needed" report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from linewatch.errors import LinewatchError

if TYPE_CHECKING:
    from linewatch.engines.base import Engine
    from linewatch.profile import Profile

SAMPLE_CELLS = 4
"""Synthetic cells the self-check scores (fixed seed: the same cells every time)."""
TIMING_CALLS = 8
"""Single-frame calls timed for the deadline check (the fastest counts)."""


class SwapRefused(LinewatchError):
    """A new model was not taken; the message says which check it failed. The old model keeps deciding."""


def model_id(path: str | Path) -> str:
    """A model's id in the protocol: the first 12 hex digits of the manifest's sha256 ("" without a manifest)."""
    from linewatch.engines.manifest import load_manifest
    from linewatch.errors import EngineError

    try:
        man, _ = load_manifest(path, verify=False)
    except EngineError:
        return ""
    return man.sha256[:12]


def model_thresholds(path: str | Path | None) -> dict[str, float]:
    """A model's recommended thresholds per head (its manifest's `thresholds`); {} without a readable manifest."""
    from linewatch.engines.manifest import load_manifest
    from linewatch.errors import EngineError

    if not path:
        return {}
    try:
        man, _ = load_manifest(path, verify=False)
    except EngineError:
        return {}
    return dict(man.thresholds) if isinstance(man.thresholds, dict) else {}


def model_info(engine: Engine, path: str | Path | None) -> dict[str, str]:
    """What a heartbeat says of the model deciding: id, path, backend, device."""
    return {"id": model_id(path) if path else "", "path": str(path or ""), "backend": str(engine.name),
            "device": str(engine.device)}


def tolerance(engine: Engine) -> float:
    """Largest score difference to ONNX Runtime FP32 the self-check accepts, by engine and precision
    (measured on the shipped model: f32 < 1e-6, bf16 <= 0.031, int8 <= 0.42; docs/engines.md)."""
    if engine.name == "onnxruntime":
        return 1e-3
    if engine.name == "openvino":
        return {"f32": 1e-3, "bf16": 0.05, "int8": 0.5}.get(engine.precision, 0.05)
    return 0.05  # tensorrt / torch FP16


def sample_cells(hw: tuple[int, int]) -> np.ndarray:
    from linewatch.bench.source import render_pool

    cells, _ = render_pool(SAMPLE_CELLS, hw, seed=0, defect_rate=0.5)
    return cells


def prepare(profile: Profile, running: Engine, deadline_ns: int, *, backend: str | None = None,
            precision: str | None = None, log: Any = None) -> tuple[Engine, Path, int]:
    """Open and check the profile's model (module doc). Returns (engine, model path, batch limit).
    Raises SwapRefused; an engine it opened is closed again first."""
    from linewatch.engines.factory import open_engine
    from linewatch.pipeline.daemon import open_profile_engine
    from linewatch.pipeline.infer import batch_limit, fits_deadline

    try:
        path = profile.model_path()
        engine = open_profile_engine(profile, backend, precision=precision, log=log)
    except LinewatchError as exc:
        raise SwapRefused(f"cannot open it: {exc}") from exc
    try:
        if tuple(engine.input_hw) != tuple(running.input_hw):
            raise SwapRefused(f"its input size {engine.input_hw[0]}x{engine.input_hw[1]} is not the running model's "
                              f"{running.input_hw[0]}x{running.input_hw[1]} (the ring's slots): restart needed")
        if engine.pinned != running.pinned:
            raise SwapRefused(f"backend {engine.name} needs other host memory than {running.name} (page-locked or "
                              "not): restart needed")
        engine.warmup()
        cells = sample_cells((int(engine.input_hw[0]), int(engine.input_hw[1])))
        n = min(len(cells), engine.max_batch)
        got = engine.infer(cells[:n])[1].copy()
        if not np.isfinite(got).all() or got.min() < 0 or got.max() > 1:
            raise SwapRefused(f"its scores on the sample cells are not finite values in [0, 1]: {got.tolist()}")
        reference = open_engine(path, backend="onnxruntime", max_batch=n)
        try:
            want = reference.infer(cells[:n])[1].copy()
        finally:
            reference.close()
        diff, tol = float(np.abs(got - want).max()), tolerance(engine)
        if diff > tol:
            raise SwapRefused(f"its scores on the sample cells differ from ONNX Runtime FP32 by {diff:.4f} "
                              f"(allowed {tol} on {engine.name})")
        limit, times = batch_limit(engine, deadline_ns)
        t1_ms = _fastest_ms(engine, cells[:1])
        if not fits_deadline(t1_ms * 1e6, deadline_ns):
            raise SwapRefused(f"too slow: one frame takes {t1_ms:.1f} ms; the deadline ({deadline_ns / 1e6:g} ms) "
                              f"allows {deadline_ns / 4e6:g} ms (a frame waits while the one before it runs)")
    except SwapRefused:
        engine.close()
        raise
    except Exception as exc:  # any failure of a check refuses the model; the old one keeps deciding
        engine.close()
        raise SwapRefused(f"its check failed: {type(exc).__name__}: {exc}") from exc
    if log is not None:
        log.info("model_checked", path=str(path), backend=engine.name, device=engine.device,
                 max_abs_diff=round(diff, 6), tolerance=tol, fastest_ms=round(t1_ms, 2), infer_ms=times,
                 max_take=limit)
    return engine, path, limit


def _fastest_ms(engine: Engine, frame: np.ndarray, calls: int = TIMING_CALLS) -> float:
    """The fastest of `calls` single-frame calls (ms): the running model shares the cores meanwhile,
    and the least disturbed call is the closest to what the model costs alone."""
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        engine.infer(frame)
        best = min(best, (time.perf_counter_ns() - t0) / 1e6)
    return best


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The keys whose values differ between two profile sections (dotted, `camera[1].fps`)."""
    a = old.model_dump() if isinstance(old, BaseModel) else old
    b = new.model_dump() if isinstance(new, BaseModel) else new
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                out.append(key)
            else:
                out += changed_keys(a[k], b[k], key)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [k for i, (x, y) in enumerate(zip(a, b, strict=True)) for k in changed_keys(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [prefix]
