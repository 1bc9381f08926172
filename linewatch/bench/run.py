"""Running a bench: engine, sources, daemon, subscriber; the report of what was measured.

`run_bench(cfg)` reads top to bottom as the run's steps: open the engine, pace the synthetic source
against it (`_pacing`), make the sources, start the publisher, the subscriber process and the daemon
(`_Pipeline`), let the sources go, warm up, measure (`_measure`), drain, collect the subscriber's
rows; then `build_report` assembles the report section by section from them.
"""

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
from typing import TYPE_CHECKING, Any

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
from linewatch.errors import LinewatchError, SettingError

if TYPE_CHECKING:
    from linewatch.pipeline.acquire.base import BaseSource
    from linewatch.pipeline.daemon import Daemon
    from linewatch.pipeline.infer import InferenceWorker
    from linewatch.pipeline.publish import Publisher
    from linewatch.record.recorder import Recorder

    RunSource = BenchSource | BaseSource
    """A source of a bench run: the bench's simulated camera, or one of the profile's cameras."""

# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class BenchProgress:
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
        raise SettingError(f"`model` {model}: no such file (an ONNX exported by `linewatch export`, manifest beside it)")
    if name == "null" and model is None:
        from linewatch.engines.null import NullEngine

        return NullEngine(NULL_INPUT_HW, max_batch), None
    engine = open_profile_engine(prof, name, precision=cfg.precision, model=model, max_batch=max_batch)
    return engine, model


def make_sources(cfg: BenchConfig, engine: Any, go: threading.Event, inflight: int | None = None,
                 poll_max_s: float = 0.0001) -> tuple[list[RunSource], str]:
    """The sources of the run and a description of them: one bench source per profile camera over one
    frame pool (`--source synthetic`), else the profile's own cameras (`camera.make_source`)."""
    prof = cfg.profile
    if cfg.source != "synthetic":
        return _profile_sources(cfg)
    seed, defect_rate, adhesive_rate = _pool_settings(cfg)
    pool, truth = render_pool(cfg.pool, tuple(engine.input_hw), seed=seed, defect_rate=defect_rate,
                              adhesive_rate=adhesive_rate)
    if inflight is None:
        inflight = cfg.inflight or engine.max_batch
    srcs: list[RunSource] = [
        BenchSource(cam.id, pool, truth, pace=cfg.pace, fps=cfg.fps, inflight=inflight, pixels=cfg.pixels,
                    offset=i * 7, go=go, poll_max_s=poll_max_s) for i, cam in enumerate(prof.camera)]
    h, w = engine.input_hw
    desc = (f"bench synthetic source x{len(srcs)} over a pool of {cfg.pool} frames {h}x{w}, pace {cfg.pace}"
            + (f" {cfg.fps:g} fps" if cfg.pace == "fixed" else "")
            + (f", inflight {inflight}" if cfg.pace == "backpressure" else "")
            + f", pixels {cfg.pixels}")
    return srcs, desc


def _pool_settings(cfg: BenchConfig) -> tuple[int, float | None, float | None]:
    """(seed, defect_rate, adhesive_rate) of the frame pool: the profile's first camera's when it is a
    synthetic camera, else the config's seed and the renderer's default rates."""
    from linewatch.profile import SyntheticCamera

    cam0 = cfg.profile.camera[0]
    if isinstance(cam0, SyntheticCamera):
        return cam0.seed, cam0.defect_rate, cam0.adhesive_rate
    return cfg.seed, None, None


def _profile_sources(cfg: BenchConfig) -> tuple[list[RunSource], str]:
    prof = cfg.profile
    wrong = [c.id for c in prof.camera if c.source != cfg.source]
    if wrong:
        raise SettingError(f"`source` {cfg.source}: the profile's camera(s) {', '.join(wrong)} are not {cfg.source} "
                         f"cameras; pass a profile whose [[camera]] tables have source = \"{cfg.source}\"")
    srcs: list[RunSource] = [cam.make_source(prof) for cam in prof.camera]
    return srcs, f"profile's {cfg.source} camera(s) {', '.join(prof.camera_ids)} (their own pacing)"


def run_bench(cfg: BenchConfig, progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Run the pipeline benchmark; the report (a JSON-able dict with `REPORT_KEYS`)."""
    cfg.validate()
    host = _host()
    say = progress or _silent
    say("bench: opening the engine", force=True)
    engine, model_path = open_bench_engine(cfg)
    if cfg.baselines and model_path is None:
        engine.close()
        raise SettingError(f"`baselines` {' '.join(cfg.baselines)} needs a model: give `model` engines/<model>.onnx "
                         "(for torch: its weights .pt beside it)")
    run = _Pipeline(cfg, engine, model_path)
    errors: list[str] = []
    try:
        pacing = _pacing(cfg, engine, say)
        say("bench: rendering the frame pool", force=True)
        sources, source_desc = make_sources(cfg, engine, run.go, pacing.inflight, pacing.poll_max_s)
        run.start(sources, pacing.batch_limit, say)
        worker = run.worker
        _warm_up(cfg, worker, say)
        measured = _measure(cfg, run.daemon_started, worker, say, errors)
        run.drain(say, errors)
        errors += [f"source {s.camera} failed: {s.error!r}" for s in sources if s.error is not None]
        pub_counters, res = run.subscriber_rows()
        produced = {i: int(s.frames_seen) for i, s in enumerate(sources)}
        worker_decisions = int(worker.counters()["decisions"])
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    finally:
        run.close()
    say("bench: done", force=True)

    report = build_report(cfg, res, produced=produced, t0_ns=measured.t0_ns, t1_ns=measured.t1_ns,
                          wall_s=measured.wall_s, cpu_s=measured.cpu_s, stats=measured.stats,
                          ring_delta=measured.ring_delta, pub_counters=pub_counters, max_rss_mb=max_rss_mb,
                          host=host, engine=engine, model_path=model_path, source_desc=source_desc, errors=errors,
                          worker_decisions=worker_decisions, source_counters=[_source_counters(s) for s in sources])
    report["bench"]["inflight"] = pacing.inflight if cfg.pace == "backpressure" and cfg.source == "synthetic" else None
    report["bench"]["inflight_calibration_ms"] = pacing.calibration_ms
    report["engine"]["batch_limit"] = run.daemon_started.batch_limit
    report["engine"]["max_batch_note"] = ("worker batches capped at the size the engine runs within half the "
                                          "deadline (linewatch.pipeline.infer.batch_limit)")
    if cfg.baselines:
        _add_baselines(report, cfg, engine, model_path, sources, say)
    if run.recorder is not None:
        report["archive"] = {"dir": str(cfg.archive), **run.recorder.status(),
                             "rows_missing": worker_decisions - run.recorder.status()["rows"]}
    report["verdict"] = verdict(report, cfg.min_fps)
    return report


def _silent(*args: Any, **kwargs: Any) -> None:
    """The progress callback of a quiet run."""


# --------------------------------------------------------------------------------------------------
# the steps of a run


@dataclass
class _Pacing:
    """How the bench's synthetic source is fed (the module doc of `linewatch.bench`, `pace`)."""

    inflight: int | None
    """Backpressure: at most this many frames in the ring (None = the engine's max_batch)."""
    calibration_ms: dict[str, float] | None = None
    """--inflight auto: the engine's time per batch size."""
    poll_max_s: float = POLL_S
    """Backpressure: the longest poll of a waiting source."""
    batch_limit: int | None = None
    """--inflight auto: the worker's batches are capped at this (None = the daemon measures it)."""


def _pacing(cfg: BenchConfig, engine: Any, say: Callable[..., None]) -> _Pacing:
    """The pacing of the run; with --inflight auto (synthetic, backpressure) the engine is timed per batch size
    and the source keeps two of the best batches in flight."""
    from linewatch.pipeline.infer import batch_limit

    if not (cfg.source == "synthetic" and cfg.pace == "backpressure" and cfg.inflight is None):
        return _Pacing(cfg.inflight)
    say("bench: timing the engine per batch size (--inflight auto)", force=True)
    engine.warmup()
    n, calibration = batch_limit(engine, cfg.profile.decision.deadline_ns)
    poll_max_s = min(max(calibration[str(n)] / 1e3 / 10, POLL_S), POLL_MAX_S)
    return _Pacing(2 * n, calibration, poll_max_s, n)  # one batch waiting while the previous one runs


class _Pipeline:
    """The publisher, the subscriber process and the daemon of one run: started in that order (`start`),
    drained (`drain`) and stopped whatever happened (`close`, which also closes the engine)."""

    def __init__(self, cfg: BenchConfig, engine: Any, model_path: Path | None) -> None:
        self.cfg, self.engine, self.model_path = cfg, engine, model_path
        self.go = threading.Event()
        """Set once the subscriber is live and the sources are up: the bench sources' first frame."""
        self.pub: Publisher | None = None
        self.sub: SubscriberProcess | None = None
        self.daemon: Daemon | None = None
        self.started = False
        self.recorder: Recorder | None = None
        """The station record when `cfg.archive` is given (its cost is what the bench then measures)."""

    @property
    def daemon_started(self) -> Daemon:
        assert self.daemon is not None and self.started
        return self.daemon

    @property
    def worker(self) -> InferenceWorker:
        worker = self.daemon_started.worker
        assert worker is not None
        return worker

    def start(self, sources: list[RunSource], batch_limit: int | None, say: Callable[..., None]) -> None:
        self._start_publisher()
        self._connect_subscriber(say)
        self._start_daemon(sources, batch_limit, say)
        # synthetic sources wait for `go`; the profile's own sources are already running
        for s in sources:
            deadline = time.monotonic() + 60.0
            while s.state == "starting" and time.monotonic() < deadline:
                time.sleep(0.01)
        self.go.set()

    def _start_publisher(self) -> None:
        from linewatch.pipeline.publish import Publisher

        prof, overlays = self.cfg.profile, self.cfg.overlays
        if self.cfg.archive is not None:
            from linewatch.profile import ArchiveConfig
            from linewatch.record.recorder import Recorder

            base = prof.archive or ArchiveConfig(dir=str(self.cfg.archive))
            self.recorder = Recorder(base.model_copy(update={"dir": str(self.cfg.archive)}), prof.station.name)
        self.pub = Publisher("tcp://127.0.0.1:0", prof.station.name,
                             overlay_pass_every=prof.publish.overlay_pass_every if overlays else 0,
                             overlay_pool=8 if overlays else 0,
                             overlay_shape=tuple(self.engine.input_hw) if overlays else None,
                             heartbeat_interval=min(prof.publish.heartbeat_s, 0.5),
                             status=lambda: self.daemon.status() if self.daemon is not None else {},
                             jpeg_quality=prof.publish.jpeg_quality,
                             record=self.recorder.record if self.recorder is not None else None)
        if self.recorder is not None:
            self.recorder.start(self.pub.session)
        self.pub.start()

    def _connect_subscriber(self, say: Callable[..., None]) -> None:
        assert self.pub is not None and self.pub.endpoint is not None
        endpoint = self.pub.endpoint
        say(f"bench: subscriber connecting to {endpoint}", force=True)
        self.sub = SubscriberProcess(endpoint, self.cfg.profile.camera_ids)
        if not self.sub.wait_ready(SUBSCRIBER_READY_S):
            raise LinewatchError(f"the bench's subscriber saw no heartbeat from {endpoint} within {SUBSCRIBER_READY_S:g} s")

    def _start_daemon(self, sources: list[RunSource], batch_limit: int | None, say: Callable[..., None]) -> None:
        from linewatch.logs import get_logger
        from linewatch.pipeline.daemon import Daemon
        from linewatch.sdnotify import Notifier

        prof = self.cfg.profile
        log = get_logger("linewatch.bench", station=prof.station.name)
        self.daemon = Daemon(prof, engine=self.engine, model_path=self.model_path, sources=sources,
                             publisher=StartedPublisher(self.pub), notifier=Notifier(env={}), log=log,
                             batch_limit=batch_limit)
        say("bench: warming the engine up, starting the pipeline", force=True)
        self.daemon.start()
        self.started = True

    def drain(self, say: Callable[..., None], errors: list[str]) -> None:
        """Stop the sources and wait until every frame in the ring is decided and published."""
        say("bench: draining", force=True)
        daemon = self.daemon_started
        daemon.stop("bench finished")
        code = daemon.join(DRAIN_S)
        if code is None:
            errors.append(f"the daemon did not drain within {DRAIN_S:g} s")
        elif code != 0:
            errors.append(f"the daemon exited with code {code}")

    def subscriber_rows(self) -> tuple[dict[str, int], dict[str, Any]]:
        """The publisher's counters and the subscriber's rows (once it got every decision published)."""
        assert self.pub is not None and self.sub is not None
        pub_counters = self.pub.counters()
        res = self.sub.result(pub_counters["decisions"] - pub_counters["queue_overflow"], DRAIN_S)
        if res is None:
            raise RuntimeError("the bench's subscriber process returned no result")
        return pub_counters, res

    def close(self) -> None:
        if self.started and self.daemon is not None and self.daemon.join(0) is None:
            self.daemon.stop("bench aborted")  # an exception during the run: stop what runs
            self.daemon.join(DRAIN_S)
        elif not self.started and self.pub is not None:  # Publisher.stop is idempotent
            self.pub.stop(drain=False)
        if self.sub is not None:
            self.sub.close()
        if self.recorder is not None:  # after the publisher: every decision it took is queued
            self.recorder.stop()
        self.engine.close()


def _warm_up(cfg: BenchConfig, worker: InferenceWorker, say: Callable[..., None]) -> None:
    """`warmup_s` seconds of traffic that are not measured."""
    t_go = time.monotonic()
    while time.monotonic() - t_go < cfg.warmup_s:
        time.sleep(0.05)
        say(f"bench: warm-up {time.monotonic() - t_go:4.1f}/{cfg.warmup_s:g} s, {worker.decisions} decisions")


@dataclass
class _Measured:
    """The measured period: its bounds, the process's time, the worker's stage times, the ring's counts."""

    t0_ns: int
    t1_ns: int
    wall_s: float
    cpu_s: float
    stats: dict[str, Any]
    ring_delta: dict[str, int]


def _measure(cfg: BenchConfig, daemon: Daemon, worker: InferenceWorker, say: Callable[..., None],
             errors: list[str]) -> _Measured:
    """`duration_s` seconds of traffic, measured; ends early (an error) when the daemon or the worker stops."""
    assert daemon.ring is not None
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
    return _Measured(t0_ns, t1_ns, wall, cpu, stats, _delta(ring1.as_dict(), ring0.as_dict()))


def _add_baselines(report: dict[str, Any], cfg: BenchConfig, engine: Any, model_path: Path | None,
                   sources: list[RunSource], say: Callable[..., None]) -> None:
    """The plain loops of `cfg.baselines` on the same frames, and their comparison with the pipeline."""
    pool = sources[0].pool if isinstance(sources[0], BenchSource) else None
    report["baseline"], report["comparison"] = {}, {}
    for name in cfg.baselines:
        say(f"bench: baseline {name} (the plain loop)", force=True)
        base = BASELINE_LOOPS[name](model_path, engine, cfg, pool=pool, progress=say)
        report["baseline"][name] = base
        report["comparison"][name] = compare(report, base)


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: int(a[k]) - int(b.get(k, 0)) for k in a if k != "max_occupancy"} | {
        "max_occupancy": int(a.get("max_occupancy", 0))}


def _source_counters(s: RunSource) -> dict[str, Any]:
    c = s.counters
    out: dict[str, Any] = {"camera": s.camera, "frames_seen": c.frames_seen, "committed": c.committed,
                           "dropped_full": c.dropped_full, "late_ticks": c.late_ticks}
    if isinstance(s, BenchSource):
        out["blocked_s"] = round(s.blocked_ns / 1e9, 3)
    return out


# --------------------------------------------------------------------------------------------------
# the report


def build_report(cfg: BenchConfig, res: dict[str, Any], *, produced: dict[int, int], t0_ns: int, t1_ns: int,
                 wall_s: float, cpu_s: float, stats: dict[str, Any], ring_delta: dict[str, int],
                 pub_counters: dict[str, int], max_rss_mb: float, host: dict[str, Any], engine: Any,
                 model_path: Path | None, source_desc: str, errors: list[str],
                 source_counters: list[dict[str, Any]], worker_decisions: int | None = None) -> dict[str, Any]:
    """Assemble the report from the subscriber's rows and the run's counters."""
    rows = _Rows(res, t0_ns, t1_ns)
    seconds = int(cfg.duration_s)
    return {
        "bench": _bench_section(cfg, host, source_desc, errors),
        "engine": {"backend": engine.name, "device": engine.device, "model": str(model_path) if model_path else None,
                   "input_hw": list(engine.input_hw), "max_batch": int(engine.max_batch)},
        "throughput": _throughput(rows, t0_ns, seconds),
        "latency_ms": rows.latency(rows.in_meas),
        "latency_split_ms": _latency_split(rows),
        "stages_ms": {k: v for k, v in stats.get("latency_ms", {}).items()},
        "batch_sizes": {str(k): int(v) for k, v in stats.get("batch_sizes", {}).items()},
        "frames": _frames(rows, res, produced, pub_counters, worker_decisions),
        "measured": {
            "window_s": [0, seconds],
            "t0_unix_ns": int(t0_ns),  # wall-clock start of window 0 (throughput.per_window[i] is [t0 + i s, +1 s))
            "decisions": int(rows.recv_meas.sum()),
            "inferred": int((~rows.fs & rows.recv_meas).sum()),
            "failsafe": int((rows.fs & rows.recv_meas).sum()),
            "reasons": rows.reason_counts(rows.recv_meas),
            "ring": ring_delta,
            "sources": source_counters,
        },
        "resources": _resources(wall_s, cpu_s, host["cpus"], max_rss_mb, res),
        "publisher": dict(pub_counters),
        "baseline": None,
        "comparison": None,
        "verdict": {},
    }


class _Rows:
    """The subscriber's rows (one per decision received) and the masks the report counts them by."""

    def __init__(self, res: dict[str, Any], t0_ns: int, t1_ns: int) -> None:
        self.a: dict[str, np.ndarray] = res["arrays"]
        self.reasons: list[str] = res["reasons"]
        a = self.a
        self.fs = a["failsafe"].astype(bool)
        """Fail-safe decisions (dropped / late / corrupt / engine error)."""
        self.in_meas = (a["t_capture_ns"] >= t0_ns) & (a["t_capture_ns"] < t1_ns)
        """Frames captured in the measured period."""
        self.recv_meas = (a["t_recv_ns"] >= t0_ns) & (a["t_recv_ns"] < t1_ns)
        """Decisions received in the measured period."""

    def reason_counts(self, mask: np.ndarray) -> dict[str, int]:
        a, reasons = self.a, self.reasons
        codes = np.bincount(a["reason"][mask], minlength=len(reasons)) if mask.any() else np.zeros(0, np.int64)
        return {reasons[i]: int(c) for i, c in enumerate(codes) if c}

    def latency(self, mask: np.ndarray) -> dict[str, float]:
        """Capture -> subscriber receipt of the rows in `mask`."""
        return percentiles_ms((self.a["t_recv_ns"] - self.a["t_capture_ns"])[mask])


def _throughput(rows: _Rows, t0_ns: int, seconds: int) -> dict[str, Any]:
    t_recv = rows.a["t_recv_ns"]
    win_all = window_counts(t_recv, t0_ns, seconds)
    win_inf = window_counts(t_recv[~rows.fs], t0_ns, seconds)
    win_fs = window_counts(t_recv[rows.fs], t0_ns, seconds)
    return {
        "windows": len(win_all),
        "fps": window_summary(win_all),
        "inferred_fps": window_summary(win_inf),
        "failsafe_fps": window_summary(win_fs),
        "per_window": win_all,
        "per_window_inferred": win_inf,
    }


def _latency_split(rows: _Rows) -> dict[str, dict[str, float]]:
    a, m = rows.a, rows.in_meas
    return {
        "capture_to_decision": percentiles_ms((a["t_decision_ns"] - a["t_capture_ns"])[m]),
        "decision_to_sent": percentiles_ms((a["t_sent_ns"] - a["t_decision_ns"])[m]),
        "sent_to_received": percentiles_ms((a["t_recv_ns"] - a["t_sent_ns"])[m]),
        "inferred_only": rows.latency(m & ~rows.fs),
        "failsafe_only": rows.latency(m & rows.fs),
    }


def _frames(rows: _Rows, res: dict[str, Any], produced: dict[int, int], pub_counters: dict[str, int],
            worker_decisions: int | None) -> dict[str, Any]:
    """Every frame produced against the decisions received: counts, reasons, ids missing or twice."""
    a, fs = rows.a, rows.fs
    acc = frame_accounting(produced, a["camera"], a["frame_id"])
    gaps = 0
    if a["seq"].size:
        seq = np.sort(a["seq"])
        gaps = int(seq[-1] - seq[0] + 1 - np.unique(seq).size)
    n = int(a["frame_id"].size)
    published = int(pub_counters.get("decisions", 0)) - int(pub_counters.get("queue_overflow", 0))
    total = int(sum(produced.values()))
    return {
        "produced": total,
        "decisions": n,
        "inferred": int((~fs).sum()),
        "failsafe": int(fs.sum()),
        "rejects": int(a["reject"].sum()),
        "passes": int(n - a["reject"].sum()),
        "reasons": rows.reason_counts(np.ones(n, bool)),
        "seq_gaps": gaps,
        **acc,
        "not_decided": total - worker_decisions if worker_decisions is not None else None,
        "lost_in_transport": max(published - int(np.unique(a["seq"]).size), 0),
        "subscriber": {"status": res.get("status"), "heartbeats": res.get("heartbeats")},
    }


def _bench_section(cfg: BenchConfig, host: dict[str, Any], source_desc: str, errors: list[str]) -> dict[str, Any]:
    """What ran where, how, and what went wrong."""
    return {
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
    }


def _resources(wall_s: float, cpu_s: float, cores: int, max_rss_mb: float, res: dict[str, Any]) -> dict[str, Any]:
    return {
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "cpu_cores_used": round(cpu_s / wall_s, 3) if wall_s > 0 else 0.0,
        "cpu_share_of_machine": round(cpu_s / wall_s / cores, 3) if wall_s > 0 else 0.0,
        "cores": cores,
        "max_rss_mb": round(max_rss_mb, 1),
        "subscriber_cpu_cores_used": round(res["cpu_s"] / res["wall_s"], 3) if res["wall_s"] > 0 else 0.0,
    }
