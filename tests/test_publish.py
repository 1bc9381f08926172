"""The publisher thread: drain on stop, overlays, sequence numbers, heartbeats, never blocking, CURVE."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
import zmq.auth
from waiting import wait_until

from linewatch.pipeline.decide import FAILSAFE_REASONS, Decider, Decision
from linewatch.pipeline.publish import CurveServer, Publisher, PublisherError
from linewatch.protocol import Message, decode, validate_header
from linewatch.subscribe import CurveClient, Subscriber

IMAGE = np.full((64, 80, 3), 128, np.uint8)
MASKS = np.zeros((2, 8, 10), np.float32)
MASKS[0, 2:6, 3:7] = 1.0


def _d(i: int, reject: bool = False, reason: str | None = None, scores=(0.1, 0.9), rule: str = "present") -> Decision:
    t = time.time_ns()
    reason = reason or ("anomaly" if reject else "pass")
    return Decision("cam0", i, t, t + 1_000_000, scores, (0.7, 0.7), reject, (reason,), rule,
                    reason in FAILSAFE_REASONS)


class Collector:
    """A raw SUB socket on a publisher, connected and live (first heartbeat seen) before use."""

    def __init__(self, pub: Publisher, curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        assert pub.endpoint is not None
        self.sock.connect(pub.endpoint)
        self.messages: list[Message] = []

    def wait_heartbeat(self, timeout_ms: int = 10_000) -> bool:
        while self.sock.poll(timeout_ms):
            msg = decode(self.sock.recv_multipart())
            validate_header(msg.header)
            if msg.topic == "heartbeat":
                return True
            self.messages.append(msg)  # keep what arrives meanwhile
        return False

    def drain(self, until_stopping: bool = True, silence_ms: int = 2000) -> dict[str, list[Message]]:
        """Collect until the publisher's "stopping" heartbeat (or silence_ms of silence)."""
        while self.sock.poll(silence_ms):
            msg = decode(self.sock.recv_multipart())
            validate_header(msg.header)
            self.messages.append(msg)
            if until_stopping and msg.topic == "heartbeat" and msg.header["status"] == "stopping":
                break
        self.sock.close()
        self.ctx.term()
        out: dict[str, list[Message]] = {"decision": [], "reject": [], "overlay": [], "heartbeat": []}
        for m in self.messages:
            out[m.topic].append(m)
        return out


def _start(**kw) -> Publisher:
    kw.setdefault("heartbeat_interval", 0.05)
    return Publisher("tcp://127.0.0.1:0", "st", **kw).start()


def test_drains_everything_on_stop_with_contiguous_seq() -> None:
    pub = _start(overlay_pass_every=0)
    col = Collector(pub)
    assert col.wait_heartbeat()
    n = 500
    for i in range(n):
        pub.submit(_d(i, reject=i % 7 == 0))
    pub.stop(drain=True)
    got = col.drain()
    assert [m.header["frame_id"] for m in got["decision"]] == list(range(n))
    assert [m.seq for m in got["decision"]] == list(range(n))
    assert [m.header["frame_id"] for m in got["reject"]] == [i for i in range(n) if i % 7 == 0]
    assert [m.seq for m in got["reject"]] == list(range(len(got["reject"])))
    assert got["overlay"] == []
    beats = [m.seq for m in got["heartbeat"]]
    assert beats == list(range(beats[0], beats[0] + len(beats)))
    assert got["heartbeat"][-1].header["status"] == "stopping"
    assert got["heartbeat"][-1].header["counters"]["decisions"] == n
    assert len({m.session for m in col.messages}) == 1


def test_rejects_get_overlays_and_every_nth_pass() -> None:
    pub = _start(overlay_pass_every=3, overlay_pool=64, overlay_shape=(64, 80))  # pool preallocated
    col = Collector(pub)
    assert col.wait_heartbeat()
    plan = [i % 4 == 1 for i in range(24)]  # 6 rejects, 18 passes
    for i, reject in enumerate(plan):
        pub.submit(_d(i, reject), image=IMAGE, masks=MASKS)
    pub.submit(_d(99, True, "dropped", None))  # a fail-safe reject without image: no overlay
    pub.stop()
    got = col.drain()
    passes = [i for i, r in enumerate(plan) if not r]
    expected = sorted([i for i, r in enumerate(plan) if r] + passes[2::3])  # the 3rd, 6th, ... pass
    overlays = got["overlay"]
    assert sorted(m.header["frame_id"] for m in overlays) == expected
    assert [m.seq for m in overlays] == list(range(len(expected)))
    assert pub.counters()["overlays"] == len(expected)
    for m in overlays:
        img = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (64, 80, 3) == (m.header["height"], m.header["width"], 3)
        # the mask outline is drawn: some pixels are far from the uniform grey of the input
        assert np.abs(img.astype(int) - 128).max() > 60
        assert m.header["decision"] == ("reject" if plan[m.header["frame_id"]] else "pass")


def test_overlay_without_masks_is_the_plain_image() -> None:
    pub = _start(overlay_pool=4)
    col = Collector(pub)
    assert col.wait_heartbeat()
    pub.submit(_d(0, True), image=IMAGE)
    pub.stop()
    (m,) = col.drain()["overlay"]
    img = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(img.astype(int) - 128).max() < 10


def test_full_pool_skips_overlays_full_queue_counts_overflow_never_blocks() -> None:
    pub = Publisher("tcp://127.0.0.1:0", "st", overlay_pool=2, queue_size=4)  # not started: nothing drains
    for i in range(6):
        pub.submit(_d(i, True), image=IMAGE, masks=MASKS)
    c = pub.counters()
    assert c["decisions"] == 6 and c["rejects"] == 6
    assert c["queue_overflow"] == 2
    assert c["overlays_skipped"] == 4  # 2 pool slots, never freed (no thread)
    # a different image shape than the pool's is skipped, not an error
    pub.submit(_d(7, True), image=np.zeros((10, 10, 3), np.uint8))
    assert pub.counters()["overlays_skipped"] == 5
    # a decision lost to a full queue gives its pool slot back
    pub2 = Publisher("tcp://127.0.0.1:0", "st", overlay_pool=2, queue_size=1)
    for i in range(5):
        pub2.submit(_d(i, True), image=IMAGE, masks=MASKS)
    assert pub2.counters()["queue_overflow"] == 4 and pub2.counters()["overlays_skipped"] == 0


def test_submit_is_thread_safe() -> None:
    pub = _start()
    col = Collector(pub)
    assert col.wait_heartbeat()

    def producer(k: int) -> None:
        for i in range(200):
            pub.submit(_d(k * 1000 + i, reject=i % 2 == 0))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pub.stop()
    got = col.drain()
    assert [m.seq for m in got["decision"]] == list(range(800))
    assert sorted(m.header["frame_id"] for m in got["decision"]) == sorted(
        k * 1000 + i for k in range(4) for i in range(200))
    assert [m.seq for m in got["reject"]] == list(range(400))
    for k in range(4):  # each producer's decisions keep their order
        ids = [m.header["frame_id"] for m in got["decision"] if m.header["frame_id"] // 1000 == k]
        assert ids == sorted(ids)


def test_heartbeat_merges_status_and_reports_degraded() -> None:
    calls = {"n": 0}

    def status() -> dict:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("status broke")
        return {"fps": 24.5, "counters": {"frames": 10, "decisions": 999}, "cameras": {"cam0": "up"}}

    pub = _start(status=status)
    col = Collector(pub)
    assert col.wait_heartbeat()
    pub.submit(_d(1, True, "late", None, rule="absent"))
    wait_until(lambda: calls["n"] >= 5, what="5 calls of status()")
    pub.stop()
    got = col.drain()
    beats = [m.header for m in got["heartbeat"]]
    ok = [h for h in beats if h["status"] == "ok"]
    assert ok and ok[-1]["fps"] == 24.5 and ok[-1]["cameras"] == {"cam0": "up"}
    assert ok[-1]["counters"]["frames"] == 10 and ok[-1]["counters"]["decisions"] == 999  # status() wins
    assert ok[-1]["counters"]["late"] == 1 and ok[-1]["counters"]["failsafe"] == 1
    assert ok[-1]["interval_s"] == 0.05
    assert any(h["status"] == "degraded" for h in beats)
    (dec,) = got["decision"]
    assert dec.header["adhesive_rule"] == "absent" and dec.header["failsafe"] is True


def test_stop_without_drain_and_bind_errors() -> None:
    pub = _start()
    with pytest.raises(PublisherError, match="cannot bind"):
        Publisher(pub.endpoint, "st").start()
    for i in range(50):
        pub.submit(_d(i))
    pub.stop(drain=False)
    pub.stop()  # idempotent
    with pytest.raises(PublisherError, match="cannot bind"):
        Publisher("tcp://256.1.1.1:1", "st").start()
    with pytest.raises(PublisherError, match="overlay_pass_every"):
        Publisher("tcp://127.0.0.1:0", "st", overlay_pass_every=-1)
    with pytest.raises(PublisherError, match="overlay_shape"):
        Publisher("tcp://127.0.0.1:0", "st", overlay_shape=(0, 10))
    with pytest.raises(PublisherError, match="jpeg_quality = 0"):
        Publisher("tcp://127.0.0.1:0", "st", jpeg_quality=0)


def test_a_decision_made_before_a_rule_change_is_published_with_its_own_rule() -> None:
    """A decision queued before a reload goes out under the rule it was decided with, not the new one."""
    decider = Decider((0.7, 0.7), "present")
    pub = _start()
    col = Collector(pub)
    assert col.wait_heartbeat()
    t = time.time_ns()
    before = decider.decide("cam0", 0, t, (0.1, 0.1), now_ns=t)  # rule present: the adhesive is missing
    decider.update(adhesive_rule="absent")  # the reload, while `before` waits to be sent
    after = decider.decide("cam0", 1, t, (0.1, 0.1), now_ns=t)
    pub.submit(before)
    pub.submit(after)
    pub.stop()
    got = {m.header["frame_id"]: m.header for m in col.drain()["decision"]}
    assert (got[0]["adhesive_rule"], got[0]["reason"], got[0]["decision"]) == ("present", "adhesive-missing", "reject")
    assert (got[1]["adhesive_rule"], got[1]["reason"], got[1]["decision"]) == ("absent", "pass", "pass")


# ------------------------------------------------------------------ CURVE


@pytest.fixture()
def certs(tmp_path: Path) -> dict[str, Path]:
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    for name in ("server", "plc", "intruder"):
        zmq.auth.create_certificates(keys, name)
    (allowed / "plc.key").write_bytes((keys / "plc.key").read_bytes())
    return {"keys": keys, "allowed": allowed}


def _client_keys(keys: Path, name: str) -> tuple[bytes, bytes, bytes]:
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
    assert secret is not None
    return server_public, public, secret


def test_curve_authorised_client_receives_unauthorised_gets_nothing(certs: dict[str, Path]) -> None:
    keys = certs["keys"]
    pub = _start(curve=CurveServer(keys / "server.key_secret", certs["allowed"]))
    good = Collector(pub, _client_keys(keys, "plc"))
    bad = Collector(pub, _client_keys(keys, "intruder"))
    plain = Collector(pub)  # no CURVE at all
    assert good.wait_heartbeat()
    for i in range(5):
        pub.submit(_d(i, True))
    # the authorised client got several heartbeats in the time the others had to get one
    for _ in range(3):
        assert good.wait_heartbeat()
    assert not bad.sock.poll(200)
    assert not plain.sock.poll(200)
    pub.stop()
    got = good.drain()
    assert [m.header["frame_id"] for m in got["decision"]] == list(range(5))
    assert bad.drain(until_stopping=False, silence_ms=200) == {"decision": [], "reject": [], "overlay": [], "heartbeat": []}
    assert plain.drain(until_stopping=False, silence_ms=200)["heartbeat"] == []


def test_curve_with_the_subscriber_library(certs: dict[str, Path]) -> None:
    keys = certs["keys"]
    pub = _start(curve=CurveServer(keys / "server.key_secret", certs["allowed"]))
    got: list[Message] = []
    sub = Subscriber(pub.endpoint, ("reject",), on_message=got.append,
                     curve=CurveClient(keys / "server.key", keys / "plc.key_secret"))
    try:
        assert sub.wait_ready(10.0)
        pub.submit(_d(1, True))
        while not got and sub.poll(5.0) is not None:
            pass
    finally:
        pub.stop()
        sub.close()
    assert [m.header["frame_id"] for m in got] == [1]


def test_curve_key_file_errors(certs: dict[str, Path]) -> None:
    keys = certs["keys"]
    with pytest.raises(PublisherError, match="holds no secret key"):
        Publisher("tcp://127.0.0.1:0", "st", curve=CurveServer(keys / "server.key")).start()
    with pytest.raises(PublisherError, match="does not exist"):
        Publisher("tcp://127.0.0.1:0", "st", curve=CurveServer(keys / "nope.key_secret")).start()
    with pytest.raises(PublisherError, match="clients directory"):
        Publisher("tcp://127.0.0.1:0", "st",
                  curve=CurveServer(keys / "server.key_secret", keys / "missing")).start()


def test_curve_without_clients_dir_allows_any_curve_client(certs: dict[str, Path]) -> None:
    keys = certs["keys"]
    pub = _start(curve=CurveServer(keys / "server.key_secret"))
    anyone = Collector(pub, _client_keys(keys, "intruder"))
    plain = Collector(pub)
    try:
        assert anyone.wait_heartbeat()
        assert anyone.wait_heartbeat()
        assert not plain.sock.poll(200)  # encryption is still required
    finally:
        pub.stop()
    assert anyone.drain()["heartbeat"][-1].header["status"] == "stopping"
    assert plain.drain(until_stopping=False, silence_ms=200)["heartbeat"] == []
