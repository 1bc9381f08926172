"""The station record on a running daemon: every decision an independent subscriber receives is a journal
row with the same scores; the audit trail has start, reload and stop; after SIGKILL at most the last second
of rows is missing, nothing is torn, and a restart appends under a new session; a broken archive never
stops the decisions."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import stub_model

from linewatch.record import read
from linewatch.record.journal import db_path

zmq = pytest.importorskip("zmq")

PROFILE = """
[station]
name = "record-test"
endpoint = "{endpoint}"
[model]
path = "stub.onnx"
backend = "null"
max_batch = 4
[[camera]]
id = "cam0"
source = "synthetic"
fps = {fps}
pool = 2
corrupt_every = 9
{count}
[publish]
heartbeat_s = 0.2
[archive]
dir = "{archive}"
pass_every = 10
"""


def write_profile(tmp_path: Path, archive: Path, fps: float = 100, count: int | None = None) -> Path:
    stub_model(tmp_path)
    p = tmp_path / "station.toml"
    p.write_text(PROFILE.format(endpoint=f"ipc://{tmp_path}/st.sock", fps=fps, archive=archive,
                                count=f"count = {count}" if count else ""))
    return p


class Listener:
    """A plain pyzmq subscriber (no linewatch code): every decision header it receives."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.decisions: list[dict] = []
        self.heartbeats: list[dict] = []

    def pump(self, seconds: float, until=None) -> None:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            if self.sock.poll(50):
                parts = self.sock.recv_multipart()
                h = json.loads(parts[1])
                if parts[0] == b"decision":
                    self.decisions.append(h)
                elif parts[0] == b"heartbeat":
                    self.heartbeats.append(h)
            if until is not None and until(self):
                return

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def test_every_decision_received_is_a_journal_row_with_the_same_scores(tmp_path):
    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import load_profile

    archive = tmp_path / "archive"
    prof_path = write_profile(tmp_path, archive, fps=200, count=300)
    d = Daemon(load_profile(prof_path), profile_path=prof_path)
    lis = Listener(f"ipc://{tmp_path}/st.sock")
    time.sleep(0.2)
    d.start()
    lis.pump(2.0, until=lambda s: len(s.decisions) >= 50)
    prof_path.write_text(prof_path.read_text().replace("pass_every = 10", "pass_every = 20"))
    assert d.reload()  # an audit event mid-stream; a changed [archive] applies after a restart
    assert d.last_reload is not None and d.last_reload["restart_needed"] == ["archive.pass_every"]
    lis.pump(30.0, until=lambda s: d.join(0) is not None)
    assert d.join(30) == 0
    lis.pump(0.5)
    lis.close()
    rows = {(r["session"], r["camera"], r["frame_id"]): r for r in read.query(archive)}
    assert len(rows) == 300 and lis.decisions
    for h in lis.decisions:
        r = rows[(h["session"], h["camera"], h["frame_id"])]
        assert r["seq"] == h["seq"] and r["reason"] == h["reason"] and r["model"] == h["model"]
        assert r["decision"] == h["decision"] and r["failsafe"] == int(h["failsafe"])
        got = None if r["anomaly"] is None else [r["anomaly"], r["adhesive"]]
        want = None if h.get("scores") is None else [h["scores"]["anomaly"], h["scores"]["adhesive"]]
        assert got == pytest.approx(want) if want is not None else got is None
    kinds = [e["kind"] for e in read.events(archive)]
    assert kinds[0] == "start" and "reload" in kinds and kinds[-1] == "stop"
    assert any(h.get("archive", {}).get("state") == "ok" for h in lis.heartbeats)
    rejects = [r for r in rows.values() if r["decision"] == "reject"]
    assert rejects and all(r["failsafe"] == 1 for r in rejects)  # the null engine passes all but corrupt frames


def test_an_archive_that_cannot_be_written_never_stops_the_decisions(tmp_path):
    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import load_profile

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    prof_path = write_profile(tmp_path, blocker / "archive", fps=200, count=200)
    d = Daemon(load_profile(prof_path), profile_path=prof_path)
    lis = Listener(f"ipc://{tmp_path}/st.sock")
    time.sleep(0.2)
    d.start()
    lis.pump(30.0, until=lambda s: d.join(0) is not None)
    assert d.join(30) == 0
    lis.pump(0.5)
    lis.close()
    assert d.worker is not None and d.worker.decisions == 200
    states = {h["archive"]["state"] for h in lis.heartbeats if "archive" in h}
    assert "degraded" in states


def run(profile: Path, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen([sys.executable, "-m", "linewatch", "run", "--profile", str(profile), "--log-format",
                             "json"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.slow
def test_after_sigkill_at_most_the_last_second_is_missing_and_a_restart_appends(tmp_path):
    archive = tmp_path / "archive"
    prof_path = write_profile(tmp_path, archive, fps=100)
    lis = Listener(f"ipc://{tmp_path}/st.sock")
    proc = run(prof_path, tmp_path)
    try:
        lis.pump(60.0, until=lambda s: len(s.decisions) >= 300)
        assert len(lis.decisions) >= 300, "the daemon did not publish"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    lis.pump(0.5)
    con = sqlite3.connect(db_path(archive))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    rows = {(r["camera"], r["frame_id"]) for r in read.query(archive)}
    last_ns = max(h["t_decision_ns"] for h in lis.decisions)
    missing = [h for h in lis.decisions if (h["camera"], h["frame_id"]) not in rows]
    assert all(last_ns - h["t_decision_ns"] <= 1_000_000_000 for h in missing), \
        f"{len(missing)} rows missing, the oldest {(last_ns - min(h['t_decision_ns'] for h in missing)) / 1e9:.2f} s old"
    age = (last_ns - min(h["t_decision_ns"] for h in missing)) / 1e9 if missing else 0.0
    print(f"SIGKILL: {len(lis.decisions)} decisions received, {len(missing)} without a row, the oldest {age:.3f} s "
          "before the last one received")
    first_session = lis.decisions[0]["session"]
    lis.close()

    proc = run(prof_path, tmp_path)  # the same archive, a new session
    try:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            sessions = {r["session"] for r in read.query(archive, limit=50)}
            if sessions - {first_session}:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    sessions = [r["session"] for r in read.query(archive)]
    assert sessions[0] == first_session and len(set(sessions)) == 2
    kinds = [(e["session"] == first_session, e["kind"]) for e in read.events(archive)]
    assert (True, "start") in kinds and (False, "start") in kinds and (False, "stop") in kinds


def test_camera_state_changes_are_audit_events(tmp_path):
    from types import SimpleNamespace

    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import ArchiveConfig, load_profile
    from linewatch.record.recorder import Recorder

    prof_path = write_profile(tmp_path, tmp_path / "archive")
    cam = SimpleNamespace(camera="cam0", state="starting")
    d = Daemon(load_profile(prof_path), profile_path=prof_path, sources=[cam])
    d.recorder = Recorder(ArchiveConfig(dir=str(tmp_path / "archive")), "record-test").start("s")
    for state in ("starting", "up", "up", "down", "up", "done"):
        cam.state = state
        d._camera_edges()
    d.recorder.stop()
    got = [(e["detail"]["state"], e["detail"]["previous"]) for e in read.events(tmp_path / "archive", kind="camera")]
    assert got == [("up", "starting"), ("down", "up"), ("up", "down"), ("done", "up")]
