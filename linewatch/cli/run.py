"""`linewatch run`: the inspection daemon of one station (what the systemd unit starts)."""

from __future__ import annotations

import argparse
from typing import Any

from linewatch.engines.factory import CHOICES as BACKEND_CHOICES
from linewatch.engines.openvino import PRECISIONS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the inspection daemon of one station (camera -> model -> decisions -> ZeroMQ)",
        description=(
            "Run the inspection daemon with a station profile. Logs go to stdout (JSON on a pipe, "
            "console on a terminal). SIGTERM drains (every frame decided) and exits 0; SIGHUP reloads the "
            "[decision] section of the profile. Under systemd (Type=notify) it sends READY=1, STATUS= and "
            "WATCHDOG=1. See docs/operations.md."
        ),
    )
    p.add_argument("--profile", metavar="TOML", default=None,
                   help="station profile (default: the embedded demo profile: synthetic line, shipped model)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                   help="log rendering (default auto: console on a terminal, JSON otherwise)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--duration", type=float, metavar="S", default=None,
                   help="drain and exit after S seconds (default: run until SIGTERM)")
    p.add_argument("--max-frames", type=int, metavar="N", default=None,
                   help="drain and exit once N frames are decided (frames already in flight are decided too)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="override the profile's model.backend")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="override the profile's model.precision (openvino: auto = bf16 where the CPU has it, else f32)")
    p.add_argument("--endpoint", metavar="URL", default=None, help="override the profile's station.endpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from linewatch.errors import UsageError
    from linewatch.logs import configure, get_logger
    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import default_profile, load_profile

    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration {args.duration}: must be > 0 seconds")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames {args.max_frames}: must be >= 1")
    configure(args.log_format, args.log_level)
    profile = load_profile(args.profile) if args.profile else default_profile()
    if args.endpoint:
        profile = profile.model_copy(update={"station": profile.station.model_copy(update={"endpoint": args.endpoint})})
    log = get_logger("linewatch.daemon", station=profile.station.name)
    log.info("starting", profile=args.profile or "<embedded demo>", endpoint=profile.station.endpoint)
    daemon = Daemon(profile, profile_path=args.profile, backend=args.backend, precision=args.precision, max_frames=args.max_frames,
                    duration_s=args.duration, log=log)
    daemon.install_signal_handlers()
    return daemon.run_until_stopped()
