"""The publisher: the one thread that owns the daemon's ZeroMQ PUB socket (SPEC §6, docs/protocol.md).

    pub = Publisher("tcp://127.0.0.1:5555", "station-1", overlay_pass_every=50, status=daemon.status)
    pub.start()                                   # binds; raises LinewatchError if it cannot
    pub.submit(decision, image=rgb, masks=masks)  # from the decision stage: never blocks
    ...
    pub.stop(drain=True)                          # publishes what is queued, then closes (bounded)

`submit()` is thread-safe and never blocks the caller:

- Every decision goes into a bounded queue (`queue_size`, default 100 000 — over an hour of backlog at
  25 fps; it cannot fill unless the publisher thread is stuck). Sequence numbers of `decision` and
  `reject` are assigned at submit time, so in the (counted, `queue_overflow`) event that the queue is
  full and a decision is dropped, subscribers see the gap in `seq` and can fail safe.
- An overlay is wanted for every reject and every `overlay_pass_every`-th pass (0 = never for passes),
  when the caller passes the image. The image and masks are copied into the preallocated pool of a
  `linewatch.pipeline.overlay_encoder.OverlayEncoder` (`overlay_pool` slots, `overlay_shape`); when
  it has no slot for them the overlay is skipped and counted (`overlays_skipped`); the decision still
  goes.

The publisher thread sends, for each queued decision, `decision` and then `reject` (if it is one),
and a `heartbeat` every `heartbeat_interval` seconds with the `status()` callable's dict (keys
`status`, `fps`, `counters`, `cameras`, all optional) merged over the publisher's own counters.
Overlays are drawn and JPEG-encoded by the encoder's thread (`linewatch-overlays`, which never
touches the socket) and handed back through the same queue, so a reject never waits behind an
encode; an overlay follows its decision, possibly after later ones. The headers report each
decision's own fields (`linewatch.protocol`): a decision queued before a reload goes out under the
adhesive rule it was decided with.
A PUB socket never blocks: a subscriber that cannot keep up loses messages at its high-water mark
(`sndhwm`), which it sees as a gap in `seq`.

CURVE (optional, `curve=CurveServer(...)`): the traffic is encrypted with the server's key pair and,
when `clients_dir` is given, only clients whose public key file (`*.key`, as written by
`zmq.auth.create_certificates`) is in that directory can connect; a `zmq.auth.thread.ThreadAuthenticator`
on the publisher's context checks them. Generate keys with

    python -c "import zmq.auth; zmq.auth.create_certificates('keys', 'server')"   # server.key, server.key_secret
    python -c "import zmq.auth; zmq.auth.create_certificates('keys', 'plc1')"     # plc1.key (copy to clients_dir)

The daemon holds `server.key_secret`; subscribers hold `server.key` and their own `*.key_secret`
(`linewatch subscribe --curve-server-key keys/server.key --curve-client-cert keys/plc1.key_secret`).

The clients' keys are read once, at `start()` (a key added later needs a restart); a key file that cannot
be read fails `start()` naming it, and a folder without any `*.key` is a warning (no subscriber can
connect). A client whose key is not listed is refused during the handshake: it receives nothing, and
the refusal is counted (`curve_refused`) and logged (`CURVE client refused`, with the client's public
key) at most once a minute per key and for at most `REFUSED_LOG_KEYS` distinct keys a minute. ZeroMQ does
not retry a refused handshake on its own (measured: one refusal in 30 s from one client); a gateway that
reconnects in a loop is refused, and counted, each time.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from linewatch import __version__
from linewatch.errors import LinewatchError
from linewatch.pipeline.decide import REASON_DROPPED, REASON_LATE, Decision
from linewatch.pipeline.overlay_encoder import EncodedOverlay, OverlayEncoder
from linewatch.protocol import (
    DEFAULT_ENDPOINT,
    HEARTBEAT_STATUSES,
    TOPIC_DECISION,
    TOPIC_OVERLAY,
    TOPIC_REJECT,
    decision_header,
    encode,
    heartbeat_header,
    new_session_id,
    overlay_header,
)

log = structlog.get_logger(__name__)

_STOP = object()  # queue sentinel

REFUSED_LOG_INTERVAL_S = 60.0
"""A refused CURVE client key is logged at most once per this many seconds."""
REFUSED_LOG_KEYS = 20
"""At most this many distinct refused keys are logged per `REFUSED_LOG_INTERVAL_S` (a client that makes a
new key for each try fills no disk); `curve_refused` counts every refusal."""


class PublisherError(LinewatchError):
    """The publisher cannot start (bind failed, bad CURVE key file ...) or was misused."""


@dataclass(frozen=True, slots=True)
class CurveServer:
    """CURVE settings of the publisher.

    secret_key_file: the server's secret certificate (`server.key_secret` from zmq.auth.create_certificates).
    clients_dir: directory of authorised clients' public certificates (`*.key`); None = any client that
        knows the server's public key may connect (encryption without client authentication).
    """

    secret_key_file: Path
    clients_dir: Path | None = None


@dataclass(slots=True)
class _DecisionItem:
    seq_decision: int
    seq_reject: int  # -1 = not a reject
    decision: Decision


def _load_server_keys(curve: CurveServer) -> tuple[bytes, bytes]:
    import zmq.auth

    path = Path(curve.secret_key_file)
    if not path.is_file():
        raise PublisherError(f"CURVE server key file {path} does not exist (expected a *.key_secret file)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except Exception as exc:  # zmq raises ValueError / OSError with little context
        raise PublisherError(f"CURVE server key file {path} cannot be read: {exc}") from exc
    if not secret:
        raise PublisherError(
            f"CURVE server key file {path} holds no secret key: pass the *.key_secret file, not the public *.key"
        )
    if curve.clients_dir is not None and not Path(curve.clients_dir).is_dir():
        raise PublisherError(f"CURVE clients directory {curve.clients_dir} does not exist")
    return public, secret


def _load_client_keys(clients_dir: Path) -> set[bytes]:
    """The public keys (Z85) of the `*.key` certificates in `clients_dir`; PublisherError naming a file that
    cannot be read."""
    import zmq.auth

    keys: set[bytes] = set()
    for path in sorted(Path(clients_dir).glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(path)
        except Exception as exc:  # zmq raises ValueError / OSError with little context
            raise PublisherError(f"CURVE client key file {path} cannot be read: {exc} "
                                 "(expected a public *.key file from zmq.auth.create_certificates)") from exc
        keys.add(public)
    if not keys:
        log.warning("CURVE clients directory holds no *.key file: no subscriber can connect",
                    clients_dir=str(clients_dir))
    return keys


class _CurveClients:
    """The ZAP check of CURVE clients (`zmq.auth` credentials provider, called in the authenticator's
    thread): a client is allowed when its public key is one of `keys`; a refusal is counted and logged
    (module doc: once a minute per key, at most REFUSED_LOG_KEYS keys a minute)."""

    def __init__(self, keys: set[bytes], clients_dir: Path, endpoint: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = frozenset(keys)
        self.clients_dir = clients_dir
        self.endpoint = endpoint
        self.refused = 0
        self._clock = clock
        self._logged: dict[bytes, float] = {}

    def callback(self, domain: str, key: bytes) -> bool:
        """True when the client with this public key (Z85) may connect."""
        if key in self.keys:
            return True
        self.refused += 1
        now = self._clock()
        self._logged = {k: t for k, t in self._logged.items() if now - t < REFUSED_LOG_INTERVAL_S}
        if key not in self._logged and len(self._logged) < REFUSED_LOG_KEYS:
            self._logged[key] = now
            log.warning("CURVE client refused", client_key=key.decode("ascii", "replace"),
                        clients_dir=str(self.clients_dir), endpoint=self.endpoint, refused=self.refused,
                        note="its public key is not in the clients directory; logged once a minute per key")
        return False


RecordHook = Callable[[Decision, int, int, "np.ndarray | None", "np.ndarray | None"], None]
"""(decision, decision seq, reject seq or -1, image, masks) -> None: see `Publisher(record=)`."""


class Publisher:
    """The publisher thread; see the module docstring.

    endpoint: where the PUB socket binds (`tcp://host:0` or `tcp://host:*` = a free port; the bound
        endpoint is `self.endpoint` after start()). station: the station name in every header.
    curve: CurveServer or None. overlay_pass_every: overlay every N-th pass (0 = never).
    heartbeat_interval: seconds between heartbeats. status: callable returning the daemon's status dict.
    queue_size: decisions waiting to be sent. overlay_pool, overlay_shape, jpeg_quality: the
    `OverlayEncoder`'s (slots, (H, W), 1..100). sndhwm: ZeroMQ send high-water mark (messages per subscriber).
    linger_ms: how long stop() lets queued messages flush to connected subscribers.
    record: the station record's hook (`linewatch.record.recorder.Recorder.record`), called in `submit`
        with (decision, its decision seq, its reject seq or -1, image, masks); it must not block. What
        it raises is counted (`record_errors`), never passed on.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        station: str = "station",
        *,
        curve: CurveServer | None = None,
        overlay_pass_every: int = 0,
        heartbeat_interval: float = 1.0,
        status: Callable[[], dict[str, Any]] | None = None,
        queue_size: int = 100_000,
        overlay_pool: int = 8,
        overlay_shape: tuple[int, int] | None = None,
        jpeg_quality: int = 85,
        sndhwm: int = 10_000,
        linger_ms: int = 1000,
        record: RecordHook | None = None,
    ) -> None:
        if not station:
            raise PublisherError("station must be a non-empty string")
        if overlay_pass_every < 0:
            raise PublisherError(f"overlay_pass_every must be >= 0 (0 = never for passes), got {overlay_pass_every}")
        if not (heartbeat_interval > 0 and math.isfinite(heartbeat_interval)):
            raise PublisherError(f"heartbeat_interval must be > 0 seconds, got {heartbeat_interval}")
        if queue_size < 1 or sndhwm < 1 or linger_ms < 0:
            raise PublisherError(
                f"queue_size = {queue_size}, sndhwm = {sndhwm}, linger_ms = {linger_ms}: "
                "queue_size >= 1, sndhwm >= 1 and linger_ms >= 0 are required"
            )
        self.requested_endpoint = endpoint
        self.endpoint: str | None = None
        """The bound endpoint (port resolved when `:0` or `:*` was asked), set by start()."""
        self.station = station
        self.session = new_session_id()
        self.curve = curve
        self.overlay_pass_every = int(overlay_pass_every)
        self.heartbeat_interval = float(heartbeat_interval)
        self._status = status
        self._record = record
        self.record_errors = 0
        self._sndhwm = int(sndhwm)
        self._linger_ms = int(linger_ms)

        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # submit(): counters, seq, overlay slots, enqueue order
        self._seq_decision = 0
        self._seq_reject = 0
        self._passes_seen = 0
        self._counters: dict[str, int] = dict.fromkeys(
            ("decisions", "passes", "rejects", "failsafe", "drops", "late", "overlays", "overlays_skipped",
             "queue_overflow"), 0
        )  # overlays_skipped: the encoder's count, read by counters()
        try:
            self._overlays = OverlayEncoder(overlay_pool, overlay_shape, jpeg_quality, deliver=self._deliver_overlay)
        except ValueError as exc:
            raise PublisherError(str(exc)) from exc
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._t_start = time.monotonic()
        self._stopping = False
        self._drain = True
        self._clients: _CurveClients | None = None

    # ------------------------------------------------------------------ caller side

    def start(self) -> Publisher:
        """Start the thread and bind; returns once bound. Raises PublisherError if binding fails."""
        if self._thread is not None:
            raise PublisherError("Publisher.start() called twice")
        if self.curve is not None:
            _load_server_keys(self.curve)  # fail here, in the caller, with a clear message
            if self.curve.clients_dir is not None:
                self._clients = _CurveClients(_load_client_keys(self.curve.clients_dir), self.curve.clients_dir,
                                              self.requested_endpoint)
        self._t_start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="linewatch-publisher", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise PublisherError(f"cannot bind the publisher to {self.requested_endpoint}: {self._start_error}")
        self._overlays.start()
        return self

    def submit(self, decision: Decision, image: np.ndarray | None = None, masks: np.ndarray | None = None) -> None:
        """Queue one decision for publishing (thread-safe, never blocks).

        image/masks are only used (copied) when this decision gets an overlay; they may be views into
        buffers the caller reuses right after this call returns.
        """
        reject = bool(decision.reject)
        with self._lock:
            c = self._counters
            c["decisions"] += 1
            if reject:
                c["rejects"] += 1
            else:
                c["passes"] += 1
            if decision.failsafe:
                c["failsafe"] += 1
            if REASON_DROPPED in decision.reasons:
                c["drops"] += 1
            if REASON_LATE in decision.reasons:
                c["late"] += 1
            seq_d = self._seq_decision
            self._seq_decision += 1
            seq_r = -1
            if reject:
                seq_r = self._seq_reject
                self._seq_reject += 1
            if self._record is not None:  # in seq order, before the queue can refuse the decision
                try:
                    self._record(decision, seq_d, seq_r, image, masks)
                except Exception:
                    self.record_errors += 1
            slot = -1
            if self._wants_overlay(reject) and image is not None:
                slot = self._overlays.copy_in(image, masks)
            try:
                self._queue.put_nowait(_DecisionItem(seq_d, seq_r, decision))
            except queue.Full:
                c["queue_overflow"] += 1
                if slot >= 0:
                    self._overlays.release(slot)
                return
            if slot >= 0:
                self._overlays.submit(decision, slot)

    @property
    def curve_refused(self) -> int:
        """CURVE handshakes refused because the client's key is not in `clients_dir` (0 without one)."""
        return self._clients.refused if self._clients is not None else 0

    def counters(self) -> dict[str, int]:
        """A snapshot of the publisher's own counters (with its overlay encoder's `overlays_skipped`)."""
        with self._lock:
            c = dict(self._counters)
            c["overlays_skipped"] = self._overlays.skipped
        return c

    def stop(self, drain: bool = True, timeout: float = 5.0) -> None:
        """Stop the thread. drain=True publishes everything queued first. Returns within ~timeout + linger."""
        if self._thread is None:
            return
        self._drain = drain
        if not drain:
            self._stopping = True
        deadline = time.monotonic() + timeout
        # first the overlays still to encode (drain=False: none): they go into the queue
        self._overlays.stop(drain, deadline - time.monotonic())
        self._stopping = True
        timeout = max(deadline - time.monotonic(), 0.0)
        try:
            self._queue.put(_STOP, timeout=max(timeout, 0.0))
        except queue.Full:
            self._drain = False  # cannot even queue the sentinel: the thread sees _stopping and exits
        self._thread.join(timeout + self._linger_ms / 1000.0 + 1.0)
        if self._thread.is_alive():
            log.warning("publisher thread did not stop in time", timeout_s=timeout)
        self._thread = None

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers (under _lock)

    def _wants_overlay(self, reject: bool) -> bool:
        if reject:
            return True
        self._passes_seen += 1
        n = self.overlay_pass_every
        return n > 0 and self._passes_seen % n == 0

    # ------------------------------------------------------------------ publisher thread

    def _run(self) -> None:
        try:
            import zmq

            ctx = zmq.Context()
        except Exception as exc:
            self._start_error = exc
            self._started.set()
            return
        auth = None
        sock = None
        try:
            try:
                sock = ctx.socket(zmq.PUB)
                sock.setsockopt(zmq.SNDHWM, self._sndhwm)
                sock.setsockopt(zmq.LINGER, self._linger_ms)
                if self.curve is not None:
                    from zmq.auth.thread import ThreadAuthenticator

                    public, secret = _load_server_keys(self.curve)
                    auth = ThreadAuthenticator(ctx)
                    auth.start()
                    if self._clients is not None:
                        auth.configure_curve_callback(domain="*", credentials_provider=self._clients)
                    else:
                        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
                    sock.curve_secretkey = secret
                    sock.curve_publickey = public
                    sock.curve_server = True
                endpoint = self.requested_endpoint
                if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
                    endpoint = endpoint[:-2] + ":*"
                sock.bind(endpoint)
                self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
                if self._clients is not None:
                    self._clients.endpoint = self.endpoint
            except Exception as exc:
                self._start_error = exc
                return
            finally:
                self._started.set()
            log.info("publisher bound", endpoint=self.endpoint, session=self.session, curve=self.curve is not None)
            self._loop(sock)
        except Exception:  # never die silently: the subscribers' heartbeat watchdog will fire, but log why
            log.exception("publisher thread failed")
        finally:
            if sock is not None:
                sock.close(linger=self._linger_ms)
            if auth is not None:
                auth.stop()
            ctx.term()

    def _loop(self, sock: Any) -> None:
        seq_overlay = 0
        seq_heartbeat = 0
        next_beat = time.monotonic()
        last_beat_t = time.monotonic()
        last_beat_decisions = 0
        while True:
            now = time.monotonic()
            if now >= next_beat:
                decisions = self.counters()["decisions"]
                fps = (decisions - last_beat_decisions) / max(now - last_beat_t, 1e-9)
                last_beat_t, last_beat_decisions = now, decisions
                self._send(sock, self._heartbeat(seq_heartbeat, fps, None))
                seq_heartbeat += 1
                next_beat = now + self.heartbeat_interval
            if self._stopping and not self._drain:
                break
            try:
                entry = self._queue.get(timeout=max(next_beat - time.monotonic(), 0.0))
            except queue.Empty:
                continue
            if entry is _STOP:
                break
            if isinstance(entry, EncodedOverlay):
                header = overlay_header(entry.decision, station=self.station, session=self.session, seq=seq_overlay,
                                        width=entry.width, height=entry.height, t_sent_ns=time.time_ns())
                self._send(sock, encode(header, entry.jpeg))
                seq_overlay += 1
                with self._lock:
                    self._counters["overlays"] += 1
                continue
            d = entry.decision
            t = time.time_ns()
            self._send(sock, encode(decision_header(
                d, topic=TOPIC_DECISION, station=self.station, session=self.session, seq=entry.seq_decision,
                t_sent_ns=t)))
            if entry.seq_reject >= 0:
                self._send(sock, encode(decision_header(
                    d, topic=TOPIC_REJECT, station=self.station, session=self.session, seq=entry.seq_reject,
                    t_sent_ns=t)))
        # final heartbeat: tells subscribers this is a clean stop, not a crash, and how many messages of
        # each topic the session numbered (a subscriber compares with its last seq: tail loss shows)
        with self._lock:
            sent = {TOPIC_DECISION: self._seq_decision, TOPIC_REJECT: self._seq_reject}
        sent[TOPIC_OVERLAY] = seq_overlay
        self._send(sock, self._heartbeat(seq_heartbeat, 0.0, "stopping", sent=sent))

    def _deliver_overlay(self, item: EncodedOverlay) -> bool:
        """The encoder thread's hand-back: an encoded overlay joins the send queue (False when full)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def _heartbeat(self, seq: int, fps: float, force_status: str | None,
                   sent: dict[str, int] | None = None) -> list[bytes]:
        """A heartbeat message; with `sent`, the session's final one."""
        extra: dict[str, Any] = {}
        status = "ok"
        if self._status is not None:
            try:
                extra = dict(self._status() or {})
            except Exception as exc:
                log.warning("status() raised; heartbeat marked degraded", error=str(exc))
                status = "degraded"
        counters = self.counters()
        status = str(extra.get("status", status))
        if status not in HEARTBEAT_STATUSES:
            status = "degraded"
        if counters["queue_overflow"] and status == "ok":
            status = "degraded"
        if force_status is not None:
            status = force_status
        merged = dict(counters)
        for k, v in dict(extra.get("counters") or {}).items():
            try:
                merged[str(k)] = max(int(v), 0)
            except (TypeError, ValueError):
                continue
        fps_value = extra.get("fps", fps)
        try:
            fps_value = max(float(fps_value), 0.0)
            if not math.isfinite(fps_value):
                fps_value = 0.0
        except (TypeError, ValueError):
            fps_value = fps
        return encode(heartbeat_header(
            station=self.station, session=self.session, seq=seq, status=status,
            uptime_s=time.monotonic() - self._t_start, fps=fps_value, counters=merged,
            cameras=dict(extra.get("cameras") or {}), interval_s=self.heartbeat_interval,
            version=__version__, t_sent_ns=time.time_ns(), final=sent is not None, sent=sent,
            pid=os.getpid(), model=extra.get("model"), reload=extra.get("reload"), archive=extra.get("archive"),
        ))

    @staticmethod
    def _send(sock: Any, frames: list[bytes]) -> None:
        sock.send_multipart(frames, copy=False)  # a PUB socket never blocks: at SNDHWM it drops
