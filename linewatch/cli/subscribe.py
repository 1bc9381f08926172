"""`linewatch subscribe`: print a daemon's messages, one line each (SPEC §6, docs/protocol.md).

It never stops on what it receives: a message that breaks the protocol (`linewatch.subscribe`: the
library checks every header before this module reads it) is one `bad message: <what is wrong>` line on
stderr, and the next messages are printed as before; the count of bad messages is the last line on
stderr when there were any. Ctrl-C (SIGINT) ends it like --timeout does.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from linewatch import jsonfile
from linewatch.cli.args import add_command, add_curve
from linewatch.errors import UsageError
from linewatch.protocol import DEFAULT_ENDPOINT, TOPICS

DESCRIPTION = """\
Print the messages of a running linewatch daemon, one line each (--json: the header as JSON).
Gaps in sequence numbers, daemon restarts, heartbeat loss and recovery are reported on stderr.

A message that breaks the protocol is reported on stderr ("bad message: ...") and skipped.

exit status: 0 when --count messages were printed (or --timeout passed, or Ctrl-C came, without
--count), 1 when --timeout passed or Ctrl-C came before --count was reached, 3 on heartbeat loss or
daemon stop with --exit-on-failsafe, 2 on a usage error.
"""

EXIT_COUNT_NOT_REACHED = 1
EXIT_FAILSAFE = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "subscribe", run,
        help="print a daemon's messages (decisions, rejects, overlays, heartbeats); watch gaps and heartbeats",
        description=DESCRIPTION, raw=True,
    )
    p.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT,
                   help="the daemon's PUB endpoint (default: %(default)s)")
    p.add_argument("--topic", action="append", choices=TOPICS, metavar="TOPIC",
                   help=f"topic to print, repeatable: {', '.join(TOPICS)} (default: all)")
    p.add_argument("--json", action="store_true", help="print each header as one JSON line")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit 0 after N messages")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop after S seconds (exit 1 if --count was not reached)")
    p.add_argument("--heartbeat-timeout", type=float, default=3.0, metavar="S",
                   help="heartbeat loss after S seconds without one (default: %(default)s)")
    p.add_argument("--exit-on-failsafe", action="store_true",
                   help=f"exit {EXIT_FAILSAFE} on heartbeat loss or when the daemon stops")
    p.add_argument("--save-overlays", type=Path, default=None, metavar="DIR",
                   help="write overlay JPEGs to DIR/<camera>_<frame_id>.jpg")
    add_curve(p)


def _pair(scores: dict[str, float] | None, thresholds: dict[str, float]) -> str:
    if scores is None:
        return "scores=none"
    return (f"anomaly={scores['anomaly']:.3f}/{thresholds['anomaly']:.2f} "
            f"adhesive={scores['adhesive']:.3f}/{thresholds['adhesive']:.2f}")


def format_human(header: dict[str, Any], payload: bytes | None) -> str:
    """One human-readable line for a header."""
    topic = header["topic"]
    where = f"{header['station']}/{header['camera']}"
    if topic in ("decision", "reject"):
        latency_ms = (header["t_decision_ns"] - header["t_capture_ns"]) / 1e6
        return (f"{topic:<9} seq={header['seq']:<6} {where} frame={header['frame_id']} "
                f"{header['decision'].upper():<6} reason={header['reason']} "
                f"{_pair(header['scores'], header['thresholds'])} latency={latency_ms:.1f}ms")
    if topic == "overlay":
        return (f"overlay   seq={header['seq']:<6} {where} frame={header['frame_id']} "
                f"{header['decision'].upper():<6} reason={header['reason']} "
                f"{header['width']}x{header['height']} jpeg={len(payload or b'')}B")
    c = header["counters"]
    keys = ("decisions", "rejects", "failsafe", "drops", "late", "overlays_skipped", "queue_overflow")
    counters = " ".join(f"{k}={c[k]}" for k in keys if k in c)
    cameras = ",".join(f"{k}:{v}" for k, v in header["cameras"].items()) or "-"
    return (f"heartbeat seq={header['seq']:<6} {header['station']} status={header['status']} "
            f"up={header['uptime_s']:.1f}s fps={header['fps']:.1f} {counters} cameras={cameras}")


def overlay_file_name(header: dict[str, Any]) -> str:
    """`<camera>_<frame_id>.jpg`, with anything but letters, digits, '_', '.', '-' in the camera id as '_'
    and the id cut to 64 characters (a header's camera id never picks the folder or the file's length)."""
    camera = re.sub(r"[^A-Za-z0-9_.-]", "_", str(header["camera"]))[:64]
    return f"{camera}_{int(header['frame_id'])}.jpg"


def run(args: argparse.Namespace) -> int:
    from linewatch.subscribe import CurveClient, Subscriber

    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.heartbeat_timeout <= 0:
        raise UsageError(f"--heartbeat-timeout must be > 0 seconds, got {args.heartbeat_timeout}")
    if (args.curve_server_key is None) != (args.curve_client_cert is None):
        raise UsageError("CURVE needs both --curve-server-key and --curve-client-cert")
    curve = None
    if args.curve_server_key is not None:
        curve = CurveClient(args.curve_server_key, args.curve_client_cert)
    if args.save_overlays is not None:
        args.save_overlays.mkdir(parents=True, exist_ok=True)
    topics = tuple(args.topic or TOPICS)

    failsafe = {"hit": False}

    def err(line: str) -> None:
        print(f"linewatch subscribe: {line}", file=sys.stderr, flush=True)

    def on_failsafe(reason: str) -> None:
        failsafe["hit"] = True
        err(f"FAIL-SAFE: {reason}")

    sub = Subscriber(
        args.endpoint,
        topics,
        on_gap=lambda g: err(f"gap on {g.topic}: {g.missing} message(s) missing (seq {g.expected} -> {g.received})"),
        on_failsafe=on_failsafe,
        on_recover=lambda hb: err(f"heartbeat back (station {hb.get('station')}, status {hb.get('status')})"),
        on_restart=lambda old, new: err(f"publisher restarted: session {old} -> {new}; sequence numbers reset"),
        on_error=lambda exc: err(f"bad message: {exc}"),
        heartbeat_timeout=args.heartbeat_timeout,
        curve=curve,
    )
    printed = 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        while True:
            if args.exit_on_failsafe and failsafe["hit"]:
                return EXIT_FAILSAFE
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return EXIT_COUNT_NOT_REACHED if args.count is not None else 0
            msg = sub.poll(0.2 if left is None else min(left, 0.2))
            if msg is None:
                continue
            try:
                if args.json:
                    line = jsonfile.dumps(msg.header, separators=(",", ":"))
                else:
                    line = format_human(msg.header, msg.payload)
            except Exception as exc:  # the library checked the header: a field this printer misreads
                err(f"bad message: {msg.topic} seq {msg.header.get('seq')!r} cannot be printed: "
                    f"{type(exc).__name__}: {exc}")
                continue
            print(line, flush=True)
            if args.save_overlays is not None and msg.topic == "overlay" and msg.payload:
                path = args.save_overlays / overlay_file_name(msg.header)
                try:
                    path.write_bytes(msg.payload)
                except OSError as exc:
                    err(f"cannot save overlay {path}: {exc.strerror or exc}")
            printed += 1
            if args.count is not None and printed >= args.count:
                return 0
    except KeyboardInterrupt:  # Ctrl-C: the end of the watch, as --timeout is
        return EXIT_COUNT_NOT_REACHED if args.count is not None else 0
    finally:
        if sub.errors:
            err(f"{sub.errors} bad message(s) received; the last: {sub.last_error}")
        sub.close()
