"""Synthetic battery-cell surfaces: determinism, mask/label agreement, dataset writing, preview, CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.cli import main as cli_main
from linewatch.data.check import check_dataset
from linewatch.data.dataset import open_dataset
from linewatch.data.preview import contact_sheet, write_preview
from linewatch.data.synth import ANOMALY_KINDS, SynthConfig, render, render_into, write_dataset
from linewatch.errors import SettingError

SMALL = SynthConfig(height=128, width=304)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_render_full_size_shapes_and_determinism() -> None:
    a = render(7, 3)
    assert a.image.shape == (512, 1224, 3) and a.image.dtype == np.uint8
    assert a.masks.shape == (2, 512, 1224) and a.masks.dtype == np.uint8
    assert set(np.unique(a.masks)) <= {0, 1}
    b = render(7, 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.labels == b.labels and a.kinds == b.kinds
    assert not np.array_equal(render(8, 3).image, a.image)  # another seed
    assert not np.array_equal(render(7, 4).image, a.image)  # another index
    assert 40 < float(a.image.mean()) < 220 and float(a.image.std()) > 2.0  # a textured surface


def test_render_into_matches_render() -> None:
    buf = np.zeros((SMALL.height, SMALL.width, 3), np.uint8)
    for i in range(4):
        labels = render_into(3, i, buf, SMALL)
        s = render(3, i, SMALL)
        assert np.array_equal(buf, s.image)
        assert labels == s.labels
    with pytest.raises(ValueError, match="out_image"):
        render_into(3, 0, np.zeros((10, 10, 3), np.uint8), SMALL)


def test_masks_agree_with_labels() -> None:
    seen_a, seen_h = set(), set()
    for i in range(20):
        s = render(11, i, SMALL)
        assert s.labels == (int(s.masks[0].any()), int(s.masks[1].any()))
        assert (s.labels[0] == 1) == any(k in ANOMALY_KINDS for k in s.kinds)
        assert (s.labels[1] == 1) == ("adhesive" in s.kinds)
        seen_a.add(s.labels[0])
        seen_h.add(s.labels[1])
    assert seen_a == {0, 1} and seen_h == {0, 1}  # the mix has both classes of both heads


def test_anomaly_mask_covers_exactly_the_altered_pixels() -> None:
    """With the noise off, pixels outside the (dilated) mask are the same with and without anomalies."""
    cfg = SynthConfig(height=128, width=304, anomaly_rate=1.0, noise_sigma=(0.0, 0.0))
    ref = SynthConfig(height=128, width=304, anomaly_rate=0.0, noise_sigma=(0.0, 0.0))
    for i in range(6):
        s = render(5, i, cfg)
        r = render(5, i, ref)
        # same rng draws up to the anomalies: the 'wants' are drawn first, the surface after
        changed = np.abs(s.image.astype(int) - r.image.astype(int)).max(axis=2) > 0
        assert s.masks[0].any()
        outside = changed & (s.masks[0] == 0)
        # the mask is alpha >= 0.25 dilated by 1 px: only faint fringes (< 0.25 alpha) may lie outside
        assert outside.sum() <= 0.1 * changed.sum()
        # and most masked pixels really changed
        assert (changed & (s.masks[0] == 1)).sum() >= 0.6 * s.masks[0].sum()


def test_rates_zero_and_one() -> None:
    for i in range(3):
        s = render(1, i, SynthConfig(height=128, width=304, anomaly_rate=0.0, adhesive_rate=1.0))
        assert s.labels == (0, 1) and not s.masks[0].any()
        s = render(1, i, SynthConfig(height=128, width=304, anomaly_rate=1.0, adhesive_rate=0.0))
        assert s.labels == (1, 0) and not s.masks[1].any()


def test_anomalies_on_adhesive() -> None:
    """The knob centres anomalies on glue (render and render_into alike); at 0 they land anywhere."""
    on = SynthConfig(height=256, width=608, anomaly_rate=1.0, adhesive_rate=1.0, anomaly_on_adhesive=1.0)
    hits = 0
    for i in range(12):
        s = render(3, i, on)
        hits += bool((s.masks[0].astype(bool) & s.masks[1].astype(bool)).any())
        out = np.zeros_like(s.image)
        assert render_into(3, i, out, on) == s.labels and (out == s.image).all()
    assert hits == 12
    off = SynthConfig(height=256, width=608, anomaly_rate=1.0, adhesive_rate=1.0)
    plain = [render(3, i, off) for i in range(12)]
    assert sum(bool((p.masks[0].astype(bool) & p.masks[1].astype(bool)).any()) for p in plain) < 12
    with pytest.raises(ValueError, match="anomaly_on_adhesive"):
        SynthConfig(anomaly_on_adhesive=-0.1)


def test_contrast_range() -> None:
    """The contrast knob scales the anomalies only: same geometry and masks, fainter or stronger pixels."""
    base = dict(height=256, width=608, anomaly_rate=1.0)
    flat, faint, strong = (
        render(5, 2, SynthConfig(**base, contrast=c))  # type: ignore[arg-type]
        for c in ((1e-3, 1e-3), (12.0, 13.0), (55.0, 60.0))
    )
    assert (flat.masks == faint.masks).all() and (faint.masks == strong.masks).all()
    inside = faint.masks[0].astype(bool)
    assert inside.any()
    d_faint = np.abs(faint.image.astype(int) - flat.image.astype(int))
    d_strong = np.abs(strong.image.astype(int) - flat.image.astype(int))
    near = cv2.dilate(faint.masks[0], np.ones((9, 9), np.uint8)).astype(bool)  # soft edges, rims
    assert (d_faint[~near] <= 1).all() and (d_strong[~near] <= 1).all()  # nothing else moves
    assert 3 * d_faint[inside].mean() < d_strong[inside].mean()
    for bad in ((0.0, 10.0), (30.0, 12.0), (12.0, 300.0)):
        with pytest.raises(ValueError, match="contrast"):
            SynthConfig(contrast=bad)


def test_anomaly_weights() -> None:
    """The kind weights pick what is drawn: all corrosion at (0, 0, 1); negative or all-zero weights refused."""
    cfg = SynthConfig(height=256, width=608, anomaly_rate=1.0, anomaly_weights=(0.0, 0.0, 1.0))
    kinds = [k for i in range(8) for k in render(4, i, cfg).kinds if k in ANOMALY_KINDS]
    assert kinds and set(kinds) == {"corrosion"}
    for bad in ((-1.0, 1.0, 1.0), (0.0, 0.0, 0.0)):
        with pytest.raises(ValueError, match="anomaly_weights"):
            SynthConfig(anomaly_weights=bad)


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        SynthConfig(height=100)
    with pytest.raises(ValueError, match="anomaly_rate"):
        SynthConfig(anomaly_rate=1.5)


def test_write_dataset_is_byte_identical(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "A", 6, 1, SMALL, val_fraction=0.2, test_fraction=0.34)
    b = write_dataset(tmp_path / "B", 6, 1, SMALL, val_fraction=0.2, test_fraction=0.34)
    c = write_dataset(tmp_path / "C", 6, 2, SMALL)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db and len(da) == 6 * 3 + 1  # image + 2 masks each, labels.csv
    assert da != dc
    ds = open_dataset(a)
    assert [s.split for s in ds.samples] == ["train"] * 3 + ["val"] + ["test"] * 2
    assert all(s.group == "synthetic" for s in ds.samples)
    for i, smp in enumerate(ds.samples):
        img, masks, known = ds.load(smp)
        r = render(1, i, SMALL)
        assert np.array_equal(img, r.image) and np.array_equal(masks, r.masks)
        assert known.tolist() == [True, True]
        assert (smp.labels["anomaly"], smp.labels["adhesive"]) == r.labels
    report = check_dataset(a)
    assert report.ok and report.n_images == 6
    from linewatch.errors import DatasetError

    with pytest.raises(DatasetError, match="already exists"):
        write_dataset(a, 2, 1, SMALL)


def test_cli_synth_and_check(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    prev = tmp_path / "sheet.png"
    args = ["synth", "--out", str(out), "--count", "4", "--seed", "3", "--height", "128", "--width", "304"]
    assert cli_main([*args, "--test", "0.25", "--preview", str(prev)]) == 0
    assert prev.stat().st_size > 1000
    assert cli_main(["data", "check", str(out)]) == 0
    assert cli_main(["synth", "--out", str(tmp_path / "x"), "--count", "2", "--height", "100"]) == 2
    assert cli_main(["synth", "--out", str(tmp_path / "y"), "--count", "2", "--contrast", "30,12"]) == 2
    faint = tmp_path / "faint"
    assert cli_main([*args[:2], str(faint), *args[3:], "--contrast", "12,20"]) == 0
    assert cli_main(["synth", "--out", str(tmp_path / "z"), "--count", "2", "--anomaly-weights", "0,0,0"]) == 2
    assert (faint / "labels.csv").read_text() == (out / "labels.csv").read_text().replace(",test,", ",train,")


def test_contact_sheet_outlines() -> None:
    s = [
        render(2, i, SynthConfig(height=128, width=304, anomaly_rate=1.0, adhesive_rate=1.0))
        for i in range(4)
    ]
    sheet = contact_sheet(
        [x.image for x in s], [x.masks for x in s], cols=2, tile_width=152, captions=["a"] * 4
    )
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[1] == 2 * 152 + 3 * 4
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 80) & (sheet[..., 2] < 80)
    green = (sheet[..., 1] > 180) & (sheet[..., 0] < 100) & (sheet[..., 2] < 100)
    assert red.any() and green.any()
    plain = contact_sheet([x.image for x in s], None, cols=2, tile_width=152)
    assert not ((plain[..., 0] > 200) & (plain[..., 1] < 80) & (plain[..., 2] < 80)).any()


def test_write_preview_sheets_the_first_samples_of_a_dataset(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", 4, 2, SMALL)
    write_preview(ds, tmp_path / "a.png", count=2, cols=2)
    write_preview(ds, tmp_path / "b.png", count=2, cols=2)
    sheet = cv2.imread(str(tmp_path / "a.png"))
    assert sheet is not None and sheet.shape[1] == 2 * 408 + 3 * 4  # two tiles of the default width
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()  # deterministic
    with pytest.raises(SettingError, match="could not write the PNG"):
        write_preview(ds, tmp_path / "missing" / "c.png")


def test_parallel_jobs_write_the_same_files(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    write_dataset(tmp_path / "one", 6, seed=5, cfg=SMALL, test_fraction=0.5)
    write_dataset(tmp_path / "two", 6, seed=5, cfg=SMALL, test_fraction=0.5, jobs=2)
    a, b = digest(tmp_path / "one"), digest(tmp_path / "two")
    assert len(a) == 6 * 3 + 1  # image + 2 masks per sample, labels.csv
    assert a == b
