"""Overload: a line faster than the engine, side by side with what the engine sustains (issue 22, item 1).

    python benchmarks/overload.py                                  # openvino, 1.5x 2x 5x 10x, 60 s each
    python benchmarks/overload.py --factors 1.5 10 --duration 20 --engine onnxruntime
    python benchmarks/overload.py --json

First `linewatch bench` closed loop (the camera is triggered when the ring has room: no frame waits, none is
dropped) gives R, the inferred decisions/s the engine sustains at these settings. Then, for each factor f,
`linewatch bench --pace fixed --fps f x R`: a free-running line camera at f times that rate (a full ring drops
frames). Every run is a fresh daemon, engine and subscriber (`linewatch.bench.run_bench`). With `--rounds 2`
the closed loop and the overload runs alternate, and the table shows medians.

Per factor, from the subscriber's side: frames produced, decisions, frames without a decision, duplicates,
the goodput (decisions inferred in time per second, median of 1-s windows) and its ratio to R, the latency
p99 of the inferred-in-time decisions, and of the fail-safe ones (late / dropped) against the deadline.
Issue 22's targets: 0 without a decision, 0 duplicates, fail-safe p99 <= deadline + 50 ms, goodput >= 0.8 R.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linewatch.bench import BenchConfig, run_bench  # noqa: E402
from linewatch.profile import default_profile  # noqa: E402


def one(args: argparse.Namespace, **over: Any) -> dict[str, Any]:
    cfg = BenchConfig(profile=default_profile(), backend=args.engine, duration_s=args.duration,
                      warmup_s=args.warmup, min_fps=0.0, **over)
    return run_bench(cfg)


def row(r: dict[str, Any]) -> dict[str, Any]:
    f, sp = r["frames"], r["latency_split_ms"]
    return {
        "produced": f["produced"],
        "decisions": f["decisions"],
        "without_decision": f["missing"],
        "duplicates": f["duplicates"],
        "not_decided": f["not_decided"],
        "goodput": r["throughput"]["inferred_fps"]["median"],
        "all_fps": r["throughput"]["fps"]["median"],
        "inferred_p99_ms": sp["inferred_only"]["p99"],
        "failsafe_n": sp["failsafe_only"]["n"],
        "failsafe_p99_ms": sp["failsafe_only"]["p99"],
        "reasons": f["reasons"],
        "loadavg": r["bench"]["host"]["loadavg_after"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="openvino", help="engine backend (default openvino)")
    ap.add_argument("--factors", type=float, nargs="+", default=[1.5, 2.0, 5.0, 10.0])
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds per run (default 60)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1, help="alternate closed loop and overload this many times")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    deadline_ms = default_profile().decision.deadline_ms
    sustained: list[float] = []
    runs: dict[float, list[dict[str, Any]]] = {f: [] for f in args.factors}
    for _ in range(args.rounds):
        base = one(args)
        sustained.append(base["throughput"]["inferred_fps"]["median"])
        print(f"closed loop: {sustained[-1]:.1f} inferred/s", file=sys.stderr, flush=True)
        for f in args.factors:
            r = row(one(args, pace="fixed", fps=round(f * sustained[-1], 1)))
            r["rate"] = sustained[-1]
            runs[f].append(r)
            print(f"  {f:g}x: goodput {r['goodput']:.1f}/s, fail-safe p99 {r['failsafe_p99_ms']:.0f} ms, "
                  f"without decision {r['without_decision']}, duplicates {r['duplicates']}", file=sys.stderr,
                  flush=True)
    R = statistics.median(sustained)
    table = []
    for f, rs in runs.items():
        med = {k: statistics.median(x[k] for x in rs) for k in ("goodput", "inferred_p99_ms", "failsafe_p99_ms")}
        table.append({
            "factor": f,
            "fps": round(f * R, 1),
            "produced": sum(x["produced"] for x in rs),
            "without_decision": sum(x["without_decision"] for x in rs),
            "duplicates": sum(x["duplicates"] for x in rs),
            "goodput": med["goodput"],
            "goodput_ratio": round(statistics.median(x["goodput"] / x["rate"] for x in rs), 3),
            "inferred_p99_ms": med["inferred_p99_ms"],
            "failsafe_p99_ms": med["failsafe_p99_ms"],
            "failsafe_p99_ok": med["failsafe_p99_ms"] <= deadline_ms + 50,
            "runs": rs,
        })
    if args.json:
        print(json.dumps({"engine": args.engine, "sustained": sustained, "deadline_ms": deadline_ms,
                          "duration_s": args.duration, "rows": table}, indent=1))
        return 0
    print(f"engine {args.engine}; closed loop sustains {R:.1f} inferred decisions/s (runs: "
          f"{', '.join(f'{s:.1f}' for s in sustained)}); deadline {deadline_ms:g} ms; {args.duration:g} s a run")
    print("| line rate | frames | without a decision | duplicates | goodput (in time/s) | goodput / sustained "
          "| p99 inferred (ms) | p99 fail-safe (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in table:
        print(f"| {t['factor']:g}x ({t['fps']:g} fps) | {t['produced']} | {t['without_decision']} | {t['duplicates']} "
              f"| {t['goodput']:.1f} | {t['goodput_ratio']:.2f} | {t['inferred_p99_ms']:.0f} "
              f"| {t['failsafe_p99_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
