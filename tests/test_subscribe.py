"""The subscriber library: gap detection, restarts, heartbeat watchdog, APIs, slow joiner."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import zmq
from waiting import wait_until

from linewatch.pipeline.decide import Decision
from linewatch.pipeline.publish import Publisher
from linewatch.protocol import Message, decision_header, encode, heartbeat_header, new_session_id
from linewatch.subscribe import Gap, Subscriber, SubscriberError

DECISION = Decision("cam0", 0, 1, 2, (0.1, 0.9), (0.7, 0.7), False, ("pass",), "present", False)


class FakePublisher:
    """A raw PUB socket sending crafted headers, to simulate gaps, restarts and silence."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.session = new_session_id()
        self.hb_seq = 0

    def heartbeat(self, status: str = "ok") -> None:
        self.sock.send_multipart(encode(heartbeat_header(
            station="fake", session=self.session, seq=self.hb_seq, status=status, uptime_s=0, fps=0,
            counters={}, cameras={}, interval_s=0.05, version="test", t_sent_ns=time.time_ns())))
        self.hb_seq += 1

    def decision(self, seq: int, frame_id: int | None = None, topic: str = "decision") -> None:
        d = Decision("cam0", seq if frame_id is None else frame_id, 1, 2, (0.9, 0.9), (0.7, 0.7), True, ("anomaly",),
                     "present", False)
        self.sock.send_multipart(encode(decision_header(
            d, topic=topic, station="fake", session=self.session, seq=seq, t_sent_ns=time.time_ns())))

    def connect(self, sub: Subscriber) -> None:
        """Beat until the subscriber has seen a heartbeat (slow joiner)."""
        for _ in range(200):
            self.heartbeat()
            if sub.wait_ready(0.05):
                return
        raise AssertionError("subscriber never connected")

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture()
def fake():
    f = FakePublisher()
    yield f
    f.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _poll_until(sub: Subscriber, cond, timeout: float = 30.0) -> None:
    """Poll the subscriber (its callbacks run in `poll`) until `cond()` holds."""

    def polled() -> bool:
        if cond():
            return True
        sub.poll(0.05)
        return bool(cond())

    wait_until(polled, timeout, "the subscriber's callbacks", interval=0)


def test_gap_detection_and_restart(fake: FakePublisher) -> None:
    got: list[Message] = []
    gaps: list[Gap] = []
    restarts: list[tuple] = []
    with Subscriber(fake.endpoint, ("decision", "reject"), on_message=got.append, on_gap=gaps.append,
                    on_restart=lambda o, n: restarts.append((o, n)), heartbeat_timeout=30) as sub:
        fake.connect(sub)
        for seq in (10, 11, 12, 15, 16, 20):  # joined at 10 (no gap), lost 13-14 and 17-19
            fake.decision(seq)
        fake.decision(0, topic="reject")
        fake.decision(1, topic="reject")
        _poll_until(sub, lambda: len(got) == 8)
        assert [(g.topic, g.expected, g.received, g.missing) for g in gaps] == [
            ("decision", 13, 15, 2), ("decision", 17, 20, 3)]
        assert sub.missing["decision"] == 5 and sub.missing["reject"] == 0
        old = fake.session
        fake.session = new_session_id()  # the daemon restarted: seq starts again at 0, no gap
        fake.decision(0)
        fake.decision(1)
        fake.decision(3)
        _poll_until(sub, lambda: len(got) == 11)
        assert restarts == [(old, fake.session)]
        assert gaps[-1] == Gap("decision", fake.session, 2, 3) and len(gaps) == 3
    assert [m.topic for m in got].count("heartbeat") == 0  # not asked for: watchdog only


def test_watchdog_fires_once_recovers_and_fires_again(fake: FakePublisher) -> None:
    events: list[str] = []
    sub = Subscriber(fake.endpoint, ("decision",), heartbeat_timeout=0.5,
                     on_failsafe=lambda r: events.append("failsafe: " + r),
                     on_recover=lambda hb: events.append("recover"))
    try:
        fake.connect(sub)
        assert not sub.failsafe_active
        _poll_until(sub, lambda: len(events) == 1)  # silence
        assert events[0].startswith("failsafe: no heartbeat")
        for _ in range(10):  # more silence: no second call
            sub.poll(0.05)
        assert len(events) == 1 and sub.failsafe_active
        fake.heartbeat()
        _poll_until(sub, lambda: len(events) == 2)
        assert events[1] == "recover" and not sub.failsafe_active
        _poll_until(sub, lambda: len(events) == 3)  # lost again
        assert events[2].startswith("failsafe: no heartbeat")
        fake.heartbeat()
        fake.heartbeat("stopping")  # announced stop: fail-safe at once (sent at once: no silence between)
        _poll_until(sub, lambda: len(events) == 5)
        assert events[3:] == ["recover", "failsafe: publisher 'fake' is stopping"]
    finally:
        sub.close()


def test_watchdog_fires_when_no_publisher_at_start() -> None:
    reasons: list[str] = []
    with Subscriber(f"tcp://127.0.0.1:{_free_port()}", on_failsafe=reasons.append, heartbeat_timeout=0.2) as sub:
        assert not sub.wait_ready(0.1)
        _poll_until(sub, lambda: bool(reasons))
        assert "since start" in reasons[0]


def test_watchdog_fires_when_a_real_publisher_stops() -> None:
    reasons: list[str] = []
    got: list[Message] = []
    pub = Publisher("tcp://127.0.0.1:0", "st", heartbeat_interval=0.05).start()
    sub = Subscriber(pub.endpoint, ("decision", "heartbeat"), on_message=got.append,
                     on_failsafe=reasons.append, heartbeat_timeout=10.0)
    try:
        assert sub.wait_ready(10.0)
        for _ in range(20):
            pub.submit(DECISION)
        pub.stop()
        _poll_until(sub, lambda: bool(reasons))
        assert reasons == ["publisher 'st' is stopping"]
        assert [m.seq for m in got if m.topic == "decision"] == list(range(20))
        assert sub.missing["decision"] == 0 and sub.missing["heartbeat"] == 0
    finally:
        sub.close()


def test_background_thread_and_iterator(fake: FakePublisher) -> None:
    got: list[Message] = []
    done = threading.Event()

    def on_message(m: Message) -> None:
        got.append(m)
        if len(got) == 3:
            done.set()

    sub = Subscriber(fake.endpoint, ("reject",), on_message=on_message, heartbeat_timeout=30)
    fake.connect(sub)  # before start(): wait_ready runs in this thread
    sub.start()
    for seq in range(3):
        fake.decision(seq, topic="reject")
    assert done.wait(30.0)
    sub.stop()
    assert [m.header["frame_id"] for m in got] == [0, 1, 2]

    with Subscriber(fake.endpoint, ("decision",), heartbeat_timeout=30) as sub2:
        fake.connect(sub2)
        for seq in range(4):
            fake.decision(seq)
        seen = []
        for msg in sub2:
            seen.append(msg.seq)
            if len(seen) == 4:
                break
        assert seen == [0, 1, 2, 3]


def test_bad_messages_are_reported_not_fatal(fake: FakePublisher) -> None:
    errors: list[Exception] = []
    got: list[Message] = []
    with Subscriber(fake.endpoint, "decision", on_error=errors.append, on_message=got.append,
                    heartbeat_timeout=30) as sub:
        assert sub.topics == ("decision",)
        fake.connect(sub)
        fake.sock.send_multipart([b"decision", b"{broken"])
        future = json.dumps({"schema": 2, "topic": "decision", "session": fake.session, "seq": 0}).encode()
        fake.sock.send_multipart([b"decision", future])
        fake.decision(0)
        _poll_until(sub, lambda: bool(got))
        assert sub.errors == 2 and "JSON" in str(errors[0]) and "schema 2" in str(errors[1])
        assert [m.seq for m in got] == [0]


def test_argument_errors() -> None:
    with pytest.raises(SubscriberError, match="topics"):
        Subscriber("tcp://127.0.0.1:1", ("news",))
    with pytest.raises(SubscriberError, match="heartbeat_timeout"):
        Subscriber("tcp://127.0.0.1:1", heartbeat_timeout=0)
    with pytest.raises(SubscriberError, match="cannot connect"):
        Subscriber("nonsense://x")


def test_background_thread_survives_a_raising_callback(fake: FakePublisher) -> None:
    got: list[int] = []
    done = threading.Event()

    def on_message(m: Message) -> None:
        got.append(m.seq)
        if m.seq == 0:
            raise RuntimeError("buggy handler")
        done.set()

    sub = Subscriber(fake.endpoint, ("reject",), on_message=on_message, heartbeat_timeout=30)
    fake.connect(sub)
    sub.start()
    fake.decision(0, topic="reject")
    fake.decision(1, topic="reject")
    assert done.wait(30.0)
    sub.stop()
    assert got == [0, 1]


def test_final_heartbeat_reports_a_lost_tail(fake: FakePublisher) -> None:
    gaps: list[Gap] = []
    failsafe: list[str] = []
    with Subscriber(fake.endpoint, ("decision",), on_gap=gaps.append, on_failsafe=failsafe.append,
                    heartbeat_timeout=30) as sub:
        fake.connect(sub)
        for seq in range(5):
            fake.decision(seq)
        _poll_until(sub, lambda: sub.received["decision"] == 5)
        assert gaps == []
        # the publisher numbered 8 decisions, but 5, 6, 7 never arrived (lost at close): no later
        # decision shows the jump, only the final heartbeat can
        fake.sock.send_multipart(encode(heartbeat_header(
            station="fake", session=fake.session, seq=fake.hb_seq, status="stopping", uptime_s=0, fps=0,
            counters={}, cameras={}, interval_s=0.05, version="test", t_sent_ns=time.time_ns(),
            final=True, sent={"decision": 8, "reject": 3, "overlay": 0})))
        _poll_until(sub, lambda: bool(failsafe))
    assert gaps == [Gap("decision", fake.session, 5, 8)]  # reject: not subscribed, not judged
    assert sub.missing["decision"] == 3


def test_real_publisher_final_heartbeat_counts_what_it_sent() -> None:
    port = _free_port()
    pub = Publisher(f"tcp://127.0.0.1:{port}", "st", heartbeat_interval=0.05)
    pub.start()
    beats: list[dict] = []
    decisions: list[Message] = []
    gaps: list[Gap] = []
    with Subscriber(f"tcp://127.0.0.1:{port}", ("decision", "heartbeat"), on_gap=gaps.append,
                    on_message=lambda m: (beats if m.topic == "heartbeat" else decisions).append(m)) as sub:
        assert sub.wait_ready(5)
        for i in range(7):
            pub.submit(Decision("cam0", i, 1, 2, (0.9, 0.1), (0.7, 0.7), True, ("anomaly",), "present", False))
        pub.stop(drain=True)
        _poll_until(sub, lambda: any(b.header["final"] for b in beats))
    final = [b.header for b in beats if b.header["final"]]
    assert len(final) == 1 and final[0]["sent"] == {"decision": 7, "reject": 7, "overlay": 0}
    assert not any(b.header["final"] for b in beats[:-1]) and beats[-1].header["final"]
    assert len(decisions) == 7 and gaps == []


def test_wait_ready_or_poll_from_another_thread_after_start_is_an_error_not_a_process_abort():
    """Found in CI: benchmarks/soak.py called wait_ready() after start(); two threads polled one ZeroMQ socket and
    the whole test process aborted (Fatal Python error). Now the second user gets a SubscriberError."""
    sub = Subscriber("tcp://127.0.0.1:1", heartbeat_timeout=5.0)
    try:
        assert not sub.wait_ready(0.01)  # before start(): fine
        sub.start()
        with pytest.raises(SubscriberError, match=r"wait_ready\(\) called from another thread after start\(\)"):
            sub.wait_ready(0.01)
        with pytest.raises(SubscriberError, match=r"poll\(\) called from another thread"):
            sub.poll(0.01)
    finally:
        sub.stop()

