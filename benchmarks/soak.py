"""Soak: the daemon at line rate for a long time, its resources sampled; growth per hour after warm-up.

    python benchmarks/soak.py --duration 3600                 # the shipped model, 15 fps, one hour
    python benchmarks/soak.py --duration 3600 --archive       # ... with the station record on
    python benchmarks/soak.py --duration 30 --sample-s 2 --warmup-s 10 --backend null   # CI's short variant

It writes a station profile (the embedded demo profile: a synthetic camera at `--fps`, endless, an `ipc://`
endpoint in a temporary folder, `--backend`), starts `linewatch run` on it as a subprocess and subscribes
with the library a PLC gateway uses (`linewatch.subscribe.Subscriber`: gaps, restarts, bad messages). Every
`--sample-s` seconds from the first decision it reads the daemon process's resident memory (`VmRSS`), open file descriptors
(`/proc/PID/fd`) and threads (`/proc/PID/task`). At the end it sends SIGTERM and reads the daemon's last log
line (`stopped`: decisions, and the camera's `frames_seen`).

Reported (a table, or `--json`): per resource the first sample after warm-up, the last, the maximum, and the
growth per hour — the least-squares slope over the samples after `--warmup-s` (RSS in MB/hour); the frames
the camera produced, the decisions the daemon made, the decisions the subscriber received and its gaps;
the daemon's exit code. `--check` turns the report into an exit code: 0 when every frame was decided, the
subscriber saw no gap and no bad message, the daemon exited 0, fds and threads did not grow after warm-up,
and RSS grew by at most `--max-rss-mb-per-h` (issue 22's target: 5 MB/hour).

Linux only (it reads /proc). Nothing else may run on the machine during a soak that is quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linewatch.subscribe import Subscriber  # noqa: E402

PAGE_KB = 1024  # /proc/PID/status reports VmRSS in kB


def proc_sample(pid: int) -> dict[str, float]:
    """The process's resident memory (MB), open file descriptors and threads, from /proc."""
    rss_kb = 0
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
                break
    return {
        "rss_mb": rss_kb / PAGE_KB,
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
        "threads": float(len(os.listdir(f"/proc/{pid}/task"))),
    }


def slope_per_hour(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (seconds), per hour; 0 for fewer than two samples."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return 0.0
    return 3600.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var


def write_profile(folder: Path, args: argparse.Namespace) -> tuple[Path, str]:
    """The demo profile, adapted: endless synthetic camera at --fps, ipc endpoint, backend, archive."""
    from linewatch.profile import ENGINES_DIR

    endpoint = f"ipc://{folder}/soak.sock"
    model = Path(args.model).resolve() if args.model else ENGINES_DIR / "resse-default.onnx"
    archive = f'\n[archive]\ndir = "{folder / "archive"}"\n' if args.archive else ""
    text = f"""
[station]
name = "soak"
endpoint = "{endpoint}"

[model]
path = "{model}"
backend = "{args.backend}"
max_batch = 8

[[camera]]
id = "cam0"
source = "synthetic"
fps = {args.fps}
defect_rate = 0.2
seed = 0

[decision]
thresholds = {{ anomaly = 0.7, adhesive = 0.7 }}
adhesive_rule = "present"
deadline_ms = {args.deadline_ms}

[publish]
heartbeat_s = 1.0
{archive}"""
    path = folder / "soak.toml"
    path.write_text(text, encoding="utf-8")
    return path, endpoint


class Tally:
    """What the subscriber saw (its thread writes, the main thread reads at the end)."""

    def __init__(self) -> None:
        self.decisions = 0
        self.gaps = 0
        self.missing = 0
        self.restarts = 0
        self.failsafes = 0
        self.bad = 0
        self.bad_examples: list[str] = []


def last_stopped_line(log_path: Path) -> dict[str, Any]:
    """The daemon's `stopped` line (json logs) merged with the camera's `acquisition stopped` line."""
    out: dict[str, Any] = {}
    for raw in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if rec.get("event") == "stopped":
            out.update(decisions=rec.get("decisions"), rejects=rec.get("rejects"))
        elif rec.get("event") == "acquisition stopped":
            out.update(frames_seen=rec.get("frames_seen"))
    return out


def soak(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="linewatch-soak-"))
    profile, endpoint = write_profile(tmp, args)
    log_path = tmp / "daemon.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    tally = Tally()

    def on_message(msg: Any) -> None:
        if msg.topic == "decision":
            tally.decisions += 1

    def on_gap(gap: Any) -> None:
        tally.gaps += 1
        tally.missing += gap.missing

    def on_restart(old: str, new: str) -> None:
        tally.restarts += 1

    def on_failsafe(reason: str) -> None:
        tally.failsafes += 1

    def on_error(exc: Exception) -> None:
        tally.bad += 1
        if len(tally.bad_examples) < 3:
            tally.bad_examples.append(str(exc)[:300])

    samples: list[dict[str, float]] = []
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "linewatch", "run", "--profile", str(profile),
                                 "--log-format", "json"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        sub = Subscriber(endpoint, topics=("decision",), on_message=on_message, on_gap=on_gap,
                         on_restart=on_restart, on_failsafe=on_failsafe, on_error=on_error, heartbeat_timeout=5.0)
        try:
            if not sub.wait_ready(120.0):  # before start(): the socket is then the subscriber thread's
                raise SystemExit(f"soak: no heartbeat from the daemon within 120 s (log: {log_path})")
            sub.start()
            t_ready = time.monotonic()  # the clock starts at the first decision: the line is running
            while tally.decisions == 0 and proc.poll() is None and time.monotonic() - t_ready < 120.0:
                time.sleep(0.05)
            t0 = time.monotonic()
            stop = threading.Event()
            while not stop.wait(max(0.0, t0 + len(samples) * args.sample_s - time.monotonic())):
                if proc.poll() is not None:
                    break
                s = proc_sample(proc.pid)
                s["t_s"] = round(time.monotonic() - t0, 3)
                s["received"] = float(tally.decisions)
                samples.append(s)
                if args.progress:
                    print(f"soak t={s['t_s']:7.0f}s rss={s['rss_mb']:.1f}MB fds={s['fds']:.0f} "
                          f"threads={s['threads']:.0f} received={tally.decisions}", file=sys.stderr, flush=True)
                if s["t_s"] >= args.duration:
                    break
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            time.sleep(1.0)  # the last decisions and the final heartbeat are on their way
            sub.stop()
            sub.close()
    final = last_stopped_line(log_path)
    after = [s for s in samples if s["t_s"] >= args.warmup_s]
    resources: dict[str, dict[str, float]] = {}
    for key in ("rss_mb", "fds", "threads"):
        ys = [s[key] for s in after]
        resources[key] = {
            "first": ys[0] if ys else float("nan"),
            "last": ys[-1] if ys else float("nan"),
            "max": max(ys) if ys else float("nan"),
            "per_hour": round(slope_per_hour([s["t_s"] for s in after], ys), 3),
        }
    return {
        "duration_s": samples[-1]["t_s"] if samples else 0.0,
        "warmup_s": args.warmup_s,
        "samples": len(samples),
        "samples_after_warmup": len(after),
        "fps": args.fps,
        "backend": args.backend,
        "archive": bool(args.archive),
        "exit_code": code,
        "frames_seen": final.get("frames_seen"),
        "decisions": final.get("decisions"),
        "received": tally.decisions,
        "gaps": tally.gaps,
        "missing": tally.missing,
        "restarts": tally.restarts,
        "bad_messages": tally.bad,
        "bad_examples": tally.bad_examples,
        "resources": resources,
        "series": samples if args.series else None,
        "log": str(log_path),
    }


def problems(r: dict[str, Any], max_rss_mb_per_h: float) -> list[str]:
    """What fails the soak's promises (empty: all held)."""
    out = []
    if r["exit_code"] != 0:
        out.append(f"daemon exit code {r['exit_code']}")
    if r["frames_seen"] is None or r["decisions"] != r["frames_seen"]:
        out.append(f"decisions {r['decisions']} != frames {r['frames_seen']}")
    if r["gaps"] or r["bad_messages"] or r["restarts"]:
        out.append(f"subscriber: {r['gaps']} gaps ({r['missing']} missing), {r['bad_messages']} bad "
                   f"{r.get('bad_examples') or ''}, {r['restarts']} restarts")
    if r["samples_after_warmup"] < 2:
        out.append("fewer than 2 samples after warm-up")
    res = r["resources"]
    for key in ("fds", "threads"):
        if res[key]["max"] > res[key]["first"]:
            out.append(f"{key} grew after warm-up: {res[key]['first']:.0f} -> max {res[key]['max']:.0f}")
    if res["rss_mb"]["per_hour"] > max_rss_mb_per_h:
        out.append(f"RSS grows {res['rss_mb']['per_hour']:.2f} MB/hour (allowed {max_rss_mb_per_h})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds of sampling (default 3600)")
    ap.add_argument("--warmup-s", type=float, default=300.0, help="samples before this are not fitted (default 300)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--fps", type=float, default=15.0, help="line rate of the synthetic camera (default 15)")
    ap.add_argument("--backend", default="auto", help="engine backend (default auto: openvino on a CPU)")
    ap.add_argument("--model", default=None, help="ONNX model (default: the shipped resse-default.onnx)")
    ap.add_argument("--deadline-ms", type=float, default=200.0)
    ap.add_argument("--archive", action="store_true", help="turn the station record on (in the temporary folder)")
    ap.add_argument("--max-rss-mb-per-h", type=float, default=5.0, help="--check's RSS bound (default 5)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a promise failed (see the module doc)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--series", action="store_true", help="include every sample in the JSON report")
    ap.add_argument("--progress", action="store_true", help="print each sample on stderr")
    args = ap.parse_args(argv)
    if args.duration <= 0 or args.sample_s <= 0 or args.fps <= 0:
        ap.error(f"--duration {args.duration}, --sample-s {args.sample_s} and --fps {args.fps} must be > 0")
    r = soak(args)
    bad = problems(r, args.max_rss_mb_per_h)
    r["problems"] = bad
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        res = r["resources"]
        print(f"soak {r['duration_s']:.0f} s at {r['fps']} fps, backend {r['backend']}, archive {r['archive']}, "
              f"warm-up {r['warmup_s']:.0f} s, {r['samples']} samples")
        print("| resource | first after warm-up | last | max | growth per hour |")
        print("|---|---:|---:|---:|---:|")
        for key, unit in (("rss_mb", "MB"), ("fds", ""), ("threads", "")):
            v = res[key]
            print(f"| {key} | {v['first']:.1f} {unit} | {v['last']:.1f} | {v['max']:.1f} | {v['per_hour']:+.2f} |")
        print(f"frames {r['frames_seen']}, decided {r['decisions']}, received {r['received']}, gaps {r['gaps']}, "
              f"bad messages {r['bad_messages']}, restarts {r['restarts']}, exit {r['exit_code']}")
        print("problems: " + ("; ".join(bad) if bad else "none"))
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
