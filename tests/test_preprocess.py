"""One preprocessing for training and the line (`linewatch.preprocess.to_model_input`, issue 17 item 1):
the rule itself (crop, per-axis resize, colour, dst without allocation, errors)."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from linewatch.preprocess import ImageError, Scratch, to_model_input

LINE_HW = (512, 1224)
"""The shipped model's input (H, W)."""


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
