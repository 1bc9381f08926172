"""What the operator page costs the line, and how fast a reject reaches it.

    python benchmarks/hmi.py [--browsers 5] [--browser-nice 19] [--sse-clients 5] [--rounds 2] [--duration 20]
    python benchmarks/hmi.py --line [--browsers 5] [--duration 30]
    python benchmarks/hmi.py --alternate 10 --duration 240 [--browsers 0 --page-clients 5]

Each round runs `linewatch bench` (the shipped model, closed loop, the profile's settings) twice, side by
side: once alone, once with `linewatch hmi` connected to the bench's publisher and `--browsers` headless
Debian chromium pages open on it (selenium + chromedriver), plus `--sse-clients` plain event-stream
clients (curl) and `--page-clients` clients that also fetch the overlay like a page (what the server costs
when the browsers run on other machines). Reported: the bench's median decisions/s and
p99 latency for both, their ratio, and, from the first browser, the time from each reject's decision to
its display in the page (p50 / p95 / max, ms; daemon and browser share this machine's clock), and the CPU
the `linewatch hmi` process used (its utime + stime from /proc over the bench, in % of one core).

`--line`: the browser test's setting instead of the bench's closed loop — `linewatch run` on the embedded
synthetic line at its own rate (25 fps, 20 % defects), `linewatch hmi` and `--browsers` pages on it; reported:
the reject display times of every page (pooled; rejects of the page's first snapshot left out), the hmi's CPU
and the daemon's own late and dropped counts from its final status.

`--alternate S`: the side-by-side comparison for a machine whose speed drifts (this project's dev boxes: the
bench's median moves by ± 15 % between runs of minutes, more than the effect measured). One bench of
`--duration` s; the hmi, its pages and clients are started once, then frozen (SIGSTOP: the server reads nothing,
the pages draw nothing, the daemon's publisher drops for a stalled subscriber as for any slow one) and thawed
(SIGCONT) every S s. Each thawed stretch's mean decisions/s (1-s windows, the first `--settle` s after a switch
left out) is divided by the mean of the frozen stretches on both sides: a drift linear over 3 S cancels out.
Reported: those paired ratios, their median and quartiles, and the hmi's CPU while thawed. The thawed hmi first
reads the backlog the frozen one left, so the comparison errs against the hmi.

Needs the `hmi` and `dev` extras and Debian's chromium + chromium-driver. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json  # reads the bench report
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

from linewatch.jsonfile import dumps

ENDPOINT = re.compile(r"subscriber connecting to (tcp://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def browser_binary(nice: int, idle: bool = False) -> str:
    """Debian's chromium, or a wrapper that starts it at `nice` and/or at SCHED_IDLE (`chrt --idle`: a browser
    on the station PC that only gets CPU time nothing else wants)."""
    if not nice and not idle:
        return "/usr/bin/chromium"
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="linewatch-hmi-bench-"), "chromium")
    prefix = ("chrt --idle 0 " if idle else "") + (f"nice -n {int(nice)} " if nice else "")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec {prefix}/usr/bin/chromium "$@"\n')
    os.chmod(path, 0o755)
    return path


def open_pages(url: str, n: int, nice: int = 0, idle: bool = False) -> list:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers = []
    binary = browser_binary(nice, idle)
    for _ in range(n):
        opts = webdriver.ChromeOptions()
        opts.binary_location = binary
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            opts.add_argument(arg)
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        d.get(url)
        drivers.append(d)
    return drivers


PAGE_CLIENT = r"""
import http.client, sys, threading, time
port, n = int(sys.argv[1]), int(sys.argv[2])
def page():
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", "/events")
    r = c.getresponse()
    img = http.client.HTTPConnection("127.0.0.1", port)
    last = 0.0
    for line in r:
        if line.startswith(b"data: ") and time.monotonic() - last >= 1.0:  # the page: an overlay at most 1/s
            last = time.monotonic()
            img.request("GET", "/overlay/cam0.jpg")
            img.getresponse().read()
for _ in range(n):
    threading.Thread(target=page, daemon=True).start()
threading.Event().wait()
"""
"""What a page on another machine asks of the server: the event stream, and the overlay JPEG at most once a
second (the page's own rule), without rendering (`--page-clients`)."""


def hmi_args(args: argparse.Namespace) -> list[str]:
    return ["--idle"] if args.hmi_idle else []


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (/proc/PID/stat, clock ticks -> seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shown_stats(values: list[float]) -> dict:
    a = np.array(values, np.float64)
    if not a.size:
        return {"n": 0}
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1), "max": round(float(a.max()), 1)}


def line(args: argparse.Namespace) -> dict:
    """The embedded synthetic line at its own rate, the hmi and the pages (module doc, `--line`)."""
    pub_port, port = free_port(), free_port()
    daemon = subprocess.Popen([sys.executable, "-m", "linewatch", "run", "--duration", str(args.duration + 20),
                               "--endpoint", f"tcp://127.0.0.1:{pub_port}", "--log-format", "json"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    hmi = subprocess.Popen([sys.executable, "-m", "linewatch", "hmi", "--connect", f"tcp://127.0.0.1:{pub_port}",
                            "--bind", f"127.0.0.1:{port}", *hmi_args(args)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    drivers: list = []
    try:
        time.sleep(8.0)  # the daemon warm, the server listening
        drivers = open_pages(f"http://127.0.0.1:{port}/", args.browsers, args.browser_nice, args.browser_idle)
        time.sleep(3.0)
        for d in drivers:  # from now on: rejects decided while the pages were open
            d.execute_script("window.linewatchRejectShownMs = []")
        c0, t0 = cpu_seconds(hmi.pid), time.monotonic()
        time.sleep(args.duration)
        shown = [list(d.execute_script("return window.linewatchRejectShownMs || []")) for d in drivers]
        hmi_cpu = (cpu_seconds(hmi.pid) - c0) / (time.monotonic() - t0)
    finally:
        for d in drivers:
            d.quit()
        hmi.send_signal(signal.SIGTERM)
        hmi.wait(20)
    out, _ = daemon.communicate(timeout=120)
    stopped = [json.loads(x) for x in out.splitlines() if x.startswith("{") and '"stopped"' in x]
    counters = stopped[-1] if stopped else {}
    return {"mode": "line", "browsers": args.browsers, "browser_nice": args.browser_nice,
            "browser_idle": args.browser_idle, "hmi_idle": args.hmi_idle,
            "reject_shown_ms": shown_stats([v for s in shown for v in s]),
            "per_page_p95_ms": [shown_stats(s).get("p95") for s in shown],
            "hmi_cpu_pct_of_one_core": round(100 * hmi_cpu, 2),
            "daemon": {"decisions": counters.get("decisions"), "rejects": counters.get("rejects"),
                       "drops": counters.get("drops"), "late": dict(counters.get("reasons") or {}).get("late", 0)}}


def start_bench(args: argparse.Namespace) -> subprocess.Popen:
    """`linewatch bench --json` of `--duration` s after `--warmup` s, its report on stdout, its log on stderr."""
    cmd = [sys.executable, "-m", "linewatch", "bench", "--duration", str(args.duration), "--warmup",
           str(args.warmup), "--min-fps", "0", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def open_side(args: argparse.Namespace, endpoint: str) -> tuple[subprocess.Popen, list, list[subprocess.Popen]]:
    """`linewatch hmi` on the bench's publisher, and its `--browsers` pages, `--sse-clients` and `--page-clients`."""
    port = free_port()
    hmi = subprocess.Popen([sys.executable, "-m", "linewatch", "hmi", "--connect", endpoint, "--bind",
                            f"127.0.0.1:{port}", *hmi_args(args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    drivers: list = []
    streams: list[subprocess.Popen] = []
    try:
        time.sleep(2.0)  # the server listening (the bench warms its engine meanwhile)
        drivers = open_pages(f"http://127.0.0.1:{port}/", args.browsers, args.browser_nice, args.browser_idle)
        streams = [subprocess.Popen(["curl", "-sN", f"http://127.0.0.1:{port}/events"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for _ in range(args.sse_clients)]
        if args.page_clients:
            streams.append(subprocess.Popen([sys.executable, "-c", PAGE_CLIENT, str(port), str(args.page_clients)],
                                            stderr=subprocess.DEVNULL))  # a reset at the end is no news
    except BaseException:  # nothing started here outlives a failure
        close_side(hmi, drivers, streams)
        raise
    return hmi, drivers, streams


def close_side(hmi: subprocess.Popen | None, drivers: list, streams: list[subprocess.Popen]) -> None:
    for d in drivers:
        d.quit()
    for c in streams:
        c.kill()
    if hmi is not None:
        hmi.send_signal(signal.SIGTERM)
        hmi.wait(20)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def pair_stretches(toggles: list[tuple[float, bool]], t0: float, per_window: list[int], settle: float) -> dict:
    """The `--alternate` comparison from the switch times (wall clock, s; True = the hmi side thawed from then
    on), the bench's window 0 start `t0` and its 1-s window counts: each stretch's mean over the windows that
    lie wholly inside it and start `settle` s or more after its switch; each thawed stretch divided by the mean
    of the frozen stretches on both sides of it (a stretch at either end, with one neighbour, is not paired)."""
    segments: list[dict] = []
    for k, (ts, on) in enumerate(toggles):
        te = toggles[k + 1][0] if k + 1 < len(toggles) else float("inf")
        kept = [n for i, n in enumerate(per_window) if t0 + i >= ts + settle and t0 + i + 1 <= te]
        if kept:
            segments.append({"hmi": on, "windows": len(kept), "fps_mean": round(float(np.mean(kept)), 2)})
    paired = []  # only stretches with a frozen one on both sides: a drift linear over the three cancels out
    for k in range(1, len(segments) - 1):
        if segments[k]["hmi"] and not segments[k - 1]["hmi"] and not segments[k + 1]["hmi"]:
            off = (segments[k - 1]["fps_mean"] + segments[k + 1]["fps_mean"]) / 2
            paired.append(round(segments[k]["fps_mean"] / off, 3))
    on = [s["fps_mean"] for s in segments if s["hmi"]]
    off = [s["fps_mean"] for s in segments if not s["hmi"]]
    return {"segments": segments, "paired_ratios": paired,
            "paired_ratio_median": round(float(np.median(paired)), 3) if paired else None,
            "paired_ratio_iqr": [round(float(np.percentile(paired, q)), 3) for q in (25, 75)] if paired else None,
            "ratio_of_means": round(float(np.mean(on) / np.mean(off)), 3) if on and off else None}


def alternate(args: argparse.Namespace) -> dict:
    """One long bench; the hmi side (server, pages, clients) frozen and thawed in turns (module doc, `--alternate`)."""
    p = start_bench(args)
    hmi, drivers, streams = None, [], []
    toggles: list[tuple[float, bool]] = []
    pids: list[int] = []
    log: list[str] = []
    hmi_cpu_on = on_s = 0.0
    try:
        assert p.stderr is not None and p.stdout is not None
        for line in p.stderr:
            log.append(line)
            m = ENDPOINT.search(line)
            if m:
                hmi, drivers, streams = open_side(args, m.group(1))
                break
        if hmi is None:
            raise SystemExit("the bench printed no subscriber endpoint:\n" + "".join(log[-20:]))
        err = p.stderr
        threading.Thread(target=lambda: log.extend(err), daemon=True).start()  # drain the bench's log
        out_parts: list[str] = []
        out = p.stdout
        reader = threading.Thread(target=lambda: out_parts.append(out.read()), daemon=True)
        reader.start()  # its report, read while it runs (no pipe stall)
        pids = [hmi.pid] + [q for c in streams for q in process_tree(c.pid)] + \
               [q for d in drivers for q in process_tree(d.service.process.pid)]
        on = True
        while p.poll() is None:
            c, tm = cpu_seconds(hmi.pid), time.monotonic()
            toggles.append((time.time(), on))
            deadline = time.monotonic() + args.alternate
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if on:
                hmi_cpu_on += cpu_seconds(hmi.pid) - c
                on_s += time.monotonic() - tm
            on = not on
            signal_all(pids, signal.SIGCONT if on else signal.SIGSTOP)
        reader.join(30)
    finally:
        signal_all(pids, signal.SIGCONT)
        if p.poll() is None:  # a failure above: the bench must not go on loading the machine
            p.kill()
            p.wait()
        close_side(hmi, drivers, streams)
    if p.returncode != 0 or not out_parts or not out_parts[0].strip():
        raise SystemExit(f"the bench failed (exit {p.returncode}):\n" + "".join(log[-20:]))
    r = json.loads(out_parts[0])
    res = pair_stretches(toggles, r["measured"]["t0_unix_ns"] / 1e9, r["throughput"]["per_window"], args.settle)
    return {"mode": "alternate", "browsers": args.browsers, "browser_idle": args.browser_idle,
            "sse_clients": args.sse_clients, "page_clients": args.page_clients, "alternate_s": args.alternate,
            "settle_s": args.settle, **res, "hmi_cpu_pct_of_one_core_on": round(100 * hmi_cpu_on / max(on_s, 1e-9), 2),
            "bench_fps_median": r["throughput"]["fps"]["median"]}


def bench(args: argparse.Namespace, with_hmi: bool) -> dict:
    p = start_bench(args)
    t_start = time.monotonic()
    ready_after = 0.0
    hmi = None
    drivers: list = []
    streams: list[subprocess.Popen] = []
    shown: list[float] = []
    try:
        assert p.stderr is not None
        for line in p.stderr:
            m = ENDPOINT.search(line)
            if m:
                if with_hmi:
                    hmi, drivers, streams = open_side(args, m.group(1))
                    c0, t0 = cpu_seconds(hmi.pid), time.monotonic()
                    ready_after = t0 - t_start
                break
        out, _ = p.communicate(timeout=args.duration + args.warmup + 300)
        if hmi is not None:
            hmi_cpu = (cpu_seconds(hmi.pid) - c0) / (time.monotonic() - t0)
        if drivers:
            shown = list(drivers[0].execute_script("return window.linewatchRejectShownMs || []"))
    finally:
        close_side(hmi, drivers, streams)
    r = json.loads(out)
    res = {"hmi": with_hmi, "fps_median": r["throughput"]["fps"]["median"], "p99_ms": r["latency_ms"]["p99"],
           "decisions": r["frames"]["decisions"], "rejects": r["frames"]["rejects"]}
    if with_hmi:
        res["hmi_cpu_pct_of_one_core"] = round(100 * hmi_cpu, 2)  # from the pages open to the bench's end
        res["pages_open_after_s"] = round(ready_after, 1)
        if ready_after > args.warmup:  # the pages' start-up fell into the measured window
            res["warning"] = f"the pages opened {ready_after:.0f} s after the bench started, after its warm-up"
    if shown:
        a = np.array(shown[1:], np.float64)  # the first may predate the page (it lists the recent rejects)
        res["reject_shown_ms"] = {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 1),
                                  "p95": round(float(np.percentile(a, 95)), 1), "max": round(float(a.max()), 1)}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--browsers", type=int, default=5)
    ap.add_argument("--sse-clients", type=int, default=0,
                    help="also this many plain event-stream clients (curl): the server's cost without rendering")
    ap.add_argument("--page-clients", type=int, default=0, metavar="N",
                    help="also N clients asking what a page on another machine asks: the event stream and the "
                         "overlay at most once a second (one process, N threads; no rendering)")
    ap.add_argument("--browser-nice", type=int, default=0, metavar="N",
                    help="start the browsers at nice N (a browser on the station PC at low priority; default 0)")
    ap.add_argument("--browser-idle", action="store_true",
                    help="start the browsers at SCHED_IDLE (chrt --idle): they get only CPU time the line leaves")
    ap.add_argument("--hmi-idle", action="store_true", help="run `linewatch hmi --idle`")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=None,
                    help="the bench's warm-up, both sides (default 3 s; 45 s with browsers: opening them is slow "
                         "and must not fall into the measured window)")
    ap.add_argument("--line", action="store_true",
                    help="the browser test's setting: the synthetic line at its own rate, not the bench (module doc)")
    ap.add_argument("--alternate", type=float, default=0.0, metavar="S",
                    help="one bench of --duration s; the hmi side frozen (SIGSTOP) and thawed every S s, and each "
                         "thawed stretch compared with the frozen ones on either side (module doc)")
    ap.add_argument("--settle", type=float, default=2.0, metavar="S",
                    help="with --alternate: the 1-s windows of the first S s after each switch are left out")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.alternate and args.alternate < args.settle + 2:
        ap.error(f"--alternate {args.alternate:g}: must be at least --settle + 2 s ({args.settle + 2:g}): a stretch "
                 "needs a whole 1-s window after its settling time")
    if args.warmup is None:
        args.warmup = 45.0 if args.browsers and not args.line else 3.0
    if args.line or args.alternate:
        r = line(args) if args.line else alternate(args)
        print(dumps(r), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(dumps(r, indent=1) + "\n")
        return 0
    runs = []
    for i in range(args.rounds):
        for with_hmi in (False, True):
            r = bench(args, with_hmi)
            r["round"] = i + 1
            runs.append(r)
            print(dumps(r), flush=True)
    off = [r["fps_median"] for r in runs if not r["hmi"]]
    on = [r["fps_median"] for r in runs if r["hmi"]]
    summary = {"browsers": args.browsers, "browser_nice": args.browser_nice, "browser_idle": args.browser_idle,
               "hmi_idle": args.hmi_idle, "sse_clients": args.sse_clients, "page_clients": args.page_clients,
               "fps_off": off, "fps_on": on,
               "ratio_of_medians": round(statistics.median(on) / statistics.median(off), 3), "runs": runs}
    print(dumps({k: v for k, v in summary.items() if k != "runs"}))
    if args.out:
        with open(args.out, "w") as f:
            f.write(dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.pop("NOTIFY_SOCKET", None)
    sys.exit(main())
