"""Hostile input (docs/reliability.md): whatever a subscriber receives and whatever a station profile says.

Messages: frames of any kind fed to `Subscriber.feed` (the path the socket loop takes, here without a
peer) are either a message or a counted bad message, never an exception; a bad message changes no gap,
no session and no watchdog; every header the shipped JSON Schema accepts is accepted, and every header
that is accepted can be printed by `linewatch subscribe`. One real-socket test runs `linewatch subscribe`
against a PUB that sends garbage between valid decisions.

Profiles: mutations of a valid profile (keys deleted, wrong types, out-of-range values, unknown keys, huge
strings) either load or raise ProfileError whose message names the key.

Hypothesis example counts are modest (the file runs in seconds); `deadline=None` because a loaded CI
machine is slow at times, not because an example is.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import structlog
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import wait_until

from linewatch import jsonfile
from linewatch.cli.subscribe import format_human, overlay_file_name
from linewatch.errors import ProfileError
from linewatch.pipeline.decide import Decision
from linewatch.profile import Profile, load_profile, parse_profile
from linewatch.protocol import (
    INT64_MAX,
    INT64_MIN,
    MAX_HEADER_BYTES,
    OPTIONAL,
    REQUIRED,
    TOPICS,
    Message,
    ProtocolError,
    check_header,
    decision_header,
    decode,
    encode,
    heartbeat_header,
    load_schema,
    overlay_header,
    validate_header,
)
from linewatch.subscribe import Gap, Subscriber

SESSION = "0123456789abcdef0123456789abcdef"
T0 = 1_790_000_000_000_000_000
JPEG = b"\xff\xd8jpeg\xff\xd9"
FEW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MORE = settings(FEW, max_examples=200)
NOBODY = "inproc://linewatch-hostile-nobody"  # a Subscriber connected to no one: only `feed` brings messages


def _decision(seq: int = 0, *, topic: str = "decision", session: str = SESSION, reject: bool = True) -> dict:
    d = Decision("cam0", 100 + seq, T0, T0 + 2_000_000, (0.9 if reject else 0.1, 0.8), (0.7, 0.7), reject,
                 ("anomaly",) if reject else ("pass",), "present", False, (1, -1), "0123456789ab")
    return decision_header(d, topic=topic, station="line-3", session=session, seq=seq, t_sent_ns=T0)


def _heartbeat(seq: int = 0, *, session: str = SESSION, status: str = "ok", **kw: Any) -> dict:
    return heartbeat_header(
        station="line-3", session=session, seq=seq, status=status, uptime_s=12.5, fps=25.0,
        counters={"decisions": 300, "passes": 280, "rejects": 20, "failsafe": 1, "drops": 0, "late": 1,
                  "overlays": 20, "overlays_skipped": 0, "queue_overflow": 0},
        cameras={"cam0": "up"}, interval_s=1.0, version="0.1.0", t_sent_ns=T0, pid=4321,
        model={"id": "0123456789ab", "path": "/m.onnx", "backend": "openvino", "device": "cpu"},
        reload={"n": 1, "t_iso": "2026-01-01T00:00:00Z", "ok": True, "applied": ["model"], "refused": [],
                "restart_needed": []},
        archive={"state": "ok", "rows": 3, "rows_lost": 0, "queue_full": 0}, **kw)


def _overlay(seq: int = 0) -> dict:
    d = Decision("cam0", 100, T0, T0, (0.9, 0.8), (0.7, 0.7), True, ("anomaly",), "present", False)
    return overlay_header(d, station="line-3", session=SESSION, seq=seq, width=160, height=64, t_sent_ns=T0)


VALID: dict[str, dict] = {
    "decision": _decision(),
    "reject": _decision(topic="reject"),
    "overlay": _overlay(),
    "heartbeat": _heartbeat(final=True, sent={"decision": 1, "reject": 1, "overlay": 1}),
}


def _frames(header: dict) -> list[bytes]:
    return encode(header, JPEG if header.get("topic") == "overlay" else None)


def _int64(value: Any) -> bool:
    """Every integer inside `value` is an int64 (the one bound the check adds to the schema)."""
    if type(value) is int:
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, dict):
        return all(_int64(v) for v in value.values())
    if isinstance(value, list):
        return all(_int64(v) for v in value)
    return True


def _schema_valid(header: dict) -> bool:
    try:
        validate_header(header)
    except ProtocolError:
        return False
    return True


# -- strategies: JSON values, mutated headers, mutated frames -----------------------------------------

LIKELY = [None, True, False, 0, 1, -1, 0.5, 1.5, 2**63, -(2**63) - 1, 10**30, "", "x", "cam0", "reject", "pass",
          "anomaly+late", "ok", "stopping", "present", SESSION, "0123456789ab", "image/jpeg", [], {},
          {"anomaly": 0.5, "adhesive": 0.2}, {"anomaly": 0.5}, {"decision": 3}, {"decision": -3}, [1, 2],
          "\u00e9\u2603" * 3, "A" * 5000]
"""Values that are valid for some field and wrong for others, so mutations hit both sides of each check."""

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12), st.sampled_from(LIKELY))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


@st.composite
def mutated_headers(draw: st.DrawFn) -> tuple[str, dict]:
    """(topic, a valid header of that topic with one to three fields deleted, replaced, added or nested into)."""
    topic = draw(st.sampled_from(TOPICS))
    header = json.loads(json.dumps(VALID[topic]))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(header)))
        op = draw(st.sampled_from(("delete", "replace", "replace", "add", "nested")))
        if op == "delete":
            header.pop(key, None)
        elif op == "replace":
            header[key] = draw(json_values)
        elif op == "add":
            header[draw(st.text(max_size=10))] = draw(json_values)
        elif isinstance(header.get(key), dict) and header[key]:
            inner = draw(st.sampled_from(sorted(header[key])))
            header[key][inner] = draw(json_values)
        else:
            header[key] = {draw(st.text(max_size=5)): draw(json_values)}
    return topic, header


def from_schema(node: dict, root: dict) -> st.SearchStrategy[Any]:
    """Values valid under one node of a shipped schema (the subset the schemas use), ints kept to int64."""
    if "$ref" in node:
        return from_schema(root["$defs"][node["$ref"].rsplit("/", 1)[1]], root)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "oneOf" in node:
        return st.one_of([from_schema(n, root) for n in node["oneOf"]])
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(node.get("minimum", INT64_MIN), node.get("maximum", INT64_MAX))
    if kind == "number":
        low = node.get("minimum", node.get("exclusiveMinimum", -1e300))
        return st.floats(low, node.get("maximum", 1e300), exclude_min="exclusiveMinimum" in node) | st.sampled_from(
            [v for v in (0, 1, 10**15) if v >= low and v <= node.get("maximum", 1e300) and (
                v > low or "exclusiveMinimum" not in node)] or [low])
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(lambda t: "\n" not in t)
        return st.text(min_size=node.get("minLength", 0), max_size=10)
    if kind == "array":
        return st.lists(from_schema(node.get("items", {}), root), max_size=3)
    if kind == "object":
        props = {k: from_schema(v, root) for k, v in node.get("properties", {}).items()}
        required = node.get("required", [])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            keys = st.sampled_from(node["propertyNames"]["enum"]) if "propertyNames" in node else st.text(max_size=8)
            return st.fixed_dictionaries({k: st.integers(0, 5) for k in required}).flatmap(
                lambda fixed: st.dictionaries(keys, from_schema(extra, root), max_size=3).map(lambda d: {**d, **fixed}))
        return st.fixed_dictionaries({k: props[k] for k in required},
                                     optional={k: v for k, v in props.items() if k not in required})
    return json_values


@st.composite
def schema_valid_variants(draw: st.DrawFn) -> tuple[str, dict]:
    """(topic, a valid header with one to four fields redrawn from the shipped schema: edge values included)."""
    topic = draw(st.sampled_from(TOPICS))
    schema = load_schema(topic)
    header = json.loads(json.dumps(VALID[topic]))
    for key in draw(st.lists(st.sampled_from(sorted(schema["properties"])), min_size=1, max_size=4, unique=True)):
        header[key] = draw(from_schema(schema["properties"][key], schema))
    return topic, header


JSON_NUMBER = re.compile(rb"(?<=[:\[,])-?\d+(\.\d+)?([eE][-+]?\d+)?")


@st.composite
def mutated_frames(draw: st.DrawFn) -> list[bytes]:
    """The frames of a valid or mutated header, then mangled at the byte level or in their count."""
    topic, header = draw(mutated_headers()) if draw(st.booleans()) else draw(st.sampled_from(sorted(VALID.items())))
    frames = [topic.encode(), json.dumps(header).encode()] + ([JPEG] if topic == "overlay" else [])
    op = draw(st.sampled_from(("none", "number", "bytes", "truncate", "count", "topic", "raw")))
    body = frames[1]
    if op == "number":  # NaN, Infinity, out of a double's range, 5000 digits, in place of a number
        spots = list(JSON_NUMBER.finditer(body))
        if spots:
            m = draw(st.sampled_from(spots))
            new = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9" * 5000, b"-0", b"1E2"]))
            frames[1] = body[:m.start()] + new + body[m.end():]
    elif op == "bytes":  # non-UTF-8 or stray bytes somewhere
        at = draw(st.integers(0, len(body)))
        frames[1] = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at:]
    elif op == "truncate":
        frames[1] = body[:draw(st.integers(0, len(body) - 1))]
    elif op == "count":
        n = draw(st.sampled_from((1, 2, 3, 4, 6)))
        frames = (frames + [b"extra"] * 6)[:n]
    elif op == "topic":
        frames[0] = draw(st.sampled_from([b"decisionX", b"news", b"\xff\xfe", b"", b"heartbeat", b"overlay", b"reject"]))
    elif op == "raw":
        frames = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
    return frames


def _is_bad(frames: list[bytes]) -> bool:
    try:
        decode(frames)
    except ProtocolError:
        return True
    return False


bad_frames = mutated_frames().filter(_is_bad)


# -- the shipped schemas and the cheap check agree ------------------------------------------------------

@pytest.mark.parametrize("topic", TOPICS)
def test_the_cheap_check_requires_exactly_what_the_schema_requires(topic: str) -> None:
    schema = load_schema(topic)
    assert {"schema", "topic", *REQUIRED[topic]} == set(schema["required"])
    assert set(OPTIONAL[topic]) <= set(schema["properties"]) - set(schema["required"])
    for key in schema["required"]:  # guard: deleting any one required field is refused, naming it
        header = {k: v for k, v in VALID[topic].items() if k != key}
        with pytest.raises(ProtocolError, match=re.escape(repr(key)) if key not in ("schema", "topic") else key):
            check_header(header, topic)


@MORE
@given(schema_valid_variants())
def test_every_header_the_schema_accepts_is_accepted(variant: tuple[str, dict]) -> None:
    topic, header = variant
    if _schema_valid(header) and _int64(header):
        check_header(header, topic)  # a ProtocolError here is a valid message refused


@FEW
@given(mutated_headers() | schema_valid_variants())
def test_every_accepted_header_can_be_printed_and_every_refusal_is_one_short_line(mutated: tuple[str, dict]) -> None:
    topic, header = mutated
    try:
        check_header(header, topic)
    except ProtocolError as exc:
        text = str(exc)
        assert "\n" not in text and len(text) < 400, text  # one line, however big the value
        return
    payload = JPEG if topic == "overlay" else None  # what the CLI does with a message (and a gateway reads)
    assert format_human(header, payload)
    json.loads(jsonfile.dumps(header))
    if topic == "overlay":
        assert "/" not in overlay_file_name(header)


@pytest.mark.parametrize("topic", TOPICS)
def test_any_one_field_the_check_lets_through_never_breaks_the_printer(topic: str) -> None:
    """Exhaustive where the property above samples: each field of the topic set to each of LIKELY's values."""
    accepted = 0
    for key in VALID[topic]:
        for value in LIKELY:
            header = {**VALID[topic], key: value}
            try:
                check_header(header, topic)
            except ProtocolError:
                continue
            accepted += 1
            assert format_human(header, JPEG if topic == "overlay" else None), (key, value)
            json.loads(jsonfile.dumps(header))
    assert accepted >= len(VALID[topic])  # guard: valid values were among them (the loop checked something)


# -- the library: any frames are a message or a counted bad message ------------------------------------

@pytest.fixture(scope="module")
def fed():
    """One Subscriber for all the examples (no socket peer), and the list its `on_error` appends to."""
    errors: list[ProtocolError] = []
    with Subscriber(NOBODY, TOPICS, on_error=errors.append, heartbeat_timeout=3600) as s:
        yield s, errors


@FEW
@given(frames=mutated_frames())
def test_any_frames_fed_to_the_subscriber_are_a_message_or_a_counted_bad_message(
        fed: tuple[Subscriber, list[ProtocolError]], frames: list[bytes]) -> None:
    sub, reported = fed
    errors_before, received_before, reports = sub.errors, sum(sub.received.values()), len(reported)
    msg = sub.feed(frames)  # raises nothing: a crash fails the test
    if msg is None:
        assert sub.errors == errors_before + 1 and sum(sub.received.values()) == received_before
        assert len(reported) == reports + 1 and sub.last_error == str(reported[-1])
    else:
        assert sub.errors == errors_before and sum(sub.received.values()) == received_before + 1
        assert isinstance(msg, Message) and format_human(msg.header, msg.payload)


@settings(FEW, max_examples=100)
@given(seqs=st.lists(st.integers(0, 50), min_size=1, max_size=12).map(lambda xs: sorted(set(xs))),
       garbage=st.lists(st.tuples(st.integers(0, 12), bad_frames), max_size=8),
       restart_at=st.one_of(st.none(), st.integers(0, 12)))
def test_bad_messages_between_valid_ones_change_no_delivery_gap_or_session(seqs: list[int], garbage: list,
                                                                         restart_at: int | None) -> None:
    other = "f" * 32

    def valid_stream() -> list[list[bytes]]:
        out = []
        for i, s in enumerate(seqs):
            session = other if restart_at is not None and i >= restart_at else SESSION
            out.append(_frames(_decision(s, session=session)))
        return out

    def run(stream: list[list[bytes]]) -> tuple[list, list, list, int]:
        got: list[int] = []
        gaps: list[Gap] = []
        restarts: list[tuple] = []
        errors: list[ProtocolError] = []
        with Subscriber(NOBODY, ("decision",), on_gap=gaps.append, on_restart=lambda o, n: restarts.append((o, n)),
                        on_error=errors.append, heartbeat_timeout=3600) as s:
            for frames in stream:
                msg = s.feed(frames)
                if msg is not None:
                    got.append(msg.seq)
            assert s.errors == len(errors)
        return got, gaps, restarts, len(errors)

    clean = valid_stream()
    mixed = list(clean)
    for at, frames in sorted(garbage, key=lambda g: -g[0]):
        mixed.insert(min(at, len(mixed)), frames)
    with_garbage, without = run(mixed), run(clean)
    assert with_garbage[:3] == without[:3]
    assert with_garbage[3] == len(garbage) and without[3] == 0


HOSTILE: list[tuple[str, list[bytes], str]] = [
    ("one frame", [b"decision"], "2 or 3 frames"),
    ("four frames", _frames(VALID["decision"]) + [b"a", b"b"], "2 or 3 frames"),
    ("a payload on a decision", _frames(VALID["decision"]) + [b"x"], "decision message has 2 frames"),
    ("an overlay without its JPEG", _frames(VALID["overlay"])[:2], "an overlay message has 3 frames"),
    ("an unknown topic", [b"news", b"{}"], "unknown topic 'news'"),
    ("a topic that only starts like one", [b"decisionX", b"{}"], "unknown topic 'decisionX'"),
    ("a non-ASCII topic", [b"\xffdecision", b"{}"], "not ASCII"),
    ("non-UTF-8", [b"decision", b'{"a": "\xff"}'], "not UTF-8"),
    ("invalid JSON", [b"decision", b"{broken"], "not valid JSON"),
    ("a JSON array", [b"decision", b"[1, 2]"], "must be a JSON object, got list"),
    ("NaN", [b"decision", b'{"schema": NaN}'], "NaN"),
    ("a number out of a double's range", [b"heartbeat", _frames(VALID["heartbeat"])[1].replace(b'"fps":25.0', b'"fps":1e400')],
     "fps = inf: must be a number >= 0"),
    ("an integer of 5000 digits", [b"decision", b'{"seq": ' + b"9" * 5000 + b"}"], "digits"),
    ("nesting 100 000 deep", [b"decision", b"[" * 100_000], "nested too deeply"),
    ("a header over 1 MiB", [b"decision", b" " * (MAX_HEADER_BYTES + 1)], "at most 1048576"),
    ("a schema from the future", _frames({**VALID["decision"], "schema": 2}), "schema 2; this linewatch speaks schema 1"),
    ("schema true (== 1 in Python)", _frames({**VALID["decision"], "schema": True}), "schema True"),
    ("the topic frame and header disagree", [b"reject", _frames(VALID["decision"])[1]], "differs from the topic frame"),
    ("a missing field the printer reads", _frames({k: v for k, v in VALID["decision"].items() if k != "frame_id"}),
     "decision header lacks 'frame_id' (required)"),
    ("seq as a string", _frames({**VALID["decision"], "seq": "7"}), "seq = '7': must be an integer >= 0"),
    ("seq as true", _frames({**VALID["decision"], "seq": True}), "seq = True"),
    ("seq as 1.0", _frames({**VALID["decision"], "seq": 1.0}), "seq = 1.0"),
    ("seq negative", _frames({**VALID["decision"], "seq": -1}), "seq = -1"),
    ("seq beyond int64", _frames({**VALID["decision"], "seq": 2**63}), "seq = 9223372036854775808"),
    ("session as a number", _frames({**VALID["decision"], "session": 5}), "session = 5: must be 32 lowercase hex"),
    ("session as an object", _frames({**VALID["decision"], "session": {"a": 1}}), "session = {'a': 1}"),
    ("a score out of [0, 1]", _frames({**VALID["decision"], "scores": {"anomaly": 2, "adhesive": 0}}),
     "scores.anomaly = 2: must be a number in [0, 1]"),
    ("nested garbage in the scores", _frames({**VALID["decision"], "scores": {"anomaly": [[{"x": []}]], "adhesive": 0}}),
     "scores.anomaly = [[{'x': []}]]"),
    ("a reason nobody knows", _frames({**VALID["reject"], "reason": "because"}), "reason = 'because'"),
    ("a reject that passes", _frames({**VALID["reject"], "decision": "pass"}), "decision = 'pass': must be \"reject\""),
    ("an overlay without a camera id", _frames({**VALID["overlay"], "camera": None}), "camera = None: must be a non-empty string"),
    ("a heartbeat status nobody knows", _frames({**VALID["heartbeat"], "status": "fine"}),
     'status = \'fine\': must be one of "ok", "degraded", "stopping"'),
    ("a final heartbeat's sent as a list", _frames({**VALID["heartbeat"], "sent": [1, 2]}), "sent = [1, 2]"),
    ("a sent count that is text", _frames({**VALID["heartbeat"], "sent": {"decision": "9"}}), "sent.decision = '9'"),
    ("a sent topic that does not exist", _frames({**VALID["heartbeat"], "sent": {"x" * 100: 1}}),
     "sent." + "x" * 40 + "... = 'xxx"),
    ("a huge string where a number goes", _frames({**VALID["heartbeat"], "fps": "9" * 100_000}),
     "(100002 characters): must be a number >= 0"),
]


@pytest.mark.parametrize("frames, expected", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_each_kind_of_hostile_message_is_refused_naming_what_is_wrong(frames: list[bytes], expected: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert expected in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_valid_messages_of_every_topic_decode_and_the_cli_prints_them() -> None:
    for topic, header in VALID.items():  # guard for the table above: the same headers unmangled are fine
        msg = decode(_frames(header))
        validate_header(msg.header)
        assert format_human(msg.header, msg.payload).startswith(topic)


def test_bad_heartbeats_do_not_feed_the_watchdog_and_a_good_one_recovers_it() -> None:
    events: list[str] = []
    with Subscriber(NOBODY, ("decision",), heartbeat_timeout=0.3, on_error=lambda e: events.append("bad"),
                    on_failsafe=lambda r: events.append("failsafe"), on_recover=lambda hb: events.append("recover")) as s:
        assert s.feed(_frames(_heartbeat(0))) is None and s.last_heartbeat is not None
        bad_beats = [_frames({**_heartbeat(1), "status": "fine"}), _frames({**_heartbeat(1), "seq": "1"}),
                     _frames({**_heartbeat(1), "session": 5}), _frames({**_heartbeat(1), "final": True, "sent": [3]}),
                     [b"heartbeat", b"{}"], [b"heartbeat", b"\xff"]]

        def fed_until_failsafe() -> bool:
            for frames in bad_beats:
                s.feed(frames)
            s.poll(0.01)
            return "failsafe" in events

        wait_until(fed_until_failsafe, 30, lambda: f"the fail-safe despite bad heartbeats (events {events[-5:]})")
        assert s.failsafe_active and s.received["heartbeat"] == 1 and s.session == SESSION
        assert events.count("bad") == s.errors >= len(bad_beats)
        s.feed(_frames(_heartbeat(1)))
        assert events[-1] == "recover" and not s.failsafe_active and s.missing["heartbeat"] == 0


def test_without_on_error_a_bad_message_is_a_log_line_at_most_once_a_second() -> None:
    with structlog.testing.capture_logs() as logs, Subscriber(NOBODY, heartbeat_timeout=3600) as s:
        for _ in range(50):
            s.feed([b"decision", b"{broken"])
        s.feed(_frames(_decision(0)))
    bad = [e for e in logs if e["event"] == "bad message"]
    assert s.errors == 50 and len(bad) == 1 and "not valid JSON" in bad[0]["error"] and bad[0]["bad_messages"] == 1


def test_an_exception_decode_did_not_foresee_is_a_bad_message_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import linewatch.subscribe as subscribe

    def broken(frames: list[bytes]) -> Message:
        raise KeyError("surprise")

    monkeypatch.setattr(subscribe, "decode", broken)
    errors: list[ProtocolError] = []
    with Subscriber(NOBODY, on_error=errors.append, heartbeat_timeout=3600) as s:
        assert s.feed(_frames(_decision(0))) is None
    assert s.errors == 1 and "KeyError" in str(errors[0])


# -- `linewatch subscribe` against a hostile PUB socket -------------------------------------------------

GARBAGE: list[list[bytes]] = [
    [b"decision", b"{broken"],
    [b"decision", b'{"schema": NaN}'],
    [b"decision", b'{"a": "\xff\xfe"}'],
    _frames({k: v for k, v in _decision(0).items() if k != "frame_id"}),  # the traceback of before
    _frames({**_decision(0), "seq": "7"}),
    _frames({**_decision(0), "schema": 2}),
    _frames({**_decision(0), "scores": {"anomaly": [[{}]], "adhesive": 1e300}}),
    _frames({**_heartbeat(0), "session": 42}),
    [b"decision"],
    [b"decision", b"{}", b"x", b"y"],
    [b"decisionX", b"{}"],
]
GARBAGE_SAYS = ["not valid JSON", "NaN", "not UTF-8", "lacks 'frame_id'", "seq = '7'", "schema 2", "scores.anomaly",
                "session = 42", "2 or 3 frames", "unknown topic 'decisionX'"]


def test_the_cli_reports_garbage_from_a_hostile_publisher_and_prints_the_valid_decisions(tmp_path: Path) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    stderr_path = tmp_path / "stderr.txt"
    lines: list[str] = []
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "linewatch", "subscribe", endpoint, "--topic", "decision"],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        seq = 0
        try:
            def garbage_then_a_decision() -> bool:  # each round: all the garbage, then one valid decision
                nonlocal seq
                for frames in GARBAGE:
                    pub.send_multipart(frames)
                pub.send_multipart(_frames(_decision(seq)))
                pub.send_multipart(_frames(_heartbeat(seq)))
                seq += 1
                time.sleep(0.02)
                return sum(line.startswith("decision") for line in lines) >= 3  # >= 2 full rounds received
            wait_until(garbage_then_a_decision, 60, lambda: f"3 decisions printed (stdout {lines[-3:]})", interval=0)
            assert proc.poll() is None  # still running after all that garbage
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            pub.close()
            ctx.term()
    reader.join(10)
    err = stderr_path.read_text()
    assert rc == 0, err
    assert "Traceback" not in err
    printed = [line for line in lines if line.startswith("decision")]
    assert len(printed) >= 3 and all("REJECT" in line and "reason=anomaly" in line for line in printed)
    seqs = [int(re.search(r"seq=(\d+)", line).group(1)) for line in printed]  # type: ignore[union-attr]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # garbage made no gap
    assert "gap on" not in err
    bad_lines = [line for line in err.splitlines() if line.startswith("linewatch subscribe: bad message: ")]
    for says in GARBAGE_SAYS:
        assert any(says in line for line in bad_lines), f"no bad-message line says {says!r}:\n{err[-3000:]}"
    assert re.search(r"\d+ bad message\(s\) received; the last: ", err)
    print(f"hostile PUB: {seq} rounds of {len(GARBAGE)} garbage messages + 1 decision + 1 heartbeat; "
          f"{len(printed)} decisions printed in order, {len(bad_lines)} bad-message lines, exit {rc} on SIGINT")


def test_the_cli_ends_with_exit_0_at_count_through_garbage(capsys: pytest.CaptureFixture[str]) -> None:
    from linewatch.cli import main

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    stop = threading.Event()

    def hostile() -> None:
        seq = 0
        while not stop.wait(0.02):
            for frames in GARBAGE:
                pub.send_multipart(frames)
            pub.send_multipart(_frames(_decision(seq)))
            seq += 1

    thread = threading.Thread(target=hostile, daemon=True)
    thread.start()
    try:
        rc = main(["subscribe", endpoint, "--topic", "decision", "--json", "--count", "2", "--timeout", "60"])
    finally:
        stop.set()
        thread.join()
        pub.close()
        ctx.term()
    out, err = capsys.readouterr()
    assert rc == 0
    decisions = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(decisions) == 2 and all(validate_header(h) is None for h in decisions)
    assert "bad message: " in err and "lacks 'frame_id'" in err


# -- station profiles ----------------------------------------------------------------------------------

BASE_PROFILE = """
[station]
name = "line-3"
endpoint = "tcp://0.0.0.0:6000"
curve = { secret_key_file = "keys/server.key_secret", authorized_keys_dir = "keys/clients" }

[model]
path = "m.onnx"
backend = "onnxruntime"
precision = "auto"
max_batch = 4
threads = 2

[[camera]]
id = "top"
source = "genicam"
cti = "/opt/vendor/producer.cti"
device = "SN1234"
roi = [10, 20, 1224, 512]
features = { ExposureTime = 2000.0, PixelFormat = "BayerRG8", ReverseX = true, Width = 1600 }
timeout_s = 1.0
down_after_s = 5.0

[[camera]]
id = "sim"
source = "synthetic"
fps = 25.0
defect_rate = 0.2
seed = 3
count = 100
corrupt_every = 7

[[camera]]
id = "replay"
source = "replay"
path = "frames"
loop = true
fps = 10
split = "test"

[decision]
thresholds = { anomaly = 0.55, adhesive = 0.4 }
adhesive_rule = "absent"
deadline_ms = 80

[ring]
slots = 8

[publish]
overlay_pass_every = 25
heartbeat_s = 1.0
jpeg_quality = 80

[archive]
dir = "archive"
max_gb = 2.0
keep_days = 30
pass_every = 100
format = "jpg"
"""
BASE = tomllib.loads(BASE_PROFILE)


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def to_toml(value: Any) -> str:
    """TOML text of a value; a dict is written as inline tables, so a whole profile is one line per key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_str(k)} = {to_toml(v)}" for k, v in value.items()) + " }"
    return str(value)  # a date or time: TOML writes them bare (isoformat)


def profile_text(doc: dict) -> str:
    return "".join(f"{_toml_str(k)} = {to_toml(v)}\n" for k, v in doc.items())


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a profile document (dict keys and list indices)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _key_text(path: tuple) -> str:
    """A key path as ProfileError writes it: `camera[0].roi`, `decision.thresholds.anomaly`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


toml_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(), st.floats(),
    st.text(max_size=20), st.dates(), st.sampled_from(
        [0, -1, 1, 2, 4, 64, 65, 4097, 10**30, -(10**30), 0.0, -0.5, 1.5, 1e308, -1e308, math.nan, math.inf, -math.inf,
         "", "x", "top", "sim", "\u2603\U0001f600", "tcp://", "genicam", "synthetic", "replay", "bf16", "tensorrt",
         "present", "png"]))
huge_strings = st.just("A" * 100_000) | st.text(min_size=300, max_size=2000)
toml_values = st.one_of(
    st.none(),  # stands for "delete"
    toml_scalars, huge_strings,
    st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=6), inner, max_size=3), max_leaves=8))


@st.composite
def mutated_profiles(draw: st.DrawFn) -> tuple[dict, str, tuple, Any]:
    """(document, operation, key path, new value): the base profile with one key deleted, one value replaced
    or one unknown key added."""
    doc = json.loads(json.dumps(BASE))
    op = draw(st.sampled_from(("delete", "replace", "replace", "add")))
    if op == "add":
        tables = [()] + [p for p in _paths(doc) if isinstance(_at(doc, p), dict)]
        parent = draw(st.sampled_from(tables))
        key = draw((st.text(min_size=1, max_size=30) | huge_strings).filter(lambda k: k not in _at(doc, parent)))
        value = draw(toml_values.filter(lambda v: v is not None))
        _at(doc, parent)[key] = value
        return doc, op, parent + (key,), value
    path = draw(st.sampled_from(_paths(doc)))
    parent = _at(doc, path[:-1])
    value = draw(toml_values)
    if op == "delete" or value is None:
        del parent[path[-1]]
        return doc, "delete", path, None
    parent[path[-1]] = value
    return doc, op, path, value


def _at(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@MORE
@given(mutated_profiles())
def test_every_mutation_of_a_valid_profile_loads_or_is_a_profile_error_naming_the_key(mutated: tuple) -> None:
    doc, op, path, value = mutated
    text = profile_text(doc)
    if not any(isinstance(v, float) and math.isnan(v) for v in _leaves(doc)):  # guard: the TOML says what we mean
        assert tomllib.loads(text) == doc
    try:
        profile = parse_profile(text, name="station.toml")
    except ProfileError as exc:
        message = str(exc)
    else:
        assert isinstance(profile, Profile)
        return
    assert message.startswith("station.toml: ")
    for line in message.splitlines():
        assert len(line) < 600, line[:200]  # a huge value is cut, not echoed
    if op == "add":  # an unknown key (named, cut if huge), or a known one that was absent with a wrong value
        expected = [repr(path[-1])[:30], _key_text(path)]
    else:
        if not (op == "replace" and len(path) == 2 and path[0] == "camera"):  # a whole camera: camera[i]
            while isinstance(path[-1], int):  # an item of a list (roi[2]): the list's key
                path = path[:-1]
        expected = [_key_text(path)]
        if path[-1] == "source":  # another source: the message is about that camera's keys
            expected.append(_key_text(path[:2]))
    assert any(e in message for e in expected), f"{op} {_key_text(path)}: {message[:500]}"


def _leaves(node: Any) -> list:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _leaves(v)]
    if isinstance(node, list):
        return [x for v in node for x in _leaves(v)]
    return [node]


@FEW
@given(cut=st.integers(0, len(BASE_PROFILE)), junk=st.text(max_size=30), at=st.integers(0, len(BASE_PROFILE)))
def test_a_profile_cut_short_or_with_junk_inside_loads_or_is_a_profile_error(cut: int, junk: str, at: int) -> None:
    for text in (BASE_PROFILE[:cut], BASE_PROFILE[:at] + junk + BASE_PROFILE[at:]):
        try:
            parse_profile(text, name="station.toml")
        except ProfileError as exc:
            assert str(exc).startswith("station.toml: ")


@pytest.mark.parametrize("text, expected", [
    ("a = " + "[" * 100_000, "nested too deeply"),
    ("a = " + "{ b = " * 5000, "nested too deeply"),
    ('[station]\nname = "x\u0000"', "not valid TOML"),
    ('[station]\n"[" = 1\n', "unknown key '[' in [station]"),  # keys that look like pydantic's union tags
    ('[station]\n"str" = 1\n', "unknown key 'str' in [station]"),
    ('[station]\n"nullable" = 1\n', "unknown key 'nullable' in [station]"),
    ('[[camera]]\nid = "c"\nsource = "synthetic"\nsynthetic = 1\n', "unknown key 'synthetic' in [[camera]] #0"),
    ('[[camera]]\nid = "c"\nsource = "genicam"\ncti = "x"\nfeatures = { Width = [1] }\n',
     "camera[0].features.Width = [1]: must be true or false, an integer, a number or a string"),
    ('[[camera]]\nid = "c"\nsource = "genicam"\ncti = "x"\ndevice = -1\n',
     "camera[0].device = -1: must be a string or a number >= 0"),
    ('[station]\nname = "' + "A" * 100_000 + ' "\n', "station.name = 'AAAAAAAA"),
    ('[station]\n"' + "k" * 500 + '" = 1\n', "unknown key 'kkkkkkkk"),
    ('[[camera]]\nid = "a"\nsource = "synthetic"\n[[camera]]\nid = "a"\nsource = "synthetic"\n',
     "camera[1].id = 'a': camera ids must be unique (camera[0].id has it too)"),
])
def test_hostile_profile_texts_are_profile_errors_naming_the_key_in_short_lines(text: str, expected: str) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, name="station.toml")
    message = str(info.value)
    assert expected in message
    assert all(len(line) < 400 for line in message.splitlines()), message[:500]


def test_a_profile_file_that_is_not_utf8_is_a_profile_error_and_a_bom_is_read_past(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[station]\nname = "Stra\u00dfe"\n'.encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin1.toml: the station profile is not UTF-8 text: byte b'\\xdf' at offset 22"):
        load_profile(bad)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + BASE_PROFILE.encode())
    assert load_profile(bom).station.name == "line-3"
