"""The model's recommended operating point (issue 17, item 2): chosen by training on its validation part,
written into the checkpoint and the manifest; a profile that leaves a head's threshold out decides at it,
also after a model swap; `linewatch calibrate` still sets a station's own."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fakes import FakePublisher, stub_model

from linewatch import DEFAULT_THRESHOLD, HEADS
from linewatch.calibrate import RECOMMEND_RULE, rates, recommend
from linewatch.engines.manifest import load_manifest
from linewatch.pipeline.daemon import Daemon
from linewatch.profile import parse_profile, rewrite_thresholds
from linewatch.sdnotify import Notifier

CAM = '[[camera]]\nid = "cam0"\nsource = "synthetic"\ncount = 1\n'


def both(anomaly: list[float], adhesive: list[float] | None = None) -> np.ndarray:
    return np.stack([anomaly, adhesive if adhesive is not None else anomaly], axis=1)


# -- the rule ----------------------------------------------------------------------------------

def test_a_separable_validation_set_gets_the_midpoint_between_the_classes() -> None:
    labels = both([0, 0, 0, 1, 1])
    scores = both([0.05, 0.2, 0.3, 0.5, 0.9])
    op = recommend(labels, scores)
    for head in HEADS:
        assert op[head]["threshold"] == pytest.approx(0.4)
        assert op[head]["TPR"] == 1.0 and op[head]["TNR"] == 1.0
        assert (op[head]["n_pos"], op[head]["n_neg"]) == (2, 3) and op[head]["rule"] == RECOMMEND_RULE


def test_the_threshold_follows_the_scores_not_a_constant() -> None:
    """Guard: the rule reads the data (a recommendation that ignored it would pass the test above only by luck)."""
    labels = both([0, 0, 1, 1])
    low = recommend(labels, both([0.01, 0.02, 0.05, 0.06]))["anomaly"]["threshold"]
    high = recommend(labels, both([0.80, 0.85, 0.95, 0.99]))["anomaly"]["threshold"]
    assert low == pytest.approx(0.035) and high == pytest.approx(0.9)


def test_among_equal_candidates_the_lowest_threshold_wins_because_a_miss_costs_more() -> None:
    # 0 at 0.1, 1 at 0.2, 0 at 0.3, 1 at 0.4: t = 0.15 and t = 0.35 both give balanced accuracy 0.75
    labels = both([0, 1, 0, 1])
    op = recommend(labels, both([0.1, 0.2, 0.3, 0.4]))["anomaly"]
    assert op["threshold"] == pytest.approx(0.15, abs=1.1e-4) and op["TPR"] == 1.0 and op["TNR"] == 0.5


def test_a_head_without_labelled_positives_and_negatives_keeps_the_papers_threshold() -> None:
    labels = np.array([[1, np.nan], [0, np.nan], [1, np.nan]])
    scores = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3]])
    op = recommend(labels, scores)
    assert op["adhesive"]["threshold"] == DEFAULT_THRESHOLD and "no labelled positives" in op["adhesive"]["rule"]
    assert math.isnan(op["adhesive"]["TPR"]) and op["adhesive"]["n_pos"] == 0
    assert op["anomaly"]["rule"] == RECOMMEND_RULE


def test_the_recommended_threshold_is_a_written_value_inside_the_gap_where_one_fits() -> None:
    # the gap (0.09999, 0.10003] holds the written 0.1000; its midpoint 0.10001 rounded up (0.1001) would
    # step past the positive and miss it
    labels = both([0, 1])
    op = recommend(labels, both([0.09999, 0.10003]))["anomaly"]
    assert op["threshold"] == 0.1 and op["TPR"] == 1.0 and op["TNR"] == 1.0


def test_where_no_written_value_fits_the_gap_the_rates_reported_are_those_of_the_value_written() -> None:
    labels = both([0, 1, 1])
    scores = both([0.123451, 0.123459, 0.9])
    op = recommend(labels, scores)["anomaly"]
    assert op["threshold"] == round(op["threshold"], 4)
    assert (op["TPR"], op["TNR"]) == rates(labels[:, 0], scores[:, 0], op["threshold"])
    assert (op["TPR"], op["TNR"]) == (0.5, 1.0)  # the best a 4-decimal value can do here


# -- the profile -------------------------------------------------------------------------------

def test_a_profile_that_leaves_a_head_out_decides_it_at_the_models_threshold() -> None:
    t = parse_profile("[decision.thresholds]\nanomaly = 0.5\n" + CAM).decision.thresholds
    assert t.resolve({"anomaly": 0.3, "adhesive": 0.25}) == (0.5, 0.25)
    assert t.sources({"anomaly": 0.3, "adhesive": 0.25}) == {"anomaly": "profile", "adhesive": "model"}
    assert t.resolve(None) == (0.5, DEFAULT_THRESHOLD)
    assert t.sources({}) == {"anomaly": "profile", "adhesive": "default"}


@pytest.mark.parametrize("bad", [{"adhesive": 1.5}, {"adhesive": "x"}, {"adhesive": True}, {"adhesive": math.nan}])
def test_a_model_threshold_that_is_not_a_number_in_0_1_is_not_used(bad: dict[str, object]) -> None:
    t = parse_profile(CAM).decision.thresholds
    assert t.resolve(bad) == (DEFAULT_THRESHOLD, DEFAULT_THRESHOLD)  # type: ignore[arg-type]


def test_rewriting_one_head_leaves_the_other_to_the_model() -> None:
    new = rewrite_thresholds("[decision]\nadhesive_rule = \"ignore\"\n" + CAM, {"anomaly": 0.42})
    t = parse_profile(new).decision.thresholds
    assert t.anomaly == 0.42 and t.adhesive is None
    # a head the profile sets and the rewrite leaves out keeps its value
    again = rewrite_thresholds(new, {"adhesive": 0.61})
    t = parse_profile(again).decision.thresholds
    assert (t.anomaly, t.adhesive) == (0.42, 0.61)


# -- the daemon --------------------------------------------------------------------------------

def model_with_thresholds(folder: Path, thresholds: dict[str, float], name: str = "stub.onnx") -> Path:
    onnx = stub_model(folder, name)
    man = json.loads(onnx.with_suffix(".json").read_text())
    man["thresholds"] = thresholds
    onnx.with_suffix(".json").write_text(json.dumps(man))
    return onnx


def test_the_daemon_decides_at_the_manifests_thresholds_where_the_profile_sets_none(tmp_path: Path) -> None:
    model_with_thresholds(tmp_path, {"anomaly": 0.31, "adhesive": 0.62})
    prof = tmp_path / "s.toml"
    prof.write_text('[model]\npath = "stub.onnx"\nbackend = "null"\nmax_batch = 2\n' + CAM)
    from linewatch.profile import load_profile

    pub = FakePublisher()
    d = Daemon(load_profile(prof), profile_path=prof, publisher=pub, notifier=Notifier(env={}), max_frames=1)
    assert d.decider.thresholds == (0.31, 0.62)
    d.start()
    try:
        pub.wait_for_count(1)
    finally:
        d.stop()
        d.join(30)
    assert pub.decisions[0].thresholds == (0.31, 0.62), "the published decision names the thresholds it used"

    prof.write_text('[model]\npath = "stub.onnx"\nbackend = "null"\n[decision.thresholds]\nadhesive = 0.9\n' + CAM)
    d = Daemon(load_profile(prof), profile_path=prof, publisher=FakePublisher(), notifier=Notifier(env={}))
    assert d.decider.thresholds == (0.31, 0.9), "the profile's own value wins for its head"


def test_a_reload_takes_the_manifests_rewritten_thresholds_for_the_same_model(tmp_path: Path) -> None:
    """`calibrate --write-manifest` rewrites the recommended thresholds of the model deciding (same ONNX,
    same id); the next SIGHUP decides the heads the profile leaves out at them, without a restart."""
    onnx = model_with_thresholds(tmp_path, {"anomaly": 0.31, "adhesive": 0.62})
    prof = tmp_path / "s.toml"
    line = CAM.replace("count = 1", "count = 100000\nfps = 50")  # a line that runs while it is reloaded
    prof.write_text('[model]\npath = "stub.onnx"\nbackend = "null"\n[decision.thresholds]\nadhesive = 0.9\n' + line)
    from linewatch.profile import load_profile

    pub = FakePublisher()
    d = Daemon(load_profile(prof), profile_path=prof, publisher=pub, notifier=Notifier(env={}))
    d.start()
    try:
        pub.wait_for_count(1)
        assert d.decider.thresholds == (0.31, 0.9)
        assert d.reload() and d.decider.thresholds == (0.31, 0.9)  # nothing changed: nothing applied
        assert d.last_reload is not None and d.last_reload["applied"] == []
        man = json.loads(onnx.with_suffix(".json").read_text())
        man["thresholds"] = {"anomaly": 0.27, "adhesive": 0.5}
        onnx.with_suffix(".json").write_text(json.dumps(man))
        assert d.reload(), d.last_reload
        assert d.decider.thresholds == (0.27, 0.9), "the profile's own adhesive value still wins"
        assert d.last_reload["applied"] == ["decision.thresholds (the model's manifest)"]
        with pub.lock:
            n = len(pub.decisions)
        pub.wait_for_count(n + 2)
        assert pub.decisions[-1].thresholds == (0.27, 0.9), "the line decides at them"
    finally:
        d.stop()
        d.join(30)


def test_a_model_without_a_manifest_decides_at_the_papers_threshold(tmp_path: Path) -> None:
    from fakes import FakeEngine

    prof = parse_profile(CAM)
    d = Daemon(prof, engine=FakeEngine(), publisher=FakePublisher(), notifier=Notifier(env={}),
               model_path=tmp_path / "missing.onnx")
    assert d.decider.thresholds == (DEFAULT_THRESHOLD, DEFAULT_THRESHOLD) and d.model_thresholds == {}


# -- training and export -----------------------------------------------------------------------

def test_training_writes_the_operating_point_and_export_puts_it_in_the_manifest(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="training needs linewatch[train]")
    import torch

    from linewatch.model.data import write_toy_dataset
    from linewatch.model.export import export_onnx, load_model
    from linewatch.model.train import TrainConfig, train

    data = write_toy_dataset(tmp_path / "toy", 24, val=8)
    tc = TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs_seg=1, epochs_cls=1, device="cpu", workers=1,
                     quiet=True, model={"input_height": 64, "input_width": 96, "widths": [8, 16, 24],
                                        "class_channels": 8})
    summary = train(tc)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    op = best["operating_point"]
    assert set(op) == set(HEADS) and summary["operating_point"] == op
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for head in HEADS:
        t = op[head]["threshold"]
        assert 0 <= t <= 1 and op[head]["n_pos"] + op[head]["n_neg"] == 8
        assert metrics["val_recommended"][head]["threshold"] == t
        assert metrics["operating_point"][head]["TPR"] == pytest.approx(op[head]["TPR"], nan_ok=True)

    man = export_onnx(load_model(tmp_path / "run" / "best.pt"), tmp_path / "m.onnx", operating_point=op,
                      self_check=False)
    loaded, _ = load_manifest(tmp_path / "m.onnx")
    assert loaded.thresholds == {h: op[h]["threshold"] for h in HEADS} == man.thresholds
    assert loaded.operating_point[HEADS[0]]["rule"] == op[HEADS[0]]["rule"]
    from linewatch.model.evaluate import checkpoint_thresholds

    assert checkpoint_thresholds(tmp_path / "m.pt") == man.thresholds, "the exported weights decide where the ONNX does"
    again = export_onnx(load_model(tmp_path / "m.pt"), tmp_path / "again.onnx",
                        operating_point=torch.load(tmp_path / "m.pt", weights_only=True)["operating_point"],
                        self_check=False)
    assert again.thresholds == man.thresholds and again.operating_point == man.operating_point
    # an explicit threshold wins, and the manifest then claims no validation choice
    given = export_onnx(load_model(tmp_path / "run" / "best.pt"), tmp_path / "g.onnx", operating_point=op,
                        thresholds={"anomaly": 0.5, "adhesive": 0.6}, self_check=False)
    assert given.thresholds == {"anomaly": 0.5, "adhesive": 0.6} and given.operating_point == {}
    assert checkpoint_thresholds(tmp_path / "g.pt") == given.thresholds
    old = export_onnx(load_model(tmp_path / "run" / "best.pt"), tmp_path / "o.onnx", self_check=False)
    assert old.thresholds == {h: DEFAULT_THRESHOLD for h in HEADS} == checkpoint_thresholds(tmp_path / "o.pt")
    # weights exported before they kept the operating point fall back to the manifest that names them
    bare = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({"config": bare["config"], "model": bare["model"]}, tmp_path / "m.pt")
    assert checkpoint_thresholds(tmp_path / "m.pt") == man.thresholds != {h: DEFAULT_THRESHOLD for h in HEADS}


def test_calibrate_can_give_an_older_model_its_recommended_thresholds_in_its_manifest(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the tiny test model is exported with torch")
    from tinymodel import export_tiny

    from linewatch.cli import main
    from linewatch.model.data import write_toy_dataset
    from linewatch.pipeline.swap import model_id

    model = export_tiny(tmp_path)
    before_id, before = model_id(model), load_manifest(model)[0]
    assert before.thresholds == {h: DEFAULT_THRESHOLD for h in HEADS} and before.operating_point == {}
    data = write_toy_dataset(tmp_path / "toy", 20, val=20)
    prof = tmp_path / "s.toml"
    text = f'[model]\npath = "{model.name}"\n' + CAM
    prof.write_text(text)
    for split in ("test", "train"):  # a recommended threshold is never chosen on the test part (nor on training)
        assert main(["calibrate", "--profile", str(prof), "--data", str(data), "--write-manifest",
                     "--split", split]) == 2
        assert load_manifest(model)[0].thresholds == before.thresholds
    assert main(["calibrate", "--profile", str(prof), "--data", str(data), "--write-manifest"]) == 0
    after = load_manifest(model)[0]
    assert prof.read_text() == text, "the profile is not touched"
    assert model_id(model) == before_id, "the ONNX and so the model id stay"
    from linewatch.calibrate import calibrate, score_split

    scores, labels = score_split(model, data, "val", backend="onnxruntime")
    want = {c.head: c.proposed for c in calibrate(scores, labels, (0.7, 0.7))}
    assert after.thresholds == want and after.thresholds != before.thresholds
    assert after.operating_point["anomaly"]["data"] == f"{data}:val"
    assert after.operating_point["anomaly"]["rule"] == RECOMMEND_RULE


def test_a_metrics_table_at_per_head_thresholds_names_each_heads_threshold() -> None:
    from linewatch.model.metrics import all_metrics, markdown_table

    labels, scores = both([0, 1, 0, 1]), both([0.1, 0.6, 0.2, 0.9])
    table = markdown_table(all_metrics(labels, scores, {"anomaly": 0.4257, "adhesive": 0.7}))
    assert "| TPR_t | TNR_t | t |" in table and "| 0.4257 |" in table and "| 0.7 |" in table
    assert "| TPR_0.7 | TNR_0.7 |" in markdown_table(all_metrics(labels, scores, 0.7))
