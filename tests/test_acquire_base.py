"""acquire.frames: camera frames into a slot, pixel formats to RGB (the crop/resize rule itself:
test_preprocess.py); acquire.base: the thread loop's error paths and the Source protocol;
acquire.pacer: the frame-rate schedule."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import structlog

from linewatch.pipeline.acquire.base import BaseSource, Grab, Source, SourceDown, SourceError
from linewatch.pipeline.acquire.frames import (
    CorruptFrame,
    FrameWriter,
    as_image,
    to_rgb,
)
from linewatch.pipeline.acquire.pacer import Pacer
from linewatch.pipeline.ring import DROP_CORRUPT, DROP_FULL, DROP_LOST, Ring


def gradient(h: int, w: int) -> np.ndarray:
    """RGB test pattern: R along x, G along y, B constant per quadrant."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 255 // max(w - 1, 1))[None, :]
    img[..., 1] = (np.arange(h) * 255 // max(h - 1, 1))[:, None]
    img[: h // 2, : w // 2, 2] = 200
    return img


def test_frame_writer_turns_a_roi_outside_the_frame_or_a_wrong_slot_into_a_corrupt_frame():
    src = gradient(100, 160)
    with pytest.raises(CorruptFrame, match=r"ROI \(x=150, y=0, w=20, h=10\) does not fit the 160x100"):
        FrameWriter((150, 0, 20, 10)).write(src, "RGB8", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(CorruptFrame, match=r"dst is uint8 \(10, 10\); need uint8 \[H, W, 3\]"):
        FrameWriter().write(src, "RGB8", np.zeros((10, 10), np.uint8))


def test_frame_writer_writes_a_same_size_roi_as_an_exact_copy_into_the_slot():
    src = gradient(100, 160)
    ring = np.zeros((2, 40, 50, 3), np.uint8)
    FrameWriter((10, 20, 50, 40)).write(src, "RGB8", ring[1])
    np.testing.assert_array_equal(ring[1], src[20:60, 10:60])
    assert not ring[0].any()


def test_to_rgb_formats():
    rgb = gradient(8, 12)
    np.testing.assert_array_equal(to_rgb(rgb, "RGB8"), rgb)
    np.testing.assert_array_equal(to_rgb(np.ascontiguousarray(rgb[..., ::-1]), "BGR8"), rgb)
    rgba = np.dstack([rgb, np.full((8, 12), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb(rgba, "RGBa8"), rgb)
    bgra = np.dstack([rgb[..., ::-1], np.full((8, 12), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb(bgra, "BGRa8"), rgb)
    mono = rgb[..., 1].copy()
    out = np.empty((8, 12, 3), np.uint8)
    assert to_rgb(mono, "Mono8", out) is out
    assert (out == mono[..., None]).all()
    with pytest.raises(CorruptFrame, match="unsupported pixel format 'YUV422'"):
        to_rgb(mono, "YUV422")
    with pytest.raises(CorruptFrame, match="RGB8 frame with shape"):
        to_rgb(mono, "RGB8")


def mosaic_rg(rgb: np.ndarray) -> np.ndarray:
    """GenICam BayerRG8: row 0 = R G R G ..., row 1 = G B G B ..."""
    bay = np.empty(rgb.shape[:2], np.uint8)
    bay[0::2, 0::2] = rgb[0::2, 0::2, 0]
    bay[0::2, 1::2] = rgb[0::2, 1::2, 1]
    bay[1::2, 0::2] = rgb[1::2, 0::2, 1]
    bay[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return bay


@pytest.mark.parametrize("roi", [None, (1, 0, 10, 8), (0, 1, 10, 8), (3, 5, 10, 8)])
def test_bayer_rg8_demosaic_keeps_colours_at_any_roi_origin(roi):
    colour = np.array([200, 100, 30], np.uint8)
    rgb = np.broadcast_to(colour, (16, 20, 3)).copy()
    bay = mosaic_rg(rgb)
    full = to_rgb(bay, "BayerRG8")
    np.testing.assert_array_equal(full[4:-4, 4:-4], rgb[4:-4, 4:-4])
    dst = np.zeros((8, 10, 3), np.uint8)
    FrameWriter(roi).write(bay, "BayerRG8", dst)
    np.testing.assert_array_equal(dst[2:-2, 2:-2], np.broadcast_to(colour, (4, 6, 3)))
    small = np.zeros((4, 5, 3), np.uint8)  # demosaic, then downscale
    FrameWriter(roi).write(bay, "BayerRG8", small)
    np.testing.assert_array_equal(small[1:-1, 1:-1], np.broadcast_to(colour, (2, 3, 3)))


@pytest.mark.parametrize("fmt", ["Mono8", "BGR8", "RGBa8", "RGB8"])
def test_frame_writer_matches_convert_then_resize(fmt):
    rgb = gradient(120, 200)
    src = {
        "Mono8": rgb[..., 1].copy(),
        "BGR8": np.ascontiguousarray(rgb[..., ::-1]),
        "RGBa8": np.dstack([rgb, np.zeros((120, 200), np.uint8)]),
        "RGB8": rgb,
    }[fmt]
    roi = (20, 10, 160, 100)
    writer = FrameWriter(roi)
    dst = np.zeros((50, 80, 3), np.uint8)
    writer.write(src, fmt, dst)
    expect = cv2.resize(to_rgb(src, fmt)[10:110, 20:180], (80, 50), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(dst, expect)
    scratch = {k: v.ctypes.data for k, v in writer.scratch.buffers().items()}
    assert scratch or fmt == "RGB8"  # RGB8 resizes straight into the slot
    writer.write(src, fmt, dst)  # scratch buffers are reused, not reallocated
    assert {k: v.ctypes.data for k, v in writer.scratch.buffers().items()} == scratch


def test_as_image_views_flat_buffers_and_rejects_truncated_ones():
    flat = np.arange(4 * 3 * 4, dtype=np.uint8)
    img = as_image(flat, 3, 4, "RGBa8")
    assert img.shape == (4, 3, 4) and np.shares_memory(img, flat)
    assert as_image(flat[:12], 3, 4, "Mono8").shape == (4, 3)
    with pytest.raises(CorruptFrame, match="too short"):
        as_image(flat[:11], 3, 4, "Mono8")


# --- the thread loop ------------------------------------------------------------------------------
class ScriptedSource(BaseSource):
    """Plays a list of actions: an image, an exception, or None (end)."""

    kind = "scripted"

    def __init__(self, script, **kw):
        super().__init__("scripted", **kw)
        self.script = list(script)
        self.opened = 0

    def _open(self):
        self.opened += 1

    def _grab(self):
        item = self.script.pop(0) if self.script else None
        if isinstance(item, BaseException):
            raise item
        return item


def drain(ring: Ring, thread: threading.Thread) -> tuple[list, list]:
    frames, drops = [], []
    while True:
        b = ring.take(8, timeout=0.05)
        frames += [(int(f), tuple(t.tolist())) for f, t in zip(b.frame_id, b.truth, strict=True)]
        drops += list(b.drops())
        ring.release(b)
        if b.empty and not thread.is_alive():
            return frames, drops


def test_loop_drops_corrupt_frames_and_keeps_going():
    good = gradient(16, 16)
    script = [
        Grab(good, "RGB8", 1, (0, 1)),
        Grab(np.zeros(5, np.uint8), "RGB8", 2, (1, 1)),  # wrong shape
        CorruptFrame("cannot read image x.png", t_capture_ns=3, truth=(1, 0)),
        ValueError("driver hiccup"),  # an unexpected exception on one frame
        Grab(good, "RGB8", 5, (0, 0), lost_before=2),
    ]
    src = ScriptedSource(script)
    ring = Ring(4, 8, 8)
    with structlog.testing.capture_logs() as logs:
        t = src.start(ring, 2, threading.Event())
        frames, drops = drain(ring, t)
    assert frames == [(0, (0, 1)), (6, (0, 0))]
    assert [(d[1], d[3], d[4]) for d in drops] == [
        (1, DROP_CORRUPT, (1, 1)),
        (2, DROP_CORRUPT, (1, 0)),
        (3, DROP_CORRUPT, (-1, -1)),
        (4, DROP_LOST, (-1, -1)),
        (5, DROP_LOST, (-1, -1)),
    ]
    assert all(d[0] == 2 for d in drops)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert any("RGB8 frame with shape (5,)" in e.get("reason", "") for e in warnings)
    assert src.state == "done" and src.error is None
    c = src.counters
    assert (c.frames_seen, c.committed, c.dropped_corrupt, c.dropped_lost) == (7, 2, 3, 2)


def test_loop_full_ring_drops_newest_with_truth():
    good = gradient(8, 8)
    src = ScriptedSource([Grab(good, "RGB8", i, (i % 2, 1)) for i in range(5)])
    ring = Ring(2, 8, 8)
    t = src.start(ring, 0, threading.Event())
    t.join(timeout=10)
    frames, drops = drain(ring, t)
    assert [f for f, _ in frames] == [0, 1]
    assert [(d[1], d[3], d[4]) for d in drops] == [(2, DROP_FULL, (0, 1)), (3, DROP_FULL, (1, 1)), (4, DROP_FULL, (0, 1))]
    assert src.counters.dropped_full == 3


def test_loop_reopens_after_source_down_with_backoff():
    good = gradient(8, 8)
    src = ScriptedSource(
        [Grab(good, "RGB8", 1), SourceDown("cable pulled"), Grab(good, "RGB8", 2)],
        reconnect_min_s=0.01,
        reconnect_max_s=0.02,
    )
    ring = Ring(4, 8, 8)
    t = src.start(ring, 0, threading.Event())
    frames, drops = drain(ring, t)
    assert [f for f, _ in frames] == [0, 1] and drops == []
    assert src.counters.reconnects == 1 and src.opened == 2


def test_stop_event_ends_a_paced_source_and_start_twice_is_an_error():
    src = ScriptedSource([Grab(gradient(8, 8), "RGB8", i) for i in range(10_000)], fps=5.0)
    ring = Ring(4, 8, 8)
    stop = threading.Event()
    t = src.start(ring, 0, stop)
    with pytest.raises(RuntimeError, match="already started"):
        src.start(ring, 0, stop)
    stop.set()
    t.join(timeout=10)
    assert not t.is_alive() and src.state == "done"
    assert src.frames_seen < 10  # paced: it did not run through the script


def test_base_source_checks_its_settings_naming_the_camera():
    with pytest.raises(SourceError, match=r"camera 'scripted': fps=-1 must be >= 0"):
        ScriptedSource([], fps=-1)
    with pytest.raises(SourceError, match=r"camera 'scripted': roi=\(0, 0, 0, 5\) must be"):
        ScriptedSource([], roi=[0, 0, 0, 5])
    with pytest.raises(SourceError, match="reconnect_min_s=5, reconnect_max_s=1: need 0 < min <= max"):
        ScriptedSource([], reconnect_min_s=5, reconnect_max_s=1)
    src = ScriptedSource([], roi=[1, 2, 3, 4])
    assert src.roi == (1, 2, 3, 4) and src.writer.roi == (1, 2, 3, 4)
    assert isinstance(src, Source) and (src.state, src.frames_seen) == ("starting", 0)


def test_pacer_schedule_stop_and_late_ticks():
    import time

    stop = threading.Event()
    assert Pacer(0).wait(stop) and Pacer(0).period_ns == 0  # no pacing: never waits
    p = Pacer(0.1)  # a 10 s period: no wait below sleeps, and no stall of this machine makes a tick late
    first = p.next_ns
    assert p.wait(stop) and p.next_ns == first + p.period_ns  # absolute schedule: no drift
    p.next_ns = time.monotonic_ns() - 5 * p.period_ns  # far behind: re-sync, count one late tick
    assert p.wait(stop) and p.late_ticks == 1 and p.next_ns > time.monotonic_ns()
    stop.set()
    assert not p.wait(stop)  # a stop while waiting ends the wait
