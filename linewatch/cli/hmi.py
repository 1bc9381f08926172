"""`linewatch hmi`: the operator page, a separate process subscribed to a daemon (docs/hmi.md).

Starlette and uvicorn (the `hmi` extra) are imported in `run` only: `linewatch --help` never imports them,
and without the extra the command fails naming `pip install 'linewatch[hmi]'`.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
from pathlib import Path
from types import FrameType

from linewatch.cli.args import add_command, add_curve
from linewatch.errors import UsageError
from linewatch.protocol import DEFAULT_ENDPOINT

DEFAULT_BIND = "127.0.0.1:8080"
DEFAULT_SHIFTS = ("06:00", "14:00", "22:00")
"""= linewatch.record.read.DEFAULT_SHIFTS (not imported here: it pulls numpy in; a test checks they agree)."""
EXTRA = ("starlette", "uvicorn")

DESCRIPTION = """\
Serve the operator page of a running daemon: per camera the latest overlay, state, decisions/s and
latency; for the station inspected, passed, rejected by reason, yield since start / this hour / this
shift, rejects per minute, and a fail-safe banner when the daemon falls silent or messages are lost.
It subscribes to the daemon like any gateway (the daemon is not slowed). Read-only: no endpoint changes
anything. Stop with Ctrl-C or SIGTERM (exit status 0).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "hmi", run, help="serve the operator page (web) of a running daemon",
                    description=DESCRIPTION, raw=True)
    p.add_argument("--connect", default=DEFAULT_ENDPOINT, metavar="URL",
                   help="the daemon's PUB endpoint (default: %(default)s)")
    p.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT",
                   help="where the page listens (default: %(default)s; 0.0.0.0:8080 for other machines)")
    p.add_argument("--archive", type=Path, default=None, metavar="DIR",
                   help="the station record's folder: adds the last rejects and their kept frames")
    p.add_argument("--shifts", default=",".join(DEFAULT_SHIFTS), metavar="HH:MM,...",
                   help="shift starts, local time (default: %(default)s)")
    p.add_argument("--heartbeat-timeout", type=float, default=None, metavar="S",
                   help="silent after S s without a heartbeat (default: 3 x the daemon's interval_s)")
    add_curve(p)


def parse_bind(text: str) -> tuple[str, int]:
    """"HOST:PORT" -> (host, port); UsageError naming the value and the form."""
    host, sep, port = text.rpartition(":")
    try:
        n = int(port)
    except ValueError:
        n = -1
    if not sep or not host or not 0 <= n <= 65535:
        raise UsageError(f"--bind {text!r}: must be HOST:PORT with a port 0..65535 (e.g. {DEFAULT_BIND})")
    return host.strip("[]"), n


def check_extra() -> None:
    """UsageError naming the install command when the `hmi` extra is missing."""
    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"linewatch hmi needs {', '.join(missing)} (the hmi extra): pip install 'linewatch[hmi]'")


def run(args: argparse.Namespace) -> int:
    from linewatch.errors import SettingError
    from linewatch.hmi.aggregate import parse_shifts
    from linewatch.subscribe import CurveClient

    host, port = parse_bind(args.bind)
    shifts = tuple(s.strip() for s in str(args.shifts).split(",") if s.strip())
    try:
        parse_shifts(shifts)
    except SettingError as exc:
        raise UsageError(str(exc).replace("`shifts`", "--shifts")) from exc
    if args.heartbeat_timeout is not None and args.heartbeat_timeout <= 0:
        raise UsageError(f"--heartbeat-timeout {args.heartbeat_timeout}: must be > 0 seconds")
    if (args.curve_server_key is None) != (args.curve_client_cert is None):
        raise UsageError("CURVE needs both --curve-server-key and --curve-client-cert")
    if args.archive is not None and not args.archive.is_dir():
        raise UsageError(f"--archive {args.archive}: no such folder (the station record's [archive] dir)")
    curve = None if args.curve_server_key is None else CurveClient(args.curve_server_key, args.curve_client_cert)
    check_extra()
    from linewatch.hmi.server import serve

    def ready(url: str) -> None:
        print(f"linewatch hmi: serving {url} (daemon {args.connect})", file=sys.stderr, flush=True)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)  # SIGTERM is the ordinary stop: uvicorn shuts down, then re-raises it here

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        serve(args.connect, host=host, port=port, archive=args.archive, curve=curve, shifts=shifts,
              heartbeat_timeout=args.heartbeat_timeout, ready=ready)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
