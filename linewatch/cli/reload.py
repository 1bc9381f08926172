"""`linewatch reload`: apply a changed station profile to the running daemon and say what happened.

    linewatch reload --profile /etc/linewatch/line3.toml [--timeout 60] [--json]

Validates the profile first (a wrong key or value is reported and nothing is sent). Then it listens
to the daemon's heartbeat on the profile's endpoint (CURVE keys as `linewatch subscribe` takes them),
takes the daemon's process id from it (`pid`), sends SIGHUP (what `systemctl reload` does) and waits
for the heartbeat that carries the reload's result (`reload`: applied / refused / restart needed).
Exit status: 0 when everything changed was applied, 1 when something was refused or no result came,
2 on a usage error (the profile is invalid, no daemon answers on the endpoint).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

from linewatch import jsonfile
from linewatch.cli.args import add_command, add_curve, add_profile


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "reload", run,
                    help="send the running daemon SIGHUP and report what it applied and refused",
                    description=__doc__.split("\n\n", 2)[2] if __doc__ else None, raw=True)
    add_profile(p, required=True, help="the station profile the daemon runs")
    p.add_argument("--endpoint", default=None, metavar="URL",
                   help="where the daemon publishes (default: the profile's station.endpoint)")
    p.add_argument("--pid", type=int, default=None, help="the daemon's process id (default: from its heartbeat)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for the result (a model swap opens and checks the model; default 60)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_curve(p)


def run(args: argparse.Namespace) -> int:
    from linewatch.errors import UsageError
    from linewatch.profile import load_profile
    from linewatch.subscribe import CurveClient, Subscriber

    profile = load_profile(args.profile)  # ProfileError -> exit 2, nothing sent
    endpoint = args.endpoint or profile.station.endpoint
    if (args.curve_server_key is None) != (args.curve_client_cert is None):
        raise UsageError("CURVE needs both --curve-server-key and --curve-client-cert")
    curve = CurveClient(args.curve_server_key, args.curve_client_cert) if args.curve_server_key else None
    beats: list[dict[str, Any]] = []
    sub = Subscriber(endpoint, topics=("heartbeat",), on_message=lambda m: beats.append(m.header),
                     heartbeat_timeout=max(args.timeout, 1.0), curve=curve)
    try:
        first = _next_beat(sub, beats, time.monotonic() + 5.0, lambda h: True)
        if first is None:
            raise UsageError(f"no heartbeat from a daemon on {endpoint} within 5 s: is it running? A changed "
                             "station.endpoint applies only after a restart: give the endpoint it runs on "
                             "(--endpoint)")
        pid = args.pid or first.get("pid")
        if not pid:
            raise UsageError(f"the daemon on {endpoint} does not say its pid (an older linewatch): give --pid")
        session, before = first["session"], (first.get("reload") or {}).get("n", 0)
        try:
            cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
        except OSError:
            cmdline = b"linewatch"  # not Linux, or not visible: trust the heartbeat
        if b"linewatch" not in cmdline:
            raise UsageError(f"pid {pid} from the heartbeat on {endpoint} is not a linewatch process here (the "
                             "daemon runs on another host?): nothing sent; give --pid or use systemctl reload")
        try:
            os.kill(int(pid), signal.SIGHUP)
        except OSError as exc:
            raise UsageError(f"cannot signal pid {pid} ({exc.strerror}): run as the service's user or root, "
                             "or use `systemctl reload`") from exc
        t_end = time.monotonic() + args.timeout
        beat = _next_beat(sub, beats, t_end, lambda h: h["session"] == session and
                          (h.get("reload") or {}).get("n", 0) > before)
    finally:
        sub.close()
    if beat is None:
        print(f"linewatch reload: no result from pid {pid} within {args.timeout:g} s (see its log)")
        return 1
    result = beat["reload"]
    if args.json:
        print(jsonfile.dumps({"pid": pid, "model": beat.get("model"), **result}, indent=2))
    else:
        print(f"linewatch reload: pid {pid}, reload {result['n']} at {result['t_iso']}: "
              f"{'ok' if result['ok'] else 'REFUSED'}")
        for key in result["applied"]:
            print(f"  applied         {key}")
        for why in result["refused"]:
            print(f"  refused         {why}")
        for key in result["restart_needed"]:
            print(f"  restart needed  {key}")
        if beat.get("model"):
            m = beat["model"]
            print(f"  model now       {m['id']} ({m['path']}) on {m['backend']}, {m['device']}")
    return 0 if result["ok"] else 1


def _next_beat(sub: Any, beats: list[dict[str, Any]], t_end: float, want: Any) -> dict[str, Any] | None:
    while time.monotonic() < t_end:
        sub.poll(0.1)
        while beats:
            h = beats.pop(0)
            if want(h):
                return h
    return None
