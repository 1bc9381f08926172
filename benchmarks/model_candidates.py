"""Speed of ResSENet candidates with ONNX Runtime on this CPU (docs/model.md, "Candidates").

For each candidate: parameters, GMACs / GFLOPs of one frame at the input size (conv + linear
MACs counted with forward hooks; GFLOPs = 2 × GMACs), and the ORT median latency / frames per
second at batch 1 (uint8 NHWC input, the exported graph with cast + normalisation inside;
session with intra_op_num_threads=2, ORT_ENABLE_ALL; warm-up, then `--runs` timed runs).
The machine may be shared: compare ratios to the reference row (the first) of the same run.

    python benchmarks/model_candidates.py [--runs 30] [--threads 2] [--size 512x1224] [--out table.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

CANDIDATES: list[tuple[str, dict]] = [
    # name, NetworkConfig overrides (depth v2 + ResSE v1 unless given)
    ("ref-8-16-32-k3", dict(widths=(8, 16, 32), kernels=(3, 3, 3))),
    ("16-32-64-k3", dict(widths=(16, 32, 64), kernels=(3, 3, 3))),
    ("8-32-64-k3", dict(widths=(8, 32, 64), kernels=(3, 3, 3))),
    ("16-32-64-k335", dict(widths=(16, 32, 64), kernels=(3, 3, 5))),
    ("16-32-64-k3-maxpool", dict(widths=(16, 32, 64), kernels=(3, 3, 3), downsample=("max", "max", "max"))),
    ("16-48-96-k3", dict(widths=(16, 48, 96), kernels=(3, 3, 3))),
    ("16-32-64-k555", dict(widths=(16, 32, 64), kernels=(5, 5, 5))),
    ("32-64-128-k3", dict(widths=(32, 64, 128), kernels=(3, 3, 3))),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="512x1224", help="HxW")
    p.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from linewatch.model.export import export_onnx
    from linewatch.model.resse import build_model, conv_macs, count_parameters

    h, w = (int(v) for v in args.size.lower().split("x"))
    load0 = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    torch.manual_seed(0)
    chosen = [(n, o) for n, o in CANDIDATES if not args.only or n in args.only]
    built = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in chosen:
            model = build_model(input_height=h, input_width=w, **overrides).eval()
            onnx_path = Path(tmp) / f"{name}.onnx"
            export_onnx(model, onnx_path, self_check=False, write_weights=False, write_manifest=False)
            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
            for _ in range(args.warmup):
                sess.run(None, {"image": frame})
            built.append((name, overrides, count_parameters(model), conv_macs(model), sess))
    # interleaved: run r of every candidate, then run r+1 ... so that load from other processes
    # on a shared machine hits every candidate alike and the ratios stay fair
    times: dict[str, list[float]] = {name: [] for name, *_ in built}
    for _ in range(args.runs):
        for name, _ov, _p, _m, sess in built:
            t0 = time.perf_counter()
            sess.run(None, {"image": frame})
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name, overrides, params, macs, _ in built:
        med = statistics.median(times[name])
        rows.append((name, overrides, params, macs, med, min(times[name])))
        print(f"{name:24s} params {params:8d}  GMACs {macs / 1e9:6.3f}  median {med * 1e3:7.2f} ms  "
              f"{1 / med:6.1f} fps  (min {min(times[name]) * 1e3:.2f} ms)", flush=True)

    ref = rows[0][4]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {args.threads} ORT threads; "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}; input {h}×{w}, batch 1; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; median of {args.runs} interleaved runs after {args.warmup} warm-up; "
        f"load average at start {load0:.2f}.",
        "",
        "| candidate | widths | kernels | downsample | params | GMACs | GFLOPs | ORT median ms | ORT min ms | fps (median) | time vs ref |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ov, params, macs, med, best in rows:
        cfg = build_model(input_height=h, input_width=w, **ov).cfg
        lines.append(
            f"| {name} | {'/'.join(map(str, cfg.widths))} | {'/'.join(map(str, cfg.kernels))} | "
            f"{'/'.join(cfg.downsample)} | {params:,} | {macs / 1e9:.3f} | {2 * macs / 1e9:.3f} | "
            f"{med * 1e3:.1f} | {best * 1e3:.1f} | {1 / med:.1f} | {med / ref:.2f} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
