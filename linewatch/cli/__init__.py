"""The `linewatch` command.

Each subcommand lives in its own small module under `linewatch.cli` that defines
`register(subparsers)` and `run(args) -> int`. Those modules import nothing heavy at module
level (no torch, no onnxruntime): the heavy modules are imported inside `run`, so
`linewatch --help` and the daemon's commands never pull torch in. Options and helpers several
commands share live in `linewatch.cli.args`.

Errors: a `LinewatchError` is printed as `linewatch COMMAND: error: MESSAGE` (exit status 2), the
settings it names in backquotes (`pos_weight`) replaced by the command's options (--pos-weight).

Signals: while `main` builds the parser and reads the command line, SIGTERM, SIGINT and SIGHUP
(`HELD_SIGNALS`) are held: a provisional handler notes them. Before the command runs they are let in
(`release`): the earlier handlers are put back and each signal that came is raised again, with the
action it always had. A command whose parser sets `holds_signals=True` (`linewatch run`) lets them in
itself, once its own handlers are in place (`args.release_signals()`): a SIGTERM or SIGHUP sent while
the daemon starts up is then its drain or its reload, never the default action (the end of the process,
for SIGHUP too). Only the interpreter's start and `import linewatch.cli` come before (some 0.1 s). A
handler, not a blocked mask: numpy's threads, started at import, would take a signal the main thread
blocks.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

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


HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Held while the command line is read (module doc, "Signals")."""


def hold_signals() -> Callable[[], None]:
    """Note `HELD_SIGNALS` instead of acting on them; returns `release`, which puts back the handlers
    that were there (where nobody installed another meanwhile) and raises each noted signal again, in the
    order they first came. `release` acts once; later calls do nothing. Off the main thread (where no
    handler can be set) nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    came: dict[int, None] = {}

    def note(signum: int, _frame: Any) -> None:
        came[signum] = None

    previous = {s: signal.signal(s, note) for s in HELD_SIGNALS}
    done = False

    def release() -> None:
        nonlocal done
        if done:
            return
        done = True
        for s, handler in previous.items():
            if signal.getsignal(s) is note:
                signal.signal(s, handler)
        for signum in came:
            signal.raise_signal(signum)

    return release


def main(argv: Sequence[str] | None = None) -> int:
    release = hold_signals()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except BaseException:
        release()
        raise
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was typed (for `linewatch.cli.args.given_dests`)
    if not getattr(args, "func", None):
        release()
        parser.print_help()
        return 2
    try:
        if getattr(args, "holds_signals", False):
            args.release_signals = release
        else:
            release()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except LinewatchError as exc:
        message = with_options(str(exc), args.option_names)
        print(f"linewatch {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        release()  # a command that ended before it let them in
