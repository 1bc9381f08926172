"""Subscriber library: receive linewatch messages, detect gaps, watch the heartbeat (SPEC §6).

For a PLC gateway, the whole job is usually:

    from linewatch.subscribe import Subscriber

    def reject(msg):            # msg.header is the JSON header as a dict (docs/protocol.md)
        gate.kick(msg.header["camera"], msg.header["frame_id"])

    def failsafe(reason):       # no heartbeat for heartbeat_timeout s, or the daemon said "stopping"
        gate.reject_everything_until_recovered(reason)

    with Subscriber("tcp://127.0.0.1:5555", topics=("reject",), on_message=reject,
                    on_failsafe=failsafe, on_recover=lambda hb: gate.resume(),
                    on_gap=lambda gap: alarm(f"{gap.missing} {gap.topic} message(s) lost")) as sub:
        sub.wait_ready(5.0)     # first heartbeat seen: the subscription is live (slow joiner)
        sub.run_forever()       # or: for msg in sub: ...   or: msg = sub.poll(0.1)

All callbacks run in the thread that calls `poll()` / iterates / `run_forever()` (or in the thread
`start()` creates). The heartbeat topic is always subscribed internally for the watchdog; heartbeat
messages reach `on_message` only when "heartbeat" is among `topics`.

Gap detection: each topic's `seq` must grow by exactly 1 within a session. A jump reports a `Gap` with
the number of missing messages. The first message of a topic after connecting is the baseline (a
subscriber that joins late has missed nothing it could have had). The session's final heartbeat
(`final: true`, a clean stop) carries `sent`, the messages of each topic the session numbered: a
lost tail is reported as a `Gap` too. A new `session` id means the
daemon restarted: `on_restart(old, new)` is called and all topics start a new baseline.

Watchdog: `on_failsafe(reason)` is called once when no heartbeat arrived for `heartbeat_timeout`
seconds (counting from construction, so a daemon that is not running triggers it too) or when the
daemon announces a clean stop (heartbeat status "stopping"); after the next heartbeat,
`on_recover(header)` is called and the watchdog is armed again.

Bad messages: whatever arrives is handled by `feed(frames)` (what the socket loop calls; a test or a
gateway may call it with frames of its own). A message that breaks the protocol (`protocol.decode`:
wrong frame count, unknown topic, non-UTF-8 or invalid JSON, NaN, numbers out of range, a header
`schema` other than this linewatch's SCHEMA_VERSION, a required field missing or of the wrong type or
range, ...) is counted in `errors`, its reason kept in `last_error`, and passed to `on_error` (default:
a `bad message` warning in the log, at most one a second); it is never delivered, never moves a `seq`
baseline or the session, and a bad heartbeat does not feed the watchdog. No frames make `feed` raise
(only a callback can). If the daemon speaks another schema version its heartbeats are not understood
either, so the watchdog fails safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zmq

from linewatch.errors import LinewatchError
from linewatch.protocol import TOPIC_HEARTBEAT, TOPICS, Message, ProtocolError, decode

log = structlog.get_logger(__name__)

__all__ = ["CurveClient", "Gap", "Message", "Subscriber", "SubscriberError"]


class SubscriberError(LinewatchError):
    """The subscriber cannot be set up (bad endpoint, topic or CURVE key file)."""


@dataclass(frozen=True, slots=True)
class CurveClient:
    """CURVE settings of a subscriber.

    server_public_key_file: the server's public certificate (`server.key`).
    client_secret_key_file: this client's secret certificate (`<name>.key_secret`); its public half
        (`<name>.key`) must be in the daemon's clients directory.
    """

    server_public_key_file: Path
    client_secret_key_file: Path


@dataclass(frozen=True, slots=True)
class Gap:
    """`missing` messages of `topic` were lost: `expected` was the next seq, `received` arrived."""

    topic: str
    session: str
    expected: int
    received: int

    @property
    def missing(self) -> int:
        return self.received - self.expected


def _load_curve(curve: CurveClient) -> tuple[bytes, bytes, bytes]:
    import zmq.auth

    def load(path: Path, what: str) -> tuple[bytes, bytes | None]:
        path = Path(path)
        if not path.is_file():
            raise SubscriberError(f"CURVE {what} file {path} does not exist")
        try:
            return zmq.auth.load_certificate(path)
        except Exception as exc:
            raise SubscriberError(f"CURVE {what} file {path} cannot be read: {exc}") from exc

    server_public, _ = load(curve.server_public_key_file, "server key")
    client_public, client_secret = load(curve.client_secret_key_file, "client certificate")
    if not client_secret:
        raise SubscriberError(
            f"CURVE client certificate {curve.client_secret_key_file} holds no secret key: "
            "pass the *.key_secret file"
        )
    return server_public, client_public, client_secret


def _noop(*_: Any) -> None:
    return None


BAD_MESSAGE_LOG_INTERVAL_S = 1.0
"""Without an `on_error`, bad messages are logged at most once per this many seconds (the count says the rest)."""


class Subscriber:
    """A SUB socket with gap detection and a heartbeat watchdog; see the module docstring."""

    def __init__(
        self,
        endpoint: str,
        topics: Iterable[str] | str = ("decision",),
        *,
        on_message: Callable[[Message], Any] | None = None,
        on_gap: Callable[[Gap], Any] | None = None,
        on_failsafe: Callable[[str], Any] | None = None,
        on_recover: Callable[[dict[str, Any]], Any] | None = None,
        on_restart: Callable[[str | None, str], Any] | None = None,
        on_error: Callable[[ProtocolError], Any] | None = None,
        heartbeat_timeout: float = 3.0,
        curve: CurveClient | None = None,
        rcvhwm: int = 100_000,
    ) -> None:
        self.topics = (topics,) if isinstance(topics, str) else tuple(dict.fromkeys(topics))
        unknown = [t for t in self.topics if t not in TOPICS]
        if unknown or not self.topics:
            raise SubscriberError(f"topics {list(self.topics)!r}: each must be one of {', '.join(TOPICS)}")
        if not heartbeat_timeout > 0:
            raise SubscriberError(f"heartbeat_timeout must be > 0 seconds, got {heartbeat_timeout}")
        self.endpoint = endpoint
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.on_message = on_message or _noop
        self.on_gap = on_gap or _noop
        self.on_failsafe = on_failsafe or _noop
        self.on_recover = on_recover or _noop
        self.on_restart = on_restart or _noop
        self.on_error: Callable[[ProtocolError], Any] = on_error or self._log_bad_message

        self.session: str | None = None
        """Session id of the publisher last heard from (None before the first message)."""
        self.last_heartbeat: dict[str, Any] | None = None
        self.failsafe_active = False
        """True between an on_failsafe call and the next heartbeat."""
        self.received: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self.missing: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self.errors = 0
        """Bad messages received (see the module docstring); `last_error` says what was wrong with the last."""
        self.last_error: str | None = None
        self._t_logged_bad = -math.inf

        self._next_seq: dict[str, int] = {}
        self._pending: deque[Message] = deque()
        self._t_last_beat = time.monotonic()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.RCVHWM, int(rcvhwm))
            self._sock.setsockopt(zmq.LINGER, 0)
            if curve is not None:
                server_public, client_public, client_secret = _load_curve(curve)
                self._sock.curve_serverkey = server_public
                self._sock.curve_publickey = client_public
                self._sock.curve_secretkey = client_secret
            for topic in set(self.topics) | {TOPIC_HEARTBEAT}:
                self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise SubscriberError(f"cannot connect to {endpoint!r}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ receiving

    def poll(self, timeout: float | None = None) -> Message | None:
        """Wait up to `timeout` seconds (None = forever) for one message of the subscribed topics.

        Handles heartbeats, gaps and the watchdog on the way (calling the callbacks), calls
        `on_message` and returns the message; returns None on timeout.
        """
        self._check_owner("poll")
        if self._pending:
            msg = self._pending.popleft()
            self.on_message(msg)
            return msg
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            self._check_watchdog()
            now = time.monotonic()
            wait = self.heartbeat_timeout if self.failsafe_active else max(
                self._t_last_beat + self.heartbeat_timeout - now, 0.0) + 0.001
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.0))
            if self._sock.poll(int(wait * 1000) + (1 if wait > 0 else 0)):
                received = self._receive_one()
                if received is not None:
                    self.on_message(received)
                    return received
            if deadline is not None and time.monotonic() >= deadline:
                self._check_watchdog()
                return None
        return None

    def wait_ready(self, timeout: float) -> bool:
        """Wait until a heartbeat arrives (the subscription is live); messages received meanwhile are kept.
        Call it before `start()` (or without it): afterwards the socket is the background thread's."""
        self._check_owner("wait_ready")
        deadline = time.monotonic() + timeout
        seen = self.last_heartbeat is not None and not self.failsafe_active
        while not seen and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._sock.poll(int(left * 1000) + 1):
                beats_before = self.received[TOPIC_HEARTBEAT]
                msg = self._receive_one()
                if msg is not None:
                    self._pending.append(msg)
                seen = self.received[TOPIC_HEARTBEAT] > beats_before
        return seen

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until close()/stop(); the watchdog keeps running between messages."""
        while not self._closed and not self._stop.is_set():
            msg = self.poll(0.1)
            if msg is not None:
                yield msg

    def run_forever(self) -> None:
        """Receive until close()/stop(), dispatching to the callbacks."""
        for _ in self:
            pass

    def start(self) -> Subscriber:
        """Run `run_forever()` in a background thread (the socket then belongs to that thread).

        An exception raised by a callback is logged and the thread goes on receiving (the watchdog
        must not die with a buggy handler).
        """
        if self._thread is not None:
            raise SubscriberError("Subscriber.start() called twice")
        self._thread = threading.Thread(target=self._run_guarded, name="linewatch-subscriber", daemon=True)
        self._thread.start()
        return self

    def _check_owner(self, what: str) -> None:
        """SubscriberError when another thread than start()'s would use the socket: a ZeroMQ socket used by two
        threads at once aborts the whole process (seen: `wait_ready` called after `start()`)."""
        t = self._thread
        if t is not None and threading.current_thread() is not t:
            raise SubscriberError(f"Subscriber.{what}() called from another thread after start(): the socket "
                                  "belongs to the background thread (call wait_ready() before start())")

    def _run_guarded(self) -> None:
        while not self._closed and not self._stop.is_set():
            try:
                self.run_forever()
            except Exception:
                log.exception("subscriber callback raised; going on")

    def stop(self) -> None:
        """Stop the background thread (if any) and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def feed(self, frames: list[bytes]) -> Message | None:
        """Handle one received multipart message: decode it, track its seq and session, feed the watchdog
        with a heartbeat. Returns the message if its topic is subscribed (without calling `on_message`:
        `poll` does), else None. A bad message is counted and reported (module docstring) and None
        returned; nothing but a callback's own exception leaves this method."""
        try:
            msg = decode(frames)
        except ProtocolError as exc:
            self._bad(exc)
            return None
        except Exception as exc:  # a frame decode() did not foresee: still a bad message, never a crash
            self._bad(ProtocolError(f"message cannot be decoded: {type(exc).__name__}: {exc}"))
            return None
        self._track(msg)
        if msg.topic == TOPIC_HEARTBEAT:
            self._heartbeat(msg.header)
        return msg if msg.topic in self.topics else None

    # ------------------------------------------------------------------ internals

    def _receive_one(self) -> Message | None:
        """Receive one multipart message; returns it if the caller subscribed to its topic."""
        return self.feed(self._sock.recv_multipart())

    def _bad(self, exc: ProtocolError) -> None:
        self.errors += 1
        self.last_error = str(exc)
        self.on_error(exc)

    def _log_bad_message(self, exc: ProtocolError) -> None:
        now = time.monotonic()
        if now - self._t_logged_bad >= BAD_MESSAGE_LOG_INTERVAL_S:
            self._t_logged_bad = now
            log.warning("bad message", error=str(exc), bad_messages=self.errors, endpoint=self.endpoint)

    def _track(self, msg: Message) -> None:
        session = msg.session
        if session != self.session:
            old = self.session
            self.session = session
            self._next_seq.clear()
            if old is not None:
                self.on_restart(old, session)
        self.received[msg.topic] += 1
        expected = self._next_seq.get(msg.topic)
        seq = msg.seq
        if expected is not None and seq > expected and msg.topic in self.topics:
            self.missing[msg.topic] += seq - expected
            self.on_gap(Gap(msg.topic, session, expected, seq))
        self._next_seq[msg.topic] = seq + 1

    def _heartbeat(self, header: dict[str, Any]) -> None:
        self.last_heartbeat = header
        if header.get("final"):
            self._check_tail(header)
        if header.get("status") == "stopping":
            if not self.failsafe_active:
                self.failsafe_active = True
                self.on_failsafe(f"publisher {header.get('station')!r} is stopping")
            return
        self._t_last_beat = time.monotonic()
        if self.failsafe_active:
            self.failsafe_active = False
            self.on_recover(header)

    def _check_tail(self, header: dict[str, Any]) -> None:
        """The final heartbeat says how many messages of each topic the session numbered: a topic whose
        last seq + 1 is lower lost its tail (e.g. at the publisher's close). Only topics this
        subscriber has a baseline for are checked (one that joined after the last message cannot tell)."""
        for topic, total in dict(header.get("sent") or {}).items():
            expected = self._next_seq.get(topic)
            if topic not in self.topics or expected is None or int(total) <= expected:
                continue
            self.missing[topic] += int(total) - expected
            self.on_gap(Gap(topic, str(header.get("session")), expected, int(total)))
            self._next_seq[topic] = int(total)

    def _check_watchdog(self) -> None:
        if self.failsafe_active:
            return
        silent = time.monotonic() - self._t_last_beat
        if silent > self.heartbeat_timeout:
            self.failsafe_active = True
            what = "since start" if self.last_heartbeat is None else "since the last one"
            self.on_failsafe(f"no heartbeat from {self.endpoint} for {silent:.1f} s {what} "
                             f"(timeout {self.heartbeat_timeout:g} s)")
