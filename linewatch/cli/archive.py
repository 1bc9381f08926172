"""`linewatch archive`: read a station's record (the daemon may be running and writing it).

    linewatch archive stats  DIR [--since T] [--until T] [--camera C] [--shifts 06:00,14:00,22:00] [--json]
    linewatch archive query  DIR [filters] [--limit N] [--json]
    linewatch archive export DIR --out DATASET [filters] [--labels blank|decision] [--limit N]
    linewatch archive events DIR [--since T] [--until T] [--kind K] [--json]

DIR is the profile's `[archive] dir`. Times (`--since`, `--until`) are local ISO dates or times
(`2026-12-02`, `2026-12-02T06:00`, with an offset such as `+01:00` when not local) or a span back from
now (`30m`, `8h`, `2d`). Filters: `--camera`, `--reason` (anomaly, adhesive-missing, adhesive-present,
late, dropped, corrupt, engine-error, pass), `--decision pass|reject`, `--anomaly LO:HI`,
`--adhesive LO:HI` (score ranges, inclusive). `export` writes a dataset folder that `linewatch data
check` reads and `linewatch train --init` starts from: the frames, the model's masks as draft
annotations (`draft_masks/`), labels blank (to be labelled) or as the decision implies them.
Exit status: 0, or 2 for a usage error (no journal in DIR, a bad filter) with the reason.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from typing import Any

from linewatch.cli.args import add_command
from linewatch.errors import UsageError

VERBS = ("stats", "query", "export", "events")
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "archive", run, help="read the station record: stats, query, export for retraining, "
                    "events", description=__doc__.split("\n\n", 1)[1] if __doc__ else None, raw=True)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, help_text in (("stats", "inspected, passed, rejected by reason, yield, per hour and shift, latency"),
                            ("query", "the journal's rows, filtered"),
                            ("export", "a dataset folder of the archived frames, for labelling and retraining"),
                            ("events", "the audit trail: starts, stops, reloads, model changes, cameras, archive")):
        v = verbs.add_parser(verb, help=help_text)
        v.add_argument("dir", metavar="DIR", help="the archive folder ([archive] dir of the station profile)")
        v.add_argument("--since", default=None, metavar="T", help="from this time (ISO, or a span back: 8h, 2d)")
        v.add_argument("--until", default=None, metavar="T", help="before this time (ISO, or a span back)")
        if verb == "events":
            v.add_argument("--kind", default=None, help="only events of this kind (start, stop, reload, model, "
                                                        "camera, curve, archive, rotation)")
        else:
            v.add_argument("--camera", default=None, help="only this camera id")
            v.add_argument("--reason", default=None, help="only rows with this reason")
            v.add_argument("--decision", choices=("pass", "reject"), default=None)
            v.add_argument("--anomaly", default=None, metavar="LO:HI", help="anomaly score range")
            v.add_argument("--adhesive", default=None, metavar="LO:HI", help="adhesive score range")
        if verb == "stats":
            v.add_argument("--shifts", default="06:00,14:00,22:00", metavar="HH:MM,...",
                           help="local start times of the shifts (default 06:00,14:00,22:00)")
        if verb in ("query", "export"):
            v.add_argument("--limit", type=int, default=None, metavar="N", help="at most the newest N rows")
        if verb == "export":
            v.add_argument("--out", required=True, metavar="DATASET", help="a new (or empty) folder to write")
            v.add_argument("--labels", choices=("blank", "decision"), default="blank",
                           help="blank: unknown, to be labelled (default); decision: what the decision implies")
        if verb != "export":
            v.add_argument("--json", action="store_true", help="print JSON")
        v.set_defaults(func=run)


def parse_time(text: str | None, flag: str, now: float | None = None) -> int | None:
    """Epoch ns of a `--since`/`--until` value (module doc); UsageError naming the flag when unreadable."""
    if text is None:
        return None
    now = time.time() if now is None else now
    m = _SPAN.match(text.strip())
    if m:
        return int((now - float(m.group(1)) * _UNIT_S[m.group(2)]) * 1e9)
    try:
        t = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not a time; give an ISO date or time (2026-12-02, 2026-12-02T06:00) "
                         "or a span back from now (30m, 8h, 2d)") from None
    return int(t.timestamp() * 1e9)  # naive = local time


def parse_range(text: str | None, flag: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give a score range LO:HI, e.g. 0.5:1") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise UsageError(f"{flag} {text!r}: need 0 <= LO <= HI <= 1")
    return lo, hi


def _iso(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="milliseconds")


def run(args: argparse.Namespace) -> int:
    from linewatch import jsonfile
    from linewatch.record import read
    from linewatch.record.journal import JournalError

    since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    try:
        if args.verb == "events":
            evs = read.events(args.dir, since, until, args.kind)
            if args.json:
                print(jsonfile.dumps(evs, indent=1))
            for e in evs if not args.json else ():
                detail = " ".join(f"{k}={jsonfile.dumps(v)}" for k, v in e["detail"].items())
                print(f"{_iso(e['t_ns'])}  {e['kind']:<9} {e['session'][:8]}  {detail}")
            return 0
        flt = read.Filter(since, until, args.camera, args.reason, args.decision,
                          parse_range(args.anomaly, "--anomaly"), parse_range(args.adhesive, "--adhesive"))
        if args.verb == "stats":
            s = read.stats(args.dir, flt, [x.strip() for x in args.shifts.split(",") if x.strip()])
            print(jsonfile.dumps(s, indent=1) if args.json else _stats_text(s))
        elif args.verb == "query":
            rows = read.query(args.dir, flt, args.limit)
            if args.json:
                print(jsonfile.dumps(rows, indent=1))
            else:
                _print_rows(rows)
        else:
            summary = read.export(args.dir, args.out, flt, args.labels, args.limit)
            print(f"wrote {summary['samples']} samples to {summary['out']} (labels: {summary['labels']}; "
                  f"classes {summary['classes']}; {summary['missing_images']} images gone)")
            print(f"next: linewatch data check {summary['out']}")
    except (JournalError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    return 0


def _stats_text(s: dict[str, Any]) -> str:
    def y(t: dict[str, Any]) -> str:
        return "-" if t["yield_pct"] is None else f"{t['yield_pct']:.2f} %"

    lines = [f"from {_iso(s['first_ns'])} to {_iso(s['last_ns'])}",
             f"inspected {s['inspected']}, passed {s['passed']}, rejected {s['rejected']}, "
             f"fail-safe {s['failsafe']}, yield {y(s)}"]
    if s["by_reason"]:
        lines.append("rejected by reason: " + ", ".join(f"{k} {v}" for k, v in s["by_reason"].items()))
    if s["latency_ms"]:
        lines.append("latency capture -> decision (ms): " + ", ".join(f"{k} {v}" for k, v in s["latency_ms"].items()))
    for title, key in (("per camera", "cameras"), ("per shift", "per_shift"), ("per hour", "per_hour")):
        if s[key]:
            lines.append(f"{title}:")
            lines += [f"  {k:<18} inspected {t['inspected']:>8}  rejected {t['rejected']:>7}  yield {y(t)}"
                      for k, t in s[key].items()]
    return "\n".join(lines)


def _print_rows(rows: list[dict[str, Any]]) -> None:
    out = sys.stdout
    out.write(f"{'decided':<23} {'camera':<8} {'frame':>8} {'decision':<8} {'reason':<24} "
              f"{'anomaly':>7} {'adhesive':>8}  image\n")
    for r in rows:
        sc = ["-" if r[k] is None else f"{r[k]:.3f}" for k in ("anomaly", "adhesive")]
        out.write(f"{_iso(r['t_decision_ns']):<23} {r['camera']:<8} {r['frame_id']:>8} {r['decision']:<8} "
                  f"{r['reason']:<24} {sc[0]:>7} {sc[1]:>8}  {r['image'] or '-'}\n")
