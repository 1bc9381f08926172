"""`linewatch hmi`: the operator page, a separate process subscribed to a daemon (docs/hmi.md).

Starlette and uvicorn (the `hmi` extra) are imported in `run` only: `linewatch --help` never imports them,
and without the extra the command fails naming `pip install 'linewatch[hmi]'`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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
DEFAULT_NICE = 10
"""`--nice`: the page is a side consumer; it must never take CPU the decisions need (the station record's
writer thread runs at the same nice value)."""

DESCRIPTION = """\
Serve the operator page of a running daemon: per camera the latest overlay, state, decisions/s and
latency; for the station inspected, passed, rejected by reason, yield since start / this hour / this
shift, rejects per minute, and a fail-safe banner when the daemon falls silent or messages are lost.
It subscribes to the daemon like any gateway (the daemon is not slowed). Read-only by default: no
endpoint changes anything. With --allow-changes --profile FILE --token-file FILE the page can set the
[decision] thresholds: it rewrites the profile and sends the daemon SIGHUP (same host only), for
whoever presents the token (docs/hmi.md, "Changing thresholds"). Stop with Ctrl-C or SIGTERM (exit
status 0).
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
    p.add_argument("--allow-changes", action="store_true",
                   help="let the page set the thresholds (rewrites --profile, SIGHUPs the daemon); needs "
                        "--profile and --token-file")
    p.add_argument("--profile", type=Path, default=None, metavar="TOML",
                   help="with --allow-changes: the station profile the daemon runs (rewritten in place)")
    p.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help="with --allow-changes: a file holding the secret token (mode 0600 or stricter)")
    p.add_argument("--nice", type=int, default=DEFAULT_NICE, metavar="N",
                   help=f"lower this process's CPU priority by N (0..19, default {DEFAULT_NICE}): on the station "
                        "PC the engine comes first, the page takes what is left")
    p.add_argument("--idle", action="store_true",
                   help="run at the idle scheduling class (Linux SCHED_IDLE): the page gets only CPU time nothing "
                        "else wants, so it cannot delay a decision even on a saturated station; the page then "
                        "freezes while the station has no idle time")
    add_curve(p)


def read_token(path: Path) -> str:
    """The token in `path` (surrounding whitespace stripped); UsageError naming the file when it is missing,
    empty, or readable or writable by group/others (its mode must be 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(f"--token-file {path}: cannot read it ({exc.strerror or exc})") from exc
    if mode & 0o077:
        raise UsageError(f"--token-file {path}: mode {mode & 0o777:04o} gives group/others access; it must be "
                         f"0600 or stricter (chmod 600 {path})")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--token-file {path}: cannot read it ({exc})") from exc
    if not token:
        raise UsageError(f"--token-file {path}: empty; put a secret string in it (e.g. `openssl rand -hex 32`)")
    return token


def check_changes(args: argparse.Namespace) -> tuple[Path, str] | None:
    """(profile, token) with --allow-changes, None without; UsageError naming the option or file otherwise."""
    if not args.allow_changes:
        given = [f for f, v in (("--profile", args.profile), ("--token-file", args.token_file)) if v is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} only with --allow-changes (without it the page is read-only)")
        return None
    missing = [f for f, v in (("--profile", args.profile), ("--token-file", args.token_file)) if v is None]
    if missing:
        raise UsageError(f"--allow-changes needs {' and '.join(missing)} (the station profile the daemon runs, "
                         "and a file holding the secret token)")
    profile: Path = args.profile
    if not profile.is_file():
        raise UsageError(f"--profile {profile}: no such file (the station profile the daemon runs)")
    real = profile.resolve()
    if not (os.access(real, os.R_OK | os.W_OK) and os.access(real.parent, os.W_OK)):
        raise UsageError(f"--profile {profile}: this user cannot rewrite it (it needs write access to the file "
                         f"and to its folder {real.parent})")
    token = read_token(args.token_file)
    from linewatch.profile import load_profile

    load_profile(profile)  # ProfileError (exit 2) naming the key when it does not validate now
    return profile, token


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

    if not 0 <= args.nice <= 19:
        raise UsageError(f"--nice {args.nice}: must be 0..19 (0 = the daemon's priority)")
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
    allowed = check_changes(args)
    check_extra()
    from linewatch.hmi.server import Changes, serve

    changes = None
    if allowed is not None:
        from linewatch.logs import configure

        configure("auto", "info", stream=sys.stderr)  # the `thresholds changed` lines
        changes = Changes(profile=allowed[0], token=allowed[1], connect=args.connect)

    def ready(url: str) -> None:
        mode = f"changes allowed, profile {changes.profile}" if changes else "read-only"
        print(f"linewatch hmi: serving {url} (daemon {args.connect}; {mode})", file=sys.stderr, flush=True)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)  # SIGTERM is the ordinary stop: uvicorn shuts down, then re-raises it here

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        serve(args.connect, host=host, port=port, archive=args.archive, curve=curve, shifts=shifts,
              heartbeat_timeout=args.heartbeat_timeout, ready=ready, changes=changes, nice=args.nice,
              idle=args.idle)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
