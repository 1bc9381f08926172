"""The daemon in-process (`linewatch.pipeline.daemon`): exactly one decision per frame from its cameras
to its publisher, drain on stop, reload, the systemd watchdog tied to worker liveness, the batch limit
measured at start. The inference worker alone is test_infer.py's."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from fakes import FakeEngine, FakeLog, FakePublisher

from linewatch.pipeline.daemon import Daemon
from linewatch.pipeline.ring import DROP_FULL
from linewatch.profile import parse_profile
from linewatch.sdnotify import Notifier


class LoopSource:
    """A camera writing frames with pixel (a, h) values from `pattern`, paced by a short sleep; with
    `go`, its first frame waits for that event."""

    def __init__(self, camera: str, pattern=((10, 250),), count: int | None = None, period: float = 0.002,
                 go: threading.Event | None = None):
        self.camera = camera
        self.state = "starting"
        self.frames_seen = 0
        self.pattern = pattern
        self.count = count
        self.period = period
        self.go = go

    def start(self, ring, cam, stop):
        t = threading.Thread(target=self._run, args=(ring, cam, stop), daemon=True)
        t.start()
        return t

    def _run(self, ring, cam, stop):
        self.state = "up"
        if self.go is not None:
            self.go.wait()
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
    assert all(x.reasons == ("anomaly",) for x in pub.decisions if x.thresholds == (0.3, 0.5))


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
    """Daemon -> linewatch.pipeline.publish.Publisher -> a SUB socket: every decision arrives, in order, without
    a gap, from the first to the daemon's last. The camera's first frame waits until the subscriber has
    joined (it has seen a heartbeat): how soon a socket connects is no part of the test."""
    zmq = pytest.importorskip("zmq")
    from linewatch.protocol import decode

    endpoint = f"ipc://{tmp_path}/lw.sock"
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)  # connects (and reconnects) before the daemon binds
    prof = parse_profile(f'[station]\nname = "zmq-test"\nendpoint = "{endpoint}"\n[publish]\nheartbeat_s = 0.05\n'
                         '[model]\nmax_batch = 4\n[ring]\nslots = 8\n[[camera]]\nid = "a"\nsource = "synthetic"\n')
    go = threading.Event()
    d = Daemon(prof, engine=FakeEngine(), sources=[LoopSource("a", count=40, period=0.01, go=go)], log=FakeLog())
    msgs = []
    try:
        d.start()
        assert sub.poll(30_000), "no heartbeat within 30 s: the subscriber did not join"
        go.set()
        assert d.join(60) == 0
        total = d.worker.decisions
        assert total == 40
        while sub.poll(2000):
            msgs.append(decode(sub.recv_multipart()))
    finally:
        go.set()
        d.stop()
        sub.close(linger=0)
    decisions = [m for m in msgs if m.topic == "decision"]
    assert [m.seq for m in decisions] == list(range(total))  # contiguous from the first to the very last decision
    assert all(m.header["station"] == "zmq-test" and m.header["camera"] == "a" for m in decisions)
    beats = [m for m in msgs if m.topic == "heartbeat"]
    assert beats and beats[-1].header["cameras"].get("a") in ("up", "done")


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


