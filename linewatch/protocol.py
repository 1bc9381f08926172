"""The wire protocol between the daemon's publisher and its subscribers (SPEC §6, docs/protocol.md).

A message is a ZeroMQ multipart message of two or three frames:

    [topic (ASCII bytes), header (UTF-8 JSON object), payload (optional bytes)]

The topic frame is the subscription prefix: `decision` (every frame), `reject` (rejects only),
`overlay` (a JPEG of the frame with the mask contours drawn; payload = the JPEG) and `heartbeat`
(periodic status and counters). Every header carries `schema` (== SCHEMA_VERSION), `topic`,
`station`, `camera`, `session` (random per publisher start) and `seq` (per-topic sequence number,
**starting at 0** for each session, +1 per message of that topic). The JSON Schema of each header
lives in `linewatch/schemas/<topic>.schema.json` (draft 2020-12).

This module is pure data: building headers, encoding and decoding frames. It opens no sockets and
imports neither zmq nor cv2, so a gateway author can read it as the reference of the format. It
decides nothing: a header reports a `linewatch.pipeline.decide.Decision`'s own fields (its reasons,
joined with "+" into `reason` by `reason_text`, its `rule` and `failsafe`).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linewatch.errors import LinewatchError
from linewatch.pipeline.decide import (
    ADHESIVE_RULES,
    FAILSAFE_REASONS,
    REASON_ADHESIVE_MISSING,
    REASON_ADHESIVE_PRESENT,
    REASON_ANOMALY,
    REASON_PASS,
    Decision,
)

SCHEMA_VERSION = 1
"""Version of the header format. Bumped on every change to a header (see docs/protocol.md)."""

TOPIC_DECISION = "decision"
TOPIC_REJECT = "reject"
TOPIC_OVERLAY = "overlay"
TOPIC_HEARTBEAT = "heartbeat"
TOPICS: tuple[str, ...] = (TOPIC_DECISION, TOPIC_REJECT, TOPIC_OVERLAY, TOPIC_HEARTBEAT)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
"""Where the daemon's PUB socket binds and `linewatch subscribe` connects unless told otherwise."""
REASON_SEPARATOR = "+"
"""Joins a decision's reasons in the `reason` field (e.g. `anomaly+adhesive-missing`)."""
OVERLAY_CONTENT_TYPE = "image/jpeg"
HEARTBEAT_STATUSES: tuple[str, ...] = ("ok", "degraded", "stopping")
ARCHIVE_STATES: tuple[str, ...] = ("ok", "degraded")
ARCHIVE_COUNTERS: tuple[str, ...] = ("rows", "images", "rows_lost", "queue_full", "images_skipped", "images_failed",
                                     "write_errors", "events", "rotated_images", "rotated_rows", "queued")
"""The heartbeat's `archive` (the station record, `linewatch.record.recorder.Recorder.status`): `state`, these
counters, and `last_error` when there was one."""
ARCHIVE_FIELDS: tuple[str, ...] = ("state", *ARCHIVE_COUNTERS, "last_error")

REASONS: tuple[str, ...] = (
    REASON_PASS, REASON_ANOMALY, REASON_ADHESIVE_MISSING, REASON_ADHESIVE_PRESENT, *FAILSAFE_REASONS)
"""Every value a `reason` is joined from (the schema's `reason` pattern)."""
DECISIONS: tuple[str, ...] = ("pass", "reject")
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
MAX_HEADER_BYTES = 1 << 20
"""A header frame longer than this (1 MiB; a heartbeat is under 2 KiB) is refused before it is parsed."""

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


class ProtocolError(LinewatchError):
    """A message does not follow the protocol: the message names the frame/field and what is allowed."""


@dataclass(slots=True)
class Message:
    """One decoded message: its topic, its header (a dict, as on the wire) and its payload."""

    topic: str
    header: dict[str, Any]
    payload: bytes | None = None

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    @property
    def session(self) -> str:
        return str(self.header["session"])


def new_session_id() -> str:
    """A random session id (32 lowercase hex digits), drawn once per publisher start."""
    return uuid.uuid4().hex


@functools.lru_cache(maxsize=8)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_utc(t_ns: int) -> str:
    """ISO 8601 UTC time with microseconds and a `Z`, e.g. `2026-11-26T02:16:36.123456Z`.

    Two per decision message: the formatted second is cached (the publisher's largest per-message
    cost was `datetime` formatting), the microseconds appended."""
    seconds, ns = divmod(int(t_ns), 1_000_000_000)
    return f"{_utc_second(seconds)}.{ns // 1000:06d}Z"


def _score_pair(values: tuple[float, float] | None) -> dict[str, float] | None:
    if values is None:
        return None
    anomaly, adhesive = float(values[0]), float(values[1])
    if not (math.isfinite(anomaly) and math.isfinite(adhesive)):
        return None  # JSON has no NaN/Inf; a non-finite score is "no score" on the wire
    return {"anomaly": anomaly, "adhesive": adhesive}


def reason_text(reasons: tuple[str, ...]) -> str:
    """The `reason` field of a decision's reasons: `("anomaly", "adhesive-missing")` -> `"anomaly+adhesive-missing"`."""
    return REASON_SEPARATOR.join(reasons)


def _truth(truth: tuple[int, int] | None) -> dict[str, int | None] | None:
    if truth is None:
        return None
    a, h = (None if int(v) < 0 else int(v) for v in truth)
    if a is None and h is None:
        return None
    return {"anomaly": a, "adhesive": h}


def _common(topic: str, station: str, camera: str | None, session: str, seq: int, t_sent_ns: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "topic": topic,
        "station": station,
        "camera": camera,
        "session": session,
        "seq": int(seq),
        "t_sent_ns": int(t_sent_ns),
    }


def decision_header(
    decision: Decision,
    *,
    topic: str = TOPIC_DECISION,
    station: str,
    session: str,
    seq: int,
    t_sent_ns: int,
) -> dict[str, Any]:
    """Header of a `decision` or `reject` message (the two differ only in `topic` and `seq`).

    `adhesive_rule`, `reason` and `failsafe` are the decision's own (`rule`, `reasons`, `failsafe`):
    a decision made before a reload is reported under the settings it was decided with."""
    if topic not in (TOPIC_DECISION, TOPIC_REJECT):
        raise ProtocolError(f"decision_header: topic {topic!r} is not one of 'decision', 'reject'")
    header = _common(topic, station, decision.camera, session, seq, t_sent_ns)
    header.update(
        frame_id=int(decision.frame_id),
        t_capture_ns=int(decision.t_capture_ns),
        t_decision_ns=int(decision.t_decision_ns),
        t_capture_iso=iso_utc(decision.t_capture_ns),
        t_decision_iso=iso_utc(decision.t_decision_ns),
        scores=_score_pair(decision.scores),
        thresholds=_score_pair(decision.thresholds),
        adhesive_rule=decision.rule,
        decision="reject" if decision.reject else "pass",
        reason=reason_text(decision.reasons),
        failsafe=bool(decision.failsafe),
        truth=_truth(decision.truth),
        model=str(decision.model),
    )
    return header


def overlay_header(
    decision: Decision,
    *,
    station: str,
    session: str,
    seq: int,
    width: int,
    height: int,
    t_sent_ns: int,
) -> dict[str, Any]:
    """Header of an `overlay` message; the payload is the JPEG."""
    header = _common(TOPIC_OVERLAY, station, decision.camera, session, seq, t_sent_ns)
    header.update(
        frame_id=int(decision.frame_id),
        t_capture_ns=int(decision.t_capture_ns),
        decision="reject" if decision.reject else "pass",
        reason=reason_text(decision.reasons),
        content_type=OVERLAY_CONTENT_TYPE,
        width=int(width),
        height=int(height),
    )
    return header


def heartbeat_header(
    *,
    station: str,
    session: str,
    seq: int,
    status: str,
    uptime_s: float,
    fps: float,
    counters: dict[str, int],
    cameras: dict[str, str],
    interval_s: float,
    version: str,
    t_sent_ns: int,
    final: bool = False,
    sent: dict[str, int] | None = None,
    pid: int | None = None,
    model: dict[str, str] | None = None,
    reload: dict[str, Any] | None = None,
    archive: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Header of a `heartbeat` message (no payload). `camera` is null: a heartbeat is per daemon.

    `final` marks the last message of a session (a clean stop); it carries `sent`, the number of
    messages of each topic the session numbered, so a subscriber can tell it lost the tail."""
    if status not in HEARTBEAT_STATUSES:
        raise ProtocolError(f"heartbeat status {status!r} is not one of {', '.join(HEARTBEAT_STATUSES)}")
    header = _common(TOPIC_HEARTBEAT, station, None, session, seq, t_sent_ns)
    header.update(
        status=status,
        uptime_s=round(float(uptime_s), 3),
        fps=round(float(fps), 3),
        counters={str(k): int(v) for k, v in counters.items()},
        cameras={str(k): str(v) for k, v in cameras.items()},
        interval_s=float(interval_s),
        version=version,
        final=bool(final),
    )
    if sent is not None:
        header["sent"] = {str(k): int(v) for k, v in sent.items()}
    if pid is not None:
        header["pid"] = int(pid)
    if model is not None:
        header["model"] = {k: str(model.get(k, "")) for k in ("id", "path", "backend", "device")}
    if reload is not None:
        header["reload"] = dict(reload)
    if archive is not None:
        header["archive"] = {str(k): v for k, v in archive.items() if k in ARCHIVE_FIELDS}
    return header


def encode(header: dict[str, Any], payload: bytes | None = None) -> list[bytes]:
    """The frames of a message: [topic, compact JSON header, payload?]. NaN/Inf are refused."""
    topic = header.get("topic")
    if topic not in TOPICS:
        raise ProtocolError(f"header topic {topic!r} is not one of {', '.join(TOPICS)}")
    try:
        body = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except ValueError as exc:
        raise ProtocolError(f"{topic} header cannot be encoded as JSON: {exc}") from exc
    frames = [topic.encode("ascii"), body]
    if payload is not None:
        frames.append(bytes(payload))
    return frames


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are refused)")


def decode(frames: list[bytes]) -> Message:
    """Decode the frames of one multipart message; ProtocolError naming what breaks the protocol.

    The frame count (2, with a third only on `overlay`: its JPEG), the topic, the header (at most
    MAX_HEADER_BYTES of strict UTF-8 JSON: no NaN, no Infinity), then `check_header` (which also refuses a
    number out of a double's range, read as infinity): a message that decodes can be read by any consumer
    without a further check."""
    if len(frames) not in (2, 3):
        raise ProtocolError(f"a message has 2 or 3 frames (topic, header, payload?), got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"topic frame is not ASCII: {bytes(frames[0])[:40]!r}") from exc
    if topic not in TOPICS:
        raise ProtocolError(f"unknown topic {_short(topic)}; known: {', '.join(TOPICS)}")
    want = 3 if topic == TOPIC_OVERLAY else 2
    if len(frames) != want:
        raise ProtocolError(f"{'an' if topic[0] in 'aeiou' else 'a'} {topic} message has {want} frames (topic, header{', JPEG' if want == 3 else ''}), "
                            f"got {len(frames)}")
    body = bytes(frames[1])
    if len(body) > MAX_HEADER_BYTES:
        raise ProtocolError(f"{topic} header is {len(body)} bytes; at most {MAX_HEADER_BYTES} are read")
    try:
        header = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{topic} header is not UTF-8 JSON: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{topic} header is not valid JSON: {exc}") from exc
    except ValueError as exc:  # NaN/Infinity, an integer of over 4300 digits
        raise ProtocolError(f"{topic} header is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ProtocolError(f"{topic} header is not valid JSON: nested too deeply") from exc
    check_header(header, topic)
    payload = bytes(frames[2]) if want == 3 else None
    return Message(topic=topic, header=header, payload=payload)


# -- checking a received header ------------------------------------------------------------------
#
# `check_header` is what `decode` runs on every message: explicit, cheap checks (a few microseconds, no
# jsonschema) of every field the topic's schema requires and of the optional fields a consumer reads,
# with the schema's types, ranges, enums and patterns. It is tolerant where docs/protocol.md §8 lets a
# consumer be: unknown fields are ignored and `counters` is an open map. It is stricter than the schema
# in one way: integers are int64 (what docs/protocol.md §3 tells a gateway to parse them as).
# tests/test_reliability_hostile.py checks that every header the schema accepts is accepted here.

_Bad = tuple[str, Any, str]
"""A failed check: the path below the field ("" or ".anomaly"), the offending value, what is allowed."""
_Check = Callable[[Any], "_Bad | None"]

_SHORT = 60


def _short(value: Any) -> str:
    """`repr(value)`, cut to a readable length (a hostile header may hold megabytes)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply>"
    return text if len(text) <= _SHORT else f"{text[:_SHORT]}... ({len(text)} characters)"


def _key(key: Any) -> str:
    """A key of a received object as it appears in an error's field path (cut, like `_short`)."""
    key = str(key)
    return key if len(key) <= 40 else f"{key[:40]}..."


_MISSING = object()
"""The value of a failed check when the key is absent."""


def _fail(topic: str, key: str, bad: _Bad) -> ProtocolError:
    path, value, allowed = bad
    if value is _MISSING:
        return ProtocolError(f"{topic} header: {key}{path} is missing ({key} must be {allowed})")
    return ProtocolError(f"{topic} header: {key}{path} = {_short(value)}: must be {allowed}")


def _int(lo: int, hi: int = INT64_MAX) -> _Check:
    allowed = f"an integer >= {lo}" if hi == INT64_MAX else f"an integer in [{lo}, {hi}]"
    if lo == INT64_MIN:
        allowed = "an integer (int64)"

    def check(v: Any) -> _Bad | None:
        return None if type(v) is int and lo <= v <= hi else ("", v, allowed)
    return check


def _number(lo: float, hi: float = math.inf, *, above: bool = False) -> _Check:
    allowed = (f"a number > {lo:g}" if above else f"a number >= {lo:g}") if hi == math.inf else \
        f"a number in [{lo:g}, {hi:g}]"

    def check(v: Any) -> _Bad | None:
        if type(v) not in (int, float) or not math.isfinite(v) or v > hi or (v <= lo if above else v < lo):
            return ("", v, allowed)
        return None
    return check


def _string(min_length: int = 0, pattern: str | None = None, what: str | None = None) -> _Check:
    regex = re.compile(pattern) if pattern else None
    allowed = what or ("a non-empty string" if min_length else "a string")

    def check(v: Any) -> _Bad | None:
        if type(v) is not str or len(v) < min_length or (regex is not None and regex.fullmatch(v) is None):
            return ("", v, allowed)
        return None
    return check


def _one_of(*values: Any) -> _Check:
    allowed = "one of " + ", ".join(json.dumps(v) for v in values) if len(values) > 1 else json.dumps(values[0])

    def check(v: Any) -> _Bad | None:
        return None if type(v) in (str, int, type(None)) and v in values else ("", v, allowed)
    return check


def _boolean(v: Any) -> _Bad | None:
    return None if type(v) is bool else ("", v, "true or false")


def _null(v: Any) -> _Bad | None:
    return None if v is None else ("", v, "null")


def _or_null(check: _Check) -> _Check:
    def or_null(v: Any) -> _Bad | None:
        if v is None:
            return None
        bad = check(v)
        return None if bad is None else (bad[0], bad[1], bad[2] + " or null")
    return or_null


def _object(fields: dict[str, _Check], what: str) -> _Check:
    """An object with (at least) these fields; other keys are ignored."""

    def check(v: Any) -> _Bad | None:
        if type(v) is not dict:
            return ("", v, what)
        for key, field_check in fields.items():
            if key not in v:
                return (f".{key}", _MISSING, what)
            bad = field_check(v[key])
            if bad is not None:
                return (f".{key}{bad[0]}", bad[1], bad[2])
        return None
    return check


def _map(value: _Check, what: str, keys: tuple[str, ...] | None = None) -> _Check:
    """An object whose every value passes `value` (and whose keys are among `keys`, when given)."""

    def check(v: Any) -> _Bad | None:
        if type(v) is not dict:
            return ("", v, what)
        for key, item in v.items():
            if keys is not None and key not in keys:
                return (f".{_key(key)}", key, f"a key among {', '.join(keys)}")
            bad = value(item)
            if bad is not None:
                return (f".{_key(key)}{bad[0]}", bad[1], bad[2])
        return None
    return check


def _list_of(item: _Check, what: str) -> _Check:
    def check(v: Any) -> _Bad | None:
        if type(v) is not list:
            return ("", v, what)
        for i, x in enumerate(v):
            bad = item(x)
            if bad is not None:
                return (f"[{i}]{bad[0]}", bad[1], bad[2])
        return None
    return check


_SCORE = _number(0.0, 1.0)
_PAIR = _object({"anomaly": _SCORE, "adhesive": _SCORE}, "an object {anomaly, adhesive} of numbers in [0, 1]")
_TRUTH_VALUE = _one_of(0, 1, None)
_REASON = _string(pattern=f"({'|'.join(map(re.escape, REASONS))})(\\+({'|'.join(map(re.escape, REASONS))}))*",
                  what=f"reasons joined by '+', each one of {', '.join(REASONS)}")
_MODEL_ID = _string(pattern="([0-9a-f]{12})?", what="12 lowercase hex digits or empty")
_COUNT = _int(0)

_COMMON: dict[str, _Check] = {
    "station": _string(1),
    "session": _string(pattern="[0-9a-f]{32}", what="32 lowercase hex digits"),
    "seq": _COUNT,
    "t_sent_ns": _COUNT,
}
_DECISION_FIELDS: dict[str, _Check] = {
    **_COMMON,
    "camera": _string(1),
    "frame_id": _int(INT64_MIN),
    "t_capture_ns": _COUNT,
    "t_decision_ns": _COUNT,
    "t_capture_iso": _string(),
    "t_decision_iso": _string(),
    "scores": _or_null(_PAIR),
    "thresholds": _PAIR,
    "adhesive_rule": _one_of(*ADHESIVE_RULES),
    "decision": _one_of(*DECISIONS),
    "reason": _REASON,
    "failsafe": _boolean,
    "truth": _or_null(_object({"anomaly": _TRUTH_VALUE, "adhesive": _TRUTH_VALUE},
                              "an object {anomaly, adhesive} of 0, 1 or null")),
    "model": _MODEL_ID,
}
REQUIRED: dict[str, dict[str, _Check]] = {
    TOPIC_DECISION: _DECISION_FIELDS,
    TOPIC_REJECT: {**_DECISION_FIELDS, "decision": _one_of("reject")},
    TOPIC_OVERLAY: {
        **_COMMON,
        "camera": _string(1),
        "frame_id": _int(INT64_MIN),
        "t_capture_ns": _COUNT,
        "decision": _one_of(*DECISIONS),
        "reason": _REASON,
        "content_type": _one_of(OVERLAY_CONTENT_TYPE),
        "width": _int(1),
        "height": _int(1),
    },
    TOPIC_HEARTBEAT: {
        **_COMMON,
        "camera": _null,
        "status": _one_of(*HEARTBEAT_STATUSES),
        "uptime_s": _number(0.0),
        "fps": _number(0.0),
        "counters": _map(_COUNT, "an object of counter name -> integer >= 0"),
        "cameras": _map(_string(), "an object of camera id -> state string"),
        "interval_s": _number(0.0, above=True),
        "version": _string(),
        "final": _boolean,
    },
}
"""Per topic, the fields every header must carry (the schema's `required`), each with its check."""

_STRINGS = _list_of(_string(), "an array of strings")
OPTIONAL: dict[str, dict[str, _Check]] = {
    TOPIC_DECISION: {},
    TOPIC_REJECT: {},
    TOPIC_OVERLAY: {},
    TOPIC_HEARTBEAT: {
        "sent": _map(_COUNT, "an object of topic -> integer >= 0", keys=(TOPIC_DECISION, TOPIC_REJECT, TOPIC_OVERLAY)),
        "pid": _int(1),
        "model": _object({"id": _MODEL_ID, "path": _string(), "backend": _string(), "device": _string()},
                         "an object {id, path, backend, device} of strings"),
        "reload": _object({"n": _int(1), "t_iso": _string(), "ok": _boolean, "applied": _STRINGS,
                           "refused": _STRINGS, "restart_needed": _STRINGS},
                          "an object {n, t_iso, ok, applied, refused, restart_needed}"),
        "archive": _object({"state": _one_of(*ARCHIVE_STATES), "rows": _COUNT, "rows_lost": _COUNT,
                            "queue_full": _COUNT}, "an object {state, rows, rows_lost, queue_full, ...}"),
    },
}
"""Per topic, the optional fields checked when present (the others are passed on unchecked)."""


def check_header(header: Any, topic: str | None = None) -> None:
    """Check a received header (a dict parsed from JSON) before anyone reads it; ProtocolError naming the
    field, its value and what is allowed. `topic` is the topic frame's (default: the header's own).

    Checks `schema` (the integer SCHEMA_VERSION), `topic`, then each field of REQUIRED and OPTIONAL."""
    if type(header) is not dict:
        raise ProtocolError(f"{topic or 'a'} header must be a JSON object, got {type(header).__name__}")
    topic = header.get("topic") if topic is None else topic
    if topic not in TOPICS:
        raise ProtocolError(f"header topic {_short(topic)} is not one of {', '.join(TOPICS)}")
    schema = header.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:
        raise ProtocolError(f"{topic} header has schema {_short(schema)}; this linewatch speaks schema {SCHEMA_VERSION}")
    if header.get("topic") != topic:
        raise ProtocolError(f"header topic {_short(header.get('topic'))} differs from the topic frame {topic!r}")
    for key, check in REQUIRED[topic].items():
        if key not in header:
            raise ProtocolError(f"{topic} header lacks {key!r} (required)")
        bad = check(header[key])
        if bad is not None:
            raise _fail(topic, key, bad)
    for key, check in OPTIONAL[topic].items():
        if key in header:
            bad = check(header[key])
            if bad is not None:
                raise _fail(topic, key, bad)


def schema_path(topic: str) -> Path:
    """Path of the JSON Schema of a topic's header (package data)."""
    if topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic!r}; known: {', '.join(TOPICS)}")
    return SCHEMA_DIR / f"{topic}.schema.json"


def load_schema(topic: str) -> dict[str, Any]:
    """The JSON Schema (a dict) of a topic's header."""
    return json.loads(schema_path(topic).read_text(encoding="utf-8"))


def validate_header(header: dict[str, Any]) -> None:
    """Validate a header against its topic's JSON Schema (needs `jsonschema`, a dev dependency).

    Raises ProtocolError naming the failing field. Meant for tests and debugging, not the hot path.
    """
    import jsonschema  # dev dependency; imported here so the runtime never needs it

    topic = header.get("topic")
    schema = load_schema(str(topic)) if topic in TOPICS else None
    if schema is None:
        raise ProtocolError(f"header topic {topic!r} is not one of {', '.join(TOPICS)}")
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(header), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)
        raise ProtocolError(f"{topic} header does not match {schema_path(str(topic)).name}: {details}")
