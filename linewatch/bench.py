"""`linewatch bench`: sustained throughput and latency of the whole pipeline, measured end to end.

What runs is the real daemon (`linewatch.daemon.Daemon`) in this process: acquisition thread(s),
ring, engine, inference worker, decisions and the publisher, publishing on a free loopback port.
A **live subscriber in a separate process** (a plain ZeroMQ SUB socket, like a PLC gateway; a
separate process so that its JSON decoding does not compete for this process's GIL) receives every
`decision` message and stamps its arrival. Everything reported is counted from what the subscriber
received, except the per-stage times, which come from the inference worker's histograms.

Timeline: engine warm-up (`engine.warmup()`), publisher bound, subscriber connected and live (first
heartbeat seen), then the sources start; `warmup_s` seconds of traffic that are not measured; then
`duration_s` seconds measured; then the daemon drains (every frame in the ring is decided and
published) and the subscriber reports.

Pacing of the bench's synthetic source (`pace`), the answer to "sustained" when the source is
faster than the engine:

* `backpressure` (default, closed loop): the simulated camera is *triggered* when the pipeline
  has room: it waits until fewer than `inflight` frames are in the ring, then captures (stamps
  `t_capture_ns`), copies the frame into its slot and commits. Nothing is dropped by
  construction; the measured rate is the pipeline's capacity at that queue depth. `inflight`
  defaults to "auto": the engine is timed once per batch size (1, 2, 4, ..., max_batch) and the
  size n with the highest throughput n / t(n) among those whose 2 x t(n) (a batch waiting while
  the previous one runs, then its own run) fits in half the profile's deadline is taken; the
  worker's batches are capped at n and `inflight` = 2n (double buffering). So a GPU engine is fed
  full batches, and a CPU engine whose batch of 8 takes longer than the deadline (every frame
  would be rejected "late") is fed one frame at a time with the next one waiting.
* `fixed` (with `fps`): a free-running line camera at `fps` frames/s (absolute schedule). A frame
  that finds the ring full is dropped and decided as a fail-safe reject, as on a real line. Use it
  for the latency at the line's rate (e.g. `--fps 25`).
* `free`: as fast as the source can copy frames; when the engine is slower, most frames are
  dropped. Throughput of *inferred* decisions is reported apart from the fail-safe ones.

The synthetic frames are rendered once into a pool (`pool` frames at the model's input size, ground
truth kept) before the run; per frame the source does what a camera source does at best: one copy
into the ring slot (`pixels="copy"`, H x W x 3 bytes), or nothing (`pixels="reuse"`: every slot is
filled once up front, which isolates the copy cost). `source="genicam"|"replay"` runs the profile's
own cameras instead (their own pacing; frames they drop count as fail-safe decisions).

Throughput is counted in 1-second windows of the subscriber's arrival time over the measured
period: the median and the minimum window, for inferred decisions (scores, on time) and
fail-safe ones separately. Latency is from capture (`t_capture_ns` in the header) to the
subscriber's receipt, for frames captured in the measured period, split into
capture -> decision, decision -> sent (publisher queue) and sent -> received (ZeroMQ + decode).

`baseline="torch"`: the same pool of frames through the loop a user would write with the plain
PyTorch model (FP32 eager, the engine's device): per frame, stamp the capture time, tensor,
normalise, `model(x)`, threshold; timed the same way. torch is imported for this only.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import __version__
from linewatch.errors import UsageError

PACES = ("backpressure", "fixed", "free")
SOURCES = ("synthetic", "genicam", "replay")
PIXELS = ("copy", "reuse")
BASELINES = ("torch",)
NULL_INPUT_HW = (512, 1224)
"""Frame size of the null engine when no model file is there (the default model's input)."""
POLL_S = 0.0001
"""Backpressure: a waiting source looks at the ring's occupancy after 50 us, then backs off ..."""
POLL_MAX_S = 0.001
"""... to at most 1 ms (with --inflight auto: a tenth of the engine's batch time, >= POLL_S)."""
SUBSCRIBER_READY_S = 15.0
"""How long the bench waits for the subscriber process to see the first heartbeat."""
DRAIN_S = 60.0
"""How long the bench waits for the daemon to drain and the subscriber to report after the run."""

REPORT_KEYS = ("bench", "engine", "throughput", "latency_ms", "latency_split_ms", "stages_ms", "batch_sizes",
               "frames", "measured", "resources", "publisher", "baseline", "comparison", "verdict")
"""Top-level keys of every report (`--json`)."""


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass
class BenchConfig:
    """Everything `run_bench` needs (the CLI builds it from its options)."""

    profile: Any
    """A validated `linewatch.profile.Profile` (cameras, decision settings, ring, publish)."""
    source: str = "synthetic"
    backend: str | None = None
    """Overrides the profile's model.backend (None = the profile's)."""
    model: Path | None = None
    """Overrides the profile's model path (an ONNX with its manifest)."""
    duration_s: float = 30.0
    warmup_s: float = 3.0
    pace: str = "backpressure"
    fps: float = 0.0
    """Source rate for pace "fixed"."""
    inflight: int | None = None
    """Backpressure: at most this many frames in the ring (None = the engine's max_batch)."""
    max_batch: int | None = None
    """Overrides the profile's model.max_batch."""
    min_fps: float = 25.0
    """Verdict: the minimum 1-s window of inferred decisions must reach this."""
    pool: int = 32
    pixels: str = "copy"
    overlays: bool = True
    """False: the publisher gets no overlay pool (every overlay is skipped, counted)."""
    baseline: str | None = None
    baseline_duration_s: float | None = None
    """Seconds of the baseline loop (None = min(duration_s, 10))."""
    seed: int = 0

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"--source {self.source!r}: allowed {', '.join(SOURCES)}")
        if self.pace not in PACES:
            raise UsageError(f"--pace {self.pace!r}: allowed {', '.join(PACES)}")
        if self.pixels not in PIXELS:
            raise UsageError(f"--pixels {self.pixels!r}: allowed {', '.join(PIXELS)}")
        if not self.duration_s >= 1.0:
            raise UsageError(f"--duration {self.duration_s}: must be >= 1 second (throughput is counted per second)")
        if self.warmup_s < 0:
            raise UsageError(f"--warmup {self.warmup_s}: must be >= 0 seconds")
        if self.fps < 0:
            raise UsageError(f"--fps {self.fps}: must be >= 0")
        if self.pace == "fixed" and self.fps <= 0:
            raise UsageError("--pace fixed needs --fps F > 0 (the line camera's rate)")
        if self.pace != "fixed" and self.fps > 0:
            raise UsageError(f"--fps {self.fps:g} only applies to --pace fixed (got --pace {self.pace})")
        if self.inflight is not None and self.inflight < 1:
            raise UsageError(f"--inflight {self.inflight}: must be >= 1")
        if self.max_batch is not None and not 1 <= self.max_batch <= 64:
            raise UsageError(f"--max-batch {self.max_batch}: must be in 1..64")
        if self.pool < 1:
            raise UsageError(f"--pool {self.pool}: must be >= 1")
        if self.min_fps < 0:
            raise UsageError(f"--min-fps {self.min_fps}: must be >= 0")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise UsageError(f"--baseline {self.baseline!r}: allowed {', '.join(BASELINES)}")
        if self.source != "synthetic" and (self.pace != "backpressure" or self.pixels != "copy"):
            raise UsageError(f"--pace/--fps/--pixels apply to --source synthetic only; {self.source} cameras pace "
                             "themselves (set their fps in the profile)")


# --------------------------------------------------------------------------------------------------
# the bench's source: a prerendered pool, paced (Source protocol)


def render_pool(n: int, hw: tuple[int, int], seed: int = 0, defect_rate: float | None = None,
                adhesive_rate: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic cell surfaces at `hw` (uint8 [n, H, W, 3]) and their truth (int8 [n, 2]).

    Rendered at `hw` when both sides are >= 128 px (the renderer's minimum), else at a valid size
    and resized once here (tiny test models)."""
    import dataclasses

    import cv2

    from linewatch.data.synth import SynthConfig, render_into

    h, w = hw
    rh, rw = max(128, -(-h // 8) * 8), max(128, -(-w // 8) * 8)
    over: dict[str, Any] = {"height": rh, "width": rw}
    if defect_rate is not None:
        over["anomaly_rate"] = defect_rate
    if adhesive_rate is not None:
        over["adhesive_rate"] = adhesive_rate
    cfg = dataclasses.replace(SynthConfig(), **over)
    pool = np.empty((n, h, w, 3), np.uint8)
    truth = np.full((n, 2), -1, np.int8)
    scratch = np.empty((rh, rw, 3), np.uint8) if (rh, rw) != (h, w) else None
    for i in range(n):
        out = pool[i] if scratch is None else scratch
        truth[i] = render_into(seed, i, out, cfg)
        if scratch is not None:
            cv2.resize(scratch, (w, h), dst=pool[i], interpolation=cv2.INTER_AREA)
    return pool, truth


class BenchSource:
    """A simulated camera over a prerendered pool, paced by `pace` (module doc). Source protocol.

    Frame ids are 0, 1, 2, ... per camera, so every produced id must come back as one decision.
    The thread waits for `go` (set once the subscriber is live) before its first frame.
    """

    kind = "bench"

    def __init__(self, camera: str, pool: np.ndarray, truth: np.ndarray, *, pace: str = "backpressure",
                 fps: float = 0.0, inflight: int = 8, pixels: str = "copy", offset: int = 0,
                 go: threading.Event | None = None, poll_max_s: float = 0.0001) -> None:
        if pace not in PACES:
            raise UsageError(f"pace {pace!r}: allowed {', '.join(PACES)}")
        self.camera = camera
        self.state = "starting"
        self.pool = pool
        self.truth = [(int(a), int(b)) for a, b in truth]
        self.pace = pace
        self.fps = float(fps)
        self.inflight = int(inflight)
        self.pixels = pixels
        self.offset = int(offset)
        self.poll_max_s = max(float(poll_max_s), POLL_S)
        self.go = go if go is not None else threading.Event()
        self.frames_seen = 0
        self.committed = 0
        self.dropped_full = 0
        self.late_ticks = 0
        self.blocked_ns = 0
        """Backpressure: time spent waiting for room in the ring."""
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, ring: Any, camera_index: int, stop_event: threading.Event) -> threading.Thread:
        if self.pixels == "reuse":
            n = len(self.pool)
            for s in range(ring.slots):
                np.copyto(ring.images[s], self.pool[(self.offset + s) % n])
        self.thread = threading.Thread(target=self._run, args=(ring, camera_index, stop_event),
                                       name=f"lw-bench-{self.camera}", daemon=True)
        self.thread.start()
        return self.thread

    def _run(self, ring: Any, cam: int, stop: threading.Event) -> None:
        try:
            self._loop(ring, cam, stop)
        except BaseException as exc:  # noqa: BLE001 - reported in the bench's report
            self.error = exc
        finally:
            self.state = "done"

    def _loop(self, ring: Any, cam: int, stop: threading.Event) -> None:
        from linewatch.acquire.base import Pacer
        from linewatch.ring import DROP_FULL

        self.state = "up"
        while not self.go.wait(0.05):
            if stop.is_set():
                return
        pool, truth, n = self.pool, self.truth, len(self.pool)
        copy = self.pixels == "copy"
        pace = self.pace
        pacer = Pacer(self.fps if pace == "fixed" else 0.0)
        k = 0
        while not stop.is_set():
            if pacer.period_ns:
                if not pacer.wait(stop):
                    break
                self.late_ticks = pacer.late_ticks
            elif pace == "backpressure" and ring.occupancy >= self.inflight:
                t0 = time.perf_counter_ns()
                delay = POLL_S / 2
                while ring.occupancy >= self.inflight and not stop.is_set():
                    time.sleep(delay)  # the ring signals no release: poll, backing off
                    delay = min(2 * delay, self.poll_max_s)
                self.blocked_ns += time.perf_counter_ns() - t0
                continue
            j = (self.offset + k) % n
            t_cap = time.time_ns()
            slot = ring.claim()
            if slot is None:
                if pace == "backpressure":  # another camera took the room first
                    time.sleep(POLL_S)
                    continue
                ring.drop(cam, k, t_cap, DROP_FULL, truth[j])
                self.dropped_full += 1
            else:
                if copy:
                    np.copyto(ring.images[slot], pool[j])
                ring.commit(slot, cam, k, t_cap, truth[j])
                self.committed += 1
            k += 1
            self.frames_seen = k


# --------------------------------------------------------------------------------------------------
# the subscriber process


_FIELDS = ("camera", "frame_id", "seq", "t_capture_ns", "t_decision_ns", "t_sent_ns", "t_recv_ns", "failsafe",
           "reject", "reason")


def _receiver_main(endpoint: str, cameras: Sequence[str], conn: Any) -> None:
    """The subscriber process: every `decision` message as one row; reports when the publisher stops."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)  # unlimited: the bench counts what the publisher's HWM drops as gaps
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"decision")
    sock.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sock.connect(endpoint)
    cam_index = {c: i for i, c in enumerate(cameras)}
    reasons: dict[str, int] = {}
    cols: dict[str, list[int]] = {f: [] for f in _FIELDS}
    append = [cols[f].append for f in _FIELDS]
    loads = json.loads
    time_ns = time.time_ns
    ready = False
    heartbeats = 0
    last_heartbeat: dict[str, Any] = {}
    status = "stopped"
    expect: int | None = None  # decisions published in all, told by the bench once the daemon has stopped
    t_stopping: float | None = None
    received = 0
    t_cpu0 = time.process_time()
    t_wall0 = time.monotonic()
    try:
        while True:
            try:
                msg = conn.recv() if conn.poll(0) else None
            except (EOFError, OSError):  # the bench process is gone: nobody to report to
                return
            if msg is not None:
                if msg == "stop":
                    status = "told to stop"
                    break
                if isinstance(msg, tuple) and msg[0] == "expect":
                    expect = int(msg[1])
            if expect is not None and received >= expect:
                status = "received every published decision"
                break
            if not sock.poll(100):
                # Heartbeats say "stopping" while the daemon drains (decisions still follow): after the
                # publisher has closed, silence means the rest was lost (high-water mark, linger).
                if expect is not None and t_stopping is not None and time.monotonic() - t_stopping > 2.0:
                    status = f"publisher closed; {expect - received} published decision(s) never arrived"
                    break
                continue
            topic, body, *_ = sock.recv_multipart()
            t_recv = time_ns()
            h = loads(body)
            if topic == b"heartbeat":
                heartbeats += 1
                last_heartbeat = h
                if not ready:
                    ready = True
                    conn.send(("ready", None))
                if h.get("status") == "stopping":
                    t_stopping = time.monotonic()
                continue
            received += 1
            r = h["reason"]
            code = reasons.get(r)
            if code is None:
                code = reasons[r] = len(reasons)
            row = (cam_index.get(h["camera"], -1), h["frame_id"], h["seq"], h["t_capture_ns"], h["t_decision_ns"],
                   h["t_sent_ns"], t_recv, int(h["failsafe"]), int(h["decision"] == "reject"), code)
            for a, v in zip(append, row, strict=True):
                a(v)
    finally:
        sock.close(0)
        ctx.term()
    arrays = {f: np.asarray(v, np.int64) for f, v in cols.items()}
    conn.send(("done", {
        "arrays": arrays,
        "reasons": {code: r for r, code in reasons.items()},
        "heartbeats": heartbeats,
        "last_heartbeat": last_heartbeat,
        "status": status,
        "cpu_s": time.process_time() - t_cpu0,
        "wall_s": time.monotonic() - t_wall0,
    }))


class SubscriberProcess:
    """The live subscriber (`_receiver_main`) in a spawned process, with its pipe."""

    def __init__(self, endpoint: str, cameras: Sequence[str]) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_receiver_main, args=(endpoint, tuple(cameras), child),
                                name="linewatch-bench-subscriber", daemon=True)
        self.proc.start()
        child.close()

    def wait_ready(self, timeout: float) -> bool:
        if not self._conn.poll(timeout):
            return False
        kind, _ = self._conn.recv()
        return kind == "ready"

    def result(self, expect: int, timeout: float) -> dict[str, Any] | None:
        """The subscriber's rows once it has `expect` decisions, or the publisher has closed and gone
        silent (asks it to stop after `timeout`)."""
        self._conn.send(("expect", int(expect)))
        if not self._conn.poll(timeout):
            self._conn.send("stop")
            if not self._conn.poll(5.0):
                return None
        kind, payload = self._conn.recv()
        return payload if kind == "done" else None

    def close(self) -> None:
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        self._conn.close()


class _StartedPublisher:
    """The bench's Publisher, already started (the subscriber connects before any frame flows):
    `start()` is a no-op for the daemon, the rest is the publisher's."""

    def __init__(self, pub: Any) -> None:
        self._pub = pub
        self.submit = pub.submit

    def start(self) -> _StartedPublisher:
        return self

    def stop(self, drain: bool = True) -> None:
        self._pub.stop(drain=drain)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pub, name)


# --------------------------------------------------------------------------------------------------
# statistics


def percentiles_ms(ns: np.ndarray) -> dict[str, float]:
    """n, mean, p50, p95, p99, max of durations in ns, in ms (exact, numpy 'linear' percentiles)."""
    if ns.size == 0:
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    p50, p95, p99 = np.percentile(ns, [50, 95, 99])
    return {"n": int(ns.size), "mean": float(ns.mean()) / 1e6, "p50": float(p50) / 1e6, "p95": float(p95) / 1e6,
            "p99": float(p99) / 1e6, "max": float(ns.max()) / 1e6}


def window_counts(t_ns: np.ndarray, t0_ns: int, seconds: int) -> list[int]:
    """How many of `t_ns` fall in each 1-s window [t0 + i s, t0 + (i+1) s), i < seconds."""
    if seconds <= 0:
        return []
    idx = (t_ns - t0_ns) // 1_000_000_000
    idx = idx[(idx >= 0) & (idx < seconds)]
    return np.bincount(idx, minlength=seconds).astype(int).tolist()


def _window_summary(counts: list[int]) -> dict[str, float]:
    if not counts:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "mean": 0.0}
    return {"median": float(statistics.median(counts)), "min": float(min(counts)), "max": float(max(counts)),
            "mean": float(sum(counts) / len(counts))}


def frame_accounting(produced: dict[int, int], camera: np.ndarray, frame_id: np.ndarray) -> dict[str, int]:
    """Compare the ids each camera produced (0 .. produced-1) with the decisions received."""
    missing = duplicates = unexpected = 0
    examples: list[list[int]] = []
    for cam, n in produced.items():
        ids = frame_id[camera == cam]
        ok = ids[(ids >= 0) & (ids < n)]
        unexpected += int(ids.size - ok.size)
        seen = np.bincount(ok, minlength=n) if n else np.zeros(0, np.int64)
        lacking = np.flatnonzero(seen == 0)
        missing += int(lacking.size)
        examples += [[int(cam), int(i)] for i in lacking[: max(0, 10 - len(examples))]]
        duplicates += int(np.clip(seen - 1, 0, None).sum())
    unexpected += int(np.isin(camera, list(produced), invert=True).sum())
    return {"missing": missing, "duplicates": duplicates, "unexpected": unexpected, "missing_examples": examples}


def verdict(report: dict[str, Any], min_fps: float) -> dict[str, Any]:
    """Pass/fail of a report: minimum 1-s window of inferred decisions >= min_fps, every frame decided."""
    failures = []
    tp = report["throughput"]
    if tp["inferred_fps"]["min"] < min_fps:
        failures.append(f"minimum 1-s window {tp['inferred_fps']['min']:g} inferred decisions/s < --min-fps {min_fps:g}")
    fr = report["frames"]
    if fr["missing"]:
        where = ""
        if fr.get("lost_in_transport") is not None:
            where = (f" ({fr.get('not_decided')} not decided by the pipeline, {fr['lost_in_transport']} published "
                     "but not received)")
        failures.append(f"{fr['missing']} frame(s) without a decision at the subscriber{where}")
    if fr["duplicates"] or fr["unexpected"]:
        failures.append(f"{fr['duplicates']} duplicate and {fr['unexpected']} unexpected decision(s)")
    if report["bench"].get("errors"):
        failures.extend(report["bench"]["errors"])
    return {"ok": not failures, "min_fps": min_fps, "failures": failures}


def exit_status(report: dict[str, Any]) -> int:
    """0 when the report's verdict passed, else 1."""
    return 0 if report["verdict"]["ok"] else 1


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class _Progress:
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
    """The engine the bench runs (profile's model/backend/max_batch, overridden by the config).

    The null backend runs without a model file too (input 512x1224, the default model's size)."""
    from linewatch.engines.factory import open_engine, resolve_backend
    from linewatch.errors import ProfileError

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
    opts: dict[str, Any] = {}
    if name == "onnxruntime" and prof.model.threads:
        opts["threads"] = prof.model.threads
    return open_engine(model, backend=name, max_batch=max_batch, **opts), model


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
    from linewatch.daemon import make_source

    wrong = [c.id for c in prof.camera if c.source != cfg.source]
    if wrong:
        raise UsageError(f"--source {cfg.source}: the profile's camera(s) {', '.join(wrong)} are not {cfg.source} "
                         f"cameras; pass a profile whose [[camera]] tables have source = \"{cfg.source}\"")
    srcs = [make_source(cam, prof) for cam in prof.camera]
    return srcs, f"profile's {cfg.source} camera(s) {', '.join(prof.camera_ids)} (their own pacing)"


def run_bench(cfg: BenchConfig, progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Run the pipeline benchmark; the report (a JSON-able dict with `REPORT_KEYS`)."""
    from linewatch.daemon import Daemon
    from linewatch.infer import batch_limit
    from linewatch.logs import get_logger
    from linewatch.publish import Publisher
    from linewatch.sdnotify import Notifier

    cfg.validate()
    prof = cfg.profile
    errors: list[str] = []
    host = _host()
    say = progress or (lambda *a, **k: None)
    log = get_logger("linewatch.bench", station=prof.station.name)

    say("bench: opening the engine", force=True)
    engine, model_path = open_bench_engine(cfg)
    if cfg.baseline == "torch" and model_path is None:
        engine.close()
        raise UsageError("--baseline torch needs a model: pass --model engines/<model>.onnx (its weights .pt beside it)")
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

        daemon = Daemon(prof, engine=engine, sources=sources, publisher=_StartedPublisher(pub),
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
                                          "deadline (linewatch.infer.batch_limit)")
    if cfg.baseline == "torch":
        say("bench: baseline (PyTorch eager FP32 loop)", force=True)
        pool = sources[0].pool if isinstance(sources[0], BenchSource) else None
        report["baseline"] = torch_baseline(model_path, engine, cfg, pool=pool, progress=say)
        report["comparison"] = compare(report, report["baseline"])
    report["verdict"] = verdict(report, cfg.min_fps)
    return report


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: int(a[k]) - int(b.get(k, 0)) for k in a if k != "max_occupancy"} | {
        "max_occupancy": int(a.get("max_occupancy", 0))}


def _source_counters(s: Any) -> dict[str, Any]:
    keys = ("frames_seen", "committed", "dropped_full", "late_ticks")
    out: dict[str, Any] = {"camera": getattr(s, "camera", "?")}
    counters = getattr(s, "counters", None)
    for k in keys:
        v = getattr(counters, k, None) if counters is not None else getattr(s, k, None)
        if v is not None:
            out[k] = int(v)
    if hasattr(s, "blocked_ns"):
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
        codes = np.bincount(a["reason"][mask], minlength=len(reasons)) if mask.any() else []
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
            "fps": _window_summary(win_all),
            "inferred_fps": _window_summary(win_inf),
            "failsafe_fps": _window_summary(win_fs),
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


def prof_name(profile: Any) -> str:
    return str(profile.source_path or "<embedded demo profile>")


# --------------------------------------------------------------------------------------------------
# the PyTorch baseline


def torch_baseline(model_path: Path | None, engine: Any, cfg: BenchConfig, pool: np.ndarray | None = None,
                   progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """The plain PyTorch loop on the same frames and device (module doc)."""
    import torch

    from linewatch.engines.manifest import load_manifest
    from linewatch.model.export import load_model
    from linewatch.model.resse import NORM_SCALE, NORM_SHIFT

    if model_path is None:
        raise UsageError("--baseline torch needs a model (its weights .pt beside the ONNX)")
    man, onnx = load_manifest(model_path, verify=False)
    if not man.weights:
        raise UsageError(f"--baseline torch: the manifest of {onnx} names no weights file (re-export the model "
                         "with `linewatch export`, which writes <stem>.pt)")
    weights = onnx.parent / man.weights
    device = "cuda" if str(engine.device).startswith("cuda") else "cpu"
    model = load_model(weights, device=device)
    t_a, t_h = cfg.profile.decision.thresholds.as_tuple()
    rule = cfg.profile.decision.adhesive_rule
    cam = cfg.profile.camera[0]
    if pool is None or tuple(pool.shape[1:3]) != tuple(man.input_hw):
        pool, _ = render_pool(min(cfg.pool, 16), tuple(man.input_hw), seed=getattr(cam, "seed", 0),
                              defect_rate=getattr(cam, "defect_rate", None))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dur = cfg.baseline_duration_s if cfg.baseline_duration_s is not None else min(cfg.duration_s, 10.0)
    dur = max(dur, 1.0)

    def one(frame: np.ndarray) -> bool:
        x = torch.from_numpy(frame).to(device).permute(2, 0, 1).unsqueeze(0).float() * NORM_SCALE + NORM_SHIFT
        out = model(x)
        s = out.scores[0].cpu().tolist()
        reject = s[0] >= t_a
        if rule == "present":
            reject = reject or s[1] < t_h
        elif rule == "absent":
            reject = reject or s[1] >= t_h
        return reject

    lat: list[int] = []
    t_done: list[int] = []
    with torch.no_grad():
        for k in range(3):  # warm-up (allocator, cudnn autotune)
            one(pool[k % len(pool)])
        sync()
        t0_ns = time.time_ns()
        t_end = time.monotonic() + dur
        k = 0
        while time.monotonic() < t_end:
            t_cap = time.time_ns()
            one(pool[k % len(pool)])
            t = time.time_ns()
            lat.append(t - t_cap)
            t_done.append(t)
            k += 1
            if progress is not None:
                progress(f"bench: baseline {k} frames, {(t - t0_ns) / 1e9:4.1f}/{dur:g} s")
    seconds = int(dur)
    win = window_counts(np.asarray(t_done, np.int64), t0_ns, seconds)
    return {
        "what": f"PyTorch {torch.__version__} eager FP32 on {device}, batch 1, torch.no_grad(), "
                f"{torch.get_num_threads()} intra-op threads: tensor, normalise, model(x), threshold",
        "device": device,
        "duration_s": dur,
        "frames": k,
        "fps": _window_summary(win),
        "per_window": win,
        "latency_ms": percentiles_ms(np.asarray(lat, np.int64)),
    }


def compare(report: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Pipeline vs baseline: throughput (median windows, inferred) and latency ratios."""
    p = report["throughput"]["inferred_fps"]["median"]
    b = base["fps"]["median"] or (base["frames"] / base["duration_s"])
    lp, lb = report["latency_ms"]["p50"], base["latency_ms"]["p50"]
    return {"pipeline_fps_median": p, "baseline_fps_median": b,
            "throughput_ratio": round(p / b, 3) if b else None,
            "pipeline_latency_p50_ms": lp, "baseline_latency_p50_ms": lb,
            "latency_p50_ratio": round(lp / lb, 3) if lb else None}


# --------------------------------------------------------------------------------------------------
# human-readable output


def format_report(r: dict[str, Any]) -> str:
    """The report as text (the default output of `linewatch bench`)."""
    b, e, t, f = r["bench"], r["engine"], r["throughput"], r["frames"]
    lat, sp, res = r["latency_ms"], r["latency_split_ms"], r["resources"]
    h = b["host"]
    lines = [
        f"linewatch bench {b['linewatch']}  {b['date_utc']}",
        f"  host      {h['cpus']} CPUs ({h['processor']}), load {h['loadavg_before']} -> {h['loadavg_after']}",
        f"  engine    {e['backend']} on {e['device']}, input {e['input_hw'][0]}x{e['input_hw'][1]}, "
        f"max_batch {e['max_batch']}{' (chosen by --inflight auto)' if e.get('max_batch_note', '').startswith('worker') else ''}"
        f", model {e['model']}",
        f"  source    {b['source']}",
        f"  profile   {b['profile']}; overlays {'on' if b['overlays'] else 'off'}; "
        f"warm-up {b['warmup_s']:g} s, measured {b['duration_s']:g} s ({t['windows']} windows of 1 s)",
        f"  pacing    {b['pace']}" + (f" (inflight {b['inflight']}"
                                       + (f"; engine ms per batch size {b['inflight_calibration_ms']}"
                                          if b.get("inflight_calibration_ms") else "") + ")"
                                       if b.get("inflight") else "") + ": " + {
            "backpressure": "closed loop, the camera is triggered when the ring has room (no drops by construction)",
            "fixed": "free-running camera at a fixed rate; a full ring drops frames (fail-safe rejects)",
            "free": "camera as fast as it can copy; frames that find the ring full are dropped (fail-safe)",
            "source": "the profile's cameras at their own rate; a full ring drops frames (fail-safe rejects)",
        }[b["pace"]],
        "",
        "throughput (decisions received per 1-s window)   median      min      max",
        f"  inferred                                   {t['inferred_fps']['median']:9.1f} {t['inferred_fps']['min']:8.1f} "
        f"{t['inferred_fps']['max']:8.1f}",
        f"  fail-safe                                  {t['failsafe_fps']['median']:9.1f} {t['failsafe_fps']['min']:8.1f} "
        f"{t['failsafe_fps']['max']:8.1f}",
        f"  all                                        {t['fps']['median']:9.1f} {t['fps']['min']:8.1f} "
        f"{t['fps']['max']:8.1f}",
        "",
        "latency, capture -> subscriber receipt (ms)       p50      p95      p99      max",
        f"  all frames ({lat['n']})".ljust(45) + _lat_cols(lat),
        "  capture -> decision".ljust(45) + _lat_cols(sp["capture_to_decision"]),
        "  decision -> sent (publisher queue)".ljust(45) + _lat_cols(sp["decision_to_sent"]),
        "  sent -> received (ZeroMQ + JSON)".ljust(45) + _lat_cols(sp["sent_to_received"]),
        "",
        "worker stages (ms; wait/infer per batch, decide/submit per frame)   mean      p50      p99      max",
    ]
    for stage, s in r["stages_ms"].items():
        lines.append(f"  {stage:<10} n={s['n']:<9}".ljust(61) +
                     f"{s['mean']:8.3f} {s['p50']:8.3f} {s['p99']:8.3f} {s['max']:8.3f}")
    bs = r["batch_sizes"]
    lines += [
        f"  batch sizes: {', '.join(f'{k}:{v}' for k, v in bs.items()) or '-'}",
        "",
        f"frames: produced {f['produced']}, decisions {f['decisions']} = inferred {f['inferred']} + fail-safe "
        f"{f['failsafe']}; rejects {f['rejects']}; without a decision {f['missing']}; duplicates {f['duplicates']}; "
        f"seq gaps {f['seq_gaps']}",
        f"  where: not decided by the worker {f['not_decided']}, published but not received {f['lost_in_transport']} "
        f"(PUB high-water mark or linger at close); subscriber: {f['subscriber']['status']}",
        f"  reasons: {', '.join(f'{k} {v}' for k, v in f['reasons'].items()) or '-'}",
        f"  measured period: {r['measured']['decisions']} decisions ({r['measured']['inferred']} inferred, "
        f"{r['measured']['failsafe']} fail-safe); ring {r['measured']['ring']}",
        f"publisher: {', '.join(f'{k} {v}' for k, v in r['publisher'].items())}",
        f"resources: CPU {res['cpu_cores_used']:.2f} cores of {res['cores']} ({100 * res['cpu_share_of_machine']:.0f}%), "
        f"peak RSS {res['max_rss_mb']:.0f} MB (this process: ring, pool, engine); subscriber process "
        f"{res['subscriber_cpu_cores_used']:.2f} cores",
    ]
    base = r.get("baseline")
    if base:
        c = r["comparison"]
        lines += [
            "",
            f"baseline: {base['what']}",
            f"  {base['frames']} frames in {base['duration_s']:g} s: median window {base['fps']['median']:.1f} fps, "
            f"min {base['fps']['min']:.1f}; latency p50 {base['latency_ms']['p50']:.2f} ms, "
            f"p99 {base['latency_ms']['p99']:.2f} ms",
            f"  pipeline / baseline: throughput x{c['throughput_ratio']}, latency p50 x{c['latency_p50_ratio']}",
        ]
    v = r["verdict"]
    lines += ["", "verdict: " + ("PASS" if v["ok"] else "FAIL") +
              (f" (min window >= {v['min_fps']:g} fps, every frame decided)" if v["ok"] else "")]
    lines += [f"  - {x}" for x in v["failures"]]
    return "\n".join(lines)


def _lat_cols(s: dict[str, float]) -> str:
    return f"{s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}"


def config_dict(cfg: BenchConfig) -> dict[str, Any]:
    """The config as JSON-able values (the profile by its file name)."""
    d = {k: getattr(cfg, k) for k in BenchConfig.__dataclass_fields__ if k not in ("profile", "model")}
    d["profile"] = prof_name(cfg.profile)
    d["model"] = str(cfg.model) if cfg.model else None
    return d
