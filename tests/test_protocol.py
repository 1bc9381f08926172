"""The wire protocol: header builders, encode/decode, JSON Schemas, docs in sync."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from linewatch.pipeline.decide import Decision
from linewatch.protocol import (
    SCHEMA_VERSION,
    TOPICS,
    ProtocolError,
    decision_header,
    decode,
    encode,
    heartbeat_header,
    iso_utc,
    load_schema,
    new_session_id,
    overlay_header,
    reason_text,
    schema_path,
    validate_header,
)

SESSION = new_session_id()
T0 = 1_795_000_000_123_456_789


def _decision(reject: bool = False, reasons: tuple[str, ...] = ("pass",), scores=(0.12, 0.93), truth=None,
              rule: str = "present", failsafe: bool = False) -> Decision:
    return Decision("cam0", 42, T0, T0 + 3_500_000, scores, (0.7, 0.7), reject, reasons, rule, failsafe, truth)


def _headers() -> dict[str, dict]:
    d = _decision(True, ("anomaly", "adhesive-missing"), (0.91, 0.2), (1, 0))
    return {
        "decision": decision_header(_decision(), station="s1", session=SESSION, seq=0, t_sent_ns=T0 + 4_000_000),
        "reject": decision_header(d, topic="reject", station="s1", session=SESSION, seq=7,
                                  t_sent_ns=T0 + 4_000_000),
        "overlay": overlay_header(d, station="s1", session=SESSION, seq=3, width=256, height=128,
                                  t_sent_ns=T0 + 5_000_000),
        "heartbeat": heartbeat_header(station="s1", session=SESSION, seq=9, status="ok", uptime_s=12.5, fps=25.0,
                                      counters={"decisions": 5, "passes": 4, "rejects": 1, "failsafe": 0, "drops": 0,
                                                "late": 0, "overlays": 1, "overlays_skipped": 0,
                                                "queue_overflow": 0, "frames": 6},
                                      cameras={"cam0": "up"}, interval_s=1.0, version="0.1.0",
                                      t_sent_ns=T0),
    }


@pytest.mark.parametrize("topic", TOPICS)
def test_round_trip_and_schema(topic: str) -> None:
    header = _headers()[topic]
    payload = b"\xff\xd8jpeg\xff\xd9" if topic == "overlay" else None
    frames = encode(header, payload)
    assert frames[0] == topic.encode()
    assert len(frames) == (3 if payload else 2)
    msg = decode(frames)
    assert msg.topic == topic and msg.header == header and msg.payload == payload
    assert msg.seq == header["seq"] and msg.session == SESSION
    validate_header(msg.header)


@pytest.mark.parametrize("topic", TOPICS)
def test_builders_emit_exactly_the_schema_fields(topic: str) -> None:
    schema = load_schema(topic)
    header = _headers()[topic]
    # `sent`: on the final heartbeat only; `pid`, `model`, `reload`: a daemon's (reload: after the first);
    # `archive`: a daemon's with [archive] on
    optional = {"heartbeat": {"sent", "pid", "model", "reload", "archive"}}.get(topic, set())
    assert set(header) == set(schema["required"]) == set(schema["properties"]) - optional
    assert schema["additionalProperties"] is False
    jsonschema.Draft202012Validator.check_schema(schema)
    assert header["schema"] == SCHEMA_VERSION == schema["properties"]["schema"]["const"]


def test_a_daemon_heartbeat_carries_its_pid_model_and_last_reload() -> None:
    model = {"id": "69334e74a1b2", "path": "/var/lib/linewatch/engines/line3.onnx", "backend": "openvino",
             "device": "cpu (2 threads, bf16)"}
    reload = {"n": 2, "t_iso": "2026-12-02T06:00:00.000Z", "ok": False, "applied": ["decision.thresholds"],
              "refused": ["model: input size 256x256 differs from the ring's 512x1224"], "restart_needed": ["ring.slots"]}
    h = heartbeat_header(station="s1", session=SESSION, seq=1, status="ok", uptime_s=1.0, fps=0.0,
                         counters={"decisions": 0, "passes": 0, "rejects": 0, "failsafe": 0, "drops": 0, "late": 0,
                                   "overlays": 0, "overlays_skipped": 0, "queue_overflow": 0},
                         cameras={}, interval_s=1.0, version="0.1.0", t_sent_ns=T0, pid=4242, model=model, reload=reload)
    validate_header(h)
    assert h["pid"] == 4242 and h["model"] == model and h["reload"] == reload
    with pytest.raises(ProtocolError):
        validate_header({**h, "model": {**model, "id": "not-hex"}})


def test_the_heartbeat_archive_carries_exactly_what_the_recorder_reports(tmp_path) -> None:
    from linewatch.profile import ArchiveConfig
    from linewatch.protocol import ARCHIVE_FIELDS
    from linewatch.record.recorder import Recorder

    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "s1")
    rec.last_error = "OSError: disk full"
    status = rec.status()
    assert set(status) == set(ARCHIVE_FIELDS)  # a new recorder counter needs its schema field
    h = heartbeat_header(station="s1", session=SESSION, seq=1, status="ok", uptime_s=1.0, fps=0.0,
                         counters={"decisions": 0, "passes": 0, "rejects": 0, "failsafe": 0, "drops": 0, "late": 0,
                                   "overlays": 0, "overlays_skipped": 0, "queue_overflow": 0},
                         cameras={}, interval_s=1.0, version="0.1.0", t_sent_ns=T0, archive=status)
    validate_header(h)
    assert h["archive"] == status
    with pytest.raises(ProtocolError):
        validate_header({**h, "archive": {**status, "state": "broken"}})


def test_decision_header_values() -> None:
    h = _headers()["reject"]
    assert h["decision"] == "reject" and h["reason"] == "anomaly+adhesive-missing"
    assert h["scores"] == {"anomaly": 0.91, "adhesive": 0.2}
    assert h["thresholds"] == {"anomaly": 0.7, "adhesive": 0.7}
    assert h["truth"] == {"anomaly": 1, "adhesive": 0}
    assert h["failsafe"] is False and h["adhesive_rule"] == "present"
    assert h["t_capture_ns"] == T0 and h["t_decision_ns"] == T0 + 3_500_000
    assert h["t_capture_iso"] == "2026-11-18T11:06:40.123456Z"


def test_failsafe_decision_has_null_scores_and_validates() -> None:
    for reasons in (("dropped",), ("corrupt",), ("late",), ("engine-error",), ("anomaly", "late")):
        d = _decision(True, reasons, None, (-1, -1), rule="ignore", failsafe=True)
        h = decision_header(d, station="s", session=SESSION, seq=1, t_sent_ns=T0)
        assert h["scores"] is None and h["failsafe"] is True and h["truth"] is None
        assert h["reason"] == "+".join(reasons) and h["adhesive_rule"] == "ignore"
        validate_header(h)
        validate_header({**h, "topic": "reject"})


def test_reason_field_joins_the_decisions_reasons_in_order() -> None:
    assert reason_text(("pass",)) == "pass"
    assert reason_text(("anomaly", "adhesive-present")) == "anomaly+adhesive-present"
    d = _decision(True, ("anomaly", "adhesive-present"), (0.9, 0.9), rule="absent")
    h = overlay_header(d, station="s", session=SESSION, seq=0, width=2, height=2, t_sent_ns=T0)
    assert h["reason"] == "anomaly+adhesive-present"


def test_partial_truth_and_non_finite_scores() -> None:
    h = decision_header(_decision(scores=(math.nan, 0.5), truth=(1, -1)), station="s", session=SESSION, seq=0,
                        t_sent_ns=T0)
    assert h["scores"] is None  # JSON has no NaN: a non-finite score travels as "no score"
    assert h["truth"] == {"anomaly": 1, "adhesive": None}
    validate_header(h)
    json.loads(encode(h)[1])


@pytest.mark.parametrize(
    "topic, change",
    [
        ("decision", {"extra": 1}),
        ("decision", {"decision": "maybe"}),
        ("decision", {"reason": "because"}),
        ("decision", {"scores": {"anomaly": 0.5}}),
        ("decision", {"seq": -1}),
        ("decision", {"session": "not-hex"}),
        ("reject", {"decision": "pass", "reason": "pass"}),
        ("overlay", {"content_type": "image/png"}),
        ("heartbeat", {"status": "fine"}),
        ("heartbeat", {"counters": {"decisions": 1}}),
        ("heartbeat", {"camera": "cam0"}),
        ("heartbeat", {"schema": 2}),
    ],
)
def test_schema_rejects_bad_headers(topic: str, change: dict) -> None:
    header = {**_headers()[topic], **change}
    with pytest.raises(ProtocolError, match=topic):
        validate_header(header)


def test_schema_rejects_missing_field() -> None:
    header = dict(_headers()["decision"])
    del header["frame_id"]
    with pytest.raises(ProtocolError, match="frame_id"):
        validate_header(header)


def test_decode_errors() -> None:
    good = encode(_headers()["decision"])
    with pytest.raises(ProtocolError, match="2 or 3 frames"):
        decode(good[:1])
    with pytest.raises(ProtocolError, match="unknown topic"):
        decode([b"news", good[1]])
    with pytest.raises(ProtocolError, match="JSON"):
        decode([b"decision", b"{not json"])
    with pytest.raises(ProtocolError, match="JSON object"):
        decode([b"decision", b"[1, 2]"])
    with pytest.raises(ProtocolError, match="differs from the topic frame"):
        decode([b"reject", good[1]])
    bumped = json.dumps({**_headers()["decision"], "schema": SCHEMA_VERSION + 1}).encode()
    with pytest.raises(ProtocolError, match="schema"):
        decode([b"decision", bumped])


def test_encode_refuses_bad_topic_and_nan() -> None:
    with pytest.raises(ProtocolError, match="topic"):
        encode({"topic": "news"})
    with pytest.raises(ProtocolError, match="JSON"):
        encode({**_headers()["heartbeat"], "fps": math.nan})
    with pytest.raises(ProtocolError, match="status"):
        heartbeat_header(station="s", session=SESSION, seq=0, status="fine", uptime_s=0, fps=0, counters={},
                         cameras={}, interval_s=1, version="x", t_sent_ns=0)


def test_session_ids_are_random_hex() -> None:
    a, b = new_session_id(), new_session_id()
    assert a != b and len(a) == 32 and int(a, 16) >= 0


def test_iso_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000000Z"
    assert iso_utc(1_500_000_000_999_999_999) == "2017-07-14T02:40:00.999999Z"


def test_schema_files_are_package_data_and_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
    for topic in TOPICS:
        path = schema_path(topic)
        assert path.is_file() and path.name == f"{topic}.schema.json"
        for field in load_schema(topic)["properties"]:
            assert f"`{field}`" in doc, f"docs/protocol.md does not document {topic} field {field!r}"


def test_every_reason_of_the_decision_stage_is_in_the_schema() -> None:
    from linewatch.pipeline import decide

    reasons = [v for k, v in vars(decide).items() if k.startswith("REASON_")]
    assert len(reasons) >= 8
    for reason in reasons:
        d = _decision(reason != "pass", (reason,), failsafe=reason in decide.FAILSAFE_REASONS)
        h = decision_header(d, station="s", session=SESSION, seq=0, t_sent_ns=T0)
        validate_header(h)
        assert h["failsafe"] is (reason in decide.FAILSAFE_REASONS)


def test_final_heartbeat_carries_sent_and_validates() -> None:
    h = dict(_headers()["heartbeat"], status="stopping", final=True,
             sent={"decision": 10, "reject": 2, "overlay": 2})
    assert h["final"] is True and h["sent"] == {"decision": 10, "reject": 2, "overlay": 2}
    validate_header(h)
    bad = dict(h, sent={"decisions": 10})  # only the numbered topics
    with pytest.raises(Exception, match="decisions"):
        validate_header(bad)


def test_iso_utc_matches_datetime_on_random_times() -> None:
    import random
    from datetime import UTC, datetime

    rng = random.Random(3)
    for _ in range(2000):
        t = rng.randrange(0, 4_000_000_000 * 10**9)
        s, ns = divmod(t, 10**9)
        ref = datetime.fromtimestamp(s, tz=UTC).replace(microsecond=ns // 1000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert iso_utc(t) == ref
