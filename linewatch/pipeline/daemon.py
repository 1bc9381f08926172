"""The inspection daemon: wires profile -> engine -> ring -> sources -> worker -> publisher.

    daemon = Daemon(load_profile("calib/line-3.toml"), profile_path="calib/line-3.toml")
    daemon.start()            # engine loaded + warmed up, publisher bound, cameras started; READY=1
    ...
    daemon.reload()           # SIGHUP: the profile again: [decision] swapped, a new [model] hot-swapped
    daemon.stop()             # SIGTERM: request a drain (safe from a signal handler)
    code = daemon.join()      # 0 after a clean drain, 1 when a stage failed

Start order (`start()`): OpenCV set to one thread per caller (the engine owns the cores), engine (`open_engine`, then `warmup()`), ring (slots from the profile,
the engine's page-locked allocator when `engine.pinned`), decision stage, publisher (binds the
endpoint), inference worker, one acquisition thread per camera, and the supervisor thread. Then
`READY=1` goes to systemd. Any failure before READY undoes what was started and raises.
Warnings at start (`linewatch.security`), never refusals: `unsafe_file_mode` for a profile others can
write or a CURVE key others can read, `endpoint_exposed_without_curve` for an endpoint bound beyond
loopback without CURVE.

Shutdown (`stop()`, SIGTERM, `--duration`, `--max-frames`, or every finite camera done):
`STOPPING=1`; acquisition stops (stop event, source threads joined); the ring is closed and the
worker decides every frame and drop record still in it; the publisher publishes everything queued
and closes; the engine is closed. No frame that entered the ring leaves without a decision.

Reload (`reload()`, SIGHUP): the whole profile file is read and validated again; the decision
settings are swapped atomically while frames keep flowing; a changed `[model]` is opened, warmed and
checked beside the running one and taken over by the worker between two batches (`linewatch.pipeline.swap`),
or refused with the reason while the old one keeps deciding. Keys that need a restart are named. An
invalid profile is logged as an error and the old settings stay. The result is in the heartbeat.

The supervisor thread (`linewatch-supervisor`) ticks every 0.1 s: it performs requested reloads and
stops, computes the decision rate, sends `STATUS=` every `status_interval` seconds and `WATCHDOG=1`
at half of `$WATCHDOG_USEC`, but only while the inference worker shows progress (`alive_age_s()`
below that half-period): a wedged engine stops the petting and systemd restarts the service. When
the worker thread dies the daemon shuts down with exit code 1 (`Restart=on-failure`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from linewatch import __version__
from linewatch.engines.base import Engine
from linewatch.errors import LinewatchError
from linewatch.logs import get_logger
from linewatch.pipeline.decide import Decider
from linewatch.pipeline.infer import DecisionPublisher, InferenceWorker, batch_limit
from linewatch.pipeline.swap import changed_keys, model_info, model_thresholds
from linewatch.pipeline.swap import model_id as swap_model_id
from linewatch.profile import Profile, load_profile
from linewatch.sdnotify import Notifier

if TYPE_CHECKING:
    from linewatch.pipeline.acquire.base import Source
    from linewatch.pipeline.publish import Publisher
    from linewatch.pipeline.ring import Ring
    from linewatch.record.recorder import Recorder

P = ParamSpec("P")
T = TypeVar("T")

SOURCE_JOIN_S = 5.0
"""How long shutdown waits for each acquisition thread."""
WORKER_JOIN_S = 30.0
"""How long shutdown waits for the worker to decide what is left in the ring."""
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
"""What `install_signal_handlers` handles; blocked in every thread the daemon starts (see `start`)."""
SWAP_WAIT_S = 10.0
"""How long a reload waits for the inference worker to take a new model (it does so between batches)."""


def open_profile_engine(profile: Profile, backend: str | None = None, *, precision: str | None = None,
                        model: str | Path | None = None, max_batch: int | None = None, log: Any = None) -> Engine:
    """`open_engine` with the profile's model, backend, precision, max_batch and threads (each argument
    given here overrides the profile's).

    When OpenVINO cannot compile the model, ONNX Runtime opens it instead and a warning
    (`engine_fallback`) says why: a station never starts without an engine because of OpenVINO.
    A precision other than "auto" applies to openvino only; other backends log `precision_ignored`.
    """
    from linewatch.engines.factory import open_engine, resolve_backend
    from linewatch.errors import EngineError

    log = log if log is not None else get_logger("linewatch.daemon")
    name = resolve_backend(backend or profile.model.backend)
    path = Path(model) if model is not None else profile.model_path()
    batch = max_batch or profile.model.max_batch
    want = precision or profile.model.precision
    threads = {"threads": profile.model.threads} if profile.model.threads else {}
    if name == "openvino":
        try:
            return open_engine(path, backend=name, max_batch=batch, precision=want, **threads)
        except EngineError as exc:
            log.warning("engine_fallback", backend="openvino", fallback="onnxruntime", reason=str(exc))
            name = "onnxruntime"
    elif want != "auto":
        log.warning("precision_ignored", backend=name, precision=want,
                    reason="model.precision applies to the openvino backend; this backend chooses its own")
    opts = threads if name == "onnxruntime" else {}
    return open_engine(path, backend=name, max_batch=batch, **opts)


def off_main_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a short-lived thread; its result, or its exception raised here.

    The daemon opens engines this way. OpenVINO installs a small alternate signal stack
    (`sigaltstack`) on the thread that opens a model and frees it when that model is closed: closed
    from another thread (a model swap), the opening thread keeps pointing at freed memory, and the
    next signal delivered to it (SIGHUP, SIGTERM on the main thread) crashed the process (SIGSEGV,
    measured). The main thread, which receives the signals, must never open one."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=work, name="linewatch-engine-open", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


class Daemon:
    """The running pipeline of one station (module doc). Usable in-process (tests, `linewatch bench`).

    Injection points for tests and benchmarks: `engine=` (an Engine the caller closes, with
    `model_path=` the file it runs, for the decisions' model id; else
    `open_profile_engine` with `backend=` and `precision=` or the profile's),
    `sources=` (Source objects in camera order, else built from the profile), `publisher=` (an object
    with start/submit/stop, else a `linewatch.pipeline.publish.Publisher`), `notifier=` (else from the
    environment), `batch_limit=` (most frames per batch, else measured on the engine at start).
    Stop conditions: `max_frames` decisions, `duration_s` seconds, or every camera done.
    """

    def __init__(
        self,
        profile: Profile,
        *,
        profile_path: str | Path | None = None,
        engine: Engine | None = None,
        model_path: str | Path | None = None,
        backend: str | None = None,
        precision: str | None = None,
        sources: Sequence[Source] | None = None,
        publisher: DecisionPublisher | None = None,
        notifier: Notifier | None = None,
        max_frames: int | None = None,
        duration_s: float | None = None,
        status_interval: float = 5.0,
        take_timeout: float = 0.1,
        batch_limit: int | None = None,
        log: Any = None,
    ) -> None:
        self.profile = profile
        self.profile_path = Path(profile_path) if profile_path is not None else (
            Path(profile.source_path) if profile.source_path and Path(profile.source_path).is_file() else None)
        self.engine = engine
        self._own_engine = engine is None
        self._given_model_path = Path(model_path) if model_path is not None else None
        self.backend = backend
        self.precision = precision
        self.sources: list[Source] = list(sources) if sources is not None else []
        self._given_sources = sources is not None
        self.publisher = publisher
        self.notifier = notifier if notifier is not None else Notifier()
        self.max_frames = max_frames
        self.duration_s = duration_s
        self.status_interval = float(status_interval)
        self.take_timeout = float(take_timeout)
        self.batch_limit = batch_limit
        """Most frames the worker takes per batch; None = measured at start (`infer.batch_limit`)."""
        self.log = log if log is not None else get_logger("linewatch.daemon", station=profile.station.name)

        p = profile.decision
        self.model_thresholds: dict[str, float] = model_thresholds(self._model_path())
        """The deciding model's recommended thresholds (its manifest's): a head the profile leaves out decides at it."""
        self.decider = Decider(p.thresholds.resolve(self.model_thresholds), p.adhesive_rule, p.deadline_ns)
        self.ring: Ring | None = None
        self.recorder: Recorder | None = None
        """The station record (`[archive]`), hooked into the publisher the daemon makes; None = off."""
        self._camera_states: dict[str, str] = {}
        self._previous_decision: dict[str, Any] = {}
        self.endpoint: str | None = None
        """Where the publisher the daemon made is bound, after `start()` (None with a `publisher=` given)."""
        self.worker: InferenceWorker | None = None
        self.stop_event = threading.Event()
        """Set to stop acquisition (the sources' stop event)."""
        self.exit_code = 0
        self.reloads = 0
        self.reload_errors = 0
        self.last_reload: dict[str, Any] | None = None
        """The last reload's result (what the heartbeat's `reload` says)."""
        self.model: dict[str, str] = {}
        """The model deciding now: id (sha256 prefix), path, backend, device (the heartbeat's `model`)."""
        self.watchdog_pets = 0
        self._stop_requested = threading.Event()
        self._reload_requested = threading.Event()
        self._done = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._source_threads: list[threading.Thread] = []
        self._t_start = time.monotonic()
        self._fps = 0.0
        self._stop_reason = ""
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Daemon:
        """Bring the pipeline up (see the module doc); raises LinewatchError when a stage cannot start.

        Every thread started here (and every thread those start: the engines' thread pools, also of a
        model swapped in later) has SIGTERM, SIGINT and SIGHUP blocked, so the signals reach the thread
        that called `start()` (the main thread under `linewatch run`) and no engine's thread; that
        thread never opens an engine (`off_main_thread`)."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            return self._start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _start(self) -> Daemon:
        prof = self.profile
        import cv2

        # The engine owns the cores. OpenCV's own worker threads (overlay drawing and encoding, camera
        # resizes) would preempt the engine's threads mid-layer: each of those stages runs on its own thread.
        cv2.setNumThreads(1)
        try:
            if self.engine is None:
                self.engine = off_main_thread(open_profile_engine, prof, self.backend, precision=self.precision,
                                              log=self.log)
            self.model = model_info(self.engine, self._model_path())
            self.log.info("engine_open", backend=self.engine.name, device=self.engine.device,
                          input_hw=list(self.engine.input_hw), max_batch=self.engine.max_batch, model=self.model["id"])
            t0 = time.monotonic()
            self.engine.warmup()
            self.log.info("engine_warm", seconds=round(time.monotonic() - t0, 3))
            if self.batch_limit is None:
                self.batch_limit, times = batch_limit(self.engine, prof.decision.deadline_ns)
                self.log.info("batch_limit", max_take=self.batch_limit, infer_ms=times,
                              deadline_ms=prof.decision.deadline_ms)

            from linewatch.pipeline.ring import Ring

            h, w = self.engine.input_hw
            alloc = self.engine.host_empty if self.engine.pinned else None
            slots = max(prof.ring.slots, self.engine.max_batch)
            self.ring = Ring(slots, h, w, alloc=alloc)

            from linewatch.security import exposed, file_mode_warnings

            for problem in file_mode_warnings(prof, self.profile_path):
                self.log.warning("unsafe_file_mode", **problem.fields())
            if self.publisher is None:
                self.recorder = self._make_recorder()
                pub = self._make_publisher()
                self.publisher = pub
                if self.recorder is not None:
                    self.recorder.start(pub.session)
                pub.start()
                self.endpoint = pub.endpoint
                self.log.info("publisher_bound", endpoint=pub.endpoint)
                if prof.station.curve is None and pub.endpoint is not None and exposed(pub.endpoint):
                    self.log.warning("endpoint_exposed_without_curve", endpoint=pub.endpoint,
                                     requested=prof.station.endpoint,
                                     note="anyone who can reach this address reads every decision; bind to "
                                          "127.0.0.1 or an ipc:// path, or set [station] curve (docs/operations.md)")
                self._audit("start", version=__version__, profile=str(self.profile_path or "embedded"),
                            profile_sha256=self._profile_sha, model=self.model["id"], model_path=self.model["path"],
                            engine=self.engine.name, precision=self.engine.precision, device=self.engine.device,
                            endpoint=pub.endpoint, cameras=list(prof.camera_ids))
                self._audit("curve", state="on" if prof.station.curve is not None else "off",
                            clients=("listed" if prof.station.curve and prof.station.curve.authorized_keys_dir
                                     else "any") if prof.station.curve else None)
            else:
                self.publisher.start()

            self.worker = InferenceWorker(self.ring, self.engine, self.decider, self.publisher, prof.camera_ids,
                                          log=self.log, take_timeout=self.take_timeout, max_take=self.batch_limit,
                                          model_id=self.model["id"])
            self.worker.start()

            if not self._given_sources:
                self.sources = [cam.make_source(prof) for cam in prof.camera]
            for i, src in enumerate(self.sources):
                self._source_threads.append(src.start(self.ring, i, self.stop_event))
        except BaseException:
            self._teardown(drain=False)
            raise
        self._t_start = time.monotonic()
        self.notifier.ready(self._status_line())
        self._supervisor = threading.Thread(target=self._supervise, name="linewatch-supervisor", daemon=True)
        self._supervisor.start()
        self.log.info("ready", station=prof.station.name, cameras=list(prof.camera_ids), slots=self.ring.slots,
                      thresholds=list(self.decider.thresholds),
                      threshold_source=prof.decision.thresholds.sources(self.model_thresholds),
                      adhesive_rule=self.decider.params.adhesive_rule, watchdog_s=self.notifier.watchdog_interval_s)
        return self

    def _make_recorder(self) -> Recorder | None:
        """The station record of the profile's `[archive]` (None when absent). Its own faults never stop
        the daemon: it degrades (`linewatch.record.recorder`)."""
        cfg = self.profile.archive
        if cfg is None:
            return None
        from linewatch.record.recorder import Recorder

        cfg = cfg.model_copy(update={"dir": str(self.profile.resolve(cfg.dir))})
        self.log.info("archive_on", dir=cfg.dir, max_gb=cfg.max_gb, keep_days=cfg.keep_days, pass_every=cfg.pass_every)
        return Recorder(cfg, self.profile.station.name, profile_sha256=self._profile_sha, log=self.log)

    def _audit(self, kind: str, **detail: Any) -> None:
        """An event in the station record's audit trail (nothing without `[archive]`)."""
        if self.recorder is not None:
            self.recorder.event(kind, **detail)

    @property
    def _profile_sha(self) -> str:
        """Sha256 of the profile file deciding now (of its canonical JSON for the embedded profile)."""
        import hashlib

        if self.profile_path is not None:
            try:
                return hashlib.sha256(self.profile_path.read_bytes()).hexdigest()
            except OSError:
                pass
        return hashlib.sha256(self.profile.model_dump_json().encode()).hexdigest()

    def _make_publisher(self) -> Publisher:
        from linewatch.pipeline.publish import CurveServer, Publisher

        prof = self.profile
        curve = None
        if prof.station.curve is not None:
            c = prof.station.curve
            curve = CurveServer(prof.resolve(c.secret_key_file),
                                prof.resolve(c.authorized_keys_dir) if c.authorized_keys_dir else None)
        return Publisher(prof.station.endpoint, prof.station.name, curve=curve,
                         overlay_pass_every=prof.publish.overlay_pass_every, heartbeat_interval=prof.publish.heartbeat_s,
                         status=self.status, jpeg_quality=prof.publish.jpeg_quality,
                         record=self.recorder.record if self.recorder is not None else None)

    def stop(self, reason: str = "requested") -> None:
        """Request a drain and exit. Returns at once; safe from a signal handler. `join()` waits."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()

    def request_reload(self) -> None:
        """Ask the supervisor to reload (safe from a signal handler)."""
        self._reload_requested.set()

    def join(self, timeout: float | None = None) -> int | None:
        """Wait until the daemon has shut down; its exit code (None when the timeout passed first)."""
        if not self._done.wait(timeout):
            return None
        return self.exit_code

    def run_until_stopped(self) -> int:
        """`start()`, then wait for the shutdown; the exit code."""
        self.start()
        code = self.join()
        assert code is not None
        return code

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT -> stop (drain), SIGHUP -> reload. Call from the main thread."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop("SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self.stop("SIGINT"))
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # -- reload -----------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the whole profile (SIGHUP) and apply what can change live; True when nothing was refused.

        `[decision]` is swapped atomically; a head the profile leaves out follows the model's manifest, read
        again (`linewatch calibrate --write-manifest` rewrites it for the same model). A changed `[model]` (its keys, or the model file's sha256)
        is opened, warmed and checked beside the running model (`linewatch.pipeline.swap.prepare`) and taken
        over by the worker between two batches; a model that fails a check is refused and the old one
        keeps deciding. Changed keys of `[station]`, `[[camera]]`, `[ring]`, `[publish]`, `[archive]` are reported as
        "restart needed" by name. The result goes to the log (`reloaded`) and to every heartbeat after
        it (`reload`)."""
        if self.profile_path is None:
            self.log.warning("reload_skipped", reason="the daemon runs the embedded profile: nothing to reload")
            return self._reloaded([], ["profile: the daemon runs the embedded profile: nothing to reload"], [])
        self.notifier.reloading()
        self._previous_decision = {"thresholds": list(self.decider.thresholds),
                                   "adhesive_rule": self.decider.params.adhesive_rule}
        applied: list[str] = []
        refused: list[str] = []
        restart: list[str] = []
        try:
            new = load_profile(self.profile_path)
        except LinewatchError as exc:
            refused.append(f"profile: {exc}")
            return self._reloaded(applied, refused, restart)
        cur = self.profile
        same_model = new.model == cur.model and not self._model_file_changed(new)
        if same_model and (fresh := model_thresholds(self._model_path())) != self.model_thresholds:
            # the same model, its manifest's recommended thresholds rewritten (`calibrate --write-manifest`)
            self.model_thresholds = fresh
            t = cur.decision.thresholds.resolve(fresh)
            if new.decision == cur.decision and t != self.decider.thresholds:  # else the new [decision] takes it
                self.decider.update(t)
                applied.append("decision.thresholds (the model's manifest)")
        if new.decision != cur.decision:
            d = new.decision
            try:
                self.decider.update(d.thresholds.resolve(self.model_thresholds), d.adhesive_rule, d.deadline_ns)
            except ValueError as exc:
                refused.append(f"decision: {exc}")
            else:
                applied += changed_keys(cur.decision, new.decision, "decision")
                cur = cur.model_copy(update={"decision": new.decision})
        if not same_model:
            why = self._swap_model(new)
            if why is None:
                applied.append("model")
                cur = cur.model_copy(update={"model": new.model})
                t = cur.decision.thresholds.resolve(self.model_thresholds)
                if t != self.decider.thresholds:  # a head the profile leaves out follows the new model
                    self.decider.update(t)
                    applied.append("decision.thresholds (the new model's)")
            else:
                refused.append(f"model: {why}")
        for section, old_value, new_value in (("station", cur.station, new.station), ("camera", cur.camera, new.camera),
                                              ("ring", cur.ring, new.ring), ("publish", cur.publish, new.publish),
                                              ("archive", cur.archive, new.archive)):
            restart += changed_keys(old_value, new_value, section)
        self.profile = cur
        return self._reloaded(applied, refused, restart)

    def _reloaded(self, applied: list[str], refused: list[str], restart: list[str]) -> bool:
        import datetime

        if refused:
            self.reload_errors += 1
        else:
            self.reloads += 1
        if self.recorder is not None:
            self.recorder.profile_sha256 = self._profile_sha
        self._audit("reload", ok=not refused, applied=applied, refused=refused, restart_needed=restart,
                    thresholds=list(self.decider.thresholds), adhesive_rule=self.decider.params.adhesive_rule,
                    previous=self._previous_decision, model=self.model.get("id", ""),
                    profile_sha256=self._profile_sha)
        self.last_reload = {"n": self.reloads + self.reload_errors, "t_iso": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"), "ok": not refused, "applied": applied,
            "refused": refused, "restart_needed": restart}
        fields = dict(profile=str(self.profile_path), applied=applied, restart_needed=restart,
                      thresholds=list(self.decider.thresholds), adhesive_rule=self.decider.params.adhesive_rule,
                      model=self.model.get("id", ""))
        if refused:
            self.log.error("reload_failed", error="; ".join(refused), refused=refused, **fields)
        else:
            self.log.info("reloaded", **fields)
        if restart:
            self.log.warning("reload_needs_restart", keys=restart, note="these keys apply after a restart")
        self.notifier.ready(self._status_line())
        return not refused

    def _model_file_changed(self, new: Profile) -> bool:
        """True when the profile's model resolves to a model other than the one deciding (a retrained
        model written over the same path counts)."""
        try:
            return swap_model_id(new.model_path()) != self.model.get("id", "")
        except LinewatchError:
            return True  # the swap reports why it cannot open it

    def _swap_model(self, new: Profile) -> str | None:
        """Prepare, check and hand over the new profile's model; None when it decides now, else why not."""
        from linewatch.pipeline.swap import SwapRefused, prepare

        if not self._own_engine or self.worker is None or self.engine is None:
            return "the engine was given to this daemon (tests, benchmarks): it is not swapped"
        self.log.info("model_swap_start", path=str(new.model.path), old=self.model.get("id", ""))
        try:
            engine, path, limit = prepare(new, self.engine, self.decider.params.deadline_ns, backend=self.backend,
                                          precision=self.precision, log=self.log)
        except SwapRefused as exc:
            self.log.error("model_refused", path=str(new.model.path), reason=str(exc), kept=self.model.get("id", ""))
            return str(exc)
        info = model_info(engine, path)
        done = self.worker.swap(engine, info["id"], limit)
        if not done.wait(SWAP_WAIT_S):
            if self.worker.cancel_swap():
                engine.close()
                return f"the inference worker did not take it within {SWAP_WAIT_S:g} s"
            done.wait()  # taken at the last moment
        old, self.engine = self.worker.retired, engine
        self.worker.retired = None
        self.batch_limit = limit
        previous, self.model = self.model, info
        self.model_thresholds = model_thresholds(path)
        try:
            if old is not None:
                old.close()
        except Exception as exc:
            self.log.error("engine_close_failed", error=str(exc))
        self.log.info("model_swapped", old=previous.get("id", ""), new=info["id"], path=info["path"],
                      backend=info["backend"], device=info["device"], max_take=limit)
        self._audit("model", old=previous.get("id", ""), new=info["id"], path=info["path"], backend=info["backend"],
                    precision=engine.precision, device=info["device"])
        return None

    # -- supervisor -------------------------------------------------------------------------------
    def _supervise(self) -> None:
        tick = 0.1
        wd = self.notifier.watchdog_interval_s
        next_pet = time.monotonic()
        next_status = time.monotonic() + self.status_interval
        last_n, last_t = 0, time.monotonic()
        try:
            while True:
                now = time.monotonic()
                worker = self.worker
                assert worker is not None
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self.reload()
                if now - last_t >= 1.0:
                    n = worker.decisions
                    self._fps = (n - last_n) / (now - last_t)
                    last_n, last_t = n, now
                if wd is not None and now >= next_pet:
                    if worker.running and worker.alive_age_s() < wd:
                        self.notifier.watchdog()
                        self.watchdog_pets += 1
                    else:
                        self.log.error("watchdog_withheld", worker_running=worker.running,
                                       worker_stalled_s=round(worker.alive_age_s(), 3))
                    next_pet = now + wd
                self._camera_edges()
                if now >= next_status:
                    self.notifier.status(self._status_line())
                    next_status = now + self.status_interval
                if not worker.running:
                    self.log.error("worker_died", error=worker.last_error)
                    self.exit_code = 1
                    self.stop("inference worker died")
                elif self.max_frames is not None and worker.decisions >= self.max_frames:
                    self.stop(f"max_frames={self.max_frames} reached")
                elif self.duration_s is not None and now - self._t_start >= self.duration_s:
                    self.stop(f"duration={self.duration_s}s reached")
                elif self.sources and all(s.state == "done" for s in self.sources):
                    self.stop("every camera is done")
                if self._stop_requested.wait(tick):
                    break
        except BaseException as exc:  # the supervisor must always reach the shutdown
            self.exit_code = 1
            self.log.exception("supervisor_failed", error=str(exc))
        self._shutdown()

    def _camera_edges(self) -> None:
        """An audit event for every camera whose state changed since the last tick (down, up, done)."""
        for cam, state in self.camera_states().items():
            if self._camera_states.get(cam) != state:
                if cam in self._camera_states or state != "starting":
                    self._audit("camera", camera=cam, state=state, previous=self._camera_states.get(cam))
                self._camera_states[cam] = state

    def _shutdown(self) -> None:
        self._stopping = True
        self.log.info("stopping", reason=self._stop_reason)
        self.notifier.stopping(f"stopping: {self._stop_reason}")
        try:
            self._teardown(drain=True)
        finally:
            w = self.worker
            self.log.info("stopped", exit_code=self.exit_code, **(w.counters() if w else {}),
                          ring=self.ring.counters.as_dict() if self.ring is not None else {})
            self.notifier.close()
            self._done.set()

    def _teardown(self, drain: bool) -> None:
        """Stop every started stage in flow order: sources, worker (drain the ring), publisher, engine."""
        self.stop_event.set()
        for t in self._source_threads:
            t.join(SOURCE_JOIN_S)
            if t.is_alive():
                self.log.error("source_not_stopped", thread=t.name)
                self.exit_code = 1
        if self.ring is not None:
            self.ring.close()
        if self.worker is not None:
            if not drain:
                self.worker.stop(drain=False)
            if not self.worker.join(WORKER_JOIN_S):
                self.log.error("worker_not_stopped", timeout_s=WORKER_JOIN_S)
                self.exit_code = 1
            elif self.ring is not None and self.ring.occupancy:
                # A producer that never committed its claimed slot (it died mid-frame).
                self.log.error("frames_left_in_ring", slots=self.ring.occupancy)
        if self.publisher is not None:
            try:
                self.publisher.stop(drain=drain)
            except Exception as exc:
                self.log.error("publisher_stop_failed", error=str(exc))
        if self.recorder is not None:  # after the publisher: every decision it took is queued
            w = self.worker.counters() if self.worker is not None else {}
            self._audit("stop", reason=self._stop_reason or "start failed", exit_code=self.exit_code,
                        decisions=w.get("decisions", 0), rejects=w.get("rejects", 0))
            self.recorder.stop()
            self.log.info("archive_closed", **self.recorder.status())
        if self.engine is not None and self._own_engine:
            try:
                self.engine.close()
            except Exception as exc:
                self.log.error("engine_close_failed", error=str(exc))

    # -- observation ------------------------------------------------------------------------------
    def camera_states(self) -> dict[str, str]:
        return {s.camera: s.state for s in self.sources}

    def status(self) -> dict[str, Any]:
        """The heartbeat's status: state, decision rate, counters, camera states (publisher's `status=`)."""
        w = self.worker
        counters: dict[str, int] = {}
        if w is not None:
            c = w.counters()
            counters = {k: v for k, v in c.items() if isinstance(v, int)}
        if self.ring is not None:
            rc = self.ring.counters
            counters.update(ring_dropped_full=rc.dropped_full, ring_dropped_corrupt=rc.dropped_corrupt,
                            ring_lost_records=rc.lost_records, ring_occupancy=self.ring.occupancy)
        counters.update(reloads=self.reloads, reload_errors=self.reload_errors)
        cams = self.camera_states()
        healthy = w is not None and w.running and all(s == "up" for s in cams.values())
        state = "stopping" if self._stopping or self._stop_requested.is_set() else ("ok" if healthy else "degraded")
        out = {"status": state, "fps": round(self._fps, 2), "counters": counters, "cameras": cams}
        if self.model:
            out["model"] = dict(self.model)
        if self.last_reload is not None:
            out["reload"] = self.last_reload
        if self.recorder is not None:
            out["archive"] = self.recorder.status()
        return out

    def _model_path(self) -> Path | None:
        """The model file behind the engine: `model_path=` when given, else the profile's; None when there
        is none (an injected engine without a model)."""
        if self._given_model_path is not None:
            return self._given_model_path
        try:
            return self.profile.model_path()
        except LinewatchError:
            return None

    def _status_line(self) -> str:
        s = self.status()
        c = s["counters"]
        cams = ", ".join(f"{k}={v}" for k, v in s["cameras"].items())
        t = self.decider.thresholds
        return (f"{s['status']}: {s['fps']:.1f} fps, {c.get('decisions', 0)} decisions, {c.get('rejects', 0)} rejects, "
                f"{c.get('drops', 0)} dropped; thresholds {t[0]:.3f}/{t[1]:.3f}; cameras {cams}")
