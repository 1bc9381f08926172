"""The station record (linewatch.record): journal rows, kept images, rotation, faults, the read side."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from linewatch.pipeline.decide import Decider
from linewatch.profile import ArchiveConfig
from linewatch.record import images, read
from linewatch.record.journal import Journal, connect, db_path
from linewatch.record.recorder import Recorder

HW = (64, 96)


def make_decisions(n, reject_every=4, t0_ns=None, camera="cam0"):
    """n decisions from the real Decider: every `reject_every`-th an anomaly reject, the 7th a late one."""
    dec = Decider((0.5, 0.5), "present", deadline_ns=10**12)
    t0 = time.time_ns() if t0_ns is None else t0_ns
    out = []
    for i in range(n):
        t = t0 + i * 40_000_000
        if i == 7:
            out.append(dec.decide(camera, i, t, None, "late", now_ns=t + 1_000_000))
            continue
        scores = (0.9, 0.8) if i % reject_every == 0 else (0.1, 0.8)
        out.append(dec.decide(camera, i, t, scores, now_ns=t + 5_000_000))
    return out


def frame(i):
    img = np.full((*HW, 3), i % 256, np.uint8)
    masks = np.zeros((2, HW[0] // 8, HW[1] // 8), np.float32)
    masks[0, 2:4, 3:6] = 1.0
    return img, masks


def record_all(rec, decisions, with_images=True):
    seq_r = 0
    for seq, d in enumerate(decisions):
        r = -1
        if d.reject:
            r, seq_r = seq_r, seq_r + 1
        img, masks = frame(seq) if with_images else (None, None)
        rec.record(d, seq, r, img, masks)


def wait_rows(root, n, timeout=10.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            con = connect(db_path(root), readonly=True)
            try:
                got = con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
            finally:
                con.close()
            if got >= n:
                return got
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the journal did not reach {n} rows in {timeout} s")


def test_every_decision_is_one_row_with_its_scores_reasons_and_kept_images(tmp_path):
    cfg = ArchiveConfig(dir=str(tmp_path), pass_every=5)
    rec = Recorder(cfg, "st", profile_sha256="abc").start("session-1234567890")
    ds = make_decisions(40)
    record_all(rec, ds)
    rec.stop()
    rows = read.query(tmp_path)
    assert len(rows) == 40
    for d, r in zip(ds, rows, strict=True):
        assert (r["camera"], r["frame_id"]) == (d.camera, d.frame_id)
        assert r["reason"] == "+".join(d.reasons) and r["decision"] == ("reject" if d.reject else "pass")
        assert r["failsafe"] == int(d.failsafe) and r["profile_sha256"] == "abc"
        if d.scores is None:
            assert r["anomaly"] is None
        else:
            assert r["anomaly"] == pytest.approx(d.scores[0]) and r["adhesive"] == pytest.approx(d.scores[1])
        if d.reject:
            assert r["image"] is not None and r["reject_seq"] is not None
    passes = [r for r in rows if r["decision"] == "pass"]
    assert sum(r["image"] is not None for r in passes) == len(passes) // 5
    kept = [r for r in rows if r["image"]]
    for r in kept:
        assert (tmp_path / r["image"]).is_file()
        for m in images.mask_paths(r["image"]).values():
            assert (tmp_path / m).is_file()
    assert len({r["image"] for r in kept}) == len(kept)  # one frame per row
    assert rec.status()["rows"] == 40 and rec.status()["state"] == "ok"


def test_the_kept_frame_is_the_frame_the_model_saw(tmp_path):
    import cv2

    rec = Recorder(ArchiveConfig(dir=str(tmp_path), pass_every=0, format="png"), "st").start("s1")
    ds = make_decisions(8, reject_every=1)
    record_all(rec, ds[:1])
    rec.stop()
    row = read.query(tmp_path)[0]
    got = cv2.cvtColor(cv2.imread(str(tmp_path / row["image"])), cv2.COLOR_BGR2RGB)
    want, masks = frame(0)
    assert np.array_equal(got, want)  # png: lossless
    m = cv2.imread(str(tmp_path / images.mask_paths(row["image"])["anomaly"]), cv2.IMREAD_GRAYSCALE)
    assert m.shape == masks.shape[1:] and m[2, 3] == 255 and m[0, 0] == 0


def test_a_restart_appends_under_a_new_session(tmp_path):
    cfg = ArchiveConfig(dir=str(tmp_path))
    for session in ("first-session", "second-session"):
        rec = Recorder(cfg, "st").start(session)
        record_all(rec, make_decisions(5))
        rec.event("start", version="x")
        rec.stop()
    rows = read.query(tmp_path)
    assert [r["session"] for r in rows] == ["first-session"] * 5 + ["second-session"] * 5
    assert [e["session"] for e in read.events(tmp_path)] == ["first-session", "second-session"]
    con = sqlite3.connect(db_path(tmp_path))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class FailingJournal(Journal):
    """A journal whose writes fail while `broken` is set (a full disk, a read-only folder)."""

    broken = True

    def write(self, rows, events=()):
        if FailingJournal.broken:
            raise sqlite3.OperationalError("database or disk is full")
        super().write(rows, events)


def test_a_failing_journal_degrades_the_archive_and_record_never_raises_or_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr("linewatch.record.recorder.RECOVER_S", 0.3)
    FailingJournal.broken = True
    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "st", journal=FailingJournal).start("s")
    t0 = time.perf_counter()
    record_all(rec, make_decisions(50))
    assert time.perf_counter() - t0 < 5.0  # returns at once (generous bound: never waits on the disk)
    t_end = time.monotonic() + 5
    while rec.status()["rows_lost"] < 50 and time.monotonic() < t_end:
        time.sleep(0.05)
    st = rec.status()
    assert st["state"] == "degraded" and st["rows_lost"] == 50 and st["rows"] == 0
    assert "disk is full" in st["last_error"]
    FailingJournal.broken = False
    time.sleep(0.5)
    record_all(rec, make_decisions(3))
    rec.stop()
    assert rec.status()["state"] == "ok" and rec.status()["rows"] == 3
    kinds = [(e["kind"], e["detail"]["state"]) for e in read.events(tmp_path)]
    assert kinds == [("archive", "degraded"), ("archive", "ok")]


def test_an_archive_folder_that_cannot_be_created_degrades_instead_of_failing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rec = Recorder(ArchiveConfig(dir=str(blocker / "archive")), "st").start("s")
    record_all(rec, make_decisions(10))
    rec.stop()
    st = rec.status()
    assert st["state"] == "degraded" and st["rows"] == 0 and st["rows_lost"] == 10


def test_an_image_that_cannot_be_written_keeps_its_row_without_an_image(tmp_path):
    def broken_writer(*a, **k):
        raise OSError(28, "No space left on device")

    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "st", write_frame=broken_writer).start("s")
    record_all(rec, make_decisions(8, reject_every=1))
    rec.stop()
    rows = read.query(tmp_path)
    assert len(rows) == 8 and all(r["image"] is None for r in rows)
    assert rec.status()["images_failed"] == 8 and rec.status()["state"] == "degraded"


def test_a_full_queue_loses_rows_counted_and_never_blocks(tmp_path):
    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "st", queue_size=5)  # not started: nothing drains
    record_all(rec, make_decisions(20))
    assert rec.status()["queue_full"] == 15 and rec.status()["state"] == "degraded"


def test_no_free_image_slot_keeps_the_row_and_counts_the_skipped_image(tmp_path):
    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "st", pool=2)  # not started: slots never come back
    record_all(rec, make_decisions(12, reject_every=1))
    assert rec.hook_counters["images_skipped"] == 12 - 2  # 12 rejects (one late) with an image, 2 slots


def test_rotation_deletes_pass_images_before_reject_images_and_keeps_the_rows(tmp_path, monkeypatch):
    monkeypatch.setattr("linewatch.record.recorder.ROTATE_S", 0.0)
    one = images.write_frame(tmp_path / "probe", "x.jpg", *frame(0))
    cfg = ArchiveConfig(dir=str(tmp_path / "a"), pass_every=1, max_gb=(one * 12) / 1e9)
    rec = Recorder(cfg, "st", pool=64)
    ds = make_decisions(40, reject_every=4)  # 11 rejects: frames 0, 4, ..., 36 and the late frame 7
    record_all(rec, ds)  # queued before the writer starts: one transaction, then one rotation round
    rec.start("s").stop()
    rows = read.query(tmp_path / "a")
    assert len(rows) == 40  # rows stay
    kept = [r for r in rows if r["image"]]
    assert kept and images.folder_bytes(tmp_path / "a") <= one * 12
    rejects_kept = sum(r["decision"] == "reject" for r in kept)
    rejects = sum(r["decision"] == "reject" for r in rows)
    assert rejects_kept == min(rejects, len(kept))  # every pass image goes before a reject image
    ev = read.events(tmp_path / "a", kind="rotation")
    assert ev and sum(e["detail"]["images_deleted"] for e in ev) == rec.status()["images"] - len(kept)
    for r in rows:
        if not r["image"]:
            continue
        assert (tmp_path / "a" / r["image"]).is_file()


def test_rotation_by_age_deletes_old_rows_and_their_images(tmp_path, monkeypatch):
    monkeypatch.setattr("linewatch.record.recorder.ROTATE_S", 0.0)
    old = time.time_ns() - 3 * 86400 * 10**9
    cfg = ArchiveConfig(dir=str(tmp_path), keep_days=2)
    rec = Recorder(cfg, "st").start("s")
    record_all(rec, make_decisions(8, reject_every=1, t0_ns=old))
    time.sleep(0.6)
    record_all(rec, make_decisions(4, reject_every=1))
    rec.stop()
    rows = read.query(tmp_path)
    assert len(rows) == 4
    assert not list((tmp_path / "images").glob(time.strftime("%Y-%m-%d", time.localtime(old / 1e9))))


def test_stats_count_by_reason_yield_shift_and_latency(tmp_path):
    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "st").start("s")
    ds = make_decisions(40)
    record_all(rec, ds, with_images=False)
    rec.stop()
    s = read.stats(tmp_path)
    rejects = sum(d.reject for d in ds)
    assert (s["inspected"], s["rejected"], s["passed"]) == (40, rejects, 40 - rejects)
    assert s["by_reason"] == {"anomaly": 10, "late": 1} and s["failsafe"] == 1
    assert s["yield_pct"] == pytest.approx(100 * (40 - rejects) / 40, abs=1e-3)
    assert sum(t["inspected"] for t in s["per_shift"].values()) == 40
    assert sum(t["inspected"] for t in s["per_hour"].values()) == 40
    assert s["latency_ms"]["p50"] == pytest.approx(5.0)
    assert read.stats(tmp_path, read.Filter(camera="nope"))["inspected"] == 0


def test_a_minute_before_the_first_shift_belongs_to_the_previous_night():
    starts = [6 * 60, 14 * 60, 22 * 60]
    assert read.shift_of("2026-12-02", 5 * 60 + 59, starts) == "2026-12-01 22:00"
    assert read.shift_of("2026-12-02", 6 * 60, starts) == "2026-12-02 06:00"
    assert read.shift_of("2026-12-02", 23 * 60, starts) == "2026-12-02 22:00"


def test_query_filters_by_reason_decision_camera_and_score(tmp_path):
    rec = Recorder(ArchiveConfig(dir=str(tmp_path)), "st").start("s")
    record_all(rec, make_decisions(20), with_images=False)
    record_all(rec, make_decisions(4, camera="cam1"), with_images=False)
    rec.stop()
    assert {r["reason"] for r in read.query(tmp_path, read.Filter(reason="anomaly"))} == {"anomaly"}
    assert len(read.query(tmp_path, read.Filter(camera="cam1"))) == 4
    assert all(r["anomaly"] >= 0.5 for r in read.query(tmp_path, read.Filter(anomaly=(0.5, 1.0))))
    assert len(read.query(tmp_path, read.Filter(decision="pass"), limit=3)) == 3


def test_export_writes_a_dataset_that_data_check_accepts(tmp_path):
    from linewatch.data.check import check_dataset
    from linewatch.data.dataset import open_dataset

    rec = Recorder(ArchiveConfig(dir=str(tmp_path / "a"), pass_every=1), "st").start("s")
    record_all(rec, make_decisions(30))
    rec.stop()
    summary = read.export(tmp_path / "a", tmp_path / "ds", labels="decision")
    assert summary["samples"] == 30
    ds = open_dataset(tmp_path / "ds")
    assert len(ds.samples) == 30
    report = check_dataset(tmp_path / "ds", input_hw=HW)
    assert not [p for p in report.problems if p.severity == "error"], report.problems
    labels = {s.name: s.labels for s in ds.samples}
    assert sum(v.get("anomaly") == 1 for v in labels.values()) == 8  # frames 0, 4, ..., 28; 7 is late: blank
    assert (tmp_path / "ds" / "draft_masks" / "anomaly").is_dir()
    with pytest.raises(ValueError, match="not empty"):
        read.export(tmp_path / "a", tmp_path / "ds")


def test_a_reader_cannot_open_a_folder_without_a_journal(tmp_path):
    from linewatch.record.journal import JournalError

    with pytest.raises(JournalError, match="no journal here"):
        read.query(tmp_path)


def test_the_archive_verbs_print_and_fail_with_a_usage_error(tmp_path, capsys):
    import json

    from linewatch.cli import main

    rec = Recorder(ArchiveConfig(dir=str(tmp_path / "a"), pass_every=2), "st").start("session-x")
    record_all(rec, make_decisions(20))
    rec.event("start", version="test")
    rec.stop()
    assert main(["archive", "stats", str(tmp_path / "a"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["inspected"] == 20 and s["by_reason"]["anomaly"] == 5
    assert main(["archive", "stats", str(tmp_path / "a"), "--since", "1h"]) == 0
    assert "inspected 20" in capsys.readouterr().out
    assert main(["archive", "query", str(tmp_path / "a"), "--reason", "late", "--json"]) == 0
    assert [r["frame_id"] for r in json.loads(capsys.readouterr().out)] == [7]
    assert main(["archive", "events", str(tmp_path / "a")]) == 0
    assert "start" in capsys.readouterr().out
    assert main(["archive", "query", str(tmp_path / "nothing")]) == 2
    assert "no journal here" in capsys.readouterr().err
    assert main(["archive", "query", str(tmp_path / "a"), "--anomaly", "0.9"]) == 2
    assert "LO:HI" in capsys.readouterr().err
    assert main(["archive", "stats", str(tmp_path / "a"), "--since", "yesterday-ish"]) == 2
    assert "--since" in capsys.readouterr().err


def test_export_feeds_data_check_and_a_short_train_from_a_checkpoint(tmp_path, model_dir):
    """The retraining loop: the archive's frames -> a dataset folder -> data check -> train --init."""
    import subprocess
    import sys

    from tests.tinymodel import H, W

    rec = Recorder(ArchiveConfig(dir=str(tmp_path / "a"), pass_every=1), "st").start("s")
    dec = Decider((0.5, 0.5), "present", deadline_ns=10**12)
    t0 = time.time_ns()
    rng = np.random.default_rng(0)
    for i in range(24):
        d = dec.decide("cam0", i, t0 + i, (0.9, 0.8) if i % 3 == 0 else (0.1, 0.8), now_ns=t0 + i + 1)
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        rec.record(d, i, -1, img, np.zeros((2, H // 8, W // 8), np.float32))
    rec.stop()
    ds = tmp_path / "ds"
    assert read.export(tmp_path / "a", ds, labels="decision")["samples"] == 24
    run = [sys.executable, "-m", "linewatch"]
    r = subprocess.run([*run, "data", "check", str(ds)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*run, "train", "--data", str(ds), "--out", str(tmp_path / "run"), "--init",
                        str(model_dir / "tiny.pt"), "--epochs-seg", "1", "--epochs-cls", "1", "--limit-steps", "1",
                        "--batch", "4", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (tmp_path / "run" / "last.pt").is_file()
