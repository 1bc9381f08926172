"""`linewatch bench`: sustained throughput and latency of the whole pipeline (see linewatch/bench.py)."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch import jsonfile
from linewatch.bench.config import BASELINES, PACES, PIXELS, SOURCES
from linewatch.cli.args import (
    BACKENDS,
    add_backend,
    add_command,
    add_log_level,
    add_max_batch,
    add_model,
    add_precision,
    add_profile,
)


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "bench", run,
        help="measure the whole pipeline: sustained frames/s and capture -> subscriber latency",
        description=(
            "Run the real pipeline in this process (acquisition, ring, engine, inference worker, decisions, "
            "publisher) with a live subscriber in a second process on a free loopback port, and report the "
            "sustained decisions/s (median and minimum 1-s window), the latency from capture to the subscriber's "
            "receipt (p50/p95/p99/max), time per stage, drops and fail-safe decisions, frames without a decision, "
            "CPU and peak memory. Default pacing: closed loop (the simulated camera is triggered when the ring has "
            "room, nothing is dropped). Exit status 1 when the minimum window of inferred decisions is below "
            "--min-fps or a frame got no decision; 2 on a usage error."
        ),
    )
    add_profile(p)
    p.add_argument("--source", choices=SOURCES, default="synthetic",
                   help="synthetic: the bench's paced simulated camera over a prerendered pool (one per profile "
                        "camera); genicam/replay: the profile's own cameras (default synthetic)")
    add_backend(p)
    p.add_argument("--engine", dest="backend", choices=BACKENDS, default=None,
                   help="alias of --backend (`--engine null`: the instant engine, the pipeline's own ceiling)")
    add_model(p, help="override the profile's model (default: the profile's, engines/resse-default.onnx)")
    p.add_argument("--duration", dest="duration_s", type=float, metavar="S", default=30.0, help="measured seconds (default 30)")
    p.add_argument("--warmup", dest="warmup_s", type=float, metavar="S", default=3.0,
                   help="seconds of traffic before the measurement (default 3)")
    p.add_argument("--pace", choices=PACES, default=None,
                   help="source pacing: backpressure = closed loop, no drops (default); fixed = a line camera at "
                        "--fps (drops when the ring is full); free = as fast as the source can (drops counted)")
    p.add_argument("--fps", type=float, metavar="F", default=None,
                   help="source rate for --pace fixed (giving --fps alone implies --pace fixed)")
    p.add_argument("--inflight", type=int, metavar="N", default=None,
                   help="backpressure: at most N frames in the ring (default auto: the largest batch size n "
                        "whose engine time t(n) has 2 t(n) <= half the profile's deadline)")
    add_precision(p)
    add_max_batch(p)
    p.add_argument("--min-fps", type=float, metavar="F", default=25.0,
                   help="fail (exit 1) when the minimum 1-s window of inferred decisions is below F (default 25)")
    p.add_argument("--pool", type=int, metavar="N", default=32,
                   help="synthetic frames rendered up front and cycled (default 32)")
    p.add_argument("--pixels", choices=PIXELS, default="copy",
                   help="copy: one frame copy into the ring slot per frame, like a camera source (default); "
                        "reuse: slots filled once, no per-frame copy (isolates the copy cost)")
    p.add_argument("--overlays", action=argparse.BooleanOptionalAction, default=True,
                   help="publish overlays as the profile says (default) or none (--no-overlays)")
    p.add_argument("--baseline", dest="baselines", nargs="+", choices=BASELINES, default=[], metavar="LOOP",
                   help="also run the plain loop a user would write, on the same frames, and compare: torch (PyTorch "
                        "eager FP32, same device), openvino (OpenVINO's documented loop, same model and precision); "
                        "one or both")
    p.add_argument("--baseline-duration", dest="baseline_duration_s", type=float, metavar="S", default=None,
                   help="seconds of the baseline loop (default: min(--duration, 10))")
    p.add_argument("--archive", metavar="DIR", default=None,
                   help="journal every decision into the station record in DIR (the profile's [archive] settings "
                        "when it has them): what the record costs; the report says whether it kept up")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    p.add_argument("--save", metavar="PATH", default=None, help="also write the JSON report to PATH")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    add_log_level(p, default="warning", help="log level of the pipeline's logs on stderr (default warning)")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from linewatch.bench import BenchConfig, BenchProgress, exit_status, format_report, run_bench
    from linewatch.logs import configure
    from linewatch.profile import default_profile, load_profile

    configure("auto", args.log_level, stream=sys.stderr)
    pace = args.pace or ("fixed" if args.fps else "backpressure")
    cfg = BenchConfig(
        profile=load_profile(args.profile) if args.profile else default_profile(),
        source=args.source,
        backend=args.backend,
        precision=args.precision,
        model=args.model,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        pace=pace,
        fps=args.fps or 0.0,
        inflight=args.inflight,
        max_batch=args.max_batch,
        min_fps=args.min_fps,
        pool=args.pool,
        pixels=args.pixels,
        overlays=args.overlays,
        baselines=tuple(dict.fromkeys(args.baselines)),
        baseline_duration_s=args.baseline_duration_s,
        archive=Path(args.archive) if args.archive else None,
    )
    progress = None
    if not args.quiet:
        progress = BenchProgress()
    report = run_bench(cfg, progress=progress)
    if progress is not None:
        progress.done()
    text = jsonfile.dumps(report, indent=2)
    if args.save:
        Path(args.save).write_text(text + "\n", encoding="utf-8")
    print(text if args.json else format_report(report))
    return exit_status(report)
