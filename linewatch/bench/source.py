"""The bench's simulated camera: a prerendered pool of synthetic cells, paced (backpressure, fixed rate or free)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from linewatch.bench.config import PACES, POLL_S
from linewatch.errors import SettingError

if TYPE_CHECKING:
    from linewatch.pipeline.acquire.base import SourceCounters

# --------------------------------------------------------------------------------------------------
# the bench's source: a prerendered pool, paced (Source protocol)


def render_pool(n: int, hw: tuple[int, int], seed: int = 0, defect_rate: float | None = None,
                adhesive_rate: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic cell surfaces at `hw` (uint8 [n, H, W, 3]) and their truth (int8 [n, 2]).

    Rendered the simulated camera's way (`acquire.synthetic.synth_config`: the rates, None = the
    renderer's defaults) at `hw` when both sides are >= 128 px (the renderer's minimum), else at a
    valid size and made the model input once here (`linewatch.preprocess.to_model_input`, the
    line's rule; tiny test models)."""
    from linewatch.data.synth import render_into
    from linewatch.pipeline.acquire.synthetic import synth_config
    from linewatch.preprocess import Scratch, to_model_input

    h, w = hw
    rh, rw = max(128, -(-h // 8) * 8), max(128, -(-w // 8) * 8)
    cfg = synth_config(rh, rw, defect_rate, adhesive_rate)
    pool = np.empty((n, h, w, 3), np.uint8)
    truth = np.full((n, 2), -1, np.int8)
    rendered = np.empty((rh, rw, 3), np.uint8) if (rh, rw) != (h, w) else None
    scratch = Scratch()
    for i in range(n):
        out = pool[i] if rendered is None else rendered
        truth[i] = render_into(seed, i, out, cfg)
        if rendered is not None:
            to_model_input(rendered, dst=pool[i], scratch=scratch)
    return pool, truth


class BenchSource:
    """A simulated camera over a prerendered pool, paced by `pace` (module doc). Source protocol.

    Frame ids are 0, 1, 2, ... per camera, so every produced id must come back as one decision.
    The thread waits for `go` (set once the subscriber is live) before its first frame. It counts
    in `counters` what an acquisition source counts (`acquire.base.SourceCounters`: frames_seen,
    committed, dropped_full, late_ticks), plus `blocked_ns`.
    """

    kind = "bench"

    def __init__(self, camera: str, pool: np.ndarray, truth: np.ndarray, *, pace: str = "backpressure",
                 fps: float = 0.0, inflight: int = 8, pixels: str = "copy", offset: int = 0,
                 go: threading.Event | None = None, poll_max_s: float = 0.0001) -> None:
        from linewatch.pipeline.acquire.base import SourceCounters

        if pace not in PACES:
            raise SettingError(f"`pace` {pace!r}: allowed {', '.join(PACES)}")
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
        self.counters: SourceCounters = SourceCounters()
        self.blocked_ns = 0
        """Backpressure: time spent waiting for room in the ring."""
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    @property
    def frames_seen(self) -> int:
        return self.counters.frames_seen

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
        from linewatch.pipeline.acquire.pacer import Pacer
        from linewatch.pipeline.ring import DROP_FULL

        self.state = "up"
        while not self.go.wait(0.05):
            if stop.is_set():
                return
        pool, truth, n = self.pool, self.truth, len(self.pool)
        copy = self.pixels == "copy"
        pace = self.pace
        c = self.counters
        pacer = Pacer(self.fps if pace == "fixed" else 0.0)
        k = 0
        while not stop.is_set():
            if pacer.period_ns:
                if not pacer.wait(stop):
                    break
                c.late_ticks = pacer.late_ticks
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
                c.dropped_full += 1
            else:
                if copy:
                    np.copyto(ring.images[slot], pool[j])
                ring.commit(slot, cam, k, t_cap, truth[j])
                c.committed += 1
            k += 1
            c.frames_seen = k
