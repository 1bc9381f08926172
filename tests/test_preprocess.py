"""One preprocessing for training and the line (`linewatch.preprocess.to_model_input`, issue 17 item 1).

The rule itself (crop, per-axis resize, colour, dst without allocation, errors), then odd image shapes
through every path that turns a source image into the model input — the training cache, evaluate,
`linewatch infer`'s loader, calibrate, INT8 calibration, the replay source into a ring slot, the camera
frame writer in every pixel format, the bench pool against the synthetic camera — asserting the same
bytes, then the same scores through the tiny model via `evaluate`, `infer`, `calibrate` and the daemon
replaying the images. Guards: the rules these paths had before would have given other bytes (and other
scores) for these shapes, so the identities are not vacuous.
"""

from __future__ import annotations

import json
import threading
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.data.dataset import open_dataset, read_frame, read_image
from linewatch.data.write import write_sample
from linewatch.pipeline.acquire.frames import CorruptFrame, FrameWriter, as_image
from linewatch.pipeline.acquire.replay import ReplaySource
from linewatch.pipeline.ring import Ring
from linewatch.preprocess import ImageError, Scratch, to_model_input
from linewatch.profile import ReplayCamera

LINE_HW = (512, 1224)
"""The shipped model's input (H, W): the shapes below shrink, grow and mix against it."""

SHAPES = [  # (W, H, colour) of the source images
    (1000, 700, "rgb"),   # H shrinks, W grows: the case the old rules disagreed on
    (1500, 700, "mono"),  # both shrink
    (800, 800, "rgb"),    # mixed
    (700, 1000, "rgb"),   # portrait: mixed
    (1224, 512, "rgb"),   # the input size: a copy
    (600, 300, "rgb"),    # smaller than the input: both grow
]


def image(w: int, h: int, colour: str, seed: int) -> np.ndarray:
    """A structured test image: smooth shading, noise, thin dark lines (what a resize rule changes)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 110 + 50 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    img = np.stack([base + 20 * c for c in range(3)], axis=2) + rng.normal(0, 18, (h, w, 3))
    img[(yy.astype(int) % 41) < 2] -= 90  # 2-px horizontal lines
    img[(xx.astype(int) % 53) == 0] += 80  # 1-px vertical lines
    out = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[..., 1]) if colour == "mono" else out


def write_dataset(root: Path, shapes: list[tuple[int, int, str]]) -> list[str]:
    """One test-split sample per shape, named so file order = labels.csv order; anomaly mask = a rectangle."""
    names = []
    for k, (w, h, colour) in enumerate(shapes):
        img = image(w, h, colour, seed=k)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : h // 3 + h // 5, w // 4 : w // 4 + w // 7] = 1
        name = f"s{k:02d}_{w}x{h}_{colour}"
        write_sample(root, name, "test", img, {"anomaly": mask, "adhesive": None}, {"anomaly": 1, "adhesive": 0})
        names.append(name)
    return names


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prep") / "ds"
    write_dataset(root, SHAPES)
    return root


def reference(root: Path, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    ds = open_dataset(root)
    return {s.name: to_model_input(read_image(s.image_path), hw) for s in ds.split("test")}


def replay_frames(root: Path, hw: tuple[int, int], roi: list[int] | None = None) -> dict[str, np.ndarray]:
    """The replay source (the daemon's camera for a dataset folder) into ring slots of size `hw`."""
    src = ReplaySource(ReplayCamera(id="r", path=str(root), split="test", roi=roi))
    ring = Ring(16, *hw)
    t = src.start(ring, 0, threading.Event())
    t.join(60)
    b = ring.take(16, timeout=5)
    assert b.n == len(src.files) and not list(b.drops())
    out = {src.files[int(fid)].stem: b.images[i].copy() for i, fid in enumerate(b.frame_id)}
    ring.release(b)
    return out


# -- old rules, computed inline (what the paths did before this module) ---------------------------

def old_acquire(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """acquire.frames.fit_into: INTER_AREA only when both axes shrink (replay, genicam, calibrate, INT8)."""
    h, w = hw
    both = h <= rgb.shape[0] and w <= rgb.shape[1]
    return rgb.copy() if rgb.shape[:2] == hw else cv2.resize(
        rgb, (w, h), interpolation=cv2.INTER_AREA if both else cv2.INTER_LINEAR)


def old_training(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """model.data.resize_image: INTER_AREA when the pixel count shrinks (training cache, evaluate)."""
    h, w = hw
    fewer = rgb.shape[0] * rgb.shape[1] > h * w
    return rgb.copy() if rgb.shape[:2] == hw else cv2.resize(
        rgb, (w, h), interpolation=cv2.INTER_AREA if fewer else cv2.INTER_LINEAR)


def old_infer(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """data.dataset.read_frame: INTER_AREA when any axis shrinks (`linewatch infer`)."""
    h, w = hw
    any_ = rgb.shape[0] > h or rgb.shape[1] > w
    return rgb.copy() if rgb.shape[:2] == hw else cv2.resize(
        rgb, (w, h), interpolation=cv2.INTER_AREA if any_ else cv2.INTER_LINEAR)


OLD_RULES = {"acquire": old_acquire, "training": old_training, "infer": old_infer}


# -- the rule ------------------------------------------------------------------------------------

def test_every_colour_layout_becomes_the_same_rgb():
    rgb = image(40, 30, "rgb", seed=1)
    grey = rgb[..., 1].copy()
    alpha = np.full((30, 40, 1), 9, np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    for hw in ((30, 40), (20, 25), (45, 60), (20, 60)):  # same, shrink, grow, mixed
        want = to_model_input(rgb, hw)
        np.testing.assert_array_equal(to_model_input(bgr, hw, order="bgr"), want)
        np.testing.assert_array_equal(to_model_input(np.dstack([rgb, alpha]), hw), want)
        np.testing.assert_array_equal(to_model_input(np.dstack([bgr, alpha]), hw, order="bgr"), want)
        mono = to_model_input(grey, hw)
        np.testing.assert_array_equal(to_model_input(grey[..., None], hw), mono)
        np.testing.assert_array_equal(mono, np.repeat(mono[..., :1], 3, axis=2))  # R = G = B
        np.testing.assert_array_equal(mono[..., 0], want[..., 1])  # the grey is what the green channel became
    np.testing.assert_array_equal(to_model_input(rgb, (30, 40)), rgb)  # same size: the pixels themselves


def test_the_resize_rule_filters_each_axis_by_what_happens_to_it():
    src = image(120, 90, "rgb", seed=2)
    np.testing.assert_array_equal(to_model_input(src, (45, 60)), cv2.resize(src, (60, 45), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(to_model_input(src, (90, 200)), cv2.resize(src, (200, 90), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(to_model_input(src, (180, 240)), cv2.resize(src, (240, 180), interpolation=cv2.INTER_LINEAR))
    # mixed: box-average the shrinking axis (H 90 -> 30), then interpolate the growing one (W 120 -> 300)
    mid = cv2.resize(src, (120, 30), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(to_model_input(src, (30, 300)), cv2.resize(mid, (300, 30), interpolation=cv2.INTER_LINEAR))
    mid = cv2.resize(src, (40, 90), interpolation=cv2.INTER_AREA)  # W shrinks, H grows
    np.testing.assert_array_equal(to_model_input(src, (200, 40)), cv2.resize(mid, (40, 200), interpolation=cv2.INTER_LINEAR))


def box_weights(n_src: int, n_dst: int) -> np.ndarray:
    """[n_dst, n_src]: the share of each source pixel in each output pixel when n_src shrinks to n_dst."""
    edges = np.arange(n_dst + 1) * n_src / n_dst
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_src)[None, :]
    return np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None) / (n_src / n_dst)


def test_a_shrinking_axis_is_box_averaged_even_while_the_other_grows():
    rows = np.tile(np.array([255, 0, 0, 0], np.uint8), 6)  # a 1-px line every 4 rows
    src = np.repeat(rows[:, None], 10, axis=1)  # 24 x 10
    want = box_weights(24, 7) @ rows.astype(np.float64)  # H 24 -> 7 box-averaged; W 10 -> 20 keeps rows flat
    out = to_model_input(src, (7, 20))[..., 0]
    assert np.abs(out - want[:, None]).max() <= 1, (out[:, 0], want)  # every line counted, by its coverage
    for k in (cv2.INTER_AREA, cv2.INTER_LINEAR):  # one cv2.resize: lines skipped or over-weighted
        one_pass = cv2.resize(src, (20, 7), interpolation=k)
        assert np.abs(one_pass - want[:, None]).max() > 100, k


def test_a_roi_is_cropped_before_anything_else():
    src = image(300, 200, "rgb", seed=3)
    roi = (17, 31, 211, 97)
    part = src[31 : 31 + 97, 17 : 17 + 211]
    for hw in ((97, 211), (50, 80), (120, 400), (60, 400)):
        np.testing.assert_array_equal(to_model_input(src, hw, roi=roi), to_model_input(part, hw))


def test_dst_is_written_in_place_and_the_line_allocates_no_frame_per_call():
    src = image(1000, 700, "mono", seed=4)  # mixed against 512x1224: the two-pass case, mono: a colour step
    slots = np.zeros((2, *LINE_HW, 3), np.uint8)
    slot0, slot1 = slots[0], slots[1]
    scratch = Scratch()
    assert to_model_input(src, roi=(0, 0, 1000, 700), dst=slot1, scratch=scratch) is slot1
    np.testing.assert_array_equal(slot1, to_model_input(src, LINE_HW))
    assert not slot0.any()
    held = {k: v.ctypes.data for k, v in scratch.buffers().items()}
    assert {use for use, _ in held} == {"shrunk", "resized"}
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            to_model_input(src, dst=slot0, scratch=scratch)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak} bytes allocated for 5 frames of {slot0.nbytes} bytes"
    assert {k: v.ctypes.data for k, v in scratch.buffers().items()} == held  # reused, not reallocated
    assert to_model_input(src, LINE_HW).base is None  # without dst: a new array of its own


@pytest.mark.parametrize(("call", "message"), [
    (lambda: to_model_input(np.zeros((4, 4), np.float32), (2, 2)), r"dtype float32; allowed: uint8"),
    (lambda: to_model_input(np.zeros((4, 4, 2), np.uint8), (2, 2)), r"shape \(4, 4, 2\); allowed: \[h, w\]"),
    (lambda: to_model_input(np.zeros((4, 4, 3), np.uint8), (2, 2), order="bgra"), r"order 'bgra'; allowed: rgb, bgr"),
    (lambda: to_model_input(np.zeros((4, 4), np.uint8), (2, 2), roi=(2, 0, 3, 1)), r"ROI \(x=2, y=0, w=3, h=1\) does not fit the 4x4"),
    (lambda: to_model_input(np.zeros((4, 4), np.uint8), (2, 0)), r"hw = \(2, 0\); need \(height, width\) with both >= 1"),
    (lambda: to_model_input(np.zeros((4, 4), np.uint8)), r"needs hw \(height, width\) or dst"),
    (lambda: to_model_input(np.zeros((4, 4), np.uint8), (3, 3), dst=np.zeros((2, 2, 3), np.uint8)), r"dst is 2x2 \(HxW\) but hw = \(3, 3\)"),
    (lambda: to_model_input(np.zeros((4, 4), np.uint8), dst=np.zeros((2, 2, 3), np.float32)), r"dst is float32 \(2, 2, 3\); need uint8"),
])
def test_errors_name_the_value_and_what_is_allowed(call, message):
    with pytest.raises(ImageError, match=message):
        call()


def test_the_frame_writer_reports_what_the_rule_refuses_as_a_corrupt_frame():
    with pytest.raises(CorruptFrame, match=r"ROI \(x=8, y=0, w=4, h=4\) does not fit the 10x10"):
        FrameWriter((8, 0, 4, 4)).write(np.zeros((10, 10), np.uint8), "Mono8", np.zeros((4, 4, 3), np.uint8))


# -- every path, the same bytes ------------------------------------------------------------------

def test_every_path_makes_the_same_model_input_bytes_from_each_shape(dataset: Path):
    pytest.importorskip("torch", reason="the training cache is torch tensors (linewatch[train])")
    from linewatch.calibrate import collect_scores
    from linewatch.engines.quantize import load_frames
    from linewatch.model.data import build_cache
    from linewatch.model.evaluate import predict_samples

    want = reference(dataset, LINE_HW)
    ds = open_dataset(dataset)
    samples = ds.split("test")
    names = [s.name for s in samples]
    got: dict[str, list[np.ndarray]] = {}
    got["training cache"] = list(build_cache(ds, samples, LINE_HW, workers=2).images.numpy())
    seen: list[np.ndarray] = []

    def predict(frames: np.ndarray) -> np.ndarray:
        seen.extend(f.copy() for f in frames)
        return np.zeros((len(frames), 2), np.float32)

    predict_samples(predict, ds, samples, LINE_HW, batch=4)
    got["evaluate"] = seen

    class Capture:  # the engine calibrate scores through
        input_hw, max_batch = LINE_HW, 4
        frames: list[np.ndarray] = []

        def infer(self, batch: np.ndarray):
            self.frames.extend(f.copy() for f in batch)
            return None, np.zeros((len(batch), 2), np.float32)

    engine = Capture()
    collect_scores(engine, ds, samples)
    got["calibrate"] = engine.frames
    got["infer (read_frame)"] = [read_frame(s.image_path, LINE_HW) for s in samples]
    got["INT8 calibration"] = list(load_frames(dataset, "test", LINE_HW)[0])
    replayed = replay_frames(dataset, LINE_HW)
    got["replay into a ring slot"] = [replayed[n] for n in names]
    for path, frames in got.items():
        assert len(frames) == len(names), path
        for name, frame in zip(names, frames, strict=True):
            assert frame.dtype == np.uint8 and frame.shape == (*LINE_HW, 3), (path, name)
            assert np.array_equal(frame, want[name]), f"{path} differs from to_model_input on {name}"


@pytest.mark.parametrize("fmt", ["Mono8", "RGB8", "BGR8", "RGBa8", "BGRa8"])
def test_camera_buffers_in_every_pixel_format_make_the_bytes_of_the_file(fmt: str, dataset: Path):
    want = reference(dataset, LINE_HW)
    ds = open_dataset(dataset)
    writer = FrameWriter()  # what GenicamSource (and every source) writes its slots with
    slot = np.empty((*LINE_HW, 3), np.uint8)
    checked = 0
    for s in ds.split("test"):
        rgb = read_image(s.image_path)
        mono = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        if (fmt == "Mono8") != mono:
            continue  # a colour image has no Mono8 buffer with its bytes; a grey one is delivered as Mono8
        raw = {"Mono8": rgb[..., 0], "RGB8": rgb, "BGR8": rgb[..., ::-1],
               "RGBa8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
               "BGRa8": np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])}[fmt]
        flat = np.ascontiguousarray(raw).reshape(-1)  # as the GenTL buffer arrives
        h, w = rgb.shape[:2]
        writer.write(as_image(flat, w, h, fmt), fmt, slot)
        assert np.array_equal(slot, want[s.name]), f"{fmt} differs on {s.name}"
        checked += 1
    assert checked == (1 if fmt == "Mono8" else len(SHAPES) - 1)


def test_a_camera_roi_crops_the_same_way_in_the_replay_and_the_camera_writer(dataset: Path):
    roi = [37, 21, 540, 270]  # inside every test image
    ds = open_dataset(dataset)
    replayed = replay_frames(dataset, LINE_HW, roi=roi)
    slot = np.empty((*LINE_HW, 3), np.uint8)
    for s in ds.split("test"):
        rgb = read_image(s.image_path)
        want = to_model_input(rgb, LINE_HW, roi=tuple(roi))
        assert np.array_equal(replayed[s.name], want), s.name
        FrameWriter(tuple(roi)).write(np.ascontiguousarray(rgb[..., ::-1]), "BGR8", slot)
        assert np.array_equal(slot, want), s.name


def test_the_bench_pool_is_what_the_synthetic_camera_writes_into_its_ring():
    from linewatch.bench.source import render_pool
    from linewatch.pipeline.acquire.synthetic import SyntheticSource
    from linewatch.profile import SyntheticCamera

    hw = (64, 96)  # below the renderer's 128 px: both render 128x128 and fit it to the input
    pool, truth = render_pool(3, hw, seed=5, defect_rate=0.5, adhesive_rate=0.5)
    cam = SyntheticSource(SyntheticCamera(id="line", seed=5, pool=3, count=3, defect_rate=0.5, adhesive_rate=0.5),
                          height=128, width=128)
    ring = Ring(8, *hw)
    cam.start(ring, 0, threading.Event()).join(60)
    b = ring.take(8, timeout=5)
    assert b.n == 3
    np.testing.assert_array_equal(b.images[:3], pool)
    np.testing.assert_array_equal(b.truth[:3], truth)
    ring.release(b)


@pytest.mark.parametrize(("h", "w"), [(704, 1000), (704, 1504), (800, 800)])
def test_the_synthetic_camera_at_odd_sizes_writes_to_model_input_of_what_it_rendered(h: int, w: int):
    """The simulated camera renders at its own size (multiples of 8, the renderer's rule) and its ring
    slots hold `to_model_input` of that render: the line's one rule, not a resize of its own."""
    from linewatch.data.synth import render_into
    from linewatch.pipeline.acquire.synthetic import SyntheticSource, synth_config
    from linewatch.profile import SyntheticCamera

    cam = SyntheticSource(SyntheticCamera(id="line", seed=7, pool=2, count=2, defect_rate=0.5), height=h, width=w)
    ring = Ring(4, *LINE_HW)
    cam.start(ring, 0, threading.Event()).join(60)
    b = ring.take(4, timeout=5)
    assert b.n == 2
    rendered = np.empty((h, w, 3), np.uint8)
    for i in range(2):
        render_into(7, i, rendered, synth_config(h, w, 0.5, None))
        np.testing.assert_array_equal(b.images[i], to_model_input(rendered, LINE_HW), err_msg=f"frame {i}")
    ring.release(b)


def test_the_mask_target_covers_what_the_image_shows_after_the_same_geometry(dataset: Path):
    """The training cache's mask (own rule: any pixel under the cell) and image (to_model_input) agree on
    where the annotated rectangle lies, for every shape: same crop (none), same size, pixel centres aligned."""
    pytest.importorskip("torch", reason="the training cache is torch tensors (linewatch[train])")
    from linewatch.model.data import MASK_STRIDE, build_cache

    ds = open_dataset(dataset)
    samples = ds.split("test")
    cache = build_cache(ds, samples, LINE_HW, workers=2)
    H, W = LINE_HW
    for i, (w, h, _) in enumerate(SHAPES):
        r0, r1, c0, c1 = h // 3, h // 3 + h // 5, w // 4, w // 4 + w // 7  # the rectangle in source pixels
        cells = np.argwhere(cache.masks[i, 0].numpy() > 0)
        (y0, x0), (y1, x1) = cells.min(0) * MASK_STRIDE, (cells.max(0) + 1) * MASK_STRIDE
        ey0, ey1, ex0, ex1 = r0 * H / h, r1 * H / h, c0 * W / w, c1 * W / w  # where it lands at the input
        assert y0 <= ey0 and ey1 <= y1 and x0 <= ex0 and ex1 <= x1, SHAPES[i]
        assert ey0 - y0 < MASK_STRIDE + 1 and y1 - ey1 < MASK_STRIDE + 1, SHAPES[i]  # at most one cell more
        assert ex0 - x0 < MASK_STRIDE + 1 and x1 - ex1 < MASK_STRIDE + 1, SHAPES[i]


def test_the_old_rules_disagree_on_these_shapes_so_the_byte_test_can_fail(dataset: Path):
    """Guard: computed inline, the three rules the paths had before give other bytes than `to_model_input`
    on at least one shape each, and disagree with each other (the train/serve skew this module ends)."""
    ds = open_dataset(dataset)
    differs: dict[str, list[str]] = {name: [] for name in OLD_RULES}
    skew = []
    for s in ds.split("test"):
        rgb = read_image(s.image_path)
        now = to_model_input(rgb, LINE_HW)
        old = {name: rule(rgb, LINE_HW) for name, rule in OLD_RULES.items()}
        for name, frame in old.items():
            if not np.array_equal(frame, now):
                differs[name].append(s.name)
        if not np.array_equal(old["acquire"], old["training"]):
            skew.append(s.name)
    assert all(differs.values()), differs
    assert any("1000x700" in n for n in skew), skew  # the line and training fed the model other pixels


# -- the same scores -----------------------------------------------------------------------------

TINY_SHAPES = [  # against the tiny model's 64x96 (H x W): shrink, mixed both ways, same, grow
    (1000, 700, "rgb"), (1500, 700, "mono"), (800, 800, "rgb"), (700, 1000, "rgb"),
    (200, 48, "rgb"), (60, 200, "mono"), (96, 64, "rgb"), (60, 40, "rgb"),
]

PROFILE = '''[station]
name = "prep"
endpoint = "tcp://127.0.0.1:5555"
[model]
path = "tiny.onnx"
backend = "onnxruntime"
max_batch = 1
[ring]
slots = 32
[decision]
deadline_ms = 5000
[[camera]]
id = "replay0"
source = "replay"
path = "ds"
split = "test"
fps = 50
'''


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, onnx_path: Path) -> Path:
    """A station folder: the tiny model, a dataset of TINY_SHAPES, a profile replaying it."""
    d = tmp_path_factory.mktemp("station")
    for suffix in (".onnx", ".json"):
        (d / f"tiny{suffix}").write_bytes(onnx_path.with_suffix(suffix).read_bytes())
    write_dataset(d / "ds", TINY_SHAPES)
    (d / "station.toml").write_text(PROFILE)
    return d


def daemon_scores(station: Path) -> dict[str, tuple[float, float]]:
    from fakes import FakeLog, FakePublisher

    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import load_profile
    from linewatch.sdnotify import Notifier

    prof = station / "station.toml"
    pub = FakePublisher()
    d = Daemon(load_profile(prof), profile_path=prof, publisher=pub, notifier=Notifier(env={}), log=FakeLog())
    d.start()
    try:
        assert d.join(60) == 0
    finally:
        d.stop()
    files = d.sources[0].files
    assert len(pub.decisions) == len(files)
    assert all(x.scores is not None for x in pub.decisions), [x.reasons for x in pub.decisions]
    return {files[x.frame_id].stem: x.scores for x in pub.decisions}


def test_evaluate_infer_calibrate_and_the_replaying_daemon_give_identical_scores(
    station: Path, capsys: pytest.CaptureFixture[str],
):
    """One frame per engine call everywhere (ONNX Runtime's float sums depend on the batch it is given)."""
    from linewatch.calibrate import score_split
    from linewatch.cli import main as cli_main
    from linewatch.model.evaluate import open_predictor, predict_samples

    ds = open_dataset(station / "ds")
    samples = ds.split("test")
    names = [s.name for s in samples]
    predict, hw, _ = open_predictor(station / "tiny.onnx", batch=1)
    evaluate = predict_samples(predict, ds, samples, hw, batch=1)
    calibrate, _ = score_split(station / "tiny.onnx", station / "ds", "test", backend="onnxruntime", max_batch=1)
    assert cli_main(["infer", "--model", str(station / "tiny.onnx"), "--backend", "onnxruntime", "--max-batch", "1",
                     "--json", *(str(s.image_path) for s in samples)]) == 0
    rows = json.loads(capsys.readouterr().out)["images"]
    infer = np.array([[r["scores"]["anomaly"], r["scores"]["adhesive"]] for r in rows], np.float32)
    live = daemon_scores(station)
    line = np.array([live[n] for n in names], np.float32)
    assert np.ptp(evaluate[:, 0]) > 0.01  # scores that move with the pixels
    for path, scores in (("calibrate", calibrate), ("infer", infer), ("daemon replay", line)):
        assert np.array_equal(scores, evaluate), f"{path} vs evaluate: max |diff| {np.abs(scores - evaluate).max()}"


def test_the_old_training_rule_would_have_scored_other_than_the_line(station: Path):
    """Guard for the score identity: the old training/evaluate rule moves the tiny model's scores on the
    mixed shapes by far more than any float noise, so identical scores are a result, not a given."""
    from linewatch.engines.factory import open_engine

    ds = open_dataset(station / "ds")
    engine = open_engine(station / "tiny.onnx", backend="onnxruntime", max_batch=1)
    try:
        hw = engine.input_hw
        worst = 0.0
        for s in ds.split("test"):
            rgb = read_image(s.image_path)
            now = engine.infer(to_model_input(rgb, hw)[None])[1].copy()
            old = engine.infer(old_training(rgb, hw)[None])[1].copy()
            worst = max(worst, float(np.abs(now - old).max()))
    finally:
        engine.close()
    assert worst > 1e-3, worst
