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
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linewatch.errors import LinewatchError
from linewatch.pipeline.decide import Decision

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


def decode(frames: list[bytes]) -> Message:
    """Decode the frames of one multipart message; raises ProtocolError if they break the protocol."""
    if len(frames) not in (2, 3):
        raise ProtocolError(f"a message has 2 or 3 frames (topic, header, payload?), got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"topic frame is not ASCII: {bytes(frames[0])[:40]!r}") from exc
    if topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic!r}; known: {', '.join(TOPICS)}")
    try:
        header = json.loads(bytes(frames[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{topic} header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError(f"{topic} header must be a JSON object, got {type(header).__name__}")
    if header.get("schema") != SCHEMA_VERSION:
        raise ProtocolError(
            f"{topic} header has schema {header.get('schema')!r}; this linewatch speaks schema {SCHEMA_VERSION}"
        )
    if header.get("topic") != topic:
        raise ProtocolError(f"header topic {header.get('topic')!r} differs from the topic frame {topic!r}")
    for key in ("session", "seq"):
        if key not in header:
            raise ProtocolError(f"{topic} header lacks {key!r}")
    payload = bytes(frames[2]) if len(frames) == 3 else None
    return Message(topic=topic, header=header, payload=payload)


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
