"""The live subscriber of a bench run, in its own process, and the publisher the bench hands the daemon."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# the subscriber process


_FIELDS = ("camera", "frame_id", "seq", "t_capture_ns", "t_decision_ns", "t_sent_ns", "t_recv_ns", "failsafe",
           "reject", "reason")


def _receiver_main(endpoint: str, cameras: Sequence[str], conn: Any) -> None:
    """The subscriber process: every `decision` message as one row; reports when the publisher stops."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)  # unlimited: the bench counts what the publisher's HWM drops as gaps
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"decision")
    sock.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sock.connect(endpoint)
    cam_index = {c: i for i, c in enumerate(cameras)}
    reasons: dict[str, int] = {}
    cols: dict[str, list[int]] = {f: [] for f in _FIELDS}
    append = [cols[f].append for f in _FIELDS]
    loads = json.loads
    time_ns = time.time_ns
    ready = False
    heartbeats = 0
    last_heartbeat: dict[str, Any] = {}
    status = "stopped"
    expect: int | None = None  # decisions published in all, told by the bench once the daemon has stopped
    t_stopping: float | None = None
    received = 0
    t_cpu0 = time.process_time()
    t_wall0 = time.monotonic()
    try:
        while True:
            try:
                msg = conn.recv() if conn.poll(0) else None
            except (EOFError, OSError):  # the bench process is gone: nobody to report to
                return
            if msg is not None:
                if msg == "stop":
                    status = "told to stop"
                    break
                if isinstance(msg, tuple) and msg[0] == "expect":
                    expect = int(msg[1])
            if expect is not None and received >= expect:
                status = "received every published decision"
                break
            if not sock.poll(100):
                # Heartbeats say "stopping" while the daemon drains (decisions still follow): after the
                # publisher has closed, silence means the rest was lost (high-water mark, linger).
                if expect is not None and t_stopping is not None and time.monotonic() - t_stopping > 2.0:
                    status = f"publisher closed; {expect - received} published decision(s) never arrived"
                    break
                continue
            topic, body, *_ = sock.recv_multipart()
            t_recv = time_ns()
            h = loads(body)
            if topic == b"heartbeat":
                heartbeats += 1
                last_heartbeat = h
                if not ready:
                    ready = True
                    conn.send(("ready", None))
                if h.get("status") == "stopping":
                    t_stopping = time.monotonic()
                continue
            received += 1
            r = h["reason"]
            code = reasons.get(r)
            if code is None:
                code = reasons[r] = len(reasons)
            row = (cam_index.get(h["camera"], -1), h["frame_id"], h["seq"], h["t_capture_ns"], h["t_decision_ns"],
                   h["t_sent_ns"], t_recv, int(h["failsafe"]), int(h["decision"] == "reject"), code)
            for a, v in zip(append, row, strict=True):
                a(v)
    finally:
        sock.close(0)
        ctx.term()
    arrays = {f: np.asarray(v, np.int64) for f, v in cols.items()}
    conn.send(("done", {
        "arrays": arrays,
        "reasons": {code: r for r, code in reasons.items()},
        "heartbeats": heartbeats,
        "last_heartbeat": last_heartbeat,
        "status": status,
        "cpu_s": time.process_time() - t_cpu0,
        "wall_s": time.monotonic() - t_wall0,
    }))


class SubscriberProcess:
    """The live subscriber (`_receiver_main`) in a spawned process, with its pipe."""

    def __init__(self, endpoint: str, cameras: Sequence[str]) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_receiver_main, args=(endpoint, tuple(cameras), child),
                                name="linewatch-bench-subscriber", daemon=True)
        self.proc.start()
        child.close()

    def wait_ready(self, timeout: float) -> bool:
        if not self._conn.poll(timeout):
            return False
        kind, _ = self._conn.recv()
        return kind == "ready"

    def result(self, expect: int, timeout: float) -> dict[str, Any] | None:
        """The subscriber's rows once it has `expect` decisions, or the publisher has closed and gone
        silent (asks it to stop after `timeout`)."""
        self._conn.send(("expect", int(expect)))
        if not self._conn.poll(timeout):
            self._conn.send("stop")
            if not self._conn.poll(5.0):
                return None
        kind, payload = self._conn.recv()
        return payload if kind == "done" else None

    def close(self) -> None:
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        self._conn.close()


class StartedPublisher:
    """The bench's Publisher, already started (the subscriber connects before any frame flows):
    `start()` is a no-op for the daemon, the rest is the publisher's."""

    def __init__(self, pub: Any) -> None:
        self._pub = pub
        self.submit = pub.submit

    def start(self) -> StartedPublisher:
        return self

    def stop(self, drain: bool = True) -> None:
        self._pub.stop(drain=drain)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pub, name)
