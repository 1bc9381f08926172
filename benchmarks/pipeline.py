"""The pipeline benchmark sweep behind docs/results.md ("Pipeline benchmark"): `linewatch bench` in
several configurations, one Markdown table.

    python benchmarks/pipeline.py                                   # CPU set, the profile's model
    python benchmarks/pipeline.py --model engines/resse-default.onnx --runs 3 --duration 15
    python benchmarks/pipeline.py --set gpu --json                  # GPU set (backend torch, tensorrt if present)

Every row is one `linewatch.bench.run_bench` (a fresh daemon, engine and subscriber process); with
`--runs N` each configuration runs N times and the table shows the median of the runs' medians
(and the worst minimum window). The machine's load average is printed with every row: on a shared
box the absolute numbers move with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linewatch.bench import BenchConfig, run_bench  # noqa: E402
from linewatch.profile import default_profile  # noqa: E402

SETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "cpu": [
        ("null engine", {"backend": "null"}),
        ("null engine, no copy, no overlays", {"backend": "null", "pixels": "reuse", "overlays": False}),
        ("onnxruntime, max_batch 8", {"backend": "onnxruntime"}),
        ("onnxruntime, max_batch 1", {"backend": "onnxruntime", "max_batch": 1, "baseline": "torch"}),
        ("onnxruntime, max_batch 2", {"backend": "onnxruntime", "max_batch": 2}),
        ("onnxruntime, line at 25 fps", {"backend": "onnxruntime", "pace": "fixed", "fps": 25.0}),
    ],
    "gpu": [
        ("null engine", {"backend": "null"}),
        ("null engine, no copy, no overlays", {"backend": "null", "pixels": "reuse", "overlays": False}),
        ("torch fp16 graphs, max_batch 8", {"backend": "torch", "baseline": "torch"}),
        ("torch, max_batch 16", {"backend": "torch", "max_batch": 16}),
        ("torch, no copy, no overlays", {"backend": "torch", "pixels": "reuse", "overlays": False}),
        ("tensorrt fp16, max_batch 8", {"backend": "tensorrt"}),
    ],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=sorted(SETS), default="cpu")
    ap.add_argument("--model", default=None, help="ONNX model (default: the profile's, engines/resse-default.onnx)")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", default=None, help="run only the rows whose label contains this text")
    ap.add_argument("--json", action="store_true", help="print every report as JSON lines instead of the table")
    args = ap.parse_args(argv)

    from linewatch.engines.factory import list_backends
    from linewatch.logs import configure

    configure("auto", "warning", stream=sys.stderr)  # the table (or JSON) alone on stdout
    avail = list_backends()
    print("| configuration | inferred fps median (min window) | latency p50 / p99 / max ms | fail-safe | "
          "CPU cores | × eager | load |", file=sys.stderr if args.json else sys.stdout)
    if not args.json:
        print("|---|---|---|---|---|---|---|")
    for label, over in SETS[args.set]:
        if args.only and args.only not in label:
            continue
        backend = over.get("backend", "auto")
        if backend != "null" and not avail.get(backend, (True, ""))[0]:
            print(f"| {label} | skipped: {avail[backend][1]} | | | | | |")
            continue
        reports = []
        for _ in range(args.runs):
            cfg = BenchConfig(default_profile(), model=Path(args.model) if args.model else None,
                              duration_s=args.duration, warmup_s=args.warmup, min_fps=0.0, **over)
            r = run_bench(cfg)
            reports.append(r)
            if args.json:
                print(json.dumps(r))
        if not args.json:
            print(row(label, reports), flush=True)
    return 0


def row(label: str, reports: list[dict[str, Any]]) -> str:
    med = statistics.median(r["throughput"]["inferred_fps"]["median"] for r in reports)
    worst = min(r["throughput"]["inferred_fps"]["min"] for r in reports)
    lat = [r["latency_ms"] for r in reports]
    p50 = statistics.median(x["p50"] for x in lat)
    p99 = statistics.median(x["p99"] for x in lat)
    mx = max(x["max"] for x in lat)
    fs = sum(r["measured"]["failsafe"] for r in reports)
    cores = statistics.median(r["resources"]["cpu_cores_used"] for r in reports)
    ratios = [r["comparison"]["throughput_ratio"] for r in reports if r.get("comparison")]
    ratio = f"{statistics.median(ratios):.2f}" if ratios else ""
    load = "/".join(f"{r['bench']['host']['loadavg_before'][0]:.1f}" for r in reports)
    return (f"| {label} | {med:.1f} ({worst:.0f}) | {p50:.1f} / {p99:.1f} / {mx:.1f} | {fs} | {cores:.2f} | "
            f"{ratio} | {load} |")


if __name__ == "__main__":
    raise SystemExit(main())
