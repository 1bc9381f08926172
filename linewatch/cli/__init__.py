"""The `linewatch` command.

Each subcommand lives in its own small module under `linewatch.cli` that defines
`register(subparsers)` and `run(args) -> int`. Those modules import nothing heavy at module
level (no torch, no onnxruntime): the heavy modules are imported inside `run`, so
`linewatch --help` and the daemon's commands never pull torch in. Options and helpers several
commands share live in `linewatch.cli.args`.

Errors: a `LinewatchError` is printed as `linewatch COMMAND: error: MESSAGE` (exit status 2), the
settings it names in backquotes (`pos_weight`) replaced by the command's options (--pos-weight).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from linewatch import __version__
from linewatch.cli.args import option_names, with_options
from linewatch.errors import LinewatchError

# (subcommand, module under linewatch.cli). Order is the order of `linewatch --help`.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("demo", "demo"),
    ("run", "run"),
    ("subscribe", "subscribe"),
    ("hmi", "hmi"),
    ("reload", "reload"),
    ("archive", "archive"),
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
    """The parser of every subcommand of `COMMANDS`; a command module that fails to import raises."""
    parser = argparse.ArgumentParser(
        prog="linewatch",
        description="Real-time camera line inspection for battery-cell production.",
    )
    parser.add_argument("--version", action="version", version=f"linewatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module in COMMANDS:
        importlib.import_module(f"linewatch.cli.{module}").register(sub)
        cmd = sub.choices[command]
        cmd.set_defaults(option_names=option_names(cmd))
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
        message = with_options(str(exc), args.option_names)
        print(f"linewatch {args.command}: error: {message}", file=sys.stderr)
        return 2
