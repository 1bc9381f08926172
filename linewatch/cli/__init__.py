"""The `linewatch` command.

Each subcommand lives in its own small module under `linewatch.cli` that defines
`register(subparsers)` and `run(args) -> int`. Those modules import nothing heavy at module
level (no torch, no onnxruntime): the heavy modules are imported inside `run`, so
`linewatch --help` and the daemon's commands never pull torch in.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from linewatch import __version__
from linewatch.errors import LinewatchError

# (subcommand, module under linewatch.cli). Order is the order of `linewatch --help`.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("demo", "demo"),
    ("run", "run"),
    ("subscribe", "subscribe"),
    ("reload", "reload"),
    ("bench", "bench"),
    ("infer", "infer"),
    ("synth", "synth"),
    ("data", "data"),
    ("train", "train"),
    ("evaluate", "evaluate"),
    ("ablate", "ablate"),
    ("export", "export"),
    ("build-engine", "build_engine"),
    ("calibrate", "calibrate"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linewatch",
        description="Real-time camera line inspection for battery-cell production.",
    )
    parser.add_argument("--version", action="version", version=f"linewatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _command, module in COMMANDS:
        try:
            mod = importlib.import_module(f"linewatch.cli.{module}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"linewatch.cli.{module}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except LinewatchError as exc:
        print(f"linewatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
