"""The protocol proven by a subscriber that shares no code with linewatch.

The subscribing side uses only pyzmq, json, jsonschema, numpy and cv2, and the schema files loaded by
path; linewatch is used only to *produce* messages (a real Publisher fed with synthetic Decisions).
If this test passes, a gateway written from docs/protocol.md + the schema files can talk to linewatch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import zmq

from linewatch.pipeline.decide import Decision  # producer side only
from linewatch.pipeline.publish import Publisher  # producer side only

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "linewatch" / "schemas"
TOPICS = ("decision", "reject", "overlay", "heartbeat")


def _validators() -> dict[str, jsonschema.Draft202012Validator]:
    out = {}
    for topic in TOPICS:
        schema = json.loads((SCHEMA_DIR / f"{topic}.schema.json").read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        out[topic] = jsonschema.Draft202012Validator(schema)
    return out


def _synthetic_decisions(n: int) -> list[tuple[Decision, bool]]:
    """(decision, has_image): passes, score rejects, and fail-safe rejects with scores None."""
    out = []
    for i in range(n):
        t = time.time_ns()
        kind = i % 5
        if kind in (0, 1, 2):
            out.append((Decision(f"cam{i % 2}", i, t, t + 2_000_000, (0.05, 0.95), (0.7, 0.6), False, ("pass",),
                                 "present", False), True))
        elif kind == 3:
            out.append((Decision("cam0", i, t, t + 2_500_000, (0.93, 0.2), (0.7, 0.6), True,
                                 ("anomaly", "adhesive-missing"), "present", False, (1, 0)), True))
        else:
            out.append((Decision("cam1", i, t, t + 90_000_000, None, (0.7, 0.6), True,
                                 (("dropped", "late", "corrupt", "engine-error")[i % 4],), "present", True), False))
    return out


def test_independent_subscriber_reads_a_real_publisher() -> None:
    validators = _validators()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    pub = Publisher("tcp://127.0.0.1:0", "line-7", overlay_pass_every=4, heartbeat_interval=0.05, overlay_pool=64,
                    status=lambda: {"cameras": {"cam0": "up", "cam1": "up"}, "counters": {"frames": 1}}).start()
    received: dict[str, list[tuple[dict, bytes | None]]] = {t: [] for t in TOPICS}
    try:
        assert pub.endpoint is not None
        sub.connect(pub.endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        # slow joiner: wait for the first heartbeat before producing
        assert sub.poll(10_000), "no heartbeat within 10 s"
        frames = sub.recv_multipart()
        assert frames[0] == b"heartbeat"

        image = np.full((96, 128, 3), 90, np.uint8)
        masks = np.zeros((2, 12, 16), np.float32)
        masks[0, 3:7, 4:9] = 1.0
        decisions = _synthetic_decisions(60)
        for d, has_image in decisions:
            pub.submit(d, image=image if has_image else None, masks=masks if has_image else None)
    finally:
        pub.stop(drain=True)
    try:
        while sub.poll(1000):
            frames = sub.recv_multipart()
            topic = frames[0].decode("ascii")
            assert topic in TOPICS
            assert len(frames) in (2, 3)
            header = json.loads(frames[1].decode("utf-8"))
            errors = [e.message for e in validators[topic].iter_errors(header)]
            assert not errors, (topic, header, errors)
            assert header["topic"] == topic and header["station"] == "line-7"
            received[topic].append((header, frames[2] if len(frames) == 3 else None))
            if header.get("status") == "stopping":
                break
    finally:
        sub.close()
        ctx.term()

    # every decision, in order, no gaps, one session
    dec = [h for h, _ in received["decision"]]
    assert [h["frame_id"] for h in dec] == [d.frame_id for d, _ in decisions]
    sessions = {h["session"] for t in TOPICS for h, _ in received[t]}
    assert len(sessions) == 1
    for topic in TOPICS:
        seqs = [h["seq"] for h, _ in received[topic]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap in {topic}: {seqs}"
    assert dec[0]["seq"] == 0  # the subscriber was there from the first decision: seq starts at 0

    rejects = [h for h, _ in received["reject"]]
    assert [h["frame_id"] for h in rejects] == [d.frame_id for d, _ in decisions if d.reject]
    failsafe = [h for h in rejects if h["failsafe"]]
    assert failsafe and all(h["scores"] is None for h in failsafe)
    assert all(h["scores"] is not None for h in dec if h["decision"] == "pass")

    # overlays: every reject that came with an image, every 4th pass; each a decodable JPEG
    passes = [d.frame_id for d, _ in decisions if not d.reject]
    expected = sorted([d.frame_id for d, img in decisions if d.reject and img] + passes[3::4])
    assert sorted(h["frame_id"] for h, _ in received["overlay"]) == expected
    for header, payload in received["overlay"]:
        assert header["content_type"] == "image/jpeg" and payload is not None
        img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (header["height"], header["width"], 3) == (96, 128, 3)

    beats = [h for h, _ in received["heartbeat"]]
    assert beats[-1]["status"] == "stopping"
    assert beats[-1]["counters"]["decisions"] == 60 and beats[-1]["counters"]["frames"] == 1
    assert beats[-1]["cameras"] == {"cam0": "up", "cam1": "up"}
    assert all(h["camera"] is None for h in beats)
