"""The synthetic line camera and the replay source, end to end into a ring."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog
from pydantic import ValidationError

from linewatch.data.synth import SynthConfig, render
from linewatch.pipeline.acquire.base import SourceError
from linewatch.pipeline.acquire.genicam import GenicamSource
from linewatch.pipeline.acquire.replay import ReplaySource
from linewatch.pipeline.acquire.synthetic import SyntheticSource
from linewatch.pipeline.ring import DROP_CORRUPT, Ring
from linewatch.profile import ReplayCamera, SyntheticCamera, parse_profile

H, W = 256, 256  # the renderer's smallest size that renders every index


def drain(ring: Ring, thread: threading.Thread, keep_images: bool = False):
    frames, drops, images = [], [], []
    while True:
        b = ring.take(8, timeout=0.05)
        for i in range(b.n):
            frames.append((int(b.camera[i]), int(b.frame_id[i]), tuple(b.truth[i].tolist())))
            if keep_images:
                images.append(b.images[i].copy())
        drops += list(b.drops())
        ring.release(b)
        if b.empty and not thread.is_alive():
            return frames, drops, images


# --- synthetic ----------------------------------------------------------------------------------
def test_synthetic_carries_truth_and_pixels_of_the_renderer():
    cam = SyntheticCamera(id="line", seed=3, fps=0, count=12, pool=4, defect_rate=0.5)
    src = SyntheticSource(cam, height=H, width=W)
    ring = Ring(32, H // 2, W // 2)  # the ring's size differs: frames are resized into it
    t = src.start(ring, 1, threading.Event())
    frames, drops, images = drain(ring, t, keep_images=True)
    assert drops == [] and src.state == "done"
    assert [f[1] for f in frames] == list(range(12)) and {f[0] for f in frames} == {1}
    scfg = SynthConfig(height=H, width=W, anomaly_rate=0.5)
    for k in (0, 1, 5):  # pool of 4, cycled: frame k shows synth image k % 4
        s = render(3, k % 4, scfg)
        assert frames[k][2] == s.labels
        np.testing.assert_array_equal(images[k], cv2.resize(s.image, (W // 2, H // 2), interpolation=cv2.INTER_AREA))
    assert {f[2] for f in frames} == {render(3, j, scfg).labels for j in range(4)}


def test_synthetic_defect_rate_reaches_the_renderer():
    ring = Ring(64, 32, 32)
    for rate, expect in ((0.0, 0), (1.0, 1)):
        src = SyntheticSource(SyntheticCamera(id="line", fps=0, count=10, pool=0, defect_rate=rate), height=H, width=W)
        t = src.start(ring, 0, threading.Event())
        frames, drops, _ = drain(ring, t)
        assert len(frames) == 10 and drops == []
        assert {f[2][0] for f in frames} == {expect}


def test_synthetic_corrupt_injection_becomes_drop_records_with_truth():
    src = SyntheticSource(SyntheticCamera(id="line", fps=0, count=20, pool=5, corrupt_every=4), height=H, width=W)
    ring = Ring(32, 64, 64)
    with structlog.testing.capture_logs() as logs:
        t = src.start(ring, 0, threading.Event())
        frames, drops, _ = drain(ring, t)
    assert [d[1] for d in drops] == [3, 7, 11, 15, 19]
    assert all(d[3] == DROP_CORRUPT for d in drops)
    assert [d[4] for d in drops] == [src._pool_truth[k % 5] for k in (3, 7, 11, 15, 19)]
    assert sorted([f[1] for f in frames] + [d[1] for d in drops]) == list(range(20))
    assert src.counters.dropped_corrupt == 5 and ring.counters.dropped_corrupt == 5
    assert any(e["event"] == "corrupt frame dropped" for e in logs)


def test_synthetic_paced_source_counts_and_stops():
    """Paced at 200 fps: frames arrive and the stop event ends it (counts, no timing asserts)."""
    src = SyntheticSource(SyntheticCamera(id="line", fps=200, pool=2), height=H, width=W)
    ring = Ring(16, 32, 32)
    stop = threading.Event()
    t = src.start(ring, 0, stop)
    got = 0
    while got < 5:
        b = ring.take(4, timeout=5)
        assert not b.empty, "no frame from a 200 fps source within 5 s"
        got += b.n
        ring.release(b)
    assert src.state == "up"
    stop.set()
    t.join(timeout=10)
    assert not t.is_alive() and src.state == "done"
    assert src.frames_seen >= 5 and src.counters.committed == src.frames_seen - src.counters.dropped_full


def test_synthetic_settings_are_checked():
    with pytest.raises(ValidationError, match="corrupt_every"):
        SyntheticCamera(id="line", corrupt_every=1)
    with pytest.raises(ValidationError, match="defect_rate"):
        SyntheticCamera(id="line", defect_rate=1.5)
    with pytest.raises(SourceError, match="synthetic camera 'line': synth size 100x1224.*divisible by 8"):
        SyntheticSource(SyntheticCamera(id="line"), height=100)
    with pytest.raises(SourceError, match=r"camera 'line': roi=\(0, 0, 0, 5\) must be"):
        SyntheticSource(SyntheticCamera(id="line", roi=[0, 0, 0, 5]))


# --- replay -------------------------------------------------------------------------------------
def write_images(folder: Path, n: int, ext: str = ".png") -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    imgs = []
    for i in range(n):
        rgb = np.zeros((24, 32, 3), np.uint8)
        rgb[..., 0] = 10 * i
        rgb[..., 1] = 100
        rgb[..., 2] = 255 - 10 * i
        cv2.imwrite(str(folder / f"img_{i:03d}{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        imgs.append(rgb)
    return imgs


def test_replay_folder_once_in_order_rgb(tmp_path):
    imgs = write_images(tmp_path / "f", 5)
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    src = ReplaySource(ReplayCamera(id="r", path=str(tmp_path / "f")))
    ring = Ring(16, 24, 32)
    t = src.start(ring, 0, threading.Event())
    frames, drops, images = drain(ring, t, keep_images=True)
    assert [f[1] for f in frames] == [0, 1, 2, 3, 4] and drops == []
    for got, want in zip(images, imgs, strict=True):
        np.testing.assert_array_equal(got, want)  # BGR from imread converted to RGB
    assert all(f[2] == (-1, -1) for f in frames)


def test_replay_loop_and_unreadable_file(tmp_path):
    write_images(tmp_path / "f", 3)
    (tmp_path / "f" / "img_001b.png").write_bytes(b"this is no png")
    src = ReplaySource(ReplayCamera(id="r", path=str(tmp_path / "f"), loop=True))
    ring = Ring(64, 24, 32)
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        t = src.start(ring, 0, stop)
        frames, drops = [], []
        while len(frames) < 9:
            b = ring.take(8, timeout=5)
            assert not b.empty
            frames += [int(f) for f in b.frame_id]
            drops += list(b.drops())
            ring.release(b)
        stop.set()
        t.join(timeout=10)
    # order: img_000, img_001, img_001b (unreadable), img_002, then again from img_000
    assert frames[:6] == [0, 1, 3, 4, 5, 7]
    # (later on, the fast looping replay may fill the ring: DROP_FULL records with higher ids)
    assert [(d[1], d[3]) for d in drops if d[1] < 8] == [(2, DROP_CORRUPT), (6, DROP_CORRUPT)]
    assert any("img_001b.png" in e.get("reason", "") for e in logs if e["log_level"] == "warning")


def test_replay_dataset_carries_labels_and_split(tmp_path):
    root = tmp_path / "ds"
    write_images(root / "images", 4)
    with (root / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "split", "anomaly", "adhesive"])
        w.writerows([["img_000", "train", 1, 0], ["img_001", "test", 0, ""], ["img_002", "test", "", 1], ["img_003", "train", 0, 1]])
    ring = Ring(16, 24, 32)
    src = ReplaySource(ReplayCamera(id="ds", path="ds"), path=root)  # the path as the profile resolves it
    frames, _, _ = drain(ring, src.start(ring, 0, threading.Event()))
    assert [f[2] for f in frames] == [(1, 0), (0, -1), (-1, 1), (0, 1)]
    src = ReplaySource(ReplayCamera(id="ds", path=str(root), split="test"))
    frames, _, _ = drain(ring, src.start(ring, 0, threading.Event()))
    assert [f[2] for f in frames] == [(0, -1), (-1, 1)]


def test_replay_reads_the_dataset_image_extensions_without_importing_torch():
    code = ("import sys\nfrom linewatch.data.dataset import IMAGE_EXTS\nfrom linewatch.pipeline.acquire import replay\n"
            "assert replay.IMAGE_EXTS is IMAGE_EXTS\nprint('torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_replay_video_once(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG .avi")
    for i in range(6):
        bgr = np.zeros((24, 32, 3), np.uint8)
        bgr[..., 2] = 200  # red in BGR
        bgr[..., 0] = 20 * i
        writer.write(bgr)
    writer.release()
    src = ReplaySource(ReplayCamera(id="clip", path=str(path)))
    ring = Ring(16, 24, 32)
    frames, drops, images = drain(ring, src.start(ring, 0, threading.Event()), keep_images=True)
    assert len(frames) == 6 and drops == []
    assert abs(int(images[0][..., 0].mean()) - 200) < 10  # the red channel is channel 0 after conversion


def test_replay_errors_name_the_path(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        ReplaySource(ReplayCamera(id="r", path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        ReplaySource(ReplayCamera(id="r", path=str(tmp_path / "empty")))
    (tmp_path / "junk.mp4").write_bytes(b"no video")
    src = ReplaySource(ReplayCamera(id="r", path=str(tmp_path / "junk.mp4")))
    with pytest.raises(SourceError, match=r"cannot open video .*junk\.mp4"):
        src.start(Ring(4, 8, 8), 0, threading.Event())


# --- the profile's camera tables make the sources ---------------------------------------------------
def test_each_camera_table_makes_its_source_with_the_paths_the_profile_resolves(tmp_path):
    write_images(tmp_path / "frames", 2)
    prof = parse_profile("""
[[camera]]
id = "line"
source = "synthetic"
fps = 0
roi = [0, 0, 64, 32]
[[camera]]
id = "again"
source = "replay"
path = "frames"
[[camera]]
id = "top"
source = "genicam"
cti = "vendor.cti"
down_after_s = 0
""", base_dir=tmp_path)
    line, again, top = (cam.make_source(prof) for cam in prof.camera)
    assert isinstance(line, SyntheticSource) and line.config is prof.camera[0]
    assert (line.camera, line.roi, line.fps, line.state) == ("line", (0, 0, 64, 32), 0.0, "starting")
    assert isinstance(again, ReplaySource) and again.camera == "again" and again.fps == 0.0  # unset fps: as fast as they decode
    assert [p.parent for p in again.files] == [tmp_path / "frames"] * 2  # relative to the profile's folder
    assert isinstance(top, GenicamSource) and top.camera == "top"
    assert top.cti == str(tmp_path / "vendor.cti") and top.config.down_after_s == 0  # harvesters only on start()
