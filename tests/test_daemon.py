"""The inference worker and the daemon: exactly one decision per frame (drops, corrupt frames,
engine errors included), drain on stop, reload, the systemd watchdog tied to worker liveness."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from fakes import FakeLog, FakePublisher

from linewatch.pipeline.daemon import Daemon
from linewatch.pipeline.decide import Decider
from linewatch.pipeline.infer import InferenceWorker, LatencyHistogram
from linewatch.pipeline.ring import DROP_CORRUPT, DROP_FULL, Ring
from linewatch.profile import parse_profile
from linewatch.sdnotify import Notifier

HW = (16, 24)


class FakeEngine:
    """Scores from the pixels: anomaly = image[0, 0, 0] / 255, adhesive = image[0, 0, 1] / 255."""

    name = "fake"
    device = "cpu"
    pinned = False

    def __init__(self, max_batch: int = 4, fail_calls: tuple[int, ...] = (), block: threading.Event | None = None):
        self.input_hw = HW
        self.max_batch = max_batch
        self.fail_calls = set(fail_calls)
        self.block = block
        self.blocked = threading.Event()
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._scores = np.zeros((max_batch, 2), np.float32)
        self._masks = np.zeros((max_batch, 2, HW[0] // 8, HW[1] // 8), np.float32)
        self.closed = False

    def warmup(self) -> None:
        pass

    def infer(self, frames: np.ndarray):
        self.calls += 1
        n = frames.shape[0]
        assert 1 <= n <= self.max_batch and frames.shape[1:] == (*HW, 3)
        self.batch_sizes.append(n)
        if self.block is not None and self.calls > 3:
            self.blocked.set()
            self.block.wait()
        if self.calls in self.fail_calls:
            raise RuntimeError("simulated CUDA error")
        self._scores[:n] = frames[:, 0, 0, :2] / 255.0
        return self._masks[:n], self._scores[:n]

    def close(self) -> None:
        self.closed = True


class LoopSource:
    """A camera writing frames with pixel (a, h) values from `pattern`, paced by a short sleep."""

    def __init__(self, camera: str, pattern=((10, 250),), count: int | None = None, period: float = 0.002):
        self.camera = camera
        self.state = "starting"
        self.frames_seen = 0
        self.pattern = pattern
        self.count = count
        self.period = period

    def start(self, ring, cam, stop):
        t = threading.Thread(target=self._run, args=(ring, cam, stop), daemon=True)
        t.start()
        return t

    def _run(self, ring, cam, stop):
        self.state = "up"
        fid = 0
        while not stop.is_set() and (self.count is None or fid < self.count):
            a, h = self.pattern[fid % len(self.pattern)]
            slot = ring.claim()
            if slot is None:
                ring.drop(cam, fid, time.time_ns(), DROP_FULL)
            else:
                ring.images[slot, 0, 0, :2] = (a, h)
                ring.commit(slot, cam, fid, time.time_ns())
            fid += 1
            self.frames_seen = fid
            time.sleep(self.period)
        self.state = "done"


def profile(extra: str = "", cameras: str = '[[camera]]\nid = "cam0"\nsource = "synthetic"\n'):
    return parse_profile('[model]\nmax_batch = 4\n[ring]\nslots = 8\n' + extra + cameras)


# -- the worker with the real ring ---------------------------------------------------------------

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
    deadline = time.monotonic() + 30
    while ring.occupancy and time.monotonic() < deadline:
        time.sleep(0.001)
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
            assert got[key].reason == reason, key
    assert got[("a", 1)].truth == (1, 1) and got[("b", 0)].truth == (0, 1)
    assert got[("b", 0)].scores is None and got[("b", 4)].scores is None
    if engine.calls >= 2:
        assert worker.engine_errors == 1
        errored = [d for d in pub.decisions if d.reason == "engine-error"]
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
    assert d.reason == "late" and d.reject and d.scores is None
    assert engine.calls == 0 and worker.late_skipped == 1


def test_worker_frames_late_after_inference_keep_their_scores():
    class SlowEngine(FakeEngine):
        def infer(self, frames):
            time.sleep(0.02)  # longer than the 5 ms deadline
            return super().infer(frames)

    ring = Ring(2, *HW)
    pub = FakePublisher()
    worker = InferenceWorker(ring, SlowEngine(2), Decider((0.5, 0.5), "ignore", 5_000_000), pub, ["a"])
    slot = ring.claim()
    ring.images[slot, 0, 0, :2] = (255, 0)
    ring.commit(slot, 0, 0, time.time_ns())
    worker.stop()
    worker.run()
    (d,) = pub.decisions
    assert d.reason == "late" and d.reject and d.scores == pytest.approx((1.0, 0.0))


def test_latency_histogram_percentiles():
    h = LatencyHistogram()
    for v in range(1, 1001):
        h.record(v * 1000)  # 1 µs .. 1 ms
    s = h.summary_ms()
    assert s["n"] == 1000 and s["max"] == pytest.approx(1.0)
    assert 0.45 <= s["p50"] <= 0.55 and 0.95 <= s["p99"] <= 1.0
    h.reset()
    assert h.summary_ms()["n"] == 0


# -- the daemon in-process -----------------------------------------------------------------------

def test_daemon_synthetic_line_drains_every_frame():
    """Real ring + real synthetic cameras (one with corrupt frames), a fake engine; every frame decided."""
    cams = ('[[camera]]\nid = "a"\nsource = "synthetic"\nfps = 0\ncount = 60\npool = 2\ncorrupt_every = 7\n'
            '[[camera]]\nid = "b"\nsource = "synthetic"\nfps = 0\ncount = 40\npool = 2\nseed = 1\n')
    pub = FakePublisher()
    engine = FakeEngine(max_batch=2)
    d = Daemon(parse_profile('[model]\nmax_batch = 2\n[ring]\nslots = 2\n' + cams), engine=engine, publisher=pub,
               log=FakeLog())
    d.start()
    assert d.join(60) == 0
    for cam, n in (("a", 60), ("b", 40)):
        ids = sorted(x.frame_id for x in pub.decisions if x.camera == cam)
        assert ids == list(range(n)), cam
    reasons = pub.reasons()
    assert reasons["dropped"] + reasons["corrupt"] > 0  # a 2-slot ring at full speed must drop
    assert d.ring.counters.lost_records == 0
    assert pub.started and pub.stopped and not engine.closed  # the caller's engine stays open
    assert all(d.truth is not None for d in pub.decisions)  # the synthetic line knows its truth


def test_daemon_stop_drains_and_max_frames():
    pub = FakePublisher()
    src = LoopSource("cam0")
    d = Daemon(profile(), engine=FakeEngine(), sources=[src], publisher=pub, max_frames=50, log=FakeLog())
    d.start()
    assert d.join(60) == 0
    ids = sorted(x.frame_id for x in pub.decisions)
    assert len(ids) >= 50 and ids == list(range(src.frames_seen))  # every frame acquired got a decision
    assert d.status()["status"] == "stopping"


def test_reload_swaps_thresholds_and_keeps_them_on_a_bad_profile(tmp_path):
    f = tmp_path / "s.toml"
    base = '[model]\nmax_batch = 4\n[ring]\nslots = 8\n[[camera]]\nid = "cam0"\nsource = "synthetic"\n'
    f.write_text(base + "[decision]\nthresholds = { anomaly = 0.9, adhesive = 0.5 }\n")
    pub = FakePublisher()
    log = FakeLog()
    from linewatch.profile import load_profile

    src = LoopSource("cam0", pattern=((128, 250),))  # anomaly score ~0.5
    d = Daemon(load_profile(f), profile_path=f, engine=FakeEngine(), sources=[src], publisher=pub, log=log)
    d.start()
    try:
        pub.wait_for_decision(lambda x: x.thresholds == (0.9, 0.5))  # a frame decided before the reload
        f.write_text(base + '[decision]\nthresholds = { anomaly = 0.3, adhesive = 0.5 }\nadhesive_rule = "ignore"\n')
        assert d.reload()
        assert d.decider.params.thresholds == (0.3, 0.5) and d.decider.params.adhesive_rule == "ignore"
        pub.wait_for_decision(lambda x: x.thresholds == (0.3, 0.5))
        f.write_text(base + '[decision]\nadhesive_rule = "sometimes"\n')
        assert not d.reload()
        assert d.decider.params.thresholds == (0.3, 0.5)  # the old settings stay
        f.write_text(base.replace("slots = 8", "slots = 16") + "[decision]\nthresholds = { anomaly = 0.3, adhesive = 0.5 }\n")
        d.request_reload()  # the SIGHUP path: done by the supervisor thread
        log.wait_for("reload_needs_restart")
    finally:
        d.stop()
        assert d.join(60) == 0
    assert d.reloads == 2 and d.reload_errors == 1
    err = [e for e in log.events if e[1] == "reload_failed"][0]
    assert "decision.adhesive_rule = 'sometimes'" in err[2]["error"]
    # frames kept flowing through the reloads: one decision per frame, both threshold settings used
    ids = sorted(x.frame_id for x in pub.decisions)
    assert ids == list(range(src.frames_seen))
    seen = {x.thresholds for x in pub.decisions}
    assert (0.9, 0.5) in seen and (0.3, 0.5) in seen
    assert all(x.reason == "anomaly" for x in pub.decisions if x.thresholds == (0.3, 0.5))


def test_sd_notify_ready_status_watchdog_and_stalled_worker(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    notifier = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # pet every 0.1 s
    release = threading.Event()
    engine = FakeEngine(block=release)  # the 4th infer call hangs until `release`
    log = FakeLog()
    d = Daemon(profile(), engine=engine, sources=[LoopSource("cam0", period=0.005)], publisher=FakePublisher(),
               notifier=notifier, status_interval=0.05, log=log, batch_limit=4)  # no timing calls at start
    msgs: list[str] = []
    try:
        d.start()

        def until(pred):
            while not pred():
                msgs.extend(sock.recv(4096).decode().split("\n"))

        until(lambda: "READY=1" in msgs and "WATCHDOG=1" in msgs and any(m.startswith("STATUS=") for m in msgs))
        assert msgs[0] == "READY=1"
        assert engine.blocked.wait(30)
        log.wait_for("watchdog_withheld")  # the stuck worker stops the petting
        pets = d.watchdog_pets
        sock.setblocking(False)  # forget what was sent before the stall
        try:
            while sock.recv(4096):
                pass
        except BlockingIOError:
            pass
        sock.settimeout(30)
        msgs.clear()
        until(lambda: sum(m.startswith("STATUS=") for m in msgs) >= 3)  # time passes, still stuck
        assert "WATCHDOG=1" not in msgs and d.watchdog_pets == pets
    finally:
        release.set()
        d.stop()
        code = d.join(60)
    assert code == 0
    until(lambda: "STOPPING=1" in msgs)
    sock.close()


@pytest.mark.camera
def test_daemon_with_the_viky_genicam_camera():
    """calib/viky.toml through the real harvesters path (the genicam wheel's simulated camera)."""
    pytest.importorskip("harvesters", reason="needs the camera extra: pip install 'linewatch[camera]'")
    from pathlib import Path

    from linewatch.profile import load_profile

    prof = load_profile(Path(__file__).resolve().parent.parent / "calib" / "viky.toml")
    cam = prof.camera[0]
    if not prof.cti_path(cam).is_file():
        pytest.skip("viky.cti not found in the installed genicam package")
    from linewatch.engines.null import NullEngine

    pub = FakePublisher()
    d = Daemon(prof, engine=NullEngine((64, 96), 8), publisher=pub, max_frames=10, log=FakeLog())
    d.start()
    assert d.join(60) == 0
    src = d.sources[0]
    assert src.frames_seen >= 10 and len(pub.decisions) == src.frames_seen
    assert sorted(x.frame_id for x in pub.decisions) == list(range(src.frames_seen))
    assert {x.camera for x in pub.decisions} == {"viky0"}


def test_daemon_with_the_real_publisher_over_zeromq(tmp_path):
    """Daemon -> linewatch.pipeline.publish.Publisher -> a SUB socket: every decision after the subscriber joined
    arrives, in order, without a gap, and the last one is the daemon's last decision."""
    zmq = pytest.importorskip("zmq")
    from linewatch.protocol import decode

    endpoint = f"ipc://{tmp_path}/lw.sock"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)  # connects (and reconnects) before the daemon binds
    cams = '[[camera]]\nid = "a"\nsource = "synthetic"\nfps = 100\ncount = 40\npool = 2\n'
    prof = parse_profile(f'[station]\nname = "zmq-test"\nendpoint = "{endpoint}"\n[publish]\nheartbeat_s = 0.05\n'
                         '[model]\nmax_batch = 4\n[ring]\nslots = 8\n' + cams)
    d = Daemon(prof, engine=FakeEngine(), log=FakeLog())
    d.start()
    assert d.join(60) == 0
    total = d.worker.decisions
    assert total == 40
    msgs = []
    try:
        while sub.poll(2000):
            msgs.append(decode(sub.recv_multipart()))
    finally:
        sub.close(linger=0)
    decisions = [m for m in msgs if m.topic == "decision"]
    assert decisions, "no decision message arrived"
    seqs = [m.seq for m in decisions]
    assert seqs == list(range(seqs[0], total))  # contiguous up to the very last decision
    assert all(m.header["station"] == "zmq-test" and m.header["camera"] == "a" for m in decisions)
    beats = [m for m in msgs if m.topic == "heartbeat"]
    assert beats and beats[-1].header["cameras"].get("a") in ("up", "done")


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


def test_daemon_measures_its_batch_limit_on_the_engine():
    class Slow(FakeEngine):
        def infer(self, frames):  # 40 ms a frame: with a 200 ms deadline only batch 1 fits
            time.sleep(0.04 * frames.shape[0])
            return super().infer(frames)

    prof = profile(cameras='[[camera]]\nid = "cam0"\nsource = "synthetic"\nfps = 0\ncount = 4\npool = 1\n')
    prof = prof.model_copy(update={"decision": prof.decision.model_copy(update={"deadline_ms": 200.0})})
    d = Daemon(prof, engine=Slow(max_batch=4), publisher=FakePublisher(), notifier=Notifier(env={}))
    d.start()
    assert d.join(30) == 0
    assert d.batch_limit == 1 and d.worker.max_take == 1


def test_logging_to_a_closed_stream_never_raises():
    import io

    from linewatch.logs import configure, get_logger

    stream = io.StringIO()
    configure("json", stream=stream)
    log = get_logger("t")
    log.warning("first")
    assert "first" in stream.getvalue()
    stream.close()
    log.warning("second")  # would raise ValueError: I/O operation on closed file
    log.exception("third")
    configure("json")  # back to stdout for later tests


def test_frames_that_cannot_be_decided_in_time_are_rejected_late_at_once_without_inference():
    """Admission by predicted completion: the stale head of a backlog is skipped, fresh frames inferred."""

    class Slow(FakeEngine):
        def infer(self, frames):
            time.sleep(0.06)  # 60 ms a batch
            return super().infer(frames)

    ring = Ring(8, *HW)
    engine = Slow(max_batch=8)
    pub = FakePublisher()
    worker = InferenceWorker(ring, engine, Decider((0.5, 0.5), "ignore", 100_000_000), pub, ["a"],
                             take_timeout=0.01)
    now = time.time_ns()

    def put(fid, age_ms):
        slot = ring.claim()
        ring.images[slot] = 0
        ring.commit(slot, 0, fid, now - int(age_ms * 1e6), (0, -1))

    for fid in range(4):
        put(fid, 1000)  # a second old: past the 100 ms deadline whatever the engine does
    put(4, 0)
    put(5, 0)
    batch = ring.take(8)
    worker.process(batch)
    ring.release(batch)
    assert engine.batch_sizes == [2], "only the two fresh frames were inferred"
    by_id = {d.frame_id: d.reason for d in pub.decisions}
    assert by_id == {0: "late", 1: "late", 2: "late", 3: "late", 4: "pass", 5: "pass"}
    assert worker.late_skipped == 4 and worker.frames == 6
    # the engine took ~60 ms: a frame 50 ms old cannot finish within 100 ms any more, one 10 ms old can
    now = time.time_ns()
    put(6, 50)
    put(7, 10)
    worker.process(ring.take(8))
    assert engine.batch_sizes == [2, 1]
    assert {d.frame_id: d.reason for d in pub.decisions[6:]} == {6: "late", 7: "pass"}
