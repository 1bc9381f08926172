"""Fault injection (issue 22, reliability item 1): engine faults, publisher faults, signals.

Engine faults go through `FaultyEngine`, a wrapper around the tests' fake engine that spoils chosen calls
(raises, returns NaN or out-of-range scores, returns outputs of the wrong shape or dtype, hangs). The
daemon runs in-process with the real publisher on an ipc endpoint, and every check is made on what a
subscriber receives: one decision per frame id, no gap in `seq`, every message valid (`protocol.decode`).
The frame id is written into the pixels, so the wrapper knows which frames it spoiled.

Where the promise is about the process (exit status, signals, file descriptors) `linewatch run` runs as a
subprocess on the synthetic line with the null engine (tests/fakes.py's stand-in model).
docs/reliability.md has the measured figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import HW, FakeEngine, FakeLog, stub_model
from waiting import wait_until

from linewatch.pipeline.daemon import Daemon
from linewatch.pipeline.decide import REASON_ENGINE_ERROR, Decider
from linewatch.pipeline.ring import DROP_FULL
from linewatch.profile import parse_profile
from linewatch.protocol import ProtocolError, decode
from linewatch.sdnotify import Notifier

zmq = pytest.importorskip("zmq")

MASK_HW = (HW[0] // 8, HW[1] // 8)


# -- a line whose frames carry their id ----------------------------------------------------------

def expected_reason(fid: int, rule: str = "present") -> str:
    """What an unspoiled frame of `IdSource` is decided: every 5th is an anomaly, the others pass (the
    adhesive, 250, is there: rule "absent" rejects every frame for it)."""
    reasons = ["anomaly"] if fid % 5 == 0 else []
    if rule == "absent":
        reasons.append("adhesive-present")
    return "+".join(reasons) or "pass"


def frame_id_of(frame: np.ndarray) -> int:
    """The frame id `IdSource` wrote into pixel (0, 1)."""
    b = frame[0, 1]
    return int(b[0]) | int(b[1]) << 8 | int(b[2]) << 16


class IdSource:
    """A camera of `count` frames (None = until stopped): anomaly pixel 250 for every 5th frame, else 10;
    adhesive 250; its frame id in pixel (0, 1). Paced by a short sleep; with `go`, the first frame waits
    for that event."""

    def __init__(self, camera: str = "cam0", count: int | None = 60, period: float = 0.002,
                 go: threading.Event | None = None):
        self.camera = camera
        self.state = "starting"
        self.frames_seen = 0
        self.count = count
        self.period = period
        self.go = go

    def start(self, ring, cam, stop):
        t = threading.Thread(target=self._run, args=(ring, cam, stop), name="test-idsource", daemon=True)
        t.start()
        return t

    def _run(self, ring, cam, stop):
        self.state = "up"
        if self.go is not None:
            self.go.wait()
        fid = 0
        while not stop.is_set() and (self.count is None or fid < self.count):
            slot = ring.claim()
            if slot is None:
                ring.drop(cam, fid, time.time_ns(), DROP_FULL)
            else:
                ring.images[slot, 0, 0, :2] = (250 if fid % 5 == 0 else 10, 250)
                ring.images[slot, 0, 1] = (fid & 255, fid >> 8 & 255, fid >> 16 & 255)
                ring.commit(slot, cam, fid, time.time_ns())
            fid += 1
            self.frames_seen = fid
            time.sleep(self.period)
        self.state = "done"


class FaultyEngine:
    """Wraps an engine; `plan(call)` (call numbers from 1) names the fault of that call, None = a normal call.

    Faults: "raise"; bad scores: "nan" (both heads), "nan-adhesive", "inf", "-inf", "above-1" (1.5),
    "below-0" (-0.2); wrong outputs: "few-scores", "few-masks", "scores-1d", "scores-3-columns",
    "mask-shape", "mask-heads", "scores-dtype" (object), "scores-float64", "masks-dtype" (text),
    "not-arrays" (lists); "hang": blocks until `release` is set. The ids of the frames each fault spoiled
    are kept in `spoiled[fault]`."""

    def __init__(self, inner, plan, release: threading.Event | None = None):
        self.inner = inner
        self.plan = plan
        self.release = release or threading.Event()
        self.hung = threading.Event()
        self.calls = 0
        self.spoiled: dict[str, list[int]] = {}
        for attr in ("name", "device", "precision", "pinned", "input_hw", "max_batch"):
            setattr(self, attr, getattr(inner, attr))

    def warmup(self):
        self.inner.warmup()

    def close(self):
        self.inner.close()

    def infer(self, frames):
        self.calls += 1
        fault = self.plan(self.calls)
        masks, scores = self.inner.infer(frames)
        if fault is None:
            return masks, scores
        n = frames.shape[0]
        self.spoiled.setdefault(fault, []).extend(frame_id_of(f) for f in frames)
        masks, scores = masks.copy(), scores.copy()
        if fault == "raise":
            raise RuntimeError("injected engine fault")
        if fault == "hang":
            self.hung.set()
            self.release.wait()
            return masks, scores
        bad_scores = {"nan": (np.nan, np.nan), "nan-adhesive": (None, np.nan), "inf": (np.inf, None),
                      "-inf": (-np.inf, None), "above-1": (1.5, None), "below-0": (None, -0.2)}
        if fault in bad_scores:
            for col, value in enumerate(bad_scores[fault]):
                if value is not None:
                    scores[:, col] = value
            return masks, scores
        wrong = {
            "few-scores": lambda: (masks, scores[: n - 1]),
            "few-masks": lambda: (masks[: n - 1], scores),
            "scores-1d": lambda: (masks, scores[:, 0].copy()),
            "scores-3-columns": lambda: (masks, np.zeros((n, 3), np.float32)),
            "mask-shape": lambda: (np.zeros((n, 2, MASK_HW[0] + 1, MASK_HW[1]), np.float32), scores),
            "mask-heads": lambda: (masks[:, :1].copy(), scores),
            "scores-dtype": lambda: (masks, np.full((n, 2), None, object)),
            "scores-float64": lambda: (masks, scores.astype(np.float64)),
            "masks-dtype": lambda: (np.full(masks.shape, "x"), scores),
            "not-arrays": lambda: (masks.tolist(), scores.tolist()),
        }
        return wrong[fault]()


def line_profile(endpoint: str, rule: str = "present", extra: str = "", heartbeat_s: float = 0.05) -> object:
    return parse_profile(
        f'[station]\nname = "faults"\nendpoint = "{endpoint}"\n[publish]\nheartbeat_s = {heartbeat_s}\n'
        'overlay_pass_every = 3\n'
        f'[decision]\nthresholds = {{ anomaly = 0.7, adhesive = 0.7 }}\nadhesive_rule = "{rule}"\ndeadline_ms = 60000\n'
        f'[model]\nmax_batch = 4\n[ring]\nslots = 64\n{extra}[[camera]]\nid = "cam0"\nsource = "synthetic"\n')


class Subscriber:
    """A SUB socket on `endpoint` (it may connect before the daemon binds) whose thread receives every
    message and keeps its frames; they are decoded when asked for (`topic`), so the thread keeps up with
    a daemon at full speed. Heartbeats are decoded at once (`final` is set by the session's last).

    RCVHWM 0 (no limit): ZeroMQ's I/O thread takes every message off the wire whenever the Python thread
    is slow to read (in-process it shares the GIL with the daemon's threads), as a subscriber process
    that keeps up would."""

    TOPICS = ("decision", "reject", "overlay", "heartbeat")

    def __init__(self, endpoint: str):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self._raw: dict[str, list] = {t: [] for t in self.TOPICS}
        self._decoded: dict[str, list] = {t: [] for t in self.TOPICS}
        self._refused: list[str] = []
        self.final = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test-sub", daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            raw = self._raw.get(frames[0].decode("ascii", "replace"))
            if raw is None:
                self._refused.append(f"topic {frames[0][:40]!r}")
                continue
            raw.append(frames)
            if raw is self._raw["heartbeat"]:
                try:
                    if decode(frames).header["final"]:
                        self.final.set()
                except ProtocolError:
                    pass  # counted when the heartbeats are decoded

    def topic(self, name: str) -> list:
        """The messages of `name` received so far, decoded (what `decode` refuses is in `refused`)."""
        raw, done = self._raw[name], self._decoded[name]
        for frames in raw[len(done):len(raw)]:
            try:
                done.append(decode(frames))
            except ProtocolError as exc:
                self._refused.append(str(exc))
                done.append(None)
        return [m for m in done if m is not None]

    def count(self, name: str) -> int:
        return len(self._raw[name])

    @property
    def refused(self) -> list[str]:
        """Why `decode` refused messages (every topic decoded first)."""
        for t in self.TOPICS:
            self.topic(t)
        return list(self._refused)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close(linger=0)


@contextlib.contextmanager
def line(tmp_path: Path, engine, count: int | None = 60, rule: str = "present", *, notifier: Notifier | None = None,
         log=None, period: float = 0.002):
    """The daemon on an `IdSource` of `count` frames (None = until stopped), the real publisher on an ipc
    endpoint and a subscriber: yields (daemon, subscriber, source) once the subscriber has joined and frames
    flow; on exit stops the daemon (a drain) and waits for the subscriber's final heartbeat."""
    endpoint = f"ipc://{tmp_path}/faults.sock"
    sub = Subscriber(endpoint)
    go = threading.Event()
    src = IdSource(count=count, period=period, go=go)
    d = Daemon(line_profile(endpoint, rule), engine=engine, sources=[src], log=log or FakeLog(), batch_limit=4,
               notifier=notifier or Notifier(env={}), status_interval=0.05)
    try:
        d.start()
        wait_until(lambda: sub.count("heartbeat"), 30, "a heartbeat: the subscriber has joined")
        go.set()
        yield d, sub, src
        d.stop()
        assert d.join(60) == 0, d.worker.last_error
        assert sub.final.wait(30), "no final heartbeat"
    finally:
        go.set()
        d.stop()
        d.join(60)
        sub.close()


def run_line(tmp_path: Path, engine, count: int = 60, rule: str = "present"):
    """`line` until its `count` frames are decided and drained: (daemon, subscriber)."""
    with line(tmp_path, engine, count, rule) as (d, sub, src):
        assert d.join(60) == 0, d.worker.last_error  # every camera done: the daemon stops by itself
    return d, sub


def one_decision_per_frame(sub: Subscriber, count: int) -> dict[int, dict]:
    """Every frame id 0..count-1 has exactly one `decision` message, seq 0..count-1 without a gap, and
    nothing was refused; the decisions' headers by frame id."""
    assert sub.refused == []
    decisions = sub.topic("decision")
    assert [m.seq for m in decisions] == list(range(count))
    ids = sorted(m.header["frame_id"] for m in decisions)
    assert ids == list(range(count))
    final = sub.topic("heartbeat")[-1].header
    assert final["final"] and final["sent"]["decision"] == count
    return {m.header["frame_id"]: m.header for m in decisions}


def check_decisions(by_id: dict[int, dict], spoiled: set[int], rule: str = "present", *, dropped: int = 0) -> None:
    """The spoiled frames are fail-safe "engine-error" rejects without scores; every other frame is decided
    on its own pixels (or, `dropped` of them, a "dropped" reject: no ring slot)."""
    assert spoiled and len(spoiled) < len(by_id), "the fault must spoil some frames, not all"
    for fid, h in by_id.items():
        got = (h["decision"], h["reason"], h["failsafe"])
        if fid in spoiled:
            assert got == ("reject", REASON_ENGINE_ERROR, True) and h["scores"] is None, (fid, h)
        elif h["reason"] != "dropped":
            want = expected_reason(fid, rule)
            assert got == ("pass" if want == "pass" else "reject", want, False) and h["scores"] is not None, (fid, h)
    assert sum(h["reason"] == "dropped" for h in by_id.values()) == dropped


# -- 1. engine faults -------------------------------------------------------------------------------

def test_an_engine_that_raises_on_some_batches_rejects_those_frames_and_decides_the_rest(tmp_path):
    engine = FaultyEngine(FakeEngine(max_batch=4), lambda call: "raise" if call % 3 == 0 else None)
    d, sub = run_line(tmp_path, engine, count=90)
    by_id = one_decision_per_frame(sub, 90)
    spoiled = set(engine.spoiled["raise"])
    check_decisions(by_id, spoiled, dropped=d.ring.counters.dropped_full)
    assert d.worker.engine_errors == engine.calls // 3  # one per failed batch
    assert max(by_id) not in spoiled or any(f > min(spoiled) and f not in spoiled for f in by_id)  # went on
    print(f"\n{engine.calls} engine calls, {d.worker.engine_errors} raised: {len(spoiled)} of 90 frames engine-error")


@pytest.mark.parametrize("fault, rule", [("nan", "present"), ("nan-adhesive", "ignore"), ("inf", "present"),
                                         ("-inf", "present"), ("above-1", "absent"), ("below-0", "ignore")])
def test_an_engine_that_returns_scores_outside_0_1_or_nan_gives_engine_error_rejects(tmp_path, fault, rule):
    engine = FaultyEngine(FakeEngine(max_batch=4), lambda call: fault if call in (2, 5) else None)
    d, sub = run_line(tmp_path, engine, count=40, rule=rule)
    by_id = one_decision_per_frame(sub, 40)
    check_decisions(by_id, set(engine.spoiled[fault]), rule, dropped=d.ring.counters.dropped_full)
    assert d.worker.bad_scores == len(engine.spoiled[fault]) and d.worker.engine_errors == 0


WRONG_OUTPUTS = ("few-scores", "few-masks", "scores-1d", "scores-3-columns", "mask-shape", "mask-heads",
                 "scores-dtype", "scores-float64", "masks-dtype", "not-arrays")


@pytest.mark.parametrize("fault", WRONG_OUTPUTS)
def test_an_engine_that_returns_outputs_of_the_wrong_shape_or_dtype_gives_engine_error_rejects(tmp_path, fault):
    engine = FaultyEngine(FakeEngine(max_batch=4), lambda call: fault if call in (2, 5) else None)
    d, sub = run_line(tmp_path, engine, count=40)
    by_id = one_decision_per_frame(sub, 40)
    check_decisions(by_id, set(engine.spoiled[fault]), dropped=d.ring.counters.dropped_full)
    assert d.worker.engine_errors == 2


@pytest.mark.parametrize("rule", ["present", "absent", "ignore"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1.0000001, -1e-7, 2.0, -3.0])
@pytest.mark.parametrize("head", [0, 1])
def test_the_decider_rejects_a_score_outside_0_1_as_engine_error_under_every_rule(rule, bad, head):
    d = Decider((0.7, 0.7), rule, 10**9)
    scores = [0.1, 0.9]
    scores[head] = bad
    out = d.decide("cam0", 1, time.time_ns(), np.array(scores, np.float32), truth=None)
    assert (out.reject, out.failsafe, out.reasons, out.scores) == (True, True, (REASON_ENGINE_ERROR,), None)
    for edge in (0.0, 1.0):  # guard: the ends of [0, 1] are scores like any other, judged on the thresholds
        scores[head] = edge
        judged = d.decide("cam0", 1, time.time_ns(), np.array(scores, np.float32))
        assert not judged.failsafe and judged.scores == pytest.approx(scores)


def test_a_hung_engine_stops_the_watchdog_and_after_release_it_resumes_with_one_decision_per_frame(tmp_path):
    """A real notify socket, WATCHDOG_USEC = 0.3 s (a pet every 0.15 s). The engine's 5th call blocks
    until released: the worker's alive_age grows, WATCHDOG=1 stops while STATUS= goes on, and comes back
    after the release; the frames that arrived meanwhile (the ring fills: "dropped") are each decided once."""
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.1)
    got: list[str] = []

    def read():
        while listener.fileno() >= 0:
            try:
                got.extend(listener.recv(4096).decode().split("\n"))
            except (TimeoutError, OSError):
                continue

    reader = threading.Thread(target=read, name="test-notify", daemon=True)
    reader.start()

    def count(msg: str) -> int:
        return sum(m == msg for m in list(got))

    def statuses() -> int:
        return sum(m.startswith("STATUS=") for m in list(got))

    release = threading.Event()
    engine = FaultyEngine(FakeEngine(max_batch=4), lambda call: "hang" if call == 5 else None, release)
    log = FakeLog()
    notifier = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"})
    try:
        with line(tmp_path, engine, None, notifier=notifier, log=log, period=0.003) as (d, sub, src):
            try:
                wait_until(lambda: count("WATCHDOG=1") >= 1, 30, "a WATCHDOG=1 before the hang")
                assert engine.hung.wait(30)
                log.wait_for("watchdog_withheld")
                pets = d.watchdog_pets
                wait_until(lambda: count("WATCHDOG=1") == pets, 30, "the reader to catch up with the pets sent")
                age = d.worker.alive_age_s()
                s0 = statuses()
                wait_until(lambda: statuses() >= s0 + 10, 30, "10 more STATUS= (one a supervisor tick, 0.1 s)")
                assert count("WATCHDOG=1") == pets and d.watchdog_pets == pets  # none while hung
                assert age >= 0.15 and d.worker.alive_age_s() > age + 0.4  # it grew the whole time
                held = src.frames_seen
                wait_until(lambda: d.ring.counters.dropped_full > 0, 30, "frames dropped while hung (a full ring)")
                release.set()
                wait_until(lambda: count("WATCHDOG=1") > pets, 30, "WATCHDOG=1 again after the release")
                wait_until(lambda: src.frames_seen > held + 50, 30, "frames after the release")
            finally:
                release.set()  # before the drain: a failed check must not leave the worker hung
        wait_until(lambda: "STOPPING=1" in got, 30, "STOPPING=1 at the drain")
    finally:
        release.set()
        listener.close()
    n = src.frames_seen
    by_id = one_decision_per_frame(sub, n)
    dropped = d.ring.counters.dropped_full
    assert dropped > 0 and sum(h["reason"] == "dropped" for h in by_id.values()) == dropped
    assert all(h["reason"] in ("dropped", expected_reason(f)) for f, h in by_id.items())
    assert set(engine.spoiled["hang"]) <= {f for f, h in by_id.items() if h["reason"] != "dropped"}
    print(f"\nhung: {pets} pets before, none during {statuses() - s0} STATUS= (alive_age {age:.2f} s, growing); "
          f"{n} frames, {dropped} dropped while hung, {count('WATCHDOG=1')} WATCHDOG=1 in all")


# -- 2. publisher faults ---------------------------------------------------------------------------

class FloodSource(IdSource):
    """`IdSource` as fast as the ring takes frames: it waits for a free slot instead of dropping, so the
    line runs at the pipeline's own full rate and a stage that blocked would stop it. After `count`
    frames it waits for `more`, then writes `more_count` frames more."""

    def __init__(self, count: int, more_count: int, go: threading.Event):
        super().__init__(count=count + more_count, period=0.0, go=go)
        self.first = count
        self.more = threading.Event()

    def _run(self, ring, cam, stop):
        self.state = "up"
        self.go.wait()
        fid = 0
        while not stop.is_set() and fid < self.count:
            if fid == self.first:
                self.more.wait()
            slot = ring.claim()
            if slot is None:
                time.sleep(0.0002)  # the ring is full: wait for the worker (no frame is dropped)
                continue
            ring.images[slot, 0, 0, :2] = (250 if fid % 5 == 0 else 10, 250)
            ring.images[slot, 0, 1] = (fid & 255, fid >> 8 & 255, fid >> 16 & 255)
            ring.commit(slot, cam, fid, time.time_ns())
            fid += 1
            self.frames_seen = fid
        self.state = "done"


def test_a_subscriber_that_never_reads_loses_messages_at_its_hwm_while_the_daemon_and_a_reader_go_on(tmp_path):
    """A SUB with RCVHWM 1 that reads nothing while 8 000 frames (16 000 decision and reject messages:
    rule "absent" rejects every frame) go out as fast as the pipeline decides them, past the PUB's
    SNDHWM of 10 000: the daemon decides every frame (its source waits for slots: a blocked stage
    would stop the line), another subscriber receives every decision and reject without a gap, and
    the slow subscriber, once it reads, sees the gap in `seq` that its full queue made, and decisions
    of after it."""
    endpoint = f"ipc://{tmp_path}/slow.sock"
    slow = zmq.Context.instance().socket(zmq.SUB)
    slow.setsockopt(zmq.RCVHWM, 1)
    slow.setsockopt(zmq.RCVBUF, 4096)
    for topic in (b"decision", b"reject", b"heartbeat"):
        slow.setsockopt(zmq.SUBSCRIBE, topic)
    slow.connect(endpoint)
    sub = Subscriber(endpoint)
    go = threading.Event()
    n1, n2 = 8000, 200
    src = FloodSource(n1, n2, go)
    d = Daemon(line_profile(endpoint, "absent", heartbeat_s=1.0), engine=FakeEngine(max_batch=4), sources=[src], log=FakeLog(),
               batch_limit=4, notifier=Notifier(env={}))
    slow_got: list = []
    try:
        d.start()
        wait_until(lambda: sub.count("heartbeat"), 30, "a heartbeat: the subscriber has joined")
        wait_until(lambda: slow.poll(0), 30, "the slow subscriber's first heartbeat: it has joined")
        go.set()
        wait_until(lambda: sub.count("reject") >= n1, 60, lambda: f"{n1} rejects (got {sub.count('reject')})",
                   interval=0.02)
        while slow.poll(300):  # the slow subscriber reads at last what its queue kept (a heartbeat a second)
            slow_got.append(decode(slow.recv_multipart()))
        kept = len(slow_got)

        ended = threading.Event()

        def read_on():  # and from now on it reads all it gets, until the daemon has ended
            while slow.poll(200) or not ended.is_set():
                if slow.poll(0):
                    slow_got.append(decode(slow.recv_multipart()))

        reader = threading.Thread(target=read_on, name="test-slow-sub", daemon=True)
        reader.start()
        src.more.set()  # the line goes on
        assert d.join(60) == 0, d.worker.last_error
        assert sub.final.wait(30)
        ended.set()
        reader.join(30)
        print(f"\nslow subscriber: its queue kept {kept} messages; {len(slow_got)} read in all")
    finally:
        go.set()
        src.more.set()
        d.stop()
        d.join(60)
        sub.close()
        slow.close(linger=0)
    n = n1 + n2
    assert src.frames_seen == n and d.worker.decisions == n and d.ring.counters.dropped_full == 0
    one_decision_per_frame(sub, n)
    assert [m.seq for m in sub.topic("reject")] == list(range(n))
    seqs = [m.seq for m in slow_got if m.topic == "decision"]
    missing = n - len(seqs)
    gaps = sum(b != a + 1 for a, b in zip(seqs, seqs[1:], strict=False))
    c = d.publisher.counters()
    print(f"slow subscriber: {len(seqs)} of {n} decisions, {missing} lost in {gaps} gap(s); publisher counters {c}")
    t = [m.header["t_decision_ns"] for m in sub.topic("decision")[:n1]]
    half = n1 // 2
    rates = [round((half - 1) / ((t[i + half - 1] - t[i]) / 1e9)) for i in (0, half)]
    print(f"decisions/s while the slow queue filled, then while it was full: {rates}; "
          f"submit latency (ms): {d.worker.stats()['latency_ms']['submit']}")
    assert missing > 0 and gaps >= 1, "the slow subscriber lost nothing: its queue never filled (test too small)"
    assert seqs == sorted(set(seqs)) and seqs[-1] >= n1  # in order, no duplicate; it got frames of after
    assert c["queue_overflow"] == 0  # the publisher's own queue never filled: the socket never held it up


# -- `linewatch run` as a process ------------------------------------------------------------------

RUN_PROFILE = """
[station]
name = "faults-cli"
[model]
path = "stub.onnx"
backend = "null"
max_batch = 4
[publish]
heartbeat_s = 0.2
[decision]
thresholds = { anomaly = 0.7, adhesive = 0.7 }
[ring]
slots = 16
[[camera]]
id = "cam0"
source = "synthetic"
fps = 300
pool = 2
"""


def station(tmp_path: Path, text: str = RUN_PROFILE) -> Path:
    """The stand-in model of the null engine and a profile for it, in `tmp_path`."""
    stub_model(tmp_path)
    prof = tmp_path / "station.toml"
    prof.write_text(text)
    return prof


HOOKED = """
import os, signal, sys

import linewatch.cli, linewatch.profile
from linewatch.engines import null

point, names = sys.argv[1], sys.argv[2].split(",")
owner, attr = {"parse": (linewatch.cli, "build_parser"), "profile": (linewatch.profile, "load_profile"),
               "open": (null.NullEngine, "__init__"), "warm": (null.NullEngine, "warmup")}[point]
original = getattr(owner, attr)


def hooked(*args, **kwargs):
    for name in names:
        os.kill(os.getpid(), getattr(signal, name))
    return original(*args, **kwargs)


setattr(owner, attr, hooked)
sys.exit(linewatch.cli.main(sys.argv[3:]))
"""
"""`python hooked.py POINT SIGNALS linewatch-args...`: `linewatch` that sends itself SIGNALS (comma-separated
names) at one moment of its start-up: while the command line is parsed, while the profile is read, while the
engine opens (in its thread), while it warms up."""


class Run:
    """A `linewatch` process (`argv` after the interpreter) with its stdout, one JSON log record a line,
    read by a thread."""

    def __init__(self, argv: list[str], cwd: Path):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        self.p = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.records: list[dict] = []
        self.noise: list[str] = []
        """stdout lines that are not one JSON record (kept, not fatal: the reader must never die of one)."""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._err: list[str] = []
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)  # a full stderr pipe would block it
        self.err_reader.start()
        self.stderr = ""

    def _read(self):
        assert self.p.stdout is not None
        for text in self.p.stdout:
            try:
                rec = json.loads(text)
            except ValueError:
                self.noise.append(text)
                continue
            if isinstance(rec, dict):
                self.records.append(rec)
            else:
                self.noise.append(text)

    def _read_err(self):
        assert self.p.stderr is not None
        for text in self.p.stderr:
            self._err.append(text)

    def wait_event(self, event: str, timeout: float = 60.0) -> dict:
        def found():
            ended = not self.reader.is_alive()
            for rec in list(self.records):
                if rec.get("event") == event:
                    return rec
            assert not ended, f"no {event!r} record; exit {self.p.wait()}; stderr: {''.join(self._err)[-2000:]}"
            return None

        return wait_until(found, timeout, f"a {event!r} log record", interval=0.01)

    def events(self, event: str) -> list[dict]:
        return [r for r in self.records if r.get("event") == event]

    def finish(self, sig: int | None = signal.SIGTERM) -> int:
        """Send `sig` (None: none), wait for the exit; its status, once stdout and stderr are read."""
        if sig is not None:
            self.p.send_signal(sig)
        code = self.p.wait(60)
        self.reader.join(30)
        self.err_reader.join(30)
        self.stderr = "".join(self._err)
        return code

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.communicate(timeout=30)


def drained(run: Run) -> dict:
    """The checks of a clean drain in the log: exit_code 0, every frame acquired decided, nothing lost in
    the ring; the `stopped` record."""
    stopped = run.events("stopped")[-1]
    seen = sum(r["frames_seen"] for r in run.events("acquisition stopped"))
    assert stopped["exit_code"] == 0 and stopped["decisions"] == seen and stopped["ring"]["lost_records"] == 0
    assert "Traceback" not in run.stderr, run.stderr
    return stopped


def linewatch_run(prof: Path, endpoint: str = "tcp://127.0.0.1:0") -> list[str]:
    return ["-m", "linewatch", "run", "--profile", str(prof), "--log-format", "json", "--endpoint", endpoint]


def gapless(sub: Subscriber, topic: str = "decision") -> list[int]:
    """The seqs `sub` received of `topic`: contiguous from its first to the session's last (the final
    heartbeat's `sent`), nothing refused."""
    assert sub.final.wait(30), "no final heartbeat"
    assert sub.refused == []
    seqs = [m.seq for m in sub.topic(topic)]
    sent = sub.topic("heartbeat")[-1].header["sent"][topic]
    assert seqs and seqs == list(range(seqs[0], sent)), f"{topic}: a gap or the tail lost (sent {sent})"
    return seqs


def test_a_publisher_port_already_bound_exits_2_with_one_line_naming_the_endpoint(tmp_path):
    prof = station(tmp_path)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    pub = zmq.Context.instance().socket(zmq.PUB)
    zmq_port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        for port in (holder.getsockname()[1], zmq_port):  # a plain listening socket, another PUB
            endpoint = f"tcp://127.0.0.1:{port}"
            r = subprocess.run([sys.executable, *linewatch_run(prof, endpoint)], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path)
            assert r.returncode == 2, r.stderr
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
            assert r.stderr.startswith(f"linewatch run: error: cannot bind the publisher to {endpoint}: "), r.stderr
            assert "Address already in use" in r.stderr
            events = [json.loads(line)["event"] for line in r.stdout.splitlines()]
            assert "ready" not in events and "acquisition started" not in events  # nothing ran
    finally:
        holder.close()
        pub.close(linger=0)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_subscribers_connecting_and_closing_200_times_leave_a_steady_one_gapless_and_the_fds_bounded(tmp_path):
    prof = station(tmp_path)
    cycles = 200
    with Run(linewatch_run(prof), tmp_path) as run:
        endpoint = run.wait_event("publisher_bound")["endpoint"]
        steady = Subscriber(endpoint)
        try:
            wait_until(lambda: steady.count("decision") >= 20, 30, "decisions at the steady subscriber")
            pid = run.p.pid
            base = fd_count(pid)
            peak = base
            ctx = zmq.Context.instance()
            for _ in range(cycles):
                s = ctx.socket(zmq.SUB)
                s.setsockopt(zmq.SUBSCRIBE, b"decision")
                s.connect(endpoint)
                assert s.poll(30_000), "a churning subscriber got no decision"  # connected and subscribed
                s.recv_multipart()
                peak = max(peak, fd_count(pid))
                s.close(linger=0)
            wait_until(lambda: fd_count(pid) <= base, 30, lambda: f"the daemon's fds back to {base} (now {fd_count(pid)})")
            after = steady.count("decision")
            wait_until(lambda: steady.count("decision") >= after + 20, 30, "decisions after the churn")
            assert run.finish() == 0, run.stderr
            seqs = gapless(steady)
        finally:
            steady.close()
    drained(run)
    print(f"\nfds: {base} before, at most {peak} during {cycles} cycles, back to {base} or fewer after; "
          f"steady subscriber: {len(seqs)} decisions without a gap")
    assert peak <= base + 4


# -- 3. signals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("point", ["parse", "profile", "open", "warm"])
@pytest.mark.parametrize("signals", ["SIGTERM", "SIGHUP,SIGTERM"])
def test_sigterm_and_sighup_at_each_moment_of_start_up_end_in_a_drain_and_exit_0(tmp_path, point, signals):
    """The process sends itself the signals at one moment of its start-up (`HOOKED`): while the command
    line is parsed, while the profile is read, while the engine opens, while it warms up. Either moment,
    the daemon starts, reloads once for a SIGHUP, drains and exits 0, without a traceback."""
    prof = station(tmp_path)
    hooked = tmp_path / "hooked.py"
    hooked.write_text(HOOKED)
    with Run([str(hooked), point, signals, *linewatch_run(prof)[2:]], tmp_path) as run:
        code = run.finish(None)  # the signals are its own
    assert code == 0, f"exit {code}; stderr: {run.stderr[-2000:]}"
    drained(run)
    assert [r["reason"] for r in run.events("stopping")] == ["SIGTERM"]
    assert len(run.events("ready")) == 1
    assert len(run.events("reloaded")) == ("SIGHUP" in signals)


def signal_state(pid: int, sig: int) -> str:
    """How process `pid` treats `sig` now (/proc/PID/status): "caught" (a handler), "blocked" (in the main
    thread) or "default"."""
    fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    bit = 1 << (sig - 1)
    if int(fields["SigCgt"], 16) & bit:
        return "caught"
    return "blocked" if int(fields["SigBlk"], 16) & bit else "default"


def test_sigterm_right_after_spawn_exits_0_once_linewatch_has_the_signal(tmp_path):
    """SIGTERM 0.02 to 1 s after spawn. From the moment `linewatch.cli.main` runs, SIGTERM is held (a
    provisional handler notes it) until the daemon's handler is in place: exit 0 after a drain. Before
    it (the interpreter starting, `import linewatch.cli`: some 0.1 s) the signal's default action ends
    the process (-SIGTERM), having written nothing: the test reads how the process treated SIGTERM when
    it was sent (/proc) and allows that end only where it was the default."""
    prof = station(tmp_path)
    outcomes = []
    for delay in (0.02, 0.1, 0.2, 0.35, 0.5, 1.0):
        with Run(linewatch_run(prof), tmp_path) as run:
            time.sleep(delay)  # when the signal goes: the moment under test, not a wait for a state
            state = signal_state(run.p.pid, signal.SIGTERM)
            code = run.finish()
        outcomes.append((delay, state, code))
        if code == -signal.SIGTERM:
            assert state == "default" and run.records == [], (delay, state, run.records[:3])
        else:
            assert code == 0, (delay, state, run.stderr[-2000:])
            drained(run)
    print(f"\n(delay s, SIGTERM was, exit): {outcomes}")
    assert any(code == 0 for _, _, code in outcomes)


def test_a_storm_of_100_sighups_reloads_coalesced_and_every_frame_is_decided_once(tmp_path):
    prof = station(tmp_path)
    with Run(linewatch_run(prof), tmp_path) as run:
        endpoint = run.wait_event("publisher_bound")["endpoint"]
        sub = Subscriber(endpoint)
        try:
            wait_until(lambda: sub.count("decision") >= 20, 30, "decisions before the storm")
            prof.write_text(RUN_PROFILE.replace("anomaly = 0.7", "anomaly = 0.4"))
            for _ in range(100):
                os.kill(run.p.pid, signal.SIGHUP)
            wait_until(lambda: [r for r in run.events("reloaded") if r["thresholds"] == [0.4, 0.7]], 30,
                       lambda: f"a reload with the new thresholds (reloads {run.events('reloaded')}, "
                               f"failed {run.events('reload_failed')}, exit {run.p.poll()}, "
                               f"not JSON {run.noise[-3:]}, stderr {''.join(run._err)[-500:]!r})")
            wait_until(lambda: any(m.header["thresholds"]["anomaly"] == 0.4 for m in sub.topic("decision")), 30,
                       "a decision under the new thresholds")
            after = sub.count("decision")
            wait_until(lambda: sub.count("decision") >= after + 50, 30, "decisions after the storm")
            assert run.finish() == 0, run.stderr
            seqs = gapless(sub)
        finally:
            sub.close()
    stopped = drained(run)
    reloads = run.events("reloaded")
    print(f"\n100 SIGHUPs: {len(reloads)} 'reloaded' records, {len(run.events('reload_failed'))} 'reload_failed'; "
          f"{stopped['decisions']} frames decided, the subscriber saw {len(seqs)} without a gap")
    assert 1 <= len(reloads) <= 100 and run.events("reload_failed") == []
    assert reloads[-1]["thresholds"] == [0.4, 0.7] and reloads[-1]["applied"] in ([], ["decision.thresholds.anomaly"])
    frames = [(m.header["camera"], m.header["frame_id"]) for m in sub.topic("decision")]
    assert len(frames) == len(set(frames))  # no frame decided twice
