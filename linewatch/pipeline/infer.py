"""The inference worker: one thread that turns ring batches into decisions.

Loop (one iteration per `ring.take`):

1. `batch = ring.take(max_take, timeout)`: up to `max_take` committed frames plus the pending drop
   records. Micro-batching falls out of this: when the engine keeps up, a frame is alone in its
   batch (lowest latency); under load, the backlog forms batches up to `max_take` (throughput).
   `max_take` is the engine's max_batch capped by `batch_limit` (measured at start): a batch the
   engine cannot run within half the deadline would make every frame of it late — on a CPU,
   where batching buys no throughput, that is batch 1.
2. Drop records (no slot, corrupt, lost): a fail-safe reject each, with the decision reason of the
   record's code (`reason_of`: the ring's DROP_* codes -> `linewatch.pipeline.decide.REASON_*`).
3. Frames: `engine.infer(batch.images)` on the contiguous view of the ring. If the engine raises,
   or returns outputs that break the Engine contract (not float32 arrays, scores not [>= n, 2], masks
   not [>= n, 2, H/8, W/8]; `check_outputs`), every frame of that batch is decided as a fail-safe
   reject "engine-error" (logged with the reason); the worker keeps going with the next batch. A
   frame whose score is NaN or outside [0, 1] is an "engine-error" reject too (`Decider`; counted in
   `bad_scores`, one log line per batch that had any). Admission by predicted completion: a
   frame whose age plus the expected inference time (`expected_ns`) is past the deadline is
   rejected "late" at once, without scores, and the engine's time goes to the frames that can still
   make it — a backlog (a line faster than the engine, or a stall) is skipped through instead of
   making every later frame late. Only while the expectation is stale (the engine has not run for
   `EXPECT_REFRESH_NS`) is the newest frame inferred anyway, to measure it again.
4. Each frame is decided (`Decider.decide`, which also rejects "late" frames) and handed to
   `publisher.submit(decision, image, masks)` with views of the ring slot and the engine's output
   (the publisher copies what it keeps, and only for overlays).
5. `ring.release(batch)`, always (also when a stage raised).

Exactly one decision leaves per frame and per drop record. Per-stage timings (waiting in take,
infer, decide, submit) and the end-to-end latency (capture -> decision) go into preallocated
histograms (`LatencyHistogram`, no per-frame allocation): `stats()` for heartbeats and
`linewatch bench`.

Liveness: `alive_age_s()` is the time since the loop last made progress (returned from `take`,
finished a batch). The daemon pets the systemd watchdog only while it is small, so an engine call
that hangs stops the petting and systemd restarts the service.
"""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from linewatch import HEADS
from linewatch.engines.base import output_hw
from linewatch.pipeline.decide import (
    REASON_CORRUPT,
    REASON_DROPPED,
    REASON_ENGINE_ERROR,
    REASON_LATE,
    REASON_PASS,
    Decider,
    Decision,
)
from linewatch.pipeline.ring import DROP_CORRUPT, DROP_ENGINE_ERROR, DROP_FULL, DROP_LATE, DROP_LOST
from linewatch.protocol import reason_text

if TYPE_CHECKING:
    from linewatch.engines.base import Engine
    from linewatch.pipeline.ring import Batch, Ring


class DecisionPublisher(Protocol):
    """What the worker hands every decision to (`linewatch.pipeline.publish.Publisher`, or a test's fake).

    `submit` is called once per decision from the worker thread and must not block: the image and
    masks are views of the ring slot and of the engine's output, valid only during the call (the
    publisher copies what it keeps). `start` and `stop` are the daemon's."""

    def start(self) -> object: ...

    def submit(self, decision: Decision, image: np.ndarray | None = None,
               masks: np.ndarray | None = None) -> None: ...

    def stop(self, drain: bool = True) -> object: ...


def fits_deadline(batch_ns: float, deadline_ns: int) -> bool:
    """True when a batch that takes `batch_ns` can be decided in time: 2 x its time (it may wait while the
    batch before it runs) within half the deadline (the rest is the frame's own way through the line)."""
    return 2 * batch_ns <= deadline_ns / 2


DROP_REASONS: dict[int, str] = {
    DROP_FULL: REASON_DROPPED,
    DROP_CORRUPT: REASON_CORRUPT,
    DROP_LOST: REASON_DROPPED,
    DROP_LATE: REASON_LATE,
    DROP_ENGINE_ERROR: REASON_ENGINE_ERROR,
}
"""Drop reason code (`linewatch.pipeline.ring.DROP_*`) -> the fail-safe decision's `REASON_*`."""


def reason_of(code: int) -> str:
    """The `linewatch.pipeline.decide.REASON_*` of a drop record's reason code."""
    try:
        return DROP_REASONS[int(code)]
    except KeyError:
        raise ValueError(f"unknown drop reason code {code!r}; known: {sorted(DROP_REASONS)}") from None


SCORES_SHAPE = (len(HEADS),)
"""One frame's scores: one per head."""


def mask_shape(engine: Engine) -> tuple[int, int, int]:
    """One frame's masks from `engine`: (heads, H/8, W/8)."""
    return (len(HEADS), *output_hw(engine.input_hw))


def check_outputs(masks: Any, scores: Any, n: int, masks_shape: tuple[int, ...]) -> None:
    """Raise EngineError unless (masks, scores) keep the Engine contract for a batch of `n` frames:
    float32 arrays, scores [>= n, 2], masks [>= n, *masks_shape] (`mask_shape(engine)`). Cheap: a few
    attribute reads per batch."""
    _check_output("scores", scores, n, SCORES_SHAPE)
    _check_output("masks", masks, n, masks_shape)


def _check_output(what: str, a: Any, n: int, tail: tuple[int, ...]) -> None:
    if type(a) is np.ndarray and a.dtype == np.float32 and a.ndim == 1 + len(tail) and a.shape[0] >= n \
            and a.shape[1:] == tail:
        return
    from linewatch.errors import EngineError

    got = f"{a.dtype} {list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
    raise EngineError(f"engine returned {what} {got} for {n} frames; the Engine contract is float32 "
                      f"[{n}, {', '.join(map(str, tail))}]")


STAGES = ("wait", "infer", "decide", "submit", "end_to_end")
"""Timed stages: time blocked in ring.take, engine.infer per batch, decide per frame,
publisher.submit per frame, and capture -> decision per frame."""


EXPECT_REFRESH_NS = 1_000_000_000
"""Admission: after this long without a successful inference, the expected time per batch is stale and
the newest frame of a batch is inferred even when it is predicted late (so the expectation is measured
again; at most about one frame a second spent this way)."""
EXPECT_DEVIATIONS = 2.0
"""Admission: the expected inference time is the running mean plus this many running mean deviations
(the estimator of TCP's retransmission timer, RFC 6298, with a tighter multiple): a frame admitted on
the mean alone misses its deadline whenever the engine is a little slower than usual."""


MAX_BATCH = 64
"""The largest `max_batch` a profile may give (`[model] max_batch`)."""
BATCH_RATE_SLACK = 0.10
"""`batch_limit`: a batch size within 10 % of the best throughput counts as fast as the best. Measured
(openvino bf16, 2 cores, shipped model): batch 2 timed 8 % faster per frame than batch 1 alone, and the
pipeline ran 10 % slower with it (64 against 71 decisions/s) at twice the latency: on a CPU the other
stages' threads eat a small batching gain."""


def batch_limit(engine: Engine, deadline_ns: int, repeats: int = 3,
                clock: Callable[[], int] = time.perf_counter_ns) -> tuple[int, dict[str, float]]:
    """The batch size the worker should take at most, measured on the engine.

    Times `engine.infer` per batch size (1, 2, 4, ..., max_batch; median of `repeats` calls on zero
    frames) among the sizes whose 2 x t(n) fits in half the deadline (a batch waits while the previous
    one runs), and picks the smallest size whose throughput n / t(n) is within `BATCH_RATE_SLACK` of
    the best: a larger batch that is not faster per frame only adds latency. 1 when none fits.
    Returns (n, {str(n): milliseconds}).
    """
    h, w = engine.input_hw
    sizes = sorted({*(1 << i for i in range(engine.max_batch.bit_length()) if (1 << i) <= engine.max_batch),
                    int(engine.max_batch)})
    frames = np.zeros((engine.max_batch, h, w, 3), np.uint8)
    times: dict[str, float] = {}
    rates: dict[int, float] = {}
    for n in sizes:
        engine.infer(frames[:n])
        ts = []
        for _ in range(repeats):
            t0 = clock()
            engine.infer(frames[:n])
            ts.append(clock() - t0)
        t = statistics.median(ts)
        times[str(n)] = round(t / 1e6, 3)
        if not fits_deadline(t, deadline_ns):
            break  # larger batches only take longer
        rates[n] = n / max(t, 1)
    if not rates:
        return 1, times
    best_rate = max(rates.values())
    return min(n for n, r in rates.items() if r >= (1 - BATCH_RATE_SLACK) * best_rate), times


class LatencyHistogram:
    """Log-spaced histogram of durations in nanoseconds (1 µs .. 100 s, ~4% bins), preallocated."""

    def __init__(self, lo_ns: float = 1e3, hi_ns: float = 1e11, bins: int = 400) -> None:
        self.edges = np.geomspace(lo_ns, hi_ns, bins + 1)
        self._edges_list = self.edges.tolist()
        self.counts = np.zeros(bins + 2, np.int64)  # [0] underflow, [-1] overflow
        self.n = 0
        self.total_ns = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        self.counts[bisect.bisect_right(self._edges_list, ns)] += 1
        self.n += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    def reset(self) -> None:
        self.counts[:] = 0
        self.n = self.total_ns = self.max_ns = 0

    def percentile(self, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile, in ns (max for the overflow bin); 0 when empty."""
        if self.n == 0:
            return 0.0
        rank = q / 100.0 * self.n
        idx = int(np.searchsorted(np.cumsum(self.counts), max(rank, 1), side="left"))
        if idx == 0:
            return float(self.edges[0])
        if idx >= len(self.edges):
            return float(self.max_ns)
        return float(min(self.edges[idx], self.max_ns))

    def summary_ms(self) -> dict[str, float]:
        """n, mean, p50, p90, p99, max in milliseconds."""
        mean = self.total_ns / self.n if self.n else 0.0
        return {
            "n": self.n,
            "mean": mean / 1e6,
            "p50": self.percentile(50) / 1e6,
            "p90": self.percentile(90) / 1e6,
            "p99": self.percentile(99) / 1e6,
            "max": self.max_ns / 1e6,
        }


class InferenceWorker:
    """The consumer of the ring (see the module doc). `start()` runs `run()` in a daemon thread.

    Stop protocol (the daemon's drain): stop the producers, then `ring.close()`; the worker decides
    everything still pending and its thread ends when `take` comes back empty from a closed ring.
    `stop()` does the close for callers that own no producers.
    """

    def __init__(
        self,
        ring: Ring,
        engine: Engine,
        decider: Decider,
        publisher: DecisionPublisher,
        cameras: Sequence[str],
        *,
        log: Any = None,
        take_timeout: float = 0.1,
        max_take: int | None = None,
        model_id: str = "",
    ) -> None:
        self.ring = ring
        self.engine = engine
        self.decider = decider
        self.publisher = publisher
        self.cameras = tuple(cameras)
        self.log = log
        self.take_timeout = float(take_timeout)
        self.max_batch = int(engine.max_batch)
        self.max_take = min(int(max_take), self.max_batch) if max_take else self.max_batch
        self._mask_shape = mask_shape(engine)
        """Most frames taken per batch (`batch_limit`), at most the engine's max_batch."""
        self.model_id = str(model_id)
        """Stamped on every decision (`Decision.model`): the model deciding now."""
        self.swaps = 0
        self._pending: tuple[Engine, str, int | None, threading.Event] | None = None
        self._swap_lock = threading.Lock()
        self.retired: Engine | None = None
        """The engine the last swap replaced (the swapper closes it)."""
        self._announce: tuple[str, str] | None = None

        self.hist = {s: LatencyHistogram() for s in STAGES}
        self.batch_sizes = np.zeros(MAX_BATCH + 1, np.int64)
        self.frames = 0
        """Frames inferred (or attempted) from the ring."""
        self.drops = 0
        """Drop records decided."""
        self.decisions = 0
        self.rejects = 0
        self.reasons: dict[tuple[str, ...], int] = {}
        """Decisions per `Decision.reasons` (reported by `counters()` under their wire text, `anomaly+...`)."""
        self.engine_errors = 0
        """Batches the engine failed (it raised or broke its output contract): their frames are rejects."""
        self.bad_scores = 0
        """Frames whose score was NaN or outside [0, 1]: "engine-error" rejects (`Decider`)."""
        self.late_skipped = 0
        """Frames not inferred because they could not be decided in time (age + expected inference time
        past the deadline when taken): rejected "late" at once."""
        self._infer_ns = np.zeros(MAX_BATCH + 1, np.float64)
        """Running mean inference time per batch size (ns; 0 = not measured yet), for that admission."""
        self._infer_dev = np.zeros(MAX_BATCH + 1, np.float64)
        """Running mean deviation of it (ns)."""
        self._expect_ns = np.zeros(MAX_BATCH + 1, np.float64)
        """`expected_ns` per batch size: mean + EXPECT_DEVIATIONS x deviation, non-decreasing in size."""
        self._ran_ns = 0
        """time.monotonic_ns() of the last successful inference (0 = never)."""
        self.submit_errors = 0
        self.last_error: str | None = None

        self._alive_ns = time.monotonic_ns()
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        self._lock = threading.Lock()  # guards counter snapshots in stats()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="linewatch-infer", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, drain: bool = True) -> None:
        """Close the ring (drain=True: decide what is pending first) or abort right away."""
        if not drain:
            self._abort.set()
        self.ring.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def alive_age_s(self) -> float:
        """Seconds since the loop last made progress."""
        return (time.monotonic_ns() - self._alive_ns) / 1e9

    def swap(self, engine: Engine, model_id: str, max_take: int | None = None) -> threading.Event:
        """Hand over a new (warm, checked) engine: the worker takes it between two batches, so every
        batch runs on one engine and its decisions carry that engine's `model_id`. Returns an Event set
        once the worker has switched; the replaced engine is then in `retired` (the caller closes it)."""
        done = threading.Event()
        with self._swap_lock:
            self._pending = (engine, str(model_id), max_take, done)
        return done

    def cancel_swap(self) -> bool:
        """Withdraw a swap the worker has not taken yet; True when there was one."""
        with self._swap_lock:
            pending, self._pending = self._pending, None
        return pending is not None

    def _take_swap(self) -> None:
        with self._swap_lock:  # taken or cancelled, never both
            pending, self._pending = self._pending, None
        if pending is None:
            return
        engine, model_id, max_take, done = pending
        self.retired, self.engine = self.engine, engine
        self._mask_shape = mask_shape(engine)
        self.max_batch = min(int(engine.max_batch), MAX_BATCH)
        self.max_take = min(int(max_take), self.max_batch) if max_take else self.max_batch
        self._announce = (self.model_id, model_id)
        self._infer_ns[:] = self._infer_dev[:] = self._expect_ns[:] = 0  # the new engine's times are its own
        self._ran_ns = 0
        self.model_id = model_id
        self.swaps += 1
        done.set()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        ring = self.ring
        while not self._abort.is_set():
            if self._pending is not None:
                self._take_swap()
            t0 = time.perf_counter_ns()
            batch = ring.take(self.max_take, self.take_timeout)
            self._alive_ns = time.monotonic_ns()
            if batch.empty:
                if ring.closed:
                    break
                continue
            self.hist["wait"].record(time.perf_counter_ns() - t0)
            try:
                self.process(batch)
            except BaseException as exc:  # a bug, not an engine fault: log it; the daemon exits 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.log is not None:
                    self.log.exception("worker_failed", error=self.last_error)
                raise
            finally:
                ring.release(batch)
                self._alive_ns = time.monotonic_ns()

    def process(self, batch: Batch) -> None:
        """Decide every drop record and every frame of one batch (exactly one decision each)."""
        model = self.model_id  # one read: every decision of this batch names the model that ran it
        for cam, fid, t_cap, code, truth in batch.drops():
            try:
                reason = reason_of(code)
            except ValueError:
                reason = REASON_DROPPED
            d = self.decider.decide(self._camera_name(cam), fid, t_cap, None, reason, truth)
            d.model = model
            self.drops += 1
            self._emit(d, None, None)
        n = batch.n
        if n == 0:
            return
        cams, fids, tcaps, truths = batch.camera, batch.frame_id, batch.t_capture_ns, batch.truth
        if self._announce is not None and self.log is not None:
            old, new = self._announce
            self.log.info("model_switched", old=old, new=new, camera=self._camera_name(int(cams[0])),
                          first_frame_id=int(fids[0]))
        self._announce = None
        # Admission by predicted completion: a frame whose age plus the expected inference time is past
        # the deadline would be decided "late" anyway; reject it at once without inferring it, so that a
        # backlog (a line faster than the engine) is skipped through and the engine's time goes to
        # frames that can still make it. The ring is FIFO: the stale frames are the batch's first k.
        deadline = self.decider.params.deadline_ns
        expect = int(self._expect_ns[n])
        now = time.time_ns()
        k = 0
        while k < n and now - int(tcaps[k]) + expect > deadline:
            k += 1
        if k == n and now - int(tcaps[n - 1]) <= deadline and (
                time.monotonic_ns() - self._ran_ns > EXPECT_REFRESH_NS):
            k = n - 1  # the expectation is stale: infer the newest anyway, to measure the engine again
        for i in range(k):
            d = self.decider.decide(self._camera_name(int(cams[i])), int(fids[i]), int(tcaps[i]), None, REASON_LATE,
                                    truths[i])
            d.model = model
            self._emit(d, None, None)
        self.late_skipped += k
        self.frames += k
        if k == n:
            return
        m = n - k
        self.batch_sizes[min(m, self.max_batch)] += 1
        masks = scores = None
        failsafe = REASON_ENGINE_ERROR
        t0 = time.perf_counter_ns()
        try:
            masks, scores = self._infer(batch.images[k:], m)
        except Exception as exc:  # any engine failure: fail-safe rejects, keep running
            self.engine_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            masks = scores = None
            if self.log is not None:
                self.log.error("engine_error", error=self.last_error, frames=m,
                               engine=self.engine.name, exc_info=self.engine_errors == 1)
        took = time.perf_counter_ns() - t0
        self.hist["infer"].record(took)
        if scores is not None:
            self._measured(m, took)
        self.frames += m
        bad = 0
        for j in range(m):
            i = k + j
            t1 = time.perf_counter_ns()
            d = self.decider.decide(self._camera_name(int(cams[i])), int(fids[i]), int(tcaps[i]),
                                    None if scores is None else scores[j], failsafe, truths[i])
            self.hist["decide"].record(time.perf_counter_ns() - t1)
            d.model = model
            if scores is not None and d.scores is None:  # the decider refused its scores
                bad += 1
            self._emit(d, batch.images[i], None if masks is None else masks[j])
        if bad:
            self.bad_scores += bad
            if self.log is not None:
                assert scores is not None
                self.log.error("engine_bad_scores", frames=bad, of=m, engine=self.engine.name,
                               scores=[f"{a:.4g}/{h:.4g}" for a, h in scores[:min(m, 4)].tolist()],
                               note="scores must be numbers in [0, 1]: the frames are engine-error rejects")

    def expected_ns(self, n: int) -> float:
        """What a batch of `n` frames is expected to take (ns; 0 = not measured yet): admission's estimate."""
        return float(self._expect_ns[n])

    def _measured(self, m: int, took: int) -> None:
        """A batch of m took `took` ns: update the running mean and deviation (RFC 6298's gains, 1/8 and
        1/4; the machine's load moves them) and the expectation of every size (larger batches take at
        least as long)."""
        mean, dev = self._infer_ns[m], self._infer_dev[m]
        if mean == 0:
            mean, dev = float(took), took / 2.0
        else:
            dev += 0.25 * (abs(took - mean) - dev)
            mean += 0.125 * (took - mean)
        self._infer_ns[m], self._infer_dev[m] = mean, dev
        self._expect_ns[m] = mean + EXPECT_DEVIATIONS * dev
        tail = self._expect_ns[m + 1:]  # a view: larger sizes at least this, in place (no allocation)
        np.maximum(tail, self._expect_ns[m], out=tail)
        self._ran_ns = time.monotonic_ns()

    def _infer(self, images: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        masks, scores = self.engine.infer(images)
        check_outputs(masks, scores, n, self._mask_shape)
        return masks, scores

    def _emit(self, d: Decision, image: np.ndarray | None, masks: np.ndarray | None) -> None:
        with self._lock:
            self.decisions += 1
            if d.reject:
                self.rejects += 1
            self.reasons[d.reasons] = self.reasons.get(d.reasons, 0) + 1
        self.hist["end_to_end"].record(max(0, d.t_decision_ns - d.t_capture_ns))
        t0 = time.perf_counter_ns()
        try:
            self.publisher.submit(d, image, masks)
        except Exception as exc:  # the decision is counted; a publisher fault must not stop inference
            self.submit_errors += 1
            self.last_error = f"publisher: {type(exc).__name__}: {exc}"
            if self.log is not None and self.submit_errors == 1:
                self.log.error("submit_error", error=self.last_error, exc_info=True)
        self.hist["submit"].record(time.perf_counter_ns() - t0)

    def _camera_name(self, index: int) -> str:
        return self.cameras[index] if 0 <= index < len(self.cameras) else f"camera{index}"

    # -- observation --------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                "decisions": self.decisions,
                "rejects": self.rejects,
                "passes": self.reasons.get((REASON_PASS,), 0),
                "frames": self.frames,
                "drops": self.drops,
                "engine_errors": self.engine_errors,
                "bad_scores": self.bad_scores,
                "late_skipped": self.late_skipped,
                "submit_errors": self.submit_errors,
                "reasons": {reason_text(k): v for k, v in self.reasons.items()},
            }

    def stats(self) -> dict[str, Any]:
        """Counters, batch-size histogram and per-stage latency summaries (ms)."""
        out = self.counters()
        out["batch_sizes"] = {int(k): int(v) for k, v in enumerate(self.batch_sizes) if v}
        out["latency_ms"] = {s: h.summary_ms() for s, h in self.hist.items()}
        return out

    def reset_stats(self) -> None:
        """Zero the timing histograms (e.g. after warm-up in a benchmark); counters are kept."""
        for h in self.hist.values():
            h.reset()
        self.batch_sizes[:] = 0
