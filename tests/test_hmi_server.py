"""The operator page's server (linewatch.hmi.server) under Starlette's TestClient, over an aggregator fed a
recorded message stream: the status JSON, Server-Sent Events, overlays, the page and its local assets, the
station record's rejects and kept frames (confined to the archive folder), and no route that changes anything."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from hmi_stream import Clock, Stream, aggregator, feed  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from linewatch.hmi.server import STATIC_DIR, create_app  # noqa: E402


@pytest.fixture
def fed():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    feed(agg, s.heartbeat())
    for i in range(8):
        feed(agg, s.decision("cam0", i, reasons=("anomaly",) if i % 4 == 0 else ("pass",)))
    feed(agg, s.overlay("cam0", 4, reject=True, jpeg=b"\xff\xd8reject-4"))
    return c, agg, s


def test_api_status_reports_the_counters_cameras_heartbeat_age_and_yield(fed):
    c, agg, _ = fed
    c.tick(0.5)
    with TestClient(create_app(agg)) as client:
        r = client.get("/api/status")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    st = r.json()
    assert (st["decisions"], st["rejects"], st["passes"]) == (8, 2, 6)
    assert st["by_reason"] == {"anomaly": 2}
    assert set(st["cameras"]) == {"cam0"} and st["cameras"]["cam0"]["state"] == "up"
    assert st["heartbeat_age_s"] == pytest.approx(0.5)
    assert st["yield"]["since_start"]["yield_pct"] == 75.0
    assert st["banner"]["state"] == "ok" and st["archive_dir"] is None and "reject_reasons" not in st


def test_events_stream_status_snapshots_as_server_sent_events(fed):
    _, agg, _ = fed
    with TestClient(create_app(agg, events_per_s=50)) as client:
        r = client.get("/events?count=3")
        bad = client.get("/events?count=zero")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in r.text.split("\n\n") if line]
    assert len(events) == 3 and all(e["decisions"] == 8 for e in events)
    assert bad.status_code == 400 and bad.json()["error"] == "count='zero': must be an integer in 1..1000000000"


def test_a_new_reject_is_pushed_at_once_without_waiting_for_the_refresh(fed):
    """The refresh is 1000 s here: the second event can only come within the test's bound because a reject
    arrived (before the change, the stream slept the whole period: this test hung until its bound)."""
    import threading

    _, agg, s = fed
    got: list[dict] = []

    def read() -> None:
        with TestClient(create_app(agg, events_per_s=0.001, reject_events_per_s=100)) as client:
            with client.stream("GET", "/events?count=2") as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        got.append(json.loads(line[len("data: "):]))
                        if len(got) == 1:
                            feed(agg, s.decision("cam0", 20, reasons=("pass",)))
                            feed(agg, s.decision("cam0", 21, reasons=("adhesive-missing",)))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), f"no event pushed for the reject ({len(got)} event(s))"
    assert [e["rejects"] for e in got] == [2, 3] and got[1]["decisions"] == 10


def test_overlay_serves_the_cameras_jpeg_and_404_before_the_first(fed):
    _, agg, _ = fed
    with TestClient(create_app(agg)) as client:
        r = client.get("/overlay/cam0.jpg")
        missing = client.get("/overlay/cam9.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == b"\xff\xd8reject-4" and r.headers["x-frame-id"] == "4" and r.headers["x-decision"] == "reject"
    assert missing.status_code == 404 and "cam9" in missing.json()["error"]


def test_the_page_and_its_assets_come_from_the_package_and_load_nothing_from_outside(fed):
    _, agg, _ = fed
    with TestClient(create_app(agg)) as client:
        page = client.get("/")
        assets = {name: client.get(f"/static/{name}") for name in ("app.js", "app.css")}
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js">' in page.text and 'href="/static/app.css"' in page.text
    assert all(r.status_code == 200 for r in assets.values())
    for f in STATIC_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(\s*['\"]?http", text), f.name


def test_no_route_changes_anything(fed):
    _, agg, _ = fed
    with TestClient(create_app(agg)) as client:
        for path in ("/", "/api/status", "/events", "/overlay/cam0.jpg", "/api/rejects", "/archive/x.jpg"):
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                assert client.request(method, path).status_code == 405, (method, path)


def test_without_an_archive_the_rejects_and_archive_routes_say_so(fed):
    _, agg, _ = fed
    with TestClient(create_app(agg)) as client:
        r = client.get("/api/rejects")
        f = client.get("/archive/images/x.jpg")
    assert r.status_code == 404 and "--archive DIR" in r.json()["error"]
    assert f.status_code == 404


@pytest.fixture
def archive(tmp_path):
    """A station record of 12 decisions (every 4th an anomaly reject, the 7th late) with kept frames."""
    from linewatch.pipeline.decide import Decider
    from linewatch.profile import ArchiveConfig
    from linewatch.record.read import query
    from linewatch.record.recorder import Recorder

    root = tmp_path / "archive"
    rec = Recorder(ArchiveConfig(dir=str(root), pass_every=0), station="line-3").start("d" * 32)
    dec = Decider((0.5, 0.5), "present", deadline_ns=10**12)
    t0 = time.time_ns()
    seq_r = 0
    for i in range(12):
        t = t0 + i * 40_000_000
        camera = "cam1" if i == 8 else "cam0"
        if i == 7:
            d = dec.decide(camera, i, t, None, "late", now_ns=t + 1_000_000)
        else:
            d = dec.decide(camera, i, t, (0.9, 0.8) if i % 4 == 0 else (0.1, 0.8), now_ns=t + 5_000_000)
        r = -1
        if d.reject:
            r, seq_r = seq_r, seq_r + 1
        masks = np.zeros((2, 8, 12), np.float32)
        rec.record(d, i, r, np.full((64, 96, 3), i, np.uint8), masks)
    rec.stop()
    assert len(query(root)) == 12
    return root


def test_api_rejects_lists_the_newest_rejects_first_with_their_frames_filtered_by_reason_and_camera(fed, archive):
    _, agg, _ = fed
    with TestClient(create_app(agg, archive=archive)) as client:
        every = client.get("/api/rejects").json()["rejects"]
        late = client.get("/api/rejects?reason=late").json()["rejects"]
        cam1 = client.get("/api/rejects?camera=cam1&limit=1").json()["rejects"]
        two = client.get("/api/rejects?limit=2").json()["rejects"]
        bad = client.get("/api/rejects?limit=5000")
        frame = client.get(every[0]["image_url"])
        mask = client.get(every[0]["mask_urls"]["anomaly"])
        status = client.get("/api/status").json()
    assert [r["frame_id"] for r in every] == [8, 7, 4, 0]
    assert [r["frame_id"] for r in late] == [7] and [r["frame_id"] for r in cam1] == [8]
    assert [r["frame_id"] for r in two] == [8, 7]
    assert bad.status_code == 400 and bad.json()["error"] == "limit='5000': must be an integer in 1..1000"
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg" and frame.content[:2] == b"\xff\xd8"
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    assert status["archive_dir"] == str(archive)
    assert "late" in status["reject_reasons"] and "anomaly" in status["reject_reasons"]  # the gallery's filter
    assert "pass" not in status["reject_reasons"]


def test_an_unreadable_station_record_answers_503_naming_the_folder_and_the_page_goes_on(fed, tmp_path):
    from linewatch.record.journal import db_path

    _, agg, _ = fed
    root = tmp_path / "record"
    root.mkdir()
    db_path(root).write_bytes(b"this is not an SQLite database" * 100)
    with TestClient(create_app(agg, archive=root)) as client:
        r = client.get("/api/rejects")
        status = client.get("/api/status")
    assert r.status_code == 503 and str(root) in r.json()["error"]
    assert status.status_code == 200 and status.json()["archive_dir"] == str(root)


def test_archive_serves_only_frames_and_masks_inside_the_archive_folder(fed, archive, tmp_path):
    _, agg, _ = fed
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8outside")
    (archive / "images" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    with TestClient(create_app(agg, archive=archive)) as client:
        for path in ("../secret.jpg", "images/../../secret.jpg", "%2e%2e/secret.jpg", "images/link.jpg",
                     "journal.sqlite", "images/nothing.jpg", "/etc/passwd"):
            r = client.get(f"/archive/{path}")
            assert r.status_code == 404, path
            assert b"outside" not in r.content


def test_the_page_subscribes_to_every_topic_but_reject_which_repeats_decisions():
    from linewatch.hmi.server import HMI_TOPICS
    from linewatch.protocol import TOPIC_REJECT, TOPICS

    assert set(HMI_TOPICS) == set(TOPICS) - {TOPIC_REJECT} and len(HMI_TOPICS) == len(TOPICS) - 1
