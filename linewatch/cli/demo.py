"""`linewatch demo`: the embedded default, end to end, with nothing but the base install."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.args import add_backend, add_command, add_precision


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "demo", run,
                    help="run the live demo on the embedded default (simulated line, shipped model)")
    p.add_argument("--frames", type=int, default=300, help="frames the simulated line sends (default 300)")
    p.add_argument("--fps", type=float, default=None, help="simulated line rate (default: the profile's, 25)")
    p.add_argument("--out", default=None, help="also write a small synthetic set and its preview here")
    add_backend(p, help="engine (default: the profile's, auto = openvino on a CPU)")
    add_precision(p, help="openvino precision (default: the profile's, auto = bf16 where the CPU has it, else f32)")


def run(args: argparse.Namespace) -> int:
    from linewatch.demo import run_demo

    return run_demo(frames=args.frames, fps=args.fps, out=args.out, backend=args.backend, precision=args.precision)
