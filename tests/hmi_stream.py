"""Recorded message streams for the operator page's tests: headers built with linewatch.protocol's builders,
decoded back as a subscriber receives them, and a fake clock the aggregator reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from linewatch.hmi.aggregate import Aggregator
from linewatch.pipeline.decide import Decision
from linewatch.protocol import (
    Message,
    decision_header,
    decode,
    encode,
    heartbeat_header,
    overlay_header,
)

SESSION = "a" * 32
T0_WALL = 1_790_000_000.0  # 2026-09-21T12:53:20Z: a known wall time (the tests read it in UTC)


@dataclass
class Clock:
    mono: float = 100.0
    wall_s: float = T0_WALL

    def tick(self, s: float) -> None:
        self.mono += s
        self.wall_s += s

    def wall(self) -> float:
        return self.wall_s

    def clock(self) -> float:
        return self.mono


def aggregator(clock: Clock, **kw) -> Aggregator:
    return Aggregator(clock=clock.clock, wall=clock.wall, localtime=time.gmtime, **kw)


def wire(header: dict, payload: bytes | None = None) -> Message:
    return decode(encode(header, payload))


@dataclass
class Stream:
    """Builds one daemon session's messages with correct per-topic seq numbers."""

    clock: Clock
    session: str = SESSION
    station: str = "line-3"
    seq: dict[str, int] = field(default_factory=dict)

    def next(self, topic: str, skip: int = 0) -> int:
        s = self.seq.get(topic, 0) + skip
        self.seq[topic] = s + 1
        return s

    def decision(self, camera: str = "cam0", frame_id: int = 0, *, reasons: tuple[str, ...] = ("pass",),
                 latency_ms: float = 5.0, t_ns: int | None = None, skip: int = 0) -> list[Message]:
        """The decision message (and the reject message of a reject), at wall time now (or t_ns)."""
        t_dec = int(self.clock.wall_s * 1e9) if t_ns is None else t_ns
        reject = reasons != ("pass",)
        failsafe = any(r in ("dropped", "corrupt", "late", "engine-error") for r in reasons)
        d = Decision(camera=camera, frame_id=frame_id, t_capture_ns=t_dec - int(latency_ms * 1e6), t_decision_ns=t_dec,
                     scores=None if failsafe else (0.9 if "anomaly" in reasons else 0.1, 0.8),
                     thresholds=(0.7, 0.6), reject=reject, reasons=reasons, rule="present", failsafe=failsafe,
                     model="0123456789ab")
        out = [wire(decision_header(d, station=self.station, session=self.session, seq=self.next("decision", skip),
                                    t_sent_ns=t_dec))]
        if reject:
            out.append(wire(decision_header(d, topic="reject", station=self.station, session=self.session,
                                            seq=self.next("reject"), t_sent_ns=t_dec)))
        return out

    def overlay(self, camera: str = "cam0", frame_id: int = 0, reject: bool = False, jpeg: bytes = b"\xff\xd8jpeg") -> Message:
        d = Decision(camera=camera, frame_id=frame_id, t_capture_ns=0, t_decision_ns=0, scores=(0.1, 0.8),
                     thresholds=(0.7, 0.6), reject=reject, reasons=("anomaly",) if reject else ("pass",),
                     rule="present", failsafe=False)
        return wire(overlay_header(d, station=self.station, session=self.session, seq=self.next("overlay"),
                                   width=160, height=64, t_sent_ns=0), jpeg)

    def heartbeat(self, status: str = "ok", *, interval_s: float = 1.0, cameras: dict[str, str] | None = None,
                  final: bool = False, sent: dict[str, int] | None = None) -> Message:
        return wire(heartbeat_header(
            station=self.station, session=self.session, seq=self.next("heartbeat"), status=status, uptime_s=1.0,
            fps=100.0, counters={"decisions": self.seq.get("decision", 0)},
            cameras={"cam0": "up"} if cameras is None else cameras, interval_s=interval_s, version="0.1.0",
            t_sent_ns=int(self.clock.wall_s * 1e9), final=final, sent=sent, pid=1234,
            model={"id": "0123456789ab", "path": "/m.onnx", "backend": "null", "device": "cpu"}))


def feed(agg: Aggregator, msgs) -> None:
    for m in [msgs] if isinstance(msgs, Message) else msgs:
        agg.feed(m)
