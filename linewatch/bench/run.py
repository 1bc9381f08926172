"""Running a bench: engine, sources, daemon, subscriber; the report of what was measured."""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import __version__
from linewatch.bench.baseline import BASELINE_LOOPS, compare
from linewatch.bench.config import (
    DRAIN_S,
    NULL_INPUT_HW,
    POLL_MAX_S,
    POLL_S,
    SUBSCRIBER_READY_S,
    BenchConfig,
    prof_name,
)
from linewatch.bench.receiver import StartedPublisher, SubscriberProcess
from linewatch.bench.report import config_dict
from linewatch.bench.source import BenchSource, render_pool
from linewatch.bench.stats import frame_accounting, percentiles_ms, verdict, window_counts, window_summary
from linewatch.errors import UsageError

# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class Progress:
    out: Any = field(default_factory=lambda: sys.stderr)
    tty: bool = False
    last: float = 0.0
    every: float = 5.0

    def __post_init__(self) -> None:
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.every = 0.5 if self.tty else 5.0

    def __call__(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self.out.write("\r\x1b[2K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def _host() -> dict[str, Any]:
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpus": cores, "machine": platform.machine(), "processor": _cpu_name(), "python": platform.python_version(),
            "numpy": np.__version__, "loadavg_before": load}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def open_bench_engine(cfg: BenchConfig) -> tuple[Any, Path | None]:
    """The engine the bench runs (the daemon's `open_profile_engine`, overridden by the config).

    The null backend runs without a model file too (input 512x1224, the default model's size)."""
    from linewatch.engines.factory import resolve_backend
    from linewatch.errors import ProfileError
    from linewatch.pipeline.daemon import open_profile_engine

    prof = cfg.profile
    name = resolve_backend(cfg.backend or prof.model.backend)
    max_batch = cfg.max_batch or prof.model.max_batch
    try:
        model: Path | None = Path(cfg.model) if cfg.model is not None else prof.model_path()
    except ProfileError:
        if name != "null":
            raise
        model = None
    if model is not None and not model.is_file():
        raise UsageError(f"--model {model}: no such file (an ONNX exported by `linewatch export`, manifest beside it)")
    if name == "null" and model is None:
        from linewatch.engines.null import NullEngine

        return NullEngine(NULL_INPUT_HW, max_batch), None
    engine = open_profile_engine(prof, name, precision=cfg.precision, model=model, max_batch=max_batch)
    return engine, model


def make_sources(cfg: BenchConfig, engine: Any, go: threading.Event, inflight: int | None = None,
                 poll_max_s: float = 0.0001) -> tuple[list[Any], str]:
    """The sources of the run and a description of them."""
    prof = cfg.profile
    if cfg.source == "synthetic":
        cam0 = prof.camera[0]
        pool, truth = render_pool(cfg.pool, tuple(engine.input_hw), seed=getattr(cam0, "seed", cfg.seed),
                                  defect_rate=getattr(cam0, "defect_rate", None),
                                  adhesive_rate=getattr(cam0, "adhesive_rate", None))
        if inflight is None:
            inflight = cfg.inflight or engine.max_batch
        srcs = [BenchSource(cam.id, pool, truth, pace=cfg.pace, fps=cfg.fps, inflight=inflight, pixels=cfg.pixels,
                            offset=i * 7, go=go, poll_max_s=poll_max_s) for i, cam in enumerate(prof.camera)]
        h, w = engine.input_hw
        desc = (f"bench synthetic source x{len(srcs)} over a pool of {cfg.pool} frames {h}x{w}, pace {cfg.pace}"
                + (f" {cfg.fps:g} fps" if cfg.pace == "fixed" else "")
                + (f", inflight {inflight}" if cfg.pace == "backpressure" else "")
                + f", pixels {cfg.pixels}")
        return srcs, desc
    wrong = [c.id for c in prof.camera if c.source != cfg.source]
    if wrong:
        raise UsageError(f"--source {cfg.source}: the profile's camera(s) {', '.join(wrong)} are not {cfg.source} "
                         f"cameras; pass a profile whose [[camera]] tables have source = \"{cfg.source}\"")
    srcs = [cam.make_source(prof) for cam in prof.camera]
    return srcs, f"profile's {cfg.source} camera(s) {', '.join(prof.camera_ids)} (their own pacing)"


def run_bench(cfg: BenchConfig, progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Run the pipeline benchmark; the report (a JSON-able dict with `REPORT_KEYS`)."""
    from linewatch.logs import get_logger
    from linewatch.pipeline.daemon import Daemon
    from linewatch.pipeline.infer import batch_limit
    from linewatch.pipeline.publish import Publisher
    from linewatch.sdnotify import Notifier

    cfg.validate()
    prof = cfg.profile
    errors: list[str] = []
    host = _host()
    say = progress or (lambda *a, **k: None)
    log = get_logger("linewatch.bench", station=prof.station.name)

    say("bench: opening the engine", force=True)
    engine, model_path = open_bench_engine(cfg)
    if cfg.baselines and model_path is None:
        engine.close()
        raise UsageError(f"--baseline {' '.join(cfg.baselines)} needs a model: pass --model engines/<model>.onnx "
                         "(for torch: its weights .pt beside it)")
    daemon: Any = None
    started = False
    sub: SubscriberProcess | None = None
    pub: Any = None
    try:
        go = threading.Event()
        inflight, calibration, poll_max = cfg.inflight, None, POLL_S
        limit: int | None = None
        if cfg.source == "synthetic" and cfg.pace == "backpressure" and inflight is None:
            say("bench: timing the engine per batch size (--inflight auto)", force=True)
            engine.warmup()
            n, calibration = batch_limit(engine, prof.decision.deadline_ns)
            limit = n
            inflight = 2 * n  # one batch waiting while the previous one runs
            poll_max = min(max(calibration[str(n)] / 1e3 / 10, POLL_S), POLL_MAX_S)
        say("bench: rendering the frame pool", force=True)
        sources, source_desc = make_sources(cfg, engine, go, inflight, poll_max)

        daemon_ref: list[Any] = []
        pub = Publisher("tcp://127.0.0.1:0", prof.station.name,
                        overlay_pass_every=prof.publish.overlay_pass_every if cfg.overlays else 0,
                        overlay_pool=8 if cfg.overlays else 0,
                        overlay_shape=tuple(engine.input_hw) if cfg.overlays else None,
                        heartbeat_interval=min(prof.publish.heartbeat_s, 0.5),
                        status=lambda: daemon_ref[0].status() if daemon_ref else {},
                        adhesive_rule=prof.decision.adhesive_rule, jpeg_quality=prof.publish.jpeg_quality)
        pub.start()
        endpoint = pub.endpoint
        say(f"bench: subscriber connecting to {endpoint}", force=True)
        sub = SubscriberProcess(endpoint, prof.camera_ids)
        if not sub.wait_ready(SUBSCRIBER_READY_S):
            raise UsageError(f"the bench's subscriber saw no heartbeat from {endpoint} within {SUBSCRIBER_READY_S:g} s")

        daemon = Daemon(prof, engine=engine, model_path=model_path, sources=sources, publisher=StartedPublisher(pub),
                        notifier=Notifier(env={}), log=log, batch_limit=limit)
        daemon_ref.append(daemon)
        say("bench: warming the engine up, starting the pipeline", force=True)
        daemon.start()
        started = True
        # synthetic sources wait for `go`; the profile's own sources are already running
        for s in sources:
            deadline = time.monotonic() + 60.0
            while getattr(s, "state", "up") == "starting" and time.monotonic() < deadline:
                time.sleep(0.01)
        go.set()
        worker = daemon.worker
        assert worker is not None

        t_go = time.monotonic()
        while time.monotonic() - t_go < cfg.warmup_s:
            time.sleep(0.05)
            say(f"bench: warm-up {time.monotonic() - t_go:4.1f}/{cfg.warmup_s:g} s, {worker.decisions} decisions")
        worker.reset_stats()
        ring0 = daemon.ring.counters
        cpu0 = time.process_time()
        t0_ns = time.time_ns()
        t0 = time.monotonic()
        n0 = worker.decisions
        last_n, last_t = n0, t0
        rate = 0.0
        while True:
            now = time.monotonic()
            if now - t0 >= cfg.duration_s:
                break
            time.sleep(min(0.05, max(cfg.duration_s - (now - t0), 0.0)))
            n = worker.decisions
            if now - last_t >= 1.0:
                rate = (n - last_n) / (now - last_t)
                last_n, last_t = n, now
            c = worker.counters()
            say(f"bench: {now - t0:5.1f}/{cfg.duration_s:g} s  {rate:8.1f} decisions/s  "
                f"{n - n0} decided  {c['drops']} dropped  {c['engine_errors']} engine errors")
            if daemon.join(0) is not None:
                errors.append(f"the daemon stopped {now - t0:.1f} s into the measured period (a finite source "
                              "that ran out of frames? a failed stage? see the log on stderr)")
                break
            if not worker.running:
                errors.append("the inference worker stopped during the run")
                break
        t1_ns = time.time_ns()
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        stats = worker.stats()
        ring1 = daemon.ring.counters
        say("bench: draining", force=True)
        daemon.stop("bench finished")
        code = daemon.join(DRAIN_S)
        if code is None:
            errors.append(f"the daemon did not drain within {DRAIN_S:g} s")
        elif code != 0:
            errors.append(f"the daemon exited with code {code}")
        for s in sources:
            if getattr(s, "error", None) is not None:
                errors.append(f"source {s.camera} failed: {s.error!r}")
        pub_counters = pub.counters()
        res = sub.result(pub_counters["decisions"] - pub_counters["queue_overflow"], DRAIN_S)
        if res is None:
            raise RuntimeError("the bench's subscriber process returned no result")
        produced = {i: int(getattr(s, "frames_seen", 0)) for i, s in enumerate(sources)}
        worker_decisions = int(worker.counters()["decisions"])
        ru = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        if started and daemon.join(0) is None:  # an exception during the run: stop what runs
            daemon.stop("bench aborted")
            daemon.join(DRAIN_S)
        elif not started and pub is not None:  # Publisher.stop is idempotent
            pub.stop(drain=False)
        if sub is not None:
            sub.close()
        engine.close()
    say("bench: done", force=True)

    report = build_report(cfg, res, produced=produced, t0_ns=t0_ns, t1_ns=t1_ns, wall_s=wall, cpu_s=cpu,
                          stats=stats, ring_delta=_delta(ring1.as_dict(), ring0.as_dict()), pub_counters=pub_counters,
                          max_rss_mb=ru.ru_maxrss / 1024.0, host=host, engine=engine, model_path=model_path,
                          source_desc=source_desc, errors=errors, worker_decisions=worker_decisions,
                          source_counters=[_source_counters(s) for s in sources])
    report["bench"]["inflight"] = inflight if cfg.pace == "backpressure" and cfg.source == "synthetic" else None
    report["bench"]["inflight_calibration_ms"] = calibration
    report["engine"]["batch_limit"] = daemon.batch_limit
    report["engine"]["max_batch_note"] = ("worker batches capped at the size the engine runs within half the "
                                          "deadline (linewatch.pipeline.infer.batch_limit)")
    if cfg.baselines:
        pool = sources[0].pool if isinstance(sources[0], BenchSource) else None
        report["baseline"], report["comparison"] = {}, {}
        for name in cfg.baselines:
            say(f"bench: baseline {name} (the plain loop)", force=True)
            base = BASELINE_LOOPS[name](model_path, engine, cfg, pool=pool, progress=say)
            report["baseline"][name] = base
            report["comparison"][name] = compare(report, base)
    report["verdict"] = verdict(report, cfg.min_fps)
    return report


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: int(a[k]) - int(b.get(k, 0)) for k in a if k != "max_occupancy"} | {
        "max_occupancy": int(a.get("max_occupancy", 0))}


def _source_counters(s: Any) -> dict[str, Any]:
    c = s.counters
    out: dict[str, Any] = {"camera": s.camera, "frames_seen": c.frames_seen, "committed": c.committed,
                           "dropped_full": c.dropped_full, "late_ticks": c.late_ticks}
    if isinstance(s, BenchSource):
        out["blocked_s"] = round(s.blocked_ns / 1e9, 3)
    return out


def build_report(cfg: BenchConfig, res: dict[str, Any], *, produced: dict[int, int], t0_ns: int, t1_ns: int,
                 wall_s: float, cpu_s: float, stats: dict[str, Any], ring_delta: dict[str, int],
                 pub_counters: dict[str, int], max_rss_mb: float, host: dict[str, Any], engine: Any,
                 model_path: Path | None, source_desc: str, errors: list[str],
                 source_counters: list[dict[str, Any]], worker_decisions: int | None = None) -> dict[str, Any]:
    """Assemble the report from the subscriber's rows and the run's counters."""
    a = res["arrays"]
    reasons = res["reasons"]
    fs = a["failsafe"].astype(bool)
    seconds = int(cfg.duration_s)
    win_all = window_counts(a["t_recv_ns"], t0_ns, seconds)
    win_inf = window_counts(a["t_recv_ns"][~fs], t0_ns, seconds)
    win_fs = window_counts(a["t_recv_ns"][fs], t0_ns, seconds)
    in_meas = (a["t_capture_ns"] >= t0_ns) & (a["t_capture_ns"] < t1_ns)
    recv_meas = (a["t_recv_ns"] >= t0_ns) & (a["t_recv_ns"] < t1_ns)

    def reason_counts(mask: np.ndarray) -> dict[str, int]:
        codes = np.bincount(a["reason"][mask], minlength=len(reasons)) if mask.any() else np.zeros(0, np.int64)
        return {reasons[i]: int(c) for i, c in enumerate(codes) if c}

    def lat(mask: np.ndarray) -> dict[str, float]:
        return percentiles_ms((a["t_recv_ns"] - a["t_capture_ns"])[mask])

    acc = frame_accounting(produced, a["camera"], a["frame_id"])
    gaps = 0
    if a["seq"].size:
        seq = np.sort(a["seq"])
        gaps = int(seq[-1] - seq[0] + 1 - np.unique(seq).size)
    n = int(a["frame_id"].size)
    published = int(pub_counters.get("decisions", 0)) - int(pub_counters.get("queue_overflow", 0))
    total = int(sum(produced.values()))
    frames = {
        "produced": total,
        "decisions": n,
        "inferred": int((~fs).sum()),
        "failsafe": int(fs.sum()),
        "rejects": int(a["reject"].sum()),
        "passes": int(n - a["reject"].sum()),
        "reasons": reason_counts(np.ones(n, bool)),
        "seq_gaps": gaps,
        **acc,
        "not_decided": total - worker_decisions if worker_decisions is not None else None,
        "lost_in_transport": max(published - int(np.unique(a["seq"]).size), 0),
        "subscriber": {"status": res.get("status"), "heartbeats": res.get("heartbeats")},
    }
    m_n = int(recv_meas.sum())
    measured = {
        "window_s": [0, seconds],
        "decisions": m_n,
        "inferred": int((~fs & recv_meas).sum()),
        "failsafe": int((fs & recv_meas).sum()),
        "reasons": reason_counts(recv_meas),
        "ring": ring_delta,
        "sources": source_counters,
    }
    lat_all = lat(in_meas)
    split = {
        "capture_to_decision": percentiles_ms((a["t_decision_ns"] - a["t_capture_ns"])[in_meas]),
        "decision_to_sent": percentiles_ms((a["t_sent_ns"] - a["t_decision_ns"])[in_meas]),
        "sent_to_received": percentiles_ms((a["t_recv_ns"] - a["t_sent_ns"])[in_meas]),
        "inferred_only": lat(in_meas & ~fs),
    }
    cores = host["cpus"]
    report: dict[str, Any] = {
        "bench": {
            "linewatch": __version__,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": host | {"loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "profile": prof_name(cfg.profile),
            "source": source_desc,
            "pace": cfg.pace if cfg.source == "synthetic" else "source",
            "fps": cfg.fps,
            "pixels": cfg.pixels,
            "overlays": cfg.overlays,
            "duration_s": cfg.duration_s,
            "warmup_s": cfg.warmup_s,
            "subscriber": "separate process, plain ZeroMQ SUB socket (JSON decode per message)",
            "method": ("throughput = 1-s windows of the subscriber's arrival times over the measured period "
                       "(inferred = decisions with scores on time; failsafe = dropped/late/corrupt/engine-error); "
                       "latency = subscriber receipt - t_capture_ns, frames captured in the measured period"),
            "errors": list(errors),
            "config": config_dict(cfg),
        },
        "engine": {"backend": engine.name, "device": engine.device, "model": str(model_path) if model_path else None,
                   "input_hw": list(engine.input_hw), "max_batch": int(engine.max_batch)},
        "throughput": {
            "windows": len(win_all),
            "fps": window_summary(win_all),
            "inferred_fps": window_summary(win_inf),
            "failsafe_fps": window_summary(win_fs),
            "per_window": win_all,
            "per_window_inferred": win_inf,
        },
        "latency_ms": lat_all,
        "latency_split_ms": split,
        "stages_ms": {k: v for k, v in stats.get("latency_ms", {}).items()},
        "batch_sizes": {str(k): int(v) for k, v in stats.get("batch_sizes", {}).items()},
        "frames": frames,
        "measured": measured,
        "resources": {
            "wall_s": round(wall_s, 3),
            "cpu_s": round(cpu_s, 3),
            "cpu_cores_used": round(cpu_s / wall_s, 3) if wall_s > 0 else 0.0,
            "cpu_share_of_machine": round(cpu_s / wall_s / cores, 3) if wall_s > 0 else 0.0,
            "cores": cores,
            "max_rss_mb": round(max_rss_mb, 1),
            "subscriber_cpu_cores_used": round(res["cpu_s"] / res["wall_s"], 3) if res["wall_s"] > 0 else 0.0,
        },
        "publisher": dict(pub_counters),
        "baseline": None,
        "comparison": None,
        "verdict": {},
    }
    return report


