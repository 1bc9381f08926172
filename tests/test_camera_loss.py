"""Camera loss mid-stream and return, through the daemon, on the real GenTL path (the genicam wheel's viky.cti).

A fault-injecting wrapper (`Unplug`) sits around the real `GenicamSource`: while "unplugged", the next fetch
destroys the harvesters image acquirer under the source (as a cable pulled out would leave it) and raises,
and every reopen fails as a missing device does; "plugged in" again, the reopen succeeds. It also loses
some buffers on the way (queued back to the producer unseen, as a saturated link loses frames), so the
camera's own frame ids jump.

What is checked, end to end on the ZeroMQ stream (issue 22, item 1, "camera loss"):

- the heartbeat's camera state goes "up" -> "down" -> "up", and the station status "degraded" while down;
- the source reconnects with backoff (more than one failed reopen, then one reconnect);
- every frame id the camera reported is decided, or reported lost: within each device session, the ids seen
  plus the buffers the wrapper lost form one gap-free range, and exactly one "dropped" decision stands for
  each lost buffer; linewatch's own frame ids are consecutive, each decided once, with no seq gap.

"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

zmq = pytest.importorskip("zmq")
pytest.importorskip("harvesters", reason="needs the camera extra: pip install 'linewatch[camera]'")

from linewatch.pipeline.acquire.base import SourceDown  # noqa: E402
from linewatch.pipeline.acquire.genicam import GenicamSource, find_bundled_cti  # noqa: E402

CTI = find_bundled_cti()
pytestmark = [pytest.mark.camera, pytest.mark.skipif(CTI is None, reason="viky.cti not in the genicam wheel")]
ROOT = Path(__file__).resolve().parent.parent


class Unplug:
    """Faults injected around a real GenicamSource: unplug / plug in, and buffers lost on the link."""

    def __init__(self, src: GenicamSource, lose_every: int = 0) -> None:
        self.src = src
        self.lose_every = lose_every
        self.unplugged = threading.Event()
        self.sessions: list[list[int]] = [[]]
        """Per device session (open .. loss): the camera's frame ids, those the source got and those lost."""
        self.lost: list[list[int]] = [[]]
        """Per device session: the ids of the buffers lost on the way."""
        self.failed_opens = 0
        self.destroyed = 0
        self._n = 0
        self._fetch, self._open = src._fetch, src._open
        src._fetch = self.fetch  # type: ignore[method-assign]
        src._open = self.open  # type: ignore[method-assign]

    def open(self) -> None:
        if self.unplugged.is_set():
            self.failed_opens += 1
            raise SourceDown("no device (unplugged by the test)")
        if self.src._ia is None and self.sessions[-1]:
            self.sessions.append([])
            self.lost.append([])
        self._open()

    def fetch(self) -> Any:
        if self.unplugged.is_set():
            self.src._ia.destroy()  # the acquirer is gone under the source; its _close must cope
            self.destroyed += 1
            raise RuntimeError("GenTL: device removed (injected)")
        buf = self._fetch()
        if buf is None:
            return None
        self._n += 1
        fid = int(buf.frame_id)
        self.sessions[-1].append(fid)
        if self.lose_every and self._n % self.lose_every == 0:
            self.lost[-1].append(fid)
            buf.queue()  # never reaches the source: the next id it sees jumps
            return None
        return buf


def test_a_camera_unplugged_mid_stream_goes_down_comes_back_and_every_frame_is_decided_or_lost(tmp_path):
    from linewatch.engines.null import NullEngine
    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import load_profile

    prof = load_profile(ROOT / "calib" / "viky.toml")
    endpoint = f"ipc://{tmp_path}/loss.sock"
    prof = prof.model_copy(update={
        "station": prof.station.model_copy(update={"endpoint": endpoint}),
        "publish": prof.publish.model_copy(update={"heartbeat_s": 0.05}),
    })
    cam = prof.camera[0].model_copy(update={"features": {"AcquisitionFrameRate": 100.0, "Width": 160,
                                                         "Height": 120}})
    src = GenicamSource(cam, cti=str(CTI), reconnect_min_s=0.05, reconnect_max_s=0.2)
    faults = Unplug(src, lose_every=23)

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(endpoint)
    msgs: list[tuple[str, dict]] = []

    def receive(until) -> None:
        def done() -> bool:
            while sub.poll(0):
                parts = sub.recv_multipart()
                msgs.append((parts[0].decode(), json.loads(parts[1])))
            return until()
        wait_until(done, 30, lambda: f"{until.__doc__} (camera {src.status()}, {len(msgs)} messages)", interval=0.01)

    def states() -> list[tuple[str, str]]:
        return [(h["cameras"].get(cam.id), h["status"]) for t, h in msgs if t == "heartbeat" and h.get("cameras")]

    d = Daemon(prof, engine=NullEngine((64, 96), 4), sources=[src])
    try:
        d.start()

        def up_and_deciding() -> bool:
            """the camera up and 50 decisions"""
            return sum(t == "decision" for t, _ in msgs) >= 50 and ("up", "ok") in states()
        receive(up_and_deciding)
        faults.unplugged.set()

        def down() -> bool:
            """a heartbeat saying the camera is down, after a few failed reopens"""
            return faults.failed_opens >= 3 and any(s == "down" for s, _ in states())
        receive(down)
        assert ("down", "degraded") in states()
        before = sum(t == "decision" for t, _ in msgs)
        faults.unplugged.clear()

        def back() -> bool:
            """the camera up again and deciding"""
            ss = [s for s, _ in states()]
            return (src.counters.reconnects == 1 and "up" in ss[ss.index("down"):]
                    and sum(t == "decision" for t, _ in msgs) >= before + 50)
        receive(back)
    finally:
        d.stop("test")
        code = d.join(30)
        receive_rest = time.monotonic() + 1.0
        while time.monotonic() < receive_rest:
            if sub.poll(100):
                parts = sub.recv_multipart()
                msgs.append((parts[0].decode(), json.loads(parts[1])))
        sub.close(linger=0)
        ctx.term()
    assert code == 0

    # Heartbeats: up, then down, then up again (consecutive duplicates folded).
    seen = [s for s, _ in states() if s != "starting"]  # the first heartbeats may come before the camera opened
    folded = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert folded[:1] == ["up"] and "down" in folded and folded[folded.index("down"):][:2] == ["down", "up"], folded
    assert faults.destroyed >= 1 and faults.failed_opens >= 3 and src.counters.reconnects == 1

    # Every frame decided exactly once, no seq gap, linewatch's ids consecutive to the last frame seen (the
    # subscriber joins after the first few decisions: ZeroMQ's slow joiner).
    decisions = [h for t, h in msgs if t == "decision"]
    seqs = [h["seq"] for h in decisions]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    ids = sorted(h["frame_id"] for h in decisions)
    assert ids == list(range(ids[0], src.frames_seen)) and d.worker.decisions == src.frames_seen

    # Every id the camera reported: decided, or lost and decided as "dropped"; none lost without a record.
    assert len(faults.sessions) == 2, [len(s) for s in faults.sessions]
    for session in faults.sessions:
        assert session == list(range(session[0], session[0] + len(session))), "the viky camera numbers frames"
    reasons = Counter(h["reason"] for h in decisions)
    # A buffer lost as the last of a session (just before the unplug) leaves no jump to see: not counted.
    lost_seen = sum(1 for s, lost in zip(faults.sessions, faults.lost, strict=True) for fid in lost if fid < s[-1])
    assert lost_seen >= 3 and reasons["dropped"] == lost_seen == src.counters.dropped_lost, (reasons, lost_seen)
    assert src.counters.committed + src.counters.dropped_lost + src.counters.dropped_corrupt \
        + src.counters.dropped_full == src.frames_seen
    print(f"camera loss: {src.frames_seen} frames, {lost_seen} lost on the link and decided 'dropped', "
          f"{faults.failed_opens} reopens refused, {src.counters.reconnects} reconnect, heartbeats {folded}")
