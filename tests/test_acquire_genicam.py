"""GenICam source: for real against the genicam wheel's viky.cti (three simulated cameras)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import structlog
from pydantic import ValidationError
from waiting import wait_until

from linewatch.pipeline.acquire.base import SourceDown, SourceError
from linewatch.pipeline.acquire.genicam import GenicamSource, find_bundled_cti, select_device
from linewatch.pipeline.ring import Ring
from linewatch.preprocess import to_model_input
from linewatch.profile import GenicamCamera

HAVE_HARVESTERS = importlib.util.find_spec("harvesters") is not None
CTI = find_bundled_cti()
camera = pytest.mark.camera
needs_viky = pytest.mark.skipif(
    not HAVE_HARVESTERS or CTI is None,
    reason="needs harvesters and the genicam wheel's viky.cti (pip install 'linewatch[camera]')",
)


def collect(ring: Ring, sources, until, timeout_s: float = 30.0):
    """Consume the ring until `until(frames)` holds (or fail after timeout_s); returns the frames."""
    frames: list[tuple[int, int, int, tuple[int, int]]] = []

    def delivered() -> bool:
        if until(frames):
            return True
        b = ring.take(16, timeout=0.2)
        for i in range(b.n):
            frames.append((int(b.camera[i]), int(b.frame_id[i]), int(b.t_capture_ns[i]), tuple(b.truth[i].tolist())))
        ring.release(b)
        return False

    wait_until(delivered, timeout_s, lambda: f"the camera to deliver: {[s.status() for s in sources]}", interval=0)
    return frames


def record_writes(src: GenicamSource) -> list:
    """Wrap the source's frame writer: keep (raw frame, pixel format, slot after writing)."""
    seen: list = []
    orig = src.writer.write

    def write(image, fmt, dst):
        orig(image, fmt, dst)
        if len(seen) < 5:
            seen.append((image.copy(), fmt, dst.copy()))

    src.writer.write = write  # type: ignore[method-assign]
    return seen


@camera
@needs_viky
def test_two_viky_cameras_mono8_and_rgba8_into_one_ring():
    stop = threading.Event()
    ring = Ring(16, 120, 160)
    images = ring.images
    red = GenicamSource(GenicamCamera(
        id="red", cti=str(CTI), device="VikyTL_DEV_red",
        features={"PixelFormat": "RGBa8", "Width": 320, "Height": 240, "AcquisitionFrameRate": 100.0},
    ))
    green = GenicamSource(GenicamCamera(
        id="green", cti=str(CTI), device=1, features={"PixelFormat": "Mono8", "Width": 640, "Height": 480},
        roi=[80, 60, 480, 360],
    ))
    red_w, green_w = record_writes(red), record_writes(green)
    t0 = time.time_ns()
    threads = [red.start(ring, 0, stop), green.start(ring, 1, stop)]
    try:
        assert red.state in ("starting", "up") and red.device_info["serial_number"] == "0"
        nm = red._ia.remote_device.node_map
        assert (nm.Width.value, nm.Height.value, nm.PixelFormat.value) == (320, 240, "RGBa8")
        assert green._ia.remote_device.node_map.PixelFormat.value == "Mono8"
        frames = collect(ring, [red, green], lambda fr: min(sum(f[0] == c for f in fr) for c in (0, 1)) >= 8)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    t1 = time.time_ns()
    assert all(not t.is_alive() for t in threads) and red.state == green.state == "done"
    for cam in (0, 1):
        ids = [f[1] for f in frames if f[0] == cam]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(t0 <= f[2] <= t1 for f in frames)  # host-clock capture stamps
    assert all(f[3] == (-1, -1) for f in frames)  # a camera knows no truth
    assert ring.images is images

    # RGBa8 -> RGB (red ball on white: R = 255 everywhere, G/B = 0 on the ball), downscaled 2x.
    raw, fmt, slot = red_w[-1]
    assert fmt == "RGBa8" and raw.shape == (240, 320, 4)
    np.testing.assert_array_equal(slot, cv2.resize(raw[..., :3], (160, 120), interpolation=cv2.INTER_AREA))
    assert (slot[..., 0] == 255).all() and (slot[..., 2] < 128).any()
    np.testing.assert_array_equal(slot, to_model_input(raw, (120, 160)))  # the one rule of training and the line
    # Mono8 -> RGB through the ROI, downscaled 3x.
    raw, fmt, slot = green_w[-1]
    assert fmt == "Mono8" and raw.shape == (480, 640)
    want = cv2.resize(raw[60:420, 80:560], (160, 120), interpolation=cv2.INTER_AREA)
    for ch in range(3):
        np.testing.assert_array_equal(slot[..., ch], want)
    np.testing.assert_array_equal(slot, to_model_input(raw, (120, 160), roi=(80, 60, 480, 360)))
    assert red._ia is None and green._ia is None  # closed


@camera
@needs_viky
def test_unknown_read_only_and_refused_features_are_named():
    cfg = GenicamCamera(
        id="blue", cti=str(CTI), device=2,
        features={"NoSuchFeature": 1, "PayloadSize": 5, "PixelFormat": "YUV422_8", "Width": 640.0, "Height": 480.5},
    )
    src = GenicamSource(cfg)
    with pytest.raises(SourceError) as err:
        src.start(Ring(4, 8, 8), 0, threading.Event())
    msg = str(err.value)
    assert "NoSuchFeature: unknown feature" in msg
    assert "PayloadSize: read-only" in msg
    assert "PixelFormat='YUV422_8' refused" in msg and "RGBa8, Mono8" in msg
    assert "Height=480.5 refused: an integer is needed" in msg
    assert "Width" not in msg and "strict = false" in msg  # 640.0 is coerced to the integer 640
    assert src._ia is None

    # strict=False: warnings, and the camera runs with what it accepted.
    src = GenicamSource(cfg.model_copy(update={"strict": False}))
    assert src.config.strict is False and src.config.device == 2
    ring = Ring(8, 32, 32)
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        t = src.start(ring, 0, stop)
        try:
            assert src._ia.remote_device.node_map.Width.value == 640
            collect(ring, [src], lambda fr: len(fr) >= 2)
        finally:
            stop.set()
            t.join(timeout=10)
    problems = [e["problem"] for e in logs if e["event"] == "GenICam feature not applied"]
    assert len(problems) == 4 and any("NoSuchFeature" in p for p in problems)


@camera
@needs_viky
def test_reconnects_after_a_fetch_that_raises():
    src = GenicamSource(GenicamCamera(id="red", cti=str(CTI), device=0, features={"AcquisitionFrameRate": 200.0}),
                        reconnect_min_s=0.05, reconnect_max_s=0.1)
    orig = src._fetch
    calls = {"n": 0}

    def flaky_fetch():
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("GenTL: device removed")
        return orig()

    src._fetch = flaky_fetch  # type: ignore[method-assign]
    ring = Ring(16, 32, 32)
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        t = src.start(ring, 0, stop)
        try:
            frames = collect(ring, [src], lambda fr: len(fr) >= 12 and src.counters.reconnects >= 1)
        finally:
            stop.set()
            t.join(timeout=10)
    assert src.counters.reconnects == 1 and src.counters.errors == 1
    assert any(e["event"] == "source down" and "device removed" in e["reason"] for e in logs)
    ids = [f[1] for f in frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # ids keep counting across the reopen


@camera
@needs_viky
def test_device_stopped_under_it_goes_down_and_comes_back():
    src = GenicamSource(GenicamCamera(id="red", cti=str(CTI), device=0, features={"AcquisitionFrameRate": 200.0},
                                      timeout_s=0.05, down_after_s=0.3), reconnect_min_s=0.05)
    ring = Ring(16, 32, 32)
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        t = src.start(ring, 0, stop)
        try:
            collect(ring, [src], lambda fr: len(fr) >= 3)
            # The camera stops streaming under the source (as a rebooting camera would): fetches
            # time out, and after down_after_s the source reopens it.
            src._ia.remote_device.node_map.AcquisitionStop.execute()
            collect(ring, [src], lambda fr: src.counters.reconnects >= 1 and len(fr) >= 3)
        finally:
            stop.set()
            t.join(timeout=10)
    assert src.counters.reconnects == 1 and src.counters.errors == 1
    assert any(e["event"] == "source down" and e["reason"].startswith("no frame for") for e in logs)
    assert src.state == "done"


def test_select_device_by_index_serial_id_and_errors():
    infos = [SimpleNamespace(serial_number=str(i), id_=f"DEV_{c}", user_defined_name=None, model="m") for i, c in enumerate("abc")]
    assert select_device(infos, 2) == 2
    assert select_device(infos, "1") == 1
    assert select_device(infos, "DEV_c") == 2
    assert select_device(infos[:1], None) == 0
    with pytest.raises(SourceError, match="3 cameras found, set `device`"):
        select_device(infos, None)
    with pytest.raises(SourceDown, match=r"device 'DEV_z' not found .*DEV_a"):
        select_device(infos, "DEV_z")
    with pytest.raises(SourceDown, match="device index 3 not present"):
        select_device(infos, 3)


def test_missing_harvesters_names_the_camera_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "harvesters.core", None)  # import fails
    src = GenicamSource(GenicamCamera(id="cam0", cti=str(tmp_path / "x.cti")))
    with pytest.raises(SourceError, match=r"camera.* extra"):
        src.start(Ring(2, 8, 8), 0, threading.Event())


@pytest.mark.skipif(not HAVE_HARVESTERS, reason="needs harvesters")
def test_missing_cti_is_named(tmp_path):
    src = GenicamSource(GenicamCamera(id="cam0", cti="vendor.cti"), cti=tmp_path / "vendor.cti")
    with pytest.raises(SourceError, match=r"vendor\.cti does not exist"):
        src.start(Ring(2, 8, 8), 0, threading.Event())


def test_settings_are_checked():
    with pytest.raises(ValidationError, match="timestamps"):
        GenicamCamera(id="cam0", cti="x.cti", timestamps="gps")
    with pytest.raises(SourceError, match="camera 'cam0': reconnect_min_s=5, reconnect_max_s=1: need 0 < min <= max"):
        GenicamSource(GenicamCamera(id="cam0", cti="x.cti"), reconnect_min_s=5, reconnect_max_s=1)


def test_device_timestamps_map_to_the_host_clock_and_frame_id_gaps_count_as_lost():
    src = GenicamSource(GenicamCamera(id="cam0", cti="x.cti", timestamps="device"))
    # The device clock runs 1e12 ns behind the host; arrival latency varies (+5 ms, +1 ms, +3 ms).
    dev = [10_000_000, 20_000_000, 30_000_000]
    host = [d + 10**12 + lat for d, lat in zip(dev, (5_000_000, 1_000_000, 3_000_000), strict=True)]
    out = [src._device_time(SimpleNamespace(timestamp_ns=d), h) for d, h in zip(dev, host, strict=True)]
    assert out[1:] == [dev[1] + 10**12 + 1_000_000, dev[2] + 10**12 + 1_000_000]  # smallest offset wins
    assert src._device_time(SimpleNamespace(timestamp_ns=0), 123) == 123  # no device clock: host time
    assert [src._lost_before(SimpleNamespace(frame_id=i)) for i in (1, 2, 5, 6, 3, 50_000)] == [0, 0, 2, 0, 0, 0]
