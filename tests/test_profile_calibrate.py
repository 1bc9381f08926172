"""`linewatch calibrate`: the threshold choice, the textual rewrite of a profile, and the command end to end."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from linewatch.calibrate import (
    calibrate,
    check_target_tnr,
    choose_threshold,
    rates,
    save_thresholds,
    written_threshold,
)
from linewatch.cli import main
from linewatch.errors import ProfileError, SettingError
from linewatch.profile import load_profile, parse_profile, rewrite_thresholds

REPO = Path(__file__).resolve().parent.parent
CAM = '[[camera]]\nid = "c"\nsource = "synthetic"\n'
NEW = {"anomaly": 0.4321, "adhesive": 0.55}


def test_balanced_accuracy_picks_the_middle_of_the_gap():
    labels = np.array([0, 0, 0, 1, 1, -1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.9, 0.0])  # the unknown label is ignored
    t = choose_threshold(labels, scores)
    assert t == pytest.approx(0.45)
    assert rates(labels, scores, t) == (1.0, 1.0)


def test_overlapping_classes_maximise_balanced_accuracy():
    rng = np.random.default_rng(0)
    neg, pos = rng.uniform(0, 0.6, 200), rng.uniform(0.4, 1.0, 50)
    labels = np.r_[np.zeros(200), np.ones(50)].astype(int)
    scores = np.r_[neg, pos]
    t = choose_threshold(labels, scores)
    best = max(sum(rates(labels, scores, c)) for c in np.linspace(0, 1, 1001))
    assert sum(rates(labels, scores, t)) >= best - 1e-9


def test_target_tnr_and_missing_classes():
    labels = np.array([0] * 100 + [1])
    scores = np.r_[np.linspace(0, 0.99, 100), 1.0]
    t = choose_threshold(labels, scores, target_tnr=0.95)
    assert rates(labels, scores, t)[1] >= 0.95
    assert rates(labels, scores, float(np.nextafter(t, 0) - 0.01))[1] < 0.95  # the lowest such t
    assert choose_threshold(np.array([1, 1]), np.array([0.2, 0.9])) is None
    assert choose_threshold(np.array([-1, -1]), np.array([0.2, 0.9])) is None


def test_calibrate_writes_4_decimals_and_keeps_a_head_without_both_classes():
    labels = np.array([[0, -1], [0, 1], [1, 1], [1, -1]])
    scores = np.array([[0.1, 0.9], [0.20003, 0.8], [0.9, 0.7], [0.8, 0.6]])
    anomaly, adhesive = calibrate(scores, labels, (0.7, 0.5))
    assert (anomaly.positives, anomaly.negatives) == (2, 2) and anomaly.current_rates == (1.0, 1.0)
    assert anomaly.proposed == 0.5 and anomaly.proposed_rates == (1.0, 1.0)  # the written value nearest 0.500015
    assert adhesive.proposed is None and adhesive.proposed_rates is None and adhesive.threshold == 0.5
    tight = calibrate(scores, labels, (0.7, 0.5), target_tnr=1.0)[0]
    assert tight.proposed == 0.2001 and tight.proposed_rates == (1.0, 1.0)  # 0.20003 rounded up, TNR kept
    assert written_threshold(0.12341) == 0.1235 and written_threshold(0.1234) == 0.1234
    assert written_threshold(0.99999) == 1.0
    check_target_tnr(None)
    with pytest.raises(SettingError, match=r"`target_tnr` 0.0: must be in \(0, 1\]"):
        calibrate(scores, labels, (0.7, 0.5), target_tnr=0.0)


def test_save_thresholds_edits_the_profile_in_place_and_keeps_it_valid(tmp_path):
    prof = tmp_path / "s.toml"
    prof.write_text("# line 3\n" + CAM + "[decision]\nthresholds = { anomaly = 0.7, adhesive = 0.7 }  # old\n")
    save_thresholds(prof, NEW)
    assert load_profile(prof).decision.thresholds.resolve() == (0.4321, 0.55)
    assert prof.read_text().startswith("# line 3\n") and "# old" in prof.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]  # no temporary file left
    prof.write_text(CAM + "[decision]\nadhesive_rule = \"sometimes\"\n")  # invalid before the edit
    with pytest.raises(ProfileError, match="adhesive_rule"):
        save_thresholds(prof, NEW)
    assert "sometimes" in prof.read_text()


@pytest.mark.parametrize(
    "decision",
    [
        "[decision]\nthresholds = { anomaly = 0.7, adhesive = 0.7 }  # calibrated 2026-01\nadhesive_rule = \"absent\"\n",
        "[decision]\nadhesive_rule = \"absent\"\n[decision.thresholds]\nanomaly = 0.7 # a comment\nadhesive = 0.7\n",
        "[decision]\nadhesive_rule = \"absent\"\nthresholds.anomaly = 0.7\n",
        "[decision]\nadhesive_rule = \"absent\"\n",
        "",
    ],
)
def test_rewrite_keeps_everything_else(decision):
    text = "# station header comment\n[station]\nname = \"s1\"\n" + decision + CAM
    new = rewrite_thresholds(text, NEW)
    got = tomllib.loads(new)
    assert got["decision"]["thresholds"] == NEW
    assert got["station"]["name"] == "s1" and got["camera"][0]["id"] == "c"
    assert new.startswith("# station header comment\n")
    if "absent" in decision:
        assert got["decision"]["adhesive_rule"] == "absent"
    if "# calibrated 2026-01" in decision:
        assert "# calibrated 2026-01" in new
    p = parse_profile(new)
    assert p.decision.thresholds.resolve() == (0.4321, 0.55)


def test_rewrite_refuses_what_it_cannot_do_safely():
    with pytest.raises(ProfileError, match="set them by hand"):
        rewrite_thresholds('[decision]\nthresholds = "nonsense"\n' + CAM, NEW)


def test_shipped_profiles_rewrite_cleanly():
    for name in ("demo.toml", "viky.toml", "example-station.toml"):
        text = (REPO / "calib" / name).read_text()
        new = rewrite_thresholds(text, NEW)
        assert parse_profile(new).decision.thresholds.resolve() == (0.4321, 0.55)
        sets_them = "\nthresholds =" in text  # demo and viky leave them to the model: one line is added
        assert len(new.splitlines()) == len(text.splitlines()) + (0 if sets_them else 1)  # edited in place
        if not sets_them:
            assert set(text.splitlines()) <= set(new.splitlines()), "every line of the profile stays"


def test_calibrate_command_end_to_end(tmp_path, capsys):
    """Synthetic labelled frames, the null engine (every score 0), --write into the profile."""
    from linewatch.data.write import write_sample
    from linewatch.engines.manifest import Manifest, sha256_file

    onnx = tmp_path / "stub.onnx"
    onnx.write_bytes(b"stub")
    Manifest(onnx=onnx.name, sha256=sha256_file(onnx), input_height=32, input_width=48).save(tmp_path / "stub.json")
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    for i in range(6):
        img = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        write_sample(data, f"f{i}", "val", img, None, {"anomaly": i % 2, "adhesive": None})
    prof = tmp_path / "s.toml"
    prof.write_text('[model]\npath = "stub.onnx"\nmax_batch = 4\n' + CAM + "[decision]\nadhesive_rule = \"ignore\"\n")
    rc = main(["calibrate", "--profile", str(prof), "--data", str(data), "--backend", "null", "--target-tnr", "1.0",
               "--write"])
    out = capsys.readouterr().out
    assert rc == 0 and "wrote thresholds" in out and "needs labelled positives and negatives" in out
    p = load_profile(prof)
    # every null score is 0: TNR 100% needs t just above 0; the adhesive head (unknown) is not written:
    # it stays the model's (the stub's manifest says 0.7)
    assert 0 < p.decision.thresholds.anomaly <= 1e-4 and p.decision.thresholds.adhesive is None
    assert p.decision.thresholds.resolve({"adhesive": 0.7})[1] == 0.7
    assert p.decision.adhesive_rule == "ignore"


class MeanEngine:
    """Scores each model input by its mean brightness (both heads): a crop shows in the score."""

    input_hw = (16, 16)
    max_batch = 4

    def infer(self, batch):
        s = batch.reshape(len(batch), -1).mean(axis=1) / 255.0
        return None, np.stack([s, s], axis=1).astype(np.float32)


def test_calibrate_crops_a_cameras_roi_from_raw_full_frames_as_the_line_does(tmp_path, capsys):
    from linewatch.calibrate import collect_scores
    from linewatch.data.dataset import open_dataset
    from linewatch.data.write import write_sample

    full, cropped = tmp_path / "full", tmp_path / "cropped"
    rng = np.random.default_rng(2)
    for i in range(4):
        img = np.zeros((60, 80, 3), np.uint8)  # dark surroundings, the cell bright inside the roi (x 20, y 10, 40 x 30)
        img[10:40, 20:60] = rng.integers(100, 255, (30, 40, 3), dtype=np.uint8)
        write_sample(full, f"f{i}", "val", img, None, {"anomaly": i % 2, "adhesive": None})
        write_sample(cropped, f"f{i}", "val", img[10:40, 20:60].copy(), None, {"anomaly": i % 2, "adhesive": None})
    ds_full, ds_crop = open_dataset(full), open_dataset(cropped)
    with_roi, _ = collect_scores(MeanEngine(), ds_full, ds_full.split("val"), (20, 10, 40, 30))
    want, _ = collect_scores(MeanEngine(), ds_crop, ds_crop.split("val"))
    whole, _ = collect_scores(MeanEngine(), ds_full, ds_full.split("val"))
    np.testing.assert_array_equal(with_roi, want)
    assert (whole < with_roi).all(), "guard: without the crop the dark surroundings lower every score"

    from linewatch.engines.manifest import Manifest, sha256_file

    onnx = tmp_path / "stub.onnx"
    onnx.write_bytes(b"stub")
    Manifest(onnx=onnx.name, sha256=sha256_file(onnx), input_height=16, input_width=16).save(tmp_path / "stub.json")
    prof = tmp_path / "s.toml"
    prof.write_text('[model]\npath = "stub.onnx"\n' + CAM + "roi = [20, 10, 40, 30]\n")
    base = ["calibrate", "--profile", str(prof), "--data", str(full), "--backend", "null"]
    assert main([*base, "--camera", "c"]) == 0
    assert "camera c's roi [20, 10, 40, 30]" in capsys.readouterr().out
    assert main([*base, "--camera", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--camera 'nope': no such camera" in err and "allowed: c" in err
