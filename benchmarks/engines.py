"""Engine-only throughput and latency of every available backend, beside plain PyTorch eager FP32.

    python benchmarks/engines.py                      # everything available here, Markdown table
    python benchmarks/engines.py --json               # the same as JSON
    python benchmarks/engines.py --model engines/<model>.onnx --batches 1,8,32

What is measured: `engine.infer(frames)` on uint8 frames [N, H, W, 3] already in host memory, up to
the masks and scores in host memory (for GPU engines: H2D copy, the network, D2H copies). The
baseline is the loop a user would write, on the same device: `DeployNet` (uint8 NHWC in, the
normalisation inside) called as `net(torch.from_numpy(x))` under `torch.no_grad()`, FP32 eager —
with `.to(device)` / `.cpu()` on CUDA. "× eager" = engine frames/s ÷ eager frames/s, same device.
Engine and eager calls alternate (A, B, A, B, ...), so that both see the same load on a shared
machine; the ratio is the robust number there, the absolute rates move with the load.

Variants (run when available): `openvino:f32`, `openvino:bf16` (where the CPU has native bf16),
`openvino:int8` (where the manifest names an INT8 model, `linewatch export --int8`), `onnxruntime` (CPU),
`tensorrt:fp16` (builds the plan into the
model's folder when missing), `torch:fp16` and `torch:fp32` (CUDA graphs); `null` on request.
Without `--model` the one `engines/*.onnx` is used, or, when there is none, a freshly initialised
ResSENet of the default `NetworkConfig` (512x1224, depth v2, ResSE v1) is exported to a temporary
folder: its speed is the real model's (same graph and sizes), its scores are meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# torch's OpenMP threads busy-wait after every eager call by default, which takes the cores from the
# engine call interleaved right after it: let them sleep (set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linewatch.engines.base import physical_cores  # noqa: E402
from linewatch.engines.factory import cuda_device_count, list_backends, open_engine  # noqa: E402
from linewatch.engines.manifest import load_manifest  # noqa: E402

VARIANTS = ("openvino:f32", "openvino:bf16", "openvino:int8", "onnxruntime", "tensorrt:fp16", "torch:fp16",
            "torch:fp32", "null")
DEFAULT_VARIANTS = VARIANTS[:-1]


def stats(lat: list[float], n: int) -> dict[str, float]:
    lat_sorted = sorted(lat)
    p95 = lat_sorted[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    return {
        "iters": len(lat),
        "fps": n * len(lat) / sum(lat),
        "fps_median": n / statistics.median(lat),
        "latency_median_ms": 1e3 * statistics.median(lat),
        "latency_p95_ms": 1e3 * p95,
    }


def measure(
    fns: list[Callable[[np.ndarray], Any]], frames: np.ndarray, warmup: int, min_iters: int, min_s: float, max_s: float
) -> list[dict[str, float]]:
    """Time each of `fns` on `frames`, interleaved (A, B, A, B, ...) so that both see the same load.

    Runs until every fn made min_iters calls and min_s seconds passed (stops at max_s once each
    made 3 calls). Returns one stats dict per fn.
    """
    for fn in fns:
        for _ in range(warmup):
            fn(frames)
    lat: list[list[float]] = [[] for _ in fns]
    t0 = time.perf_counter()
    while True:
        for fn, out in zip(fns, lat, strict=True):
            t = time.perf_counter()
            fn(frames)
            out.append(time.perf_counter() - t)
        calls = len(lat[0])
        elapsed = time.perf_counter() - t0
        if (calls >= min_iters and elapsed >= min_s) or (elapsed >= max_s and calls >= 3):
            break
    return [stats(x, len(frames)) for x in lat]


def default_model(tmp: Path) -> tuple[Path, str]:
    found = sorted((ROOT / "engines").glob("*.onnx"))
    if len(found) == 1:
        return found[0], f"shipped model {found[0].name}"
    import torch

    from linewatch.model.export import export_onnx
    from linewatch.model.resse import build_model

    torch.manual_seed(0)
    model = build_model()
    out = tmp / "resse-default-config.onnx"
    export_onnx(model, out, self_check=False)
    cfg = model.cfg
    return out, (
        f"representative model: untrained ResSENet, default NetworkConfig (depth {cfg.depth}, ResSE {cfg.resse}, "
        f"widths {list(cfg.widths)}, {cfg.input_height}x{cfg.input_width})"
    )


def eager_baseline(model_path: Path, device: str) -> Callable[[np.ndarray], Any]:
    """The plain PyTorch FP32 loop a user would write, on `device`."""
    import torch

    from linewatch.model.export import load_model
    from linewatch.model.resse import DeployNet

    man, onnx = load_manifest(model_path, verify=False)
    net = DeployNet(load_model(onnx.parent / man.weights)).to(device).eval()
    if device == "cpu":
        torch.set_num_threads(physical_cores())

        def run_cpu(x: np.ndarray) -> Any:
            with torch.no_grad():
                masks, scores = net(torch.from_numpy(x))
            return masks.numpy(), scores.numpy()

        return run_cpu

    def run_cuda(x: np.ndarray) -> Any:
        with torch.no_grad():
            masks, scores = net(torch.from_numpy(x).to(device))
            return masks.cpu().numpy(), scores.cpu().numpy()

    return run_cuda


def available_variants(wanted: tuple[str, ...], model_path: Path) -> tuple[list[str], dict[str, str]]:
    backends = list_backends()
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for v in wanted:
        name, _, precision = v.partition(":")
        avail, why = backends[name]
        if name == "openvino" and avail and precision == "bf16":
            from linewatch.engines.openvino import native_bf16

            avail, why = native_bf16(), "this CPU has no native bf16"
        if name == "openvino" and avail and precision == "int8":
            avail, why = bool(load_manifest(model_path)[0].int8), "no INT8 model (linewatch export --int8)"
        if name == "torch" and avail:
            import torch

            if not torch.cuda.is_available():
                avail, why = False, f"torch {torch.__version__} has no CUDA"
        if avail:
            ok.append(v)
        else:
            skipped[v] = why
    return ok, skipped


def ensure_plan(model_path: Path, max_batch: int) -> None:
    """Build the FP16 TensorRT plan for `max_batch` when none fits (as a user would, once)."""
    from linewatch.engines.build import build_plan, find_plan, gpu_name
    from linewatch.errors import EngineError

    man, onnx = load_manifest(model_path)
    import tensorrt as trt

    try:
        find_plan(onnx, man.sha256, gpu_name(0), str(trt.__version__), max_batch, "fp16")
    except EngineError:
        print(f"building the TensorRT FP16 plan (max batch {max_batch}) ...", file=sys.stderr)
        build_plan(onnx, onnx_sha256=man.sha256, input_hw=man.input_hw, fp16=True, max_batch=max_batch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: engines/*.onnx or a representative one)")
    ap.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes (default: 1,8,32)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--no-eager", action="store_true", help="skip the PyTorch eager baseline")
    ap.add_argument("--side-by-side", action="store_true",
                    help="interleave the variants with one another (A, B, C, A, ...) instead of each with eager "
                         "(CPU variants: the fair comparison; no eager column)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per batch size (default: 2)")
    ap.add_argument("--min-iters", type=int, default=5, help="timed calls per batch size, at least (default: 5)")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per batch size, at least (default: 2)")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="stop a batch size after this, once 3 calls ran (default: 20)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = ap.parse_args(argv)

    batches = [int(b) for b in args.batches.split(",")]
    wanted = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    bad = [v for v in wanted if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; allowed: {', '.join(VARIANTS)}")
    timing = dict(warmup=args.warmup, min_iters=args.min_iters, min_s=args.min_seconds, max_s=args.max_seconds)

    with tempfile.TemporaryDirectory() as tmpdir:
        model_path, model_note = (args.model, f"model {args.model}") if args.model else default_model(Path(tmpdir))
        man, _ = load_manifest(model_path)
        h, w = man.input_hw
        rng = np.random.default_rng(0)
        frames = rng.integers(0, 256, (max(batches), h, w, 3), dtype=np.uint8)
        variants, skipped = available_variants(wanted, model_path)
        rows: list[dict[str, Any]] = []
        eager_fns: dict[str, Callable[[np.ndarray], Any]] = {}

        def eager_fn(device: str) -> Callable[[np.ndarray], Any] | None:
            if args.no_eager or device == "none":
                return None
            if device not in eager_fns:
                eager_fns[device] = eager_baseline(model_path, device)
            return eager_fns[device]

        def open_variant(v: str) -> tuple[Any, np.ndarray, str]:
            name, _, precision = v.partition(":")
            opts: dict[str, Any] = {"precision": precision} if precision else {}
            if name == "tensorrt":
                ensure_plan(model_path, max(batches))
            engine = open_engine(model_path, backend=name, max_batch=max(batches), **opts)
            src = frames
            if hasattr(engine, "host_empty"):  # GPU engines: frames in page-locked memory, as the ring has them
                src = engine.host_empty(frames.shape, np.uint8)
                np.copyto(src, frames)
            return engine, src, "cuda" if engine.pinned else ("none" if name == "null" else "cpu")

        if args.side_by_side:
            opened = {v: open_variant(v) for v in variants}
            for n in batches:
                print(f"  batch {n}: {', '.join(variants)} interleaved ...", file=sys.stderr)
                measured = measure([opened[v][0].infer for v in variants], frames[:n], **timing)
                for v, r in zip(variants, measured, strict=True):
                    rows.append({"variant": v, "device": opened[v][0].device, "batch": n, **r, "eager_fps": None,
                                 "eager_latency_median_ms": None, "x_eager": None})
            for engine, _, _ in opened.values():
                engine.close()
            variants = []
        for v in variants:
            engine, src, kind = open_variant(v)
            for n in batches:
                print(f"  {v} batch {n} (interleaved with eager fp32) ...", file=sys.stderr)
                base_fn = eager_fn("cuda:0" if kind == "cuda" else kind)
                measured = measure([engine.infer] + ([base_fn] if base_fn else []), src[:n], **timing)
                r, base = measured[0], (measured[1] if base_fn else None)
                rows.append({
                    "variant": v, "device": engine.device, "batch": n, **r,
                    "eager_fps": base["fps"] if base else None,
                    "eager_latency_median_ms": base["latency_median_ms"] if base else None,
                    "x_eager": r["fps"] / base["fps"] if base else None,
                })
            engine.close()

    import onnxruntime

    ort_fps = {r["batch"]: r["fps_median"] for r in rows if r["variant"] == "onnxruntime"}
    for r in rows:  # medians: one slow call (another process on a shared machine) moves a mean, not a median
        r["x_onnxruntime"] = r["fps_median"] / ort_fps[r["batch"]] if r["batch"] in ort_fps else None
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": model_note, "input": f"{h}x{w}",
        "cpu": platform.processor() or platform.machine(), "physical_cores": physical_cores(),
        "gpus": cuda_device_count(), "onnxruntime": onnxruntime.__version__, "openvino": _version("openvino"),
        "torch": _version("torch"), "tensorrt": _version("tensorrt"),
    }
    if args.json:
        json.dump({"env": env, "skipped": skipped, "rows": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"Engine benchmark, {env['date']}: {env['model']}; input {env['input']}; "
          f"{env['physical_cores']} physical cores, {env['gpus']} GPU(s); openvino {env['openvino']}, "
          f"onnxruntime {env['onnxruntime']}, "
          f"torch {env['torch']}, tensorrt {env['tensorrt']}\n")
    print("| backend | device | batch | frames/s (mean) | frames/s (median) | latency median (ms) | latency p95 (ms) "
          "| eager FP32 frames/s | × eager | × onnxruntime (medians) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ef = f"{r['eager_fps']:.1f}" if r["eager_fps"] else "-"
        xe = f"{r['x_eager']:.2f}" if r["x_eager"] else "-"
        xo = f"{r['x_onnxruntime']:.2f}" if r["x_onnxruntime"] else "-"
        print(f"| {r['variant']} | {r['device']} | {r['batch']} | {r['fps']:.1f} | {r['fps_median']:.1f} | "
              f"{r['latency_median_ms']:.1f} | "
              f"{r['latency_p95_ms']:.1f} | {ef} | {xe} | {xo} |")
    for v, why in skipped.items():
        print(f"\nskipped {v}: {why}")
    return 0


def _version(module: str) -> str:
    from linewatch.engines.factory import missing_modules

    if missing_modules(module):
        return "-"
    return str(getattr(__import__(module), "__version__", "?"))


if __name__ == "__main__":
    raise SystemExit(main())
