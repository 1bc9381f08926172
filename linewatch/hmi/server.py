"""The operator page's web server: Starlette routes over an `Aggregator` (the `hmi` extra).

`create_app(agg, archive=None)` is the app (tests drive it with Starlette's TestClient); `serve(...)`
subscribes to a daemon (`linewatch.subscribe.Subscriber`, all topics, in its own thread, feeding the
aggregator) and runs the app under uvicorn until SIGINT/SIGTERM. The daemon's hot path is untouched:
this is one more subscriber, like a gateway.

Routes, all GET (read-only: no route changes anything; any other method is 405):
- `/`: the page; `/static/<file>`: its assets, from the package only (no CDN, no external font);
- `/events`: Server-Sent Events, one `data: <status JSON>` every 1/`events_per_s` s (`?count=N`: N, then
  the stream ends);
- `/api/status`: the status JSON (`Aggregator.snapshot`: `decisions`, `rejects`, `passes`, `by_reason`,
  `cameras`, `heartbeat_age_s`, `yield`, `banner`, ...);
- `/overlay/<camera>.jpg`: the camera's overlay JPEG (404 before the first);
- with `archive` (the station record's folder, docs/record.md): `/api/rejects?reason=&camera=&limit=`
  (the newest `limit` rejects of the journal, newest first, default 50, 1..1000) and `/archive/<path>`,
  a kept frame or mask (`.jpg`/`.png` inside the archive folder only; anything else is 404).
  Without `archive` both answer 404 saying so.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from linewatch.hmi.aggregate import Aggregator

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
REJECTS_LIMIT = (1, 1000)
REJECTS_DEFAULT = 50
NO_STORE = {"Cache-Control": "no-store"}


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


def create_app(agg: Aggregator, *, archive: str | Path | None = None, events_per_s: float = 4.0,
               on_startup: Callable[[], Any] | None = None, on_shutdown: Callable[[], Any] | None = None) -> Starlette:
    """The app over `agg` (module docstring); `on_startup`/`on_shutdown` run in its lifespan."""
    if not events_per_s > 0:
        raise ValueError(f"events_per_s {events_per_s}: must be > 0")
    root = None if archive is None else Path(archive)
    period = 1.0 / events_per_s

    async def page(_: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_STORE)

    async def status(_: Request) -> Response:
        snap = agg.snapshot()
        snap["archive_dir"] = None if root is None else str(root)
        return JSONResponse(snap, headers=NO_STORE)

    async def events(request: Request) -> Response:
        try:
            count = _int_param(request, "count", None, 1, 10**9)
        except ValueError as exc:
            return _error(400, str(exc))

        async def stream() -> AsyncIterator[str]:
            sent = 0
            while count is None or sent < count:
                snap = agg.snapshot()
                snap["archive_dir"] = None if root is None else str(root)
                yield f"data: {json.dumps(snap, separators=(',', ':'))}\n\n"
                sent += 1
                if count is not None and sent >= count:
                    break
                await asyncio.sleep(period)
                if await request.is_disconnected():
                    break

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
        return JSONResponse({"rejects": [_reject_row(r) for r in reversed(rows)]}, headers=NO_STORE)

    async def archived(request: Request) -> Response:
        if root is None:
            return _error(404, "no station record: start `linewatch hmi` with --archive DIR")
        rel = request.path_params["path"]
        p = archive_file(root, rel)
        if p is None:
            return _error(404, f"{rel!r}: no kept frame or mask of that name in the station record")
        return FileResponse(p, media_type=IMAGE_SUFFIXES[p.suffix.lower()])

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
        Route("/overlay/{camera}.jpg", overlay),
        Route("/archive/{path:path}", archived),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(connect: str, *, host: str, port: int, archive: str | Path | None = None, curve: Any = None,
          shifts: tuple[str, ...] | None = None, heartbeat_timeout: float | None = None,
          ready: Callable[[str], Any] | None = None) -> None:
    """Subscribe to the daemon at `connect` and serve the page on host:port until SIGINT/SIGTERM.
    `ready(url)` is called once the server listens."""
    import uvicorn

    from linewatch.protocol import TOPICS
    from linewatch.record.read import DEFAULT_SHIFTS
    from linewatch.subscribe import Subscriber

    agg = Aggregator(shifts=shifts or DEFAULT_SHIFTS, heartbeat_timeout=heartbeat_timeout)
    sub = Subscriber(connect, TOPICS, on_message=agg.feed, on_error=agg.protocol_error,
                     heartbeat_timeout=heartbeat_timeout or 3.0, curve=curve)

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if ready is not None and self.started:
                bound = [s.getsockname() for srv in self.servers for s in (srv.sockets or ())]
                url_port = bound[0][1] if bound else port
                ready(f"http://{host}:{url_port}/")

    app = create_app(agg, archive=archive, on_startup=sub.start, on_shutdown=sub.stop)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    try:
        _Server(config).run()
    finally:
        sub.stop()
