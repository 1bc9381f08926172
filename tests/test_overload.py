"""Overload, the short variant CI runs (issue 22, item 1; the minute-long runs on the real engine are
benchmarks/overload.py, figures in docs/reliability.md).

A daemon whose engine takes 20 ms a frame (a sleep: 50 frames/s whatever the machine's load, batch 1 as on a
CPU) under a camera at 1.5x, 2x, 5x and 10x that rate for 2 s each:

- exactly one decision per frame the camera produced, no frame id twice;
- the engine's time goes to frames that can still make it: decisions inferred in time are at least half of
  what the engine could do in that time (before admission by predicted completion: about 0 — every frame
  the worker took from the FIFO had waited most of the deadline and came out late);
- the rest are rejected promptly: the fail-safe decisions' latency (capture -> decision) p99 within the
  deadline + 50 ms.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fakes import FakeEngine, FakePublisher

from linewatch.pipeline.daemon import Daemon
from linewatch.pipeline.ring import DROP_FULL
from linewatch.profile import parse_profile

ENGINE_S = 0.020
DEADLINE_MS = 200.0
RUN_S = 2.0


class SleepEngine(FakeEngine):
    """FakeEngine that takes ENGINE_S a call (any batch size)."""

    def infer(self, frames):
        time.sleep(ENGINE_S)
        return super().infer(frames)


class PacedCamera:
    """`fps` frames a second on an absolute schedule (a line camera: it does not wait for the pipeline),
    `count` in all; a full ring drops the frame (a decision all the same)."""

    def __init__(self, fps: float, count: int) -> None:
        self.camera, self.state, self.frames_seen = "cam0", "starting", 0
        self.fps, self.count = fps, count

    def start(self, ring, cam, stop):
        t = threading.Thread(target=self._run, args=(ring, cam, stop), daemon=True)
        t.start()
        return t

    def _run(self, ring, cam, stop):
        self.state = "up"
        t0 = time.monotonic()
        for fid in range(self.count):
            if stop.is_set():
                break
            delay = t0 + fid / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            slot = ring.claim()
            if slot is None:
                ring.drop(cam, fid, time.time_ns(), DROP_FULL)
            else:
                ring.images[slot, 0, 0, :2] = (10, 250)
                ring.commit(slot, cam, fid, time.time_ns())
            self.frames_seen = fid + 1
        self.state = "done"


@pytest.mark.parametrize("factor", [1.5, 2.0, 5.0, 10.0])
def test_a_line_faster_than_the_engine_gets_one_decision_per_frame_and_the_engine_serves_fresh_frames(factor):
    fps = factor / ENGINE_S
    cam = PacedCamera(fps, int(fps * RUN_S))
    pub = FakePublisher()
    prof = parse_profile(f'[model]\nmax_batch = 1\n[ring]\nslots = 32\n[decision]\ndeadline_ms = {DEADLINE_MS}\n'
                         '[[camera]]\nid = "cam0"\nsource = "synthetic"\n')
    d = Daemon(prof, engine=SleepEngine(max_batch=1), sources=[cam], publisher=pub)
    d.start()
    assert d.join(60) == 0

    ids = [x.frame_id for x in pub.decisions]
    assert len(ids) == cam.count and sorted(ids) == list(range(cam.count)), "exactly one decision per frame"
    in_time = [x for x in pub.decisions if not x.failsafe]
    failsafe = [x for x in pub.decisions if x.failsafe]
    assert {r for x in failsafe for r in x.reasons} <= {"late", "dropped"}
    could = RUN_S / ENGINE_S
    assert len(in_time) >= 0.5 * could, f"{len(in_time)} inferred in time of the engine's {could:.0f} in {RUN_S} s"
    lat_ms = np.array([(x.t_decision_ns - x.t_capture_ns) / 1e6 for x in failsafe])
    assert failsafe and np.percentile(lat_ms, 99) <= DEADLINE_MS + 50, (
        f"fail-safe p99 {np.percentile(lat_ms, 99):.0f} ms")
    print(f"{factor}x ({fps:.0f} fps): {len(ids)} frames, {len(in_time)} in time ({len(in_time) / could:.2f} of the "
          f"engine's {could:.0f}), fail-safe p99 {np.percentile(lat_ms, 99):.0f} ms, "
          f"in-time p99 {np.percentile([(x.t_decision_ns - x.t_capture_ns) / 1e6 for x in in_time], 99):.0f} ms")
