"""`linewatch demo`: the embedded default, end to end, with nothing but the base install."""

from __future__ import annotations

import argparse

from linewatch.engines.factory import CHOICES as BACKEND_CHOICES
from linewatch.engines.openvino import PRECISIONS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the live demo on the embedded default (simulated line, shipped model)")
    p.add_argument("--frames", type=int, default=300, help="frames the simulated line sends (default 300)")
    p.add_argument("--fps", type=float, default=None, help="simulated line rate (default: the profile's, 25)")
    p.add_argument("--out", default=None, help="also write a small synthetic set and its preview here")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="engine (default: the profile's, auto = openvino on a CPU)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="openvino precision (default: the profile's, auto = bf16 where the CPU has it, else f32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from linewatch.demo import run_demo

    return run_demo(frames=args.frames, fps=args.fps, out=args.out, backend=args.backend, precision=args.precision)
