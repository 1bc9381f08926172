"""The inference worker (`linewatch.pipeline.infer`): exactly one decision per frame (drops, corrupt
frames, engine errors included), late frames, admission by predicted completion, micro-batch sizes,
the latency histogram and the batch limit measured on an engine.

No test depends on how fast this machine is: where a frame must be late, it is late by construction
(captured long before, or a deadline that the engine's own time exceeds); where it must be in time, its
deadline leaves seconds of slack; `batch_limit` is timed on a fake clock.
"""

from __future__ import annotations

import time

import pytest
from fakes import HW, FakeEngine, FakeLog, FakePublisher
from waiting import wait_until

from linewatch.pipeline.decide import FAILSAFE_REASONS, REASON_CORRUPT, REASON_DROPPED, Decider
from linewatch.pipeline.infer import DROP_REASONS, InferenceWorker, LatencyHistogram, batch_limit, reason_of
from linewatch.pipeline.ring import DROP_CORRUPT, DROP_FULL, DROP_LOST, DROP_NAMES, Ring


def test_every_drop_code_of_the_ring_maps_to_a_failsafe_reason():
    assert set(DROP_REASONS) == set(DROP_NAMES)
    assert all(reason in FAILSAFE_REASONS for reason in DROP_REASONS.values())
    assert (reason_of(DROP_FULL), reason_of(DROP_LOST), reason_of(DROP_CORRUPT)) == (
        REASON_DROPPED, REASON_DROPPED, REASON_CORRUPT)
    with pytest.raises(ValueError, match="unknown drop reason code 9"):
        reason_of(9)


def test_worker_one_decision_per_frame_including_drops_corrupt_and_engine_errors():
    ring = Ring(4, *HW)
    engine = FakeEngine(max_batch=4, fail_calls=(2,))
    pub = FakePublisher()
    log = FakeLog()
    worker = InferenceWorker(ring, engine, Decider((0.5, 0.5), "present", 10**10), pub, ["a", "b"], log=log,
                             take_timeout=0.01)
    expected: dict[tuple[str, int], str | None] = {}
    # Fill the ring before the worker runs, so batches and drops are deterministic.
    for fid in range(4):
        slot = ring.claim()
        ring.images[slot, 0, 0, :2] = (200, 200) if fid == 1 else (10, 200)  # frame 1: anomaly
        ring.commit(slot, 0, fid, time.time_ns(), (int(fid == 1), 1))
        expected[("a", fid)] = "anomaly" if fid == 1 else "pass"
    assert ring.claim() is None  # full: drop newest
    ring.drop(1, 0, time.time_ns(), DROP_FULL, (0, 1))
    expected[("b", 0)] = "dropped"
    worker.start()
    # Second batch: the engine raises on its second call -> engine-error for each of its frames.
    wait_until(lambda: not ring.occupancy, what="the worker to take the first batch")
    for fid in range(1, 4):
        slot = ring.claim()
        ring.commit(slot, 1, fid, time.time_ns())
        expected[("b", fid)] = None  # engine error or, if it landed in a later batch, a decision
    slot = ring.claim()
    ring.drop(1, 4, time.time_ns(), DROP_CORRUPT, slot=slot)
    expected[("b", 4)] = "corrupt"
    worker.stop()  # close the ring: the worker drains and ends
    assert worker.join(30)
    got = {(d.camera, d.frame_id): d for d in pub.decisions}
    assert len(pub.decisions) == len(got) == len(expected) == 9  # exactly one decision each
    for key, reason in expected.items():
        if reason is not None:
            assert got[key].reasons == (reason,), key
    assert got[("a", 1)].truth == (1, 1) and got[("b", 0)].truth == (0, 1)
    assert got[("b", 0)].scores is None and got[("b", 4)].scores is None
    if engine.calls >= 2:
        assert worker.engine_errors == 1
        errored = [d for d in pub.decisions if d.reasons == ("engine-error",)]
        assert errored and all(d.scores is None and d.reject for d in errored)
        assert ("error", "engine_error") in [(e[0], e[1]) for e in log.events]
    stats = worker.stats()
    assert stats["decisions"] == 9 and stats["drops"] == 2 and stats["frames"] == 7
    assert stats["batch_sizes"][4] >= 1  # the backlog of 4 frames went as one micro-batch
    assert stats["latency_ms"]["infer"]["n"] == engine.calls
    assert ring.counters.lost_records == 0 and ring.occupancy == 0


def test_worker_late_frames_skip_the_engine():
    """A batch already past its deadline when taken is rejected "late" without running the engine."""
    ring = Ring(2, *HW)
    pub = FakePublisher()
    engine = FakeEngine(2)
    worker = InferenceWorker(ring, engine, Decider((0.5, 0.5), "ignore", 1_000_000), pub, ["a"])
    slot = ring.claim()
    ring.commit(slot, 0, 0, time.time_ns() - 5_000_000_000)  # captured 5 s ago, deadline 1 ms
    worker.stop()
    worker.run()
    (d,) = pub.decisions
    assert d.reasons == ("late",) and d.reject and d.scores is None
    assert engine.calls == 0 and worker.late_skipped == 1


def test_worker_frames_late_after_inference_keep_their_scores():
    """A frame in time when taken but past its deadline once inferred is rejected "late" with its scores.

    No race with the wall clock: the deadline (100 s) is met by construction when the batch is taken,
    and missed by construction once the engine has run (it shortens the deadline to 1 ns, as an engine
    taking longer than the deadline would; the frame was captured 1 µs before the take)."""
    decider = Decider((0.5, 0.5), "ignore", 100 * 10**9)

    class SlowEngine(FakeEngine):
        def infer(self, frames):
            decider.update(deadline_ns=1)
            return super().infer(frames)

    ring = Ring(2, *HW)
    pub = FakePublisher()
    engine = SlowEngine(2)
    worker = InferenceWorker(ring, engine, decider, pub, ["a"])
    slot = ring.claim()
    ring.images[slot, 0, 0, :2] = (255, 0)
    ring.commit(slot, 0, 0, time.time_ns() - 1000)
    worker.stop()
    worker.run()
    (d,) = pub.decisions
    assert engine.calls == 1 and worker.late_skipped == 0  # admitted, inferred ...
    assert d.reasons == ("late",) and d.reject and d.scores == pytest.approx((1.0, 0.0))  # ... and late after


def test_frames_that_cannot_be_decided_in_time_are_rejected_late_at_once_without_inference():
    """Admission by predicted completion: the stale head of a backlog is skipped, fresh frames inferred.

    Timing-free by construction where it matters: the stale frames are 10 s old against a 2 s deadline,
    and the frame predicted late is 20 ms short of it while the engine takes at least 50 ms; the fresh
    frames keep about 2 s of slack."""

    class Slow(FakeEngine):
        def infer(self, frames):
            time.sleep(0.05)  # at least 50 ms a batch
            return super().infer(frames)

    ring = Ring(8, *HW)
    engine = Slow(max_batch=8)
    pub = FakePublisher()
    worker = InferenceWorker(ring, engine, Decider((0.5, 0.5), "ignore", 2_000_000_000), pub, ["a"],
                             take_timeout=0.01)
    now = time.time_ns()

    def put(fid, age_ms):
        slot = ring.claim()
        ring.images[slot] = 0
        ring.commit(slot, 0, fid, now - int(age_ms * 1e6), (0, -1))

    for fid in range(4):
        put(fid, 10_000)  # 10 s old: past the 2 s deadline whatever the engine does
    put(4, 0)
    put(5, 0)
    batch = ring.take(8)
    worker.process(batch)
    ring.release(batch)
    assert engine.batch_sizes == [2], "only the two fresh frames were inferred"
    by_id = {d.frame_id: d.reasons for d in pub.decisions}
    assert by_id == {0: ("late",), 1: ("late",), 2: ("late",), 3: ("late",), 4: ("pass",), 5: ("pass",)}
    assert worker.late_skipped == 4 and worker.frames == 6
    # the engine took >= 50 ms: a frame 1980 ms old cannot finish within 2 s any more, a fresh one can
    now = time.time_ns()
    put(6, 1980)
    put(7, 0)
    worker.process(ring.take(8))
    assert engine.batch_sizes == [2, 1]
    assert {d.frame_id: d.reasons for d in pub.decisions[6:]} == {6: ("late",), 7: ("pass",)}


def test_a_lone_frame_predicted_late_is_not_inferred_unless_the_expectation_is_stale(monkeypatch):
    """One frame at a time (a CPU engine's batch of 1): the frame is rejected "late" at once when its age plus
    the expected time is past the deadline; only when the engine has not run for EXPECT_REFRESH_NS is it
    inferred anyway (to measure again). Timing-free: the expectation is set, the frame is 1.9 s old against a
    2 s deadline and the expected time is 0.5 s; the refresh interval is pushed far out or to zero."""
    import linewatch.pipeline.infer as infer_mod

    ring = Ring(4, *HW)
    engine = FakeEngine(max_batch=1)
    pub = FakePublisher()
    worker = InferenceWorker(ring, engine, Decider((0.5, 0.5), "ignore", 2_000_000_000), pub, ["a"])
    worker._measured(1, 500_000_000)  # a batch of 1 takes 0.5 s: expected 0.5 + 2 x 0.25 s
    assert worker.expected_ns(1) == pytest.approx(1.0e9) and worker.expected_ns(4) == pytest.approx(1.0e9)

    def one(fid, age_ms):
        ring.commit(ring.claim(), 0, fid, time.time_ns() - int(age_ms * 1e6), (0, -1))
        batch = ring.take(1)
        worker.process(batch)
        ring.release(batch)
        return pub.decisions[-1].reasons

    monkeypatch.setattr(infer_mod, "EXPECT_REFRESH_NS", 10**15)
    assert one(0, 1900) == ("late",) and engine.calls == 0 and worker.late_skipped == 1
    assert one(1, 0) == ("pass",) and engine.calls == 1  # a fresh frame makes it
    monkeypatch.setattr(infer_mod, "EXPECT_REFRESH_NS", 0)
    assert one(2, 1900) == ("pass",) and engine.calls == 2, "a stale expectation: the frame is tried"
    assert one(3, 2500) == ("late",) and engine.calls == 2, "past its deadline already: never inferred"


def test_the_expected_time_follows_the_engine_mean_plus_two_deviations():
    worker = InferenceWorker(Ring(2, *HW), FakeEngine(max_batch=4), Decider((0.5, 0.5), "ignore", 10**9),
                             FakePublisher(), ["a"])
    assert worker.expected_ns(2) == 0  # not measured: every frame within its deadline is admitted
    for _ in range(200):
        worker._measured(2, 10_000_000)
    assert worker.expected_ns(2) == pytest.approx(10_000_000, rel=1e-3)  # steady: the deviation decays
    worker._measured(2, 30_000_000)  # one slow batch widens the margin at once ...
    assert worker.expected_ns(2) == pytest.approx(12.5e6 + 2 * 5e6, rel=1e-3)
    assert worker.expected_ns(4) >= worker.expected_ns(2) and worker.expected_ns(1) == 0


def test_worker_takes_at_most_max_take_frames_per_batch():
    ring = Ring(8, *HW)
    engine = FakeEngine(max_batch=8)
    pub = FakePublisher()
    worker = InferenceWorker(ring, engine, Decider((0.5, 0.5), "ignore", 10**10), pub, ["a"], max_take=3)
    for fid in range(7):
        ring.commit(ring.claim(), 0, fid, time.time_ns())
    worker.stop()
    worker.run()
    assert engine.batch_sizes == [3, 3, 1]
    assert [d.frame_id for d in pub.decisions] == list(range(7))


def test_latency_histogram_percentiles():
    h = LatencyHistogram()
    for v in range(1, 1001):
        h.record(v * 1000)  # 1 µs .. 1 ms
    s = h.summary_ms()
    assert s["n"] == 1000 and s["max"] == pytest.approx(1.0)
    assert 0.45 <= s["p50"] <= 0.55 and 0.95 <= s["p99"] <= 1.0
    h.reset()
    assert h.summary_ms()["n"] == 0


# -- batch_limit -------------------------------------------------------------------------------

class SteppedEngine:
    """A fake engine whose batch of n 'takes' fixed + per_frame * n ms on a fake clock."""

    input_hw = (8, 8)

    def __init__(self, max_batch: int, fixed_ms: float = 10, per_frame_ms: float = 5) -> None:
        self.max_batch = max_batch
        self.fixed_ms, self.per_frame_ms = fixed_ms, per_frame_ms
        self.now = 0
        self.calls: list[int] = []

    def infer(self, frames):
        self.calls.append(len(frames))
        self.now += int((self.fixed_ms + self.per_frame_ms * len(frames)) * 1_000_000)


def test_batch_limit_takes_the_fastest_batch_size_whose_two_runs_fit_half_the_deadline():
    eng = SteppedEngine(max_batch=8)
    n, times = batch_limit(eng, deadline_ns=150_000_000, clock=lambda: eng.now)
    assert n == 4  # 2 x 30 ms <= 75 ms < 2 x 50 ms; 4 frames / 30 ms beats 2 / 20 and 1 / 15
    assert times == {"1": 15.0, "2": 20.0, "4": 30.0, "8": 50.0}
    eng = SteppedEngine(max_batch=6)
    n, times = batch_limit(eng, deadline_ns=20_000_000, clock=lambda: eng.now)
    assert n == 1 and list(times) == ["1"]  # nothing fits: one frame at a time; larger sizes not timed
    eng = SteppedEngine(max_batch=6)
    assert batch_limit(eng, deadline_ns=10**9, clock=lambda: eng.now)[0] == 6
    assert sorted(set(eng.calls)) == [1, 2, 4, 6]


def test_batch_limit_keeps_batches_small_when_larger_ones_are_not_faster_per_frame():
    # a CPU engine: 10.6 ms a frame, batches save 0.2 ms a call: batch 8 is 2 % faster per frame than 1
    eng = SteppedEngine(max_batch=8, fixed_ms=0.2, per_frame_ms=10.4)
    assert batch_limit(eng, deadline_ns=200_000_000, clock=lambda: eng.now)[0] == 1
    # batches that do pay (a fixed 20 ms a call): 4 frames in 30 ms beat 2 in 25 by 67 % per frame
    eng = SteppedEngine(max_batch=4, fixed_ms=20, per_frame_ms=2.5)
    assert batch_limit(eng, deadline_ns=200_000_000, clock=lambda: eng.now)[0] == 4
