"""`linewatch run`: the inspection daemon of one station (what the systemd unit starts)."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.cli.args import add_backend, add_command, add_log_level, add_precision, add_profile, check_min


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "run", run,
        help="run the inspection daemon of one station (camera -> model -> decisions -> ZeroMQ)",
        description=(
            "Run the inspection daemon with a station profile. Logs go to stdout (JSON on a pipe, "
            "console on a terminal). SIGTERM drains (every frame decided) and exits 0; SIGHUP reloads the "
            "[decision] section of the profile. Under systemd (Type=notify) it sends READY=1, STATUS= and "
            "WATCHDOG=1. See docs/operations.md."
        ),
    )
    p.set_defaults(holds_signals=True)  # let in by `run` once the daemon's handlers are in place
    add_profile(p)
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                   help="log rendering (default auto: console on a terminal, JSON otherwise)")
    add_log_level(p, default="info")
    p.add_argument("--duration", type=float, metavar="S", default=None,
                   help="drain and exit after S seconds (default: run until SIGTERM)")
    p.add_argument("--max-frames", type=int, metavar="N", default=None,
                   help="drain and exit once N frames are decided (frames already in flight are decided too)")
    add_backend(p)
    add_precision(p)
    p.add_argument("--endpoint", metavar="URL", default=None, help="override the profile's station.endpoint")


def run(args: argparse.Namespace) -> int:
    from linewatch.errors import UsageError
    from linewatch.logs import configure, get_logger
    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import default_profile, load_profile

    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration {args.duration}: must be > 0 seconds")
    check_min("--max-frames", args.max_frames, 1)
    configure(args.log_format, args.log_level)
    profile = load_profile(args.profile) if args.profile else default_profile()
    if args.endpoint:
        profile = profile.model_copy(update={"station": profile.station.model_copy(update={"endpoint": args.endpoint})})
    log = get_logger("linewatch.daemon", station=profile.station.name)
    log.info("starting", profile=args.profile or "<embedded demo>", endpoint=profile.station.endpoint)
    daemon = Daemon(profile, profile_path=args.profile, backend=args.backend, precision=args.precision, max_frames=args.max_frames,
                    duration_s=args.duration, log=log)
    daemon.install_signal_handlers()
    release = getattr(args, "release_signals", None)
    if release is not None:  # a SIGTERM or SIGHUP held since start-up reaches the handlers now
        release()
    return daemon.run_until_stopped()
