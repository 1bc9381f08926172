"""The operator page's web server: Starlette routes over an `Aggregator` (the `hmi` extra).

`create_app(agg, archive=None)` is the app (tests drive it with Starlette's TestClient); `serve(...)`
subscribes to a daemon (`linewatch.subscribe.Subscriber`, `HMI_TOPICS`, in its own thread, feeding the
aggregator) and runs the app under uvicorn until SIGINT/SIGTERM. The daemon's hot path is untouched:
this is one more subscriber, like a gateway.

Routes, all GET but one (read-only by default: no route changes anything; any other method is 405):
- `/`: the page; `/static/<file>`: its assets, from the package only (no CDN, no external font);
- `/events`: Server-Sent Events, `data: <status JSON>`: one every 1/`events_per_s` s (1 s), and one at
  once (at most `reject_events_per_s` a second) when a reject arrived, so a reject reaches the page
  without waiting for the next refresh: the aggregator's `on_reject` wakes the waiting streams
  (`loop.call_soon_threadsafe`, once however many rejects came meanwhile); nothing polls, so an idle
  stream costs one wake-up a second; every client gets the same text, made at most once per
  `SSE_POLL_S` however many clients there are (`?count=N`: N, then the stream ends);
- `/api/status`: the status JSON (`Aggregator.snapshot`: `decisions`, `rejects`, `passes`, `by_reason`,
  `cameras`, `heartbeat_age_s`, `yield`, `banner`, ...);
- `/overlay/<camera>.jpg`: the camera's overlay JPEG (404 before the first);
- with `archive` (the station record's folder, docs/record.md): `/api/rejects?reason=&camera=&limit=`
  (the newest `limit` rejects of the journal, newest first, default 50, 1..1000) and `/archive/<path>`,
  a kept frame or mask (`.jpg`/`.png` inside the archive folder only; anything else is 404).
  Without `archive` both answer 404 saying so.
- `POST /api/thresholds`: only with `changes` (a `Changes`: `linewatch hmi --allow-changes`); without it
  405 saying changes are off, and nothing is read or written. With it: header `Authorization: Bearer
  <token>` (`hmac.compare_digest`; 401 when missing or wrong), body JSON {"anomaly": x?, "adhesive": y?}
  (each a number in [0, 1]; 400 naming the value and the range otherwise; an absent head keeps its
  value). The profile's `[decision]` thresholds are rewritten (`linewatch.profile.rewrite_thresholds`,
  written atomically: a temporary file in the same folder, then a rename) and the file must validate
  with `load_profile` afterwards, else the old text is put back and the answer is 500 naming why. Then
  SIGHUP goes to the daemon's pid from its latest heartbeat (`Changes.signal`, injected in tests), only
  when the daemon's endpoint is on this host (`ipc://`, or a loopback `tcp://` host); otherwise, or with
  no pid yet, or when the signal fails, 409 saying the file was written and the daemon must be reloaded
  on its host (`linewatch reload`). 200: {"old", "new", "pid", "signalled": true, "profile"}. One
  structured log line per change (`thresholds changed`: client address, old, new, pid, signalled).
  Changes are serialised (one at a time).
`/api/status` (and each `/events` snapshot) adds `archive_dir` and `changes` (true when the POST is on), and
with `archive` `reject_reasons` (the reasons a reject can name: the gallery's filter).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from linewatch import HEADS, atomicfile, jsonfile
from linewatch.hmi.aggregate import Aggregator
from linewatch.protocol import REASON_PASS, REASONS

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
REJECTS_LIMIT = (1, 1000)
REJECTS_DEFAULT = 50
NO_STORE = {"Cache-Control": "no-store"}
THRESHOLD_RANGE = (0.0, 1.0)
CHANGES_OFF = ("read-only: changes are off (start `linewatch hmi` with --allow-changes --profile FILE "
               "--token-file FILE)")


def send_sighup(pid: int) -> None:
    """SIGHUP to `pid` (what `linewatch reload` and `systemctl reload` do) after checking, where /proc shows
    it, that it is a linewatch process; OSError naming why otherwise."""
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except OSError:
        cmdline = b"linewatch"  # not Linux, or not visible: trust the heartbeat (as `linewatch reload` does)
    if b"linewatch" not in cmdline:
        raise OSError(f"pid {pid} from the heartbeat is not a linewatch process on this host")
    os.kill(int(pid), signal.SIGHUP)


def is_local_endpoint(url: str) -> bool:
    """True when the daemon's endpoint `url` is on this host: `ipc://`/`inproc://`, or `tcp://` with a
    loopback host (127.0.0.0/8, ::1, localhost). Any other host name is taken as another machine."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]") if ":" in rest else rest
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Changes:
    """What `POST /api/thresholds` needs (module docstring): the station profile the daemon runs, the
    token, the daemon's endpoint (`connect`: is it on this host?) and how to signal a pid."""

    profile: Path
    token: str
    connect: str
    signal: Callable[[int], None] = send_sighup


class _ChangeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _thresholds_body(body: Any) -> dict[str, float]:
    """The heads to set from a request body; _ChangeError(400) naming the value and what is allowed."""
    lo, hi = THRESHOLD_RANGE
    example = '{"anomaly": 0.6, "adhesive": 0.7}'
    if not isinstance(body, dict) or not body:
        raise _ChangeError(400, f"the body must be a JSON object with {' and/or '.join(HEADS)}, e.g. {example}")
    unknown = sorted(set(body) - set(HEADS))
    if unknown:
        raise _ChangeError(400, f"unknown key(s) {', '.join(map(repr, unknown))}: allowed are {', '.join(HEADS)}")
    out: dict[str, float] = {}
    for head, v in body.items():
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi
        if not ok:
            raise _ChangeError(400, f"{head}={jsonfile.dumps(v)}: must be a number in [{lo:g}, {hi:g}]")
        out[head] = float(v)
    return out


def rewrite_profile(profile: Path, heads: dict[str, float]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Set `heads` in the profile's [decision] thresholds (the others kept): (old, new) thresholds as read
    back by `load_profile` (None: the profile leaves that head to the model's recommended threshold).
    _ChangeError(500) naming why when it cannot be done; the file is then as it was."""
    from linewatch.errors import ProfileError
    from linewatch.profile import load_profile, rewrite_thresholds

    path = profile.resolve()  # a symlinked profile: the rename replaces its target, not the link
    try:
        old_text = path.read_text(encoding="utf-8")
        old_t = load_profile(path).decision.thresholds
    except (OSError, ProfileError) as exc:
        raise _ChangeError(500, f"the profile {profile} cannot be read or does not validate now, nothing "
                                f"written: {exc}") from exc
    old = {h: _maybe_float(getattr(old_t, h)) for h in HEADS}
    try:
        new_text = rewrite_thresholds(old_text, heads)
    except ProfileError as exc:
        raise _ChangeError(500, f"the profile {profile}, nothing written: {exc}") from exc
    try:
        atomicfile.write_text(path, new_text)
    except OSError as exc:
        raise _ChangeError(500, f"cannot write the profile {profile} ({exc.strerror or exc}): nothing "
                                "changed") from exc
    try:
        new_t = load_profile(path).decision.thresholds
    except ProfileError as exc:
        atomicfile.write_text(path, old_text)
        raise _ChangeError(500, f"the rewritten profile {profile} does not validate, the old one is back: "
                                f"{exc}") from exc
    return old, {h: _maybe_float(getattr(new_t, h)) for h in HEADS}


def _maybe_float(v: float | None) -> float | None:
    return None if v is None else float(v)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def _int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer query parameter in [lo, hi]; ValueError naming it, its value and the range."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        v = lo - 1
    if not lo <= v <= hi:
        raise ValueError(f"{name}={raw!r}: must be an integer in {lo}..{hi}")
    return v


def archive_file(root: Path, rel: str) -> Path | None:
    """The file `rel` names inside `root` (symlinks resolved), or None when it is outside, missing or not
    a frame or mask image."""
    base = root.resolve()
    try:
        p = (base / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if not p.is_relative_to(base) or p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
        return None
    return p


def _reject_row(row: dict[str, Any]) -> dict[str, Any]:
    from linewatch.record.images import mask_paths

    image = row.get("image")
    out = dict(row)
    out["image_url"] = f"/archive/{image}" if image else None
    out["mask_urls"] = {h: f"/archive/{m}" for h, m in mask_paths(image).items()} if image else {}
    return out


HMI_TOPICS = ("decision", "overlay", "heartbeat")
"""What the page subscribes to (protocol.TOPIC_*): the reject topic repeats decisions it already has."""
REJECT_REASONS = [r for r in REASONS if r != REASON_PASS]
"""The reasons a reject can name (joined by "+"), for the gallery's filter: protocol.REASONS less "pass"."""
SSE_POLL_S = 0.05
"""How often each event stream looks for a new reject, and how long one snapshot text is shared."""


def create_app(agg: Aggregator, *, archive: str | Path | None = None, events_per_s: float = 1.0,
               reject_events_per_s: float = 5.0,
               on_startup: Callable[[], Any] | None = None, on_shutdown: Callable[[], Any] | None = None,
               changes: Changes | None = None) -> Starlette:
    """The app over `agg` (module docstring); `on_startup`/`on_shutdown` run in its lifespan; `changes`
    turns `POST /api/thresholds` on (None: read-only)."""
    for name, v in (("events_per_s", events_per_s), ("reject_events_per_s", reject_events_per_s)):
        if not v > 0:
            raise ValueError(f"{name} {v}: must be > 0")
    if changes is not None and not changes.token:
        raise ValueError("changes: the token must not be empty")
    root = None if archive is None else Path(archive)
    period = 1.0 / events_per_s
    min_gap = min(period, 1.0 / reject_events_per_s)
    shared: list[Any] = [-1.0, "", -1]  # (monotonic time made, text, rejects then): one text for every client
    # The push of a reject: the subscriber's thread (agg.on_reject) schedules one wake-up on the server's
    # loop; every stream waiting then sends. `push` = [loop, the Event streams wait on, waiting streams,
    # a wake-up already scheduled].
    push: list[Any] = [None, None, 0, False]

    def wake() -> None:  # on the loop
        ev = push[1]
        push[1], push[3] = asyncio.Event(), False
        if ev is not None:
            ev.set()

    def on_reject() -> None:  # in the subscriber's thread
        loop = push[0]
        if loop is None or not push[2] or push[3]:
            return
        push[3] = True
        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:  # the loop closed (shutdown)
            push[3] = False

    agg.on_reject = on_reject

    def snapshot_text() -> str:
        now, rejects = time.monotonic(), agg.rejects
        if now - shared[0] >= SSE_POLL_S or rejects != shared[2]:  # a pushed reject is always in it
            shared[0], shared[2] = now, rejects
            shared[1] = f"data: {jsonfile.dumps(snapshot(), separators=(',', ':'))}\n\n"
        return str(shared[1])
    change_lock = asyncio.Lock()

    def snapshot() -> dict[str, Any]:
        snap = agg.snapshot()
        snap["archive_dir"] = None if root is None else str(root)
        snap["changes"] = changes is not None
        if root is not None:  # the gallery's reason filter: any reason a reject can have
            snap["reject_reasons"] = REJECT_REASONS
        return snap

    async def page(_: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_STORE)

    async def status(_: Request) -> Response:
        return JSONResponse(jsonfile.clean(snapshot()), headers=NO_STORE)  # NaN -> null

    async def events(request: Request) -> Response:
        try:
            count = _int_param(request, "count", None, 1, 10**9)
        except ValueError as exc:
            return _error(400, str(exc))

        async def stream() -> AsyncIterator[str]:
            if push[0] is None:
                push[0], push[1] = asyncio.get_running_loop(), asyncio.Event()
            sent = 0
            while count is None or sent < count:
                ev, rejects, t_sent = push[1], agg.rejects, time.monotonic()
                yield snapshot_text()
                sent += 1
                if count is not None and sent >= count:
                    break
                # the next: after `period`, or at a new reject (not sooner than min_gap after this one)
                remaining = period - (time.monotonic() - t_sent)
                push[2] += 1  # before the check: a reject counted after it schedules a wake-up
                try:
                    if remaining > 0 and agg.rejects == rejects:
                        async with asyncio.timeout(remaining):  # no task per wait (wait_for makes one)
                            await ev.wait()
                except TimeoutError:
                    pass
                finally:
                    push[2] -= 1
                gap = min_gap - (time.monotonic() - t_sent)
                if gap > 0:
                    await asyncio.sleep(gap)
                # a client gone: StreamingResponse ends the stream (its disconnect listener, or the
                # failed send), so no per-event `request.is_disconnected()` here

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    async def overlay(request: Request) -> Response:
        camera = request.path_params["camera"]
        got = agg.overlay(camera)
        if got is None:
            return _error(404, f"no overlay of camera {camera!r} yet")
        jpeg, header = got
        return Response(jpeg, media_type="image/jpeg",
                        headers={**NO_STORE, "X-Frame-Id": str(header.get("frame_id")),
                                 "X-Decision": str(header.get("decision"))})

    async def rejects(request: Request) -> Response:
        if root is None:
            return _error(404, "no station record: start `linewatch hmi` with --archive DIR")
        from linewatch.record.read import Filter, query

        try:
            limit = _int_param(request, "limit", REJECTS_DEFAULT, *REJECTS_LIMIT)
        except ValueError as exc:
            return _error(400, str(exc))
        flt = Filter(camera=request.query_params.get("camera") or None,
                     reason=request.query_params.get("reason") or None, decision="reject")
        try:
            rows = await asyncio.to_thread(query, root, flt, limit)
        except (sqlite3.Error, OSError, Exception) as exc:  # no journal yet, or unreadable
            return _error(503, f"station record {root} cannot be read: {exc}")
        return JSONResponse(jsonfile.clean({"rejects": [_reject_row(r) for r in reversed(rows)]}), headers=NO_STORE)

    async def archived(request: Request) -> Response:
        if root is None:
            return _error(404, "no station record: start `linewatch hmi` with --archive DIR")
        rel = request.path_params["path"]
        p = archive_file(root, rel)
        if p is None:
            return _error(404, f"{rel!r}: no kept frame or mask of that name in the station record")
        return FileResponse(p, media_type=IMAGE_SUFFIXES[p.suffix.lower()])

    async def thresholds(request: Request) -> Response:
        if changes is None:
            return _error(405, CHANGES_OFF)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), changes.token.encode()):
            return JSONResponse({"error": "a valid token is needed: header `Authorization: Bearer <token>` (the "
                                          "contents of linewatch hmi's --token-file)"},
                                status_code=401, headers={**NO_STORE, "WWW-Authenticate": "Bearer"})
        try:
            try:
                body = await request.json()
            except ValueError as exc:
                raise _ChangeError(400, f"the body is not JSON ({exc}): send e.g. "
                                        '{"anomaly": 0.6, "adhesive": 0.7}') from exc
            heads = _thresholds_body(body)
            async with change_lock:
                old, new = await asyncio.to_thread(rewrite_profile, changes.profile, heads)
                hb = agg.heartbeat() or {}
                pid = hb.get("pid")
                signalled, why = False, None
                if not is_local_endpoint(changes.connect):
                    why = f"the daemon ({changes.connect}) runs on another host"
                elif not pid:
                    why = "no heartbeat with the daemon's pid yet"
                else:
                    try:
                        changes.signal(int(pid))
                        signalled = True
                    except OSError as exc:
                        why = f"cannot signal pid {pid} ({exc.strerror or exc})"
        except _ChangeError as exc:
            return _error(exc.status, str(exc))
        client = request.client.host if request.client else None
        from linewatch.logs import get_logger

        get_logger(__name__).info("thresholds changed", client=client, profile=str(changes.profile),
                                  old=old, new=new, pid=pid, signalled=signalled, reason=why)
        out = {"old": old, "new": new, "pid": pid, "signalled": signalled, "profile": str(changes.profile)}
        if why is not None:
            out["error"] = (f"{changes.profile} was written, but the daemon was not reloaded: {why}. Reload it "
                            f"on its host: linewatch reload --profile {changes.profile}")
            return JSONResponse(out, status_code=409, headers=NO_STORE)
        return JSONResponse(out, headers=NO_STORE)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            if on_shutdown is not None:
                on_shutdown()

    routes = [
        Route("/", page),
        Route("/events", events),
        Route("/api/status", status),
        Route("/api/rejects", rejects),
        Route("/api/thresholds", thresholds, methods=["POST"]),
        Route("/overlay/{camera}.jpg", overlay),
        Route("/archive/{path:path}", archived),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(connect: str, *, host: str, port: int, archive: str | Path | None = None, curve: Any = None,
          shifts: tuple[str, ...] | None = None, heartbeat_timeout: float | None = None,
          ready: Callable[[str], Any] | None = None, changes: Changes | None = None, nice: int = 0,
          idle: bool = False) -> None:
    """Subscribe to the daemon at `connect` and serve the page on host:port until SIGINT/SIGTERM.
    `ready(url)` is called once the server listens; `changes` as in `create_app`; `nice`: this process's
    CPU priority is lowered by that much first (`linewatch hmi --nice`; a refusal is a warning on stderr);
    `idle`: the process (and every thread it starts) runs at SCHED_IDLE (`linewatch hmi --idle`)."""
    import uvicorn

    if idle:
        try:  # every thread there is already (e.g. numpy's BLAS pool), and so every thread started later
            tasks = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
            for tid in tasks:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError) as exc:  # not Linux, or forbidden: the page still works
            print(f"linewatch hmi: --idle not applied ({getattr(exc, 'strerror', None) or exc})", file=sys.stderr)

    if nice:
        try:
            os.nice(nice)
        except OSError as exc:  # e.g. a sandbox that forbids it: the page still works
            print(f"linewatch hmi: --nice {nice} not applied ({exc.strerror or exc})", file=sys.stderr)

    from linewatch.record.read import DEFAULT_SHIFTS
    from linewatch.subscribe import Subscriber

    agg = Aggregator(shifts=shifts or DEFAULT_SHIFTS, heartbeat_timeout=heartbeat_timeout)
    # Not the reject topic: every reject is a decision too (half the messages again, for nothing).
    sub = Subscriber(connect, HMI_TOPICS, on_message=agg.feed, on_error=agg.protocol_error,
                     heartbeat_timeout=heartbeat_timeout or 3.0, curve=curve)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if ready is not None and self.started:
                bound = [s.getsockname() for srv in self.servers for s in (srv.sockets or ())]
                url_port = bound[0][1] if bound else port
                ready(f"http://{host}:{url_port}/")

    app = create_app(agg, archive=archive, on_startup=sub.start, on_shutdown=sub.stop, changes=changes)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    try:
        _Server(config).run()
    finally:
        sub.stop()
