"""SIGKILL and restart (docs/reliability.md): `linewatch run` on the synthetic line with a station record,
killed at a moment drawn at random (while it starts, at its first decision, mid-stream), then started again on
the same profile. A subscriber (`linewatch.subscribe`) sees the new session (`on_restart`) and goes on receiving
decisions; the journal passes `PRAGMA integrity_check`; every image file in the archive is whole (each a row names,
and any other); no `.part` file is left after the restart; `linewatch archive stats` reads it.

An image writer killed in the middle of a file is made certain in a child process whose writes stop halfway.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import stub_model
from waiting import wait_until

from linewatch.pipeline.acquire.frames import CorruptFrame
from linewatch.pipeline.acquire.replay import read_image
from linewatch.record import images, read
from linewatch.record.journal import db_path
from linewatch.subscribe import Subscriber

ROOT = Path(__file__).resolve().parent.parent

PROFILE = """
[station]
name = "restart-test"
endpoint = "{endpoint}"
[model]
path = "stub.onnx"
backend = "null"
max_batch = 4
[[camera]]
id = "cam0"
source = "synthetic"
fps = 200
pool = 2
corrupt_every = 7
[publish]
heartbeat_s = 0.1
[archive]
dir = "archive"
pass_every = 2
"""


def station(tmp_path: Path) -> Path:
    """A profile on the null engine (a stub model) with a station record beside it."""
    stub_model(tmp_path)
    path = tmp_path / "station.toml"
    path.write_text(PROFILE.format(endpoint=f"ipc://{tmp_path}/st.sock"))
    path.chmod(0o640)
    return path


def start(profile: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen([sys.executable, "-m", "linewatch", "run", "--profile", str(profile), "--log-format",
                             "json"], cwd=profile.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Watch:
    """A Subscriber in its own thread that keeps what the test checks: the sessions heard from (decisions and
    heartbeats), each decision's (session, seq), the restarts, the gaps, the fail-safe and recover calls."""

    def __init__(self, endpoint: str) -> None:
        self.lock = threading.Lock()
        self.heard: dict[str, None] = {}
        self.decisions: list[tuple[str, int]] = []
        self.restarts: list[tuple[str | None, str]] = []
        self.gaps: list = []
        self.events: list[str] = []
        self.sub = Subscriber(endpoint, ("decision", "heartbeat"), on_message=self._message, on_restart=self._restart,
                              on_gap=self._gap, on_failsafe=lambda why: self._event("failsafe"),
                              on_recover=lambda hb: self._event("recover"), heartbeat_timeout=0.5)
        self.sub.start()

    def _message(self, msg) -> None:
        with self.lock:
            self.heard[msg.session] = None
            if msg.topic == "decision":
                self.decisions.append((msg.session, msg.seq))

    def _restart(self, old, new) -> None:
        with self.lock:
            self.restarts.append((old, new))

    def _gap(self, gap) -> None:
        with self.lock:
            self.gaps.append(gap)

    def _event(self, what: str) -> None:
        with self.lock:
            self.events.append(what)

    def sessions(self) -> list[str]:
        with self.lock:
            return list(self.heard)

    def count(self, session: str | None = None) -> int:
        with self.lock:
            return sum(1 for s, _ in self.decisions if session is None or s == session)

    def close(self) -> None:
        self.sub.stop()


def whole(path: Path) -> bool:
    """The file is a whole image: a JPEG with its end marker (the replay's reader checks it) or a PNG that
    decodes (a cut PNG does not)."""
    try:
        return read_image(path).size > 0
    except CorruptFrame:
        return False


def check_archive(archive: Path) -> dict:
    con = sqlite3.connect(db_path(archive))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    rows = read.query(archive)
    named = [r["image"] for r in rows if r["image"]]
    for rel in named:
        assert (archive / rel).is_file() and whole(archive / rel), rel
        for mask in images.mask_paths(rel).values():
            assert (archive / mask).is_file() and whole(archive / mask), mask
    on_disk = [p for p in (archive / images.IMAGES_DIR).rglob("*") if p.is_file()]
    partial = [p for p in on_disk if p.name.endswith(images.PARTIAL)]
    broken = [p for p in on_disk if p not in partial and not whole(p)]
    assert partial == [] and broken == [], (partial, broken)
    return {"rows": len(rows), "images": len(named), "files": len(on_disk),
            "sessions": sorted({r["session"] for r in rows})}


MOMENTS = {
    "while starting": lambda rng, watch: time.sleep(rng.uniform(0.0, 0.8)),
    "at its first decision": lambda rng, watch: wait_until(lambda: watch.count() >= 1, 30, "a first decision"),
    "mid-stream": lambda rng, watch: (n := rng.randint(50, 400)) and wait_until(
        lambda: watch.count() >= n, 30, f"{n} decisions"),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_after_sigkill_at_a_random_moment_a_restart_is_a_new_session_and_the_record_is_whole(tmp_path, moment,
                                                                                            capsys):
    from linewatch.cli import main

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    profile = station(tmp_path)
    archive = tmp_path / "archive"
    watch = Watch(f"ipc://{tmp_path}/st.sock")
    try:
        first = start(profile)
        try:
            MOMENTS[moment](rng, watch)
            time.sleep(rng.uniform(0.0, 0.05))
            first.send_signal(signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
        seen_first = watch.sessions()
        before = watch.count()
        # The silence after the kill: the watchdog fails safe (waited for here: on a fast machine the second
        # daemon's first heartbeat could otherwise come within the 0.5 s timeout, and no fail-safe be due).
        wait_until(lambda: watch.sub.failsafe_active, 10, "the fail-safe after the kill's silence")
        mark = len(watch.events)
        second = start(profile)
        try:
            wait_until(lambda: len(watch.sessions()) > len(seen_first) and watch.count(watch.sessions()[-1]) >= 20,
                       30, lambda: f"20 decisions of a new session (sessions {watch.sessions()})")
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        finally:
            if second.poll() is None:
                second.kill()
        wait_until(lambda: watch.events[-1:] == ["failsafe"], 10, "the fail-safe at the clean stop")
    finally:
        watch.close()
    sessions = watch.sessions()
    new = sessions[-1]
    assert len(sessions) == len(seen_first) + 1 and new not in seen_first
    assert watch.restarts == ([(seen_first[-1], new)] if seen_first else [])
    assert [g for g in watch.gaps if g.session == new and g.topic == "decision"] == []  # its own baseline, no gap
    seqs = [q for s, q in watch.decisions if s == new]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # the watchdog failed safe in the silence after the kill, and the new session's heartbeat recovered it
    assert "failsafe" in watch.events[:mark] and "recover" in watch.events[mark:], (mark, watch.events)

    got = check_archive(archive)
    assert new in got["sessions"] and got["images"] > 0
    kinds = {(e["session"], e["kind"]) for e in read.events(archive)}
    assert {(new, "start"), (new, "stop")} <= kinds
    assert main(["archive", "stats", str(archive), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["inspected"] == got["rows"]
    print(f"{moment} (seed {seed}): {before} decisions received before the kill, sessions {len(sessions)}, "
          f"journal {got['rows']} rows, {got['images']} images named, {got['files']} image files, all whole")


# -- a writer killed in the middle of a file ------------------------------------------------------------------

HALFWAY = """
import sys, time
from pathlib import Path
import numpy as np
from linewatch.record import images

real_open = open

class Halfway:
    '''The frame's file (a .jpg): half of it written and flushed, then the writer waits to be killed.'''
    def __init__(self, f, name):
        self.f, self.name = f, name
    def write(self, data):
        if ".jpg" not in self.name:
            return self.f.write(data)
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        print("HALFWAY", flush=True)
        time.sleep(60)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

images.open = lambda path, mode="r", *a, **k: Halfway(real_open(path, mode, *a, **k), str(path))
image = np.random.default_rng(1).integers(0, 256, (64, 160, 3), dtype=np.uint8)
images.write_frame(Path(sys.argv[1]), sys.argv[2], image, np.zeros((2, 8, 20), np.float32))
"""


def test_an_image_writer_killed_in_the_middle_of_a_file_leaves_no_cut_file_under_its_name(tmp_path):
    from linewatch.profile import ArchiveConfig
    from linewatch.record.recorder import Recorder

    rel = "images/2026-12-02/cam0/0123abcd-7.jpg"
    child = subprocess.Popen([sys.executable, "-c", HALFWAY, str(tmp_path), rel], stdout=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"HALFWAY"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    folder = (tmp_path / rel).parent
    left = sorted(p.name for p in folder.iterdir())
    # under their names: the masks (whole, written first); the frame only as its .part, cut
    assert left == ["0123abcd-7.adhesive.png", "0123abcd-7.anomaly.png", "0123abcd-7.jpg.part"]
    assert all(whole(folder / n) for n in left[:2]) and not whole(folder / left[2])
    # the next recorder on the folder removes it
    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "restart-test").start("s2")
    wait_until(lambda: not (folder / left[2]).exists(), 10, "the .part file removed")
    rec.stop()
    assert sorted(p.name for p in folder.iterdir()) == left[:2]


def test_remove_partial_removes_only_part_files(tmp_path):
    folder = tmp_path / images.IMAGES_DIR / "2026-12-02" / "cam0"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "a-1.jpg"), np.zeros((4, 4, 3), np.uint8))
    (folder / "a-2.jpg.part").write_bytes(b"\xff\xd8cut")
    (folder / "a-2.anomaly.png.part").write_bytes(b"\x89PNG")
    (tmp_path / "journal.sqlite.part").write_bytes(b"outside images/: not the record's to remove")
    assert images.remove_partial(tmp_path) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["a-1.jpg"] and (tmp_path / "journal.sqlite.part").exists()
