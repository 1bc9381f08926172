"""Two-stage training, losses, augmentation, checkpoints/resume, the CLI and the ablation (fast, CPU)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from linewatch.errors import SettingError  # noqa: E402
from linewatch.model.ablate import worker_threads  # noqa: E402
from linewatch.model.data import (  # noqa: E402
    augment,
    cropped_labels,
    holdout,
    resize_mask_max,
    stratified_folds,
    write_toy_dataset,
)
from linewatch.model.train import TrainConfig, check_pos_weight, cls_loss, seg_loss, train  # noqa: E402

TINY_MODEL = dict(widths=[4, 8, 8], class_channels=4, input_height=64, input_width=96)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "ds", 28, val=4, test=6, unknown_every=4)


def cfg(toy, out, **kw):
    base = dict(data=str(toy), out=str(out), epochs_seg=2, epochs_cls=2, batch=6, seed=3, workers=2,
                quiet=True, model=dict(TINY_MODEL))
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------------ losses


def test_seg_loss_masks_unknown_heads():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 6)
    target = (torch.rand(2, 2, 4, 6) > 0.5).float()
    known = torch.tensor([[True, False], [True, True]])
    for kind in ("bce", "mse-sigmoid", "mse-linear"):
        a = seg_loss(logits, target, known, kind)
        changed = logits.clone()
        changed[0, 1] += 5.0  # the unknown head of sample 0
        assert torch.allclose(a, seg_loss(changed, target, known, kind))
        changed[1, 1] += 5.0  # a known head
        assert not torch.allclose(a, seg_loss(changed, target, known, kind))
    # eq. 4: mean BCE after the sigmoid over all known pixels
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log())
    all_known = torch.ones(2, 2, dtype=torch.bool)
    assert torch.allclose(seg_loss(logits, target, all_known, "bce"), bce.mean(), atol=1e-6)


def test_cls_loss_masks_unknown_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    a = cls_loss(logits, labels)
    b = cls_loss(torch.tensor([[2.0, 99.0], [0.5, 3.0]]), labels)
    assert torch.allclose(a, b)
    y = torch.tensor([1.0, 0.0, 1.0])
    z = torch.tensor([2.0, 0.5, 3.0])
    assert torch.allclose(a, torch.nn.functional.binary_cross_entropy_with_logits(z, y))


def test_cls_loss_pos_weight_scales_positive_terms_per_head():
    logits = torch.tensor([[0.3, -0.2], [-1.0, 0.4]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    w = torch.tensor([3.0, 1.0])
    # only the anomaly head's positive (sample 0) is weighted; the normaliser stays the 4 known labels
    want = (3.0 * bce[0, 0] + bce[0, 1] + bce[1, 0] + bce[1, 1]) / 4
    assert torch.allclose(cls_loss(logits, labels, w), want)
    assert torch.allclose(cls_loss(logits, labels, torch.ones(2)), cls_loss(logits, labels))
    # its gradient pushes a positive's logit up harder: the optimum of a weighted head sits higher
    z = torch.zeros(1, 2, requires_grad=True)
    cls_loss(z, torch.tensor([[1.0, 1.0]]), w).backward()
    assert z.grad[0, 0] == pytest.approx(3 * z.grad[0, 1])


@pytest.mark.parametrize("bad", [(0.0, 1.0), (1.0,), (1.0, float("nan")), (-2.0, 1.0), ("x", 1)])
def test_check_pos_weight_names_the_setting(bad):
    with pytest.raises(SettingError, match="`pos_weight`"):
        check_pos_weight(bad)
    assert check_pos_weight([2, 1]) == (2.0, 1.0)


@pytest.mark.parametrize(("field", "value", "allowed"), [("batch", 0, "1 or more"), ("epochs_seg", -1, "0 or more"),
                                                       ("epochs_cls", -3, "0 or more")])
def test_a_wrong_batch_or_epoch_count_is_named_with_its_value(tmp_path, field, value, allowed):
    with pytest.raises(SettingError, match=f"`{field}` {value} is invalid; allowed: {allowed}"):
        train(TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), **{field: value}))


def test_export_names_a_threshold_out_of_range(tmp_path, capsys):
    from linewatch.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.onnx"),
                 "--threshold", "0.5", "--threshold", "1.5"]) == 2
    assert "--threshold 0.5 1.5: give one or two values in (0, 1)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ data


def test_resize_mask_max_keeps_single_pixels():
    m = np.zeros((100, 150), np.uint8)
    m[37, 91] = 1
    small = resize_mask_max(m, (16, 24))
    assert 1 <= small.sum() <= 4  # a pixel straddling cells marks each cell it overlaps
    exact = resize_mask_max(m[:96, :144], (16, 24))  # integer ratio 6
    assert exact.sum() == 1 and exact[37 // 6, 91 // 6] == 1
    big = resize_mask_max(m, (200, 300))
    assert big.sum() >= 1
    assert resize_mask_max(np.zeros((10, 10), np.uint8), (4, 4)).sum() == 0


def test_augment_targets_keep_tiny_defects():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (16, 64, 96, 3), dtype=torch.uint8)
    masks = torch.zeros(16, 2, 16, 24, dtype=torch.uint8)
    for i in range(16):
        masks[i, 0, (3 * i) % 16, (5 * i) % 24] = 1  # one cell of the H/4 mask
    x, t = augment(imgs, masks, None, crop=False)
    assert x.shape == (16, 3, 64, 96) and t.shape == (16, 2, 8, 12)
    assert torch.equal(t, torch.nn.functional.max_pool2d(masks.float(), 2))
    for _ in range(5):
        x, t = augment(imgs, masks, g, crop=True)
        assert x.shape == (16, 3, 64, 96) and t.shape == (16, 2, 8, 12)
        visible = t[:, 0].flatten(1).amax(1)
        # a defect can only leave the picture by the crop; a cell near the centre always stays
        assert visible.sum() >= 1
    centre = torch.zeros(4, 2, 16, 24, dtype=torch.uint8)
    centre[:, 1, 8, 12] = 1
    for _ in range(10):
        _, t = augment(imgs[:4], centre, g, crop=True)
        assert torch.all(t[:, 1].flatten(1).amax(1) == 1) and t[:, 1].sum() <= 4 * 2
        assert t[:, 0].sum() == 0


def test_augment_keeps_image_and_target_aligned():
    # white rectangles on black: after the same random crop, the bright 8x8 cells of the image
    # and the positive cells of the target must (nearly) coincide
    torch.manual_seed(0)
    full = torch.zeros(16, 64, 96)
    for i in range(16):
        y, x = torch.randint(4, 52, (1,)).item(), torch.randint(4, 80, (1,)).item()
        full[i, y : y + 8, x : x + 12] = 1
    imgs = (full[..., None].repeat(1, 1, 1, 3) * 255).to(torch.uint8)
    masks = torch.nn.functional.max_pool2d(full[:, None], 4).repeat(1, 2, 1, 1).to(torch.uint8)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, t = augment(imgs, masks, g, crop=True)
        bright = torch.nn.functional.max_pool2d((x[:, :1] > 0).float(), 8)[:, 0]
        union = ((bright + t[:, 0]) > 0).sum()
        agree = ((bright == 1) & (t[:, 0] == 1)).sum()
        assert agree >= 0.75 * union, (agree, union)


def test_cropped_labels_leave_out_positives_whose_defect_was_cut_off():
    masks = torch.zeros(4, 2, 16, 24, dtype=torch.uint8)
    masks[0, 0, 1, 1] = 1  # defect in the corner: the crop below cuts it off
    masks[1, 0, 8, 12] = 1  # defect in the centre: kept
    masks[3, 1, 1, 1] = 1  # adhesive bar cut off, but the adhesive label is unknown
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, float("nan")]])
    # sample 2: positive with an empty mask (a label without a drawing) keeps its label
    target = torch.zeros(4, 2, 8, 12)  # the H/8 target of a centred crop that keeps only sample 1's defect
    target[1, 0, 4, 6] = 1
    got = cropped_labels(labels, masks, target)
    assert torch.isnan(got[0, 0]) and got[0, 1] == 0.0
    assert got[1].tolist() == [1.0, 1.0]
    assert got[2].tolist() == [1.0, 0.0]
    assert got[3, 0] == 0.0 and torch.isnan(got[3, 1])
    # on real crops: whenever a positive keeps its label, the cropped target still has the defect
    torch.manual_seed(1)
    m = torch.zeros(64, 2, 16, 24, dtype=torch.uint8)
    for i in range(64):
        m[i, 0, torch.randint(0, 16, ()), torch.randint(0, 24, ())] = 1
    lab = torch.ones(64, 2)
    lab[:, 1] = 0.0
    _, t = augment(torch.zeros(64, 64, 96, 3, dtype=torch.uint8), m, torch.Generator().manual_seed(2), crop=True)
    out = cropped_labels(lab, m, t)
    kept = out[:, 0] == 1
    assert 0 < int((~kept).sum()) < 64  # some corners were cut off, most defects survived
    assert bool((t[kept, 0].flatten(1).amax(1) > 0).all())
    assert bool((t[~kept, 0].flatten(1).amax(1) == 0).all())


def test_crop_dataset_items():
    from linewatch.model.data import CropDataset, TensorCache

    n = 3
    cache = TensorCache(torch.randint(0, 256, (n, 64, 96, 3), dtype=torch.uint8),
                        torch.zeros(n, 2, 16, 24, dtype=torch.uint8), torch.ones(n, 2, dtype=torch.bool),
                        torch.tensor([[1.0, float("nan")]] * n), ["a", "b", "c"], ["g"] * n)
    item = CropDataset(cache, seed=1)[2]
    assert item["image"].shape == (3, 64, 96) and item["target"].shape == (2, 8, 12)
    assert torch.isnan(item["label"][1]) and len(CropDataset(cache)) == 3
    # the same label rule as the training loop: a positive whose defect the crop cut off is left out
    masks = torch.zeros(n, 2, 16, 24, dtype=torch.uint8)
    masks[:, 0, 0, 0] = 1  # defects in the corner
    cut = TensorCache(cache.images, masks, cache.mask_known, cache.labels, cache.names, cache.groups)
    items = [CropDataset(cut, seed=s)[0] for s in range(20)]
    for it in items:
        assert bool(torch.isnan(it["label"][0])) == bool(it["target"][0].amax() == 0)
    assert any(torch.isnan(it["label"][0]) for it in items)
    assert all(it["label"][0] == 1 for it in (CropDataset(cut, crop=False)[k] for k in range(n)))


def test_folds_and_holdout_are_stratified():
    keys = ["a"] * 10 + ["b"] * 5 + ["c"] * 3
    folds = stratified_folds(keys, 3, seed=1)
    assert stratified_folds(keys, 3, seed=1) == folds
    for k in range(3):
        members = [key for key, f in zip(keys, folds, strict=True) if f == k]
        assert members.count("a") in (3, 4) and members.count("b") in (1, 2) and members.count("c") == 1
    tr, va = holdout(keys, 0.2, seed=0)
    assert sorted(tr + va) == list(range(18))
    assert [keys[i] for i in va].count("a") == 2 and [keys[i] for i in va].count("c") == 1


# ------------------------------------------------------------------------------------ training


def test_training_loss_falls(toy, tmp_path):
    tc = cfg(toy, tmp_path / "run", epochs_seg=8, epochs_cls=0, lr=1e-2, crop=False)
    train(tc)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [x["train_loss"] for x in lines]
    assert len(losses) == 8 and all(x["stage"] == 1 for x in lines)
    assert losses[-1] < 0.7 * losses[0]


def test_stage2_freezes_segmentation_and_checkpoints_load(toy, tmp_path):
    out = tmp_path / "run"
    tc = cfg(toy, out, epochs_seg=2, epochs_cls=2, stop_after_epochs=2)
    assert train(tc)["stopped"]
    best1 = torch.load(out / "best.pt", weights_only=True)
    assert best1["stage"] == 1
    train(cfg(toy, out, epochs_seg=2, epochs_cls=2), resume=True)
    final = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "last.pt", weights_only=True)
    assert final["stage"] == 2 and last["epoch"] == 3
    seg_keys = [k for k in final["model"] if k.startswith("segmentation.")]
    assert any("running_mean" in k for k in seg_keys)
    for k in seg_keys:  # weights and BatchNorm statistics unchanged by stage 2
        assert torch.equal(final["model"][k], best1["model"][k]), k
        assert torch.equal(last["model"][k], best1["model"][k]), k
    cls_keys = [k for k in final["model"] if k.startswith("classification.")]
    assert any(not torch.equal(last["model"][k], best1["model"][k]) for k in cls_keys)
    assert set(final["metrics"]["val"]) == {"anomaly", "adhesive"}
    assert final["config"]["widths"] == [4, 8, 8]
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("stop", [1, 2, 3])
def test_resume_gives_the_same_state(toy, tmp_path, stop):
    straight = tmp_path / "straight"
    train(cfg(toy, straight, limit_steps=2))
    parts = tmp_path / "parts"
    assert train(cfg(toy, parts, limit_steps=2, stop_after_epochs=stop))["stopped"]
    train(cfg(toy, parts, limit_steps=2), resume=True)
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(parts / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    ba = torch.load(straight / "best.pt", weights_only=True)
    bb = torch.load(parts / "best.pt", weights_only=True)
    for k in ba["model"]:
        assert torch.equal(ba["model"][k], bb["model"][k]), k


def test_a_resumed_run_refuses_to_go_on_without_its_best_weights_so_far(toy, tmp_path):
    out = tmp_path / "run"
    assert train(cfg(toy, out, limit_steps=1, stop_after_epochs=1))["stopped"]
    (out / "best.pt").rename(tmp_path / "best.pt")  # only last.pt travelled
    with pytest.raises(SettingError, match=r"`resume`: .*best\.pt is missing beside .*last\.pt"):
        train(cfg(toy, out, limit_steps=1), resume=True)
    (tmp_path / "best.pt").rename(out / "best.pt")
    assert not train(cfg(toy, out, limit_steps=1), resume=True).get("stopped")  # guard: with it, it goes on


def test_kept_runs_restored_in_a_new_checkout_finish_the_ablation_as_one_sitting_would(toy, tmp_path, monkeypatch):
    """scripts/keep_runs.py keeps what a later session needs (a finished run's eval.json, an unfinished one's
    checkpoints); restored into an empty --out, the ablation reuses the one and resumes the other."""
    import importlib.util
    import shutil

    from linewatch.cli import main
    from linewatch.model import ablate

    script = Path(__file__).resolve().parents[1] / "scripts" / "keep_runs.py"
    spec = importlib.util.spec_from_file_location("keep_runs", script)
    keep_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(keep_runs)

    args = ["--tables", "resse-v1", "--folds", "2", "--epochs-seg", "2", "--epochs-cls", "1", "--limit-steps", "1",
            "--batch", "6", "--input-size", "64x96", "--widths", "4,8,8", "--class-channels", "4", "--quiet",
            "--data", str(toy)]
    assert main(["ablate", "--out", str(tmp_path / "whole"), *args]) == 0
    session = tmp_path / "session1"
    real = ablate.train

    def interrupted(tc, resume=False, splits=None, **kw):  # fold 1 stops after one epoch, as a session ending would
        if str(tc.out).endswith("fold1"):
            real(replace(tc, stop_after_epochs=1), resume=resume, splits=splits, **kw)
            raise KeyboardInterrupt
        return real(tc, resume=resume, splits=splits, **kw)

    monkeypatch.setattr(ablate, "train", interrupted)
    assert main(["ablate", "--out", str(session), *args]) == 130
    monkeypatch.setattr(ablate, "train", real)
    kept = tmp_path / "kept"
    assert keep_runs.main([str(session), str(kept)]) == 0
    names = sorted(str(f.relative_to(kept)) for f in kept.rglob("*") if f.is_file())
    assert names == ["ablation.md", "resse-v1/fold0/eval.json", "resse-v1/fold0/log.jsonl", "resse-v1/fold0/split.json",
                     "resse-v1/fold1/best.pt", "resse-v1/fold1/last.pt", "resse-v1/fold1/log.jsonl",
                     "resse-v1/fold1/split.json", "results.json"]
    session2 = tmp_path / "session2"  # a new checkout: only what was kept
    shutil.copytree(kept, session2)
    assert main(["ablate", "--out", str(session2), *args]) == 0
    a = json.loads((tmp_path / "whole" / "results.json").read_text())["rows"]["resse-v1"]["anomaly"]
    b = json.loads((session2 / "results.json").read_text())["rows"]["resse-v1"]["anomaly"]
    for name in ("AP_pos", "AP_neg", "TPR", "TNR"):
        assert a[name] == pytest.approx(b[name], abs=1e-6), name
    assert json.loads((session2 / "results.json").read_text())["cost"]["resse-v1"]["hosts"]  # fold 0 without best.pt
    assert keep_runs.main([str(session2), str(kept)]) == 0  # fold 1 finished: its checkpoints leave the kept copy
    assert not (kept / "resse-v1" / "fold1" / "last.pt").exists() and (kept / "resse-v1" / "fold1" / "eval.json").is_file()


def test_a_resume_in_stage_2_before_its_first_validation_still_needs_the_best_weights(toy, tmp_path):
    """At the switch to stage 2 the best validation loss starts again (infinite) while best.pt holds stage 1's
    best: a last.pt written before stage 2's first validation still needs it."""
    out = tmp_path / "run"
    assert train(cfg(toy, out, epochs_seg=2, epochs_cls=2, eval_every=2, limit_steps=1, stop_after_epochs=3))["stopped"]
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["stage"] == 2 and last["best_val"] == float("inf")  # the case this guards
    (out / "best.pt").unlink()
    with pytest.raises(SettingError, match=r"best\.pt is missing"):
        train(cfg(toy, out, epochs_seg=2, epochs_cls=2, eval_every=2, limit_steps=1), resume=True)


def test_a_resumed_run_takes_this_sittings_device_and_precision_and_keeps_its_own_recipe(toy, tmp_path, monkeypatch):
    from dataclasses import fields

    from linewatch.model import train as train_mod

    assert set(train_mod.PER_SITTING) == {"data", "out", "device", "amp", "workers", "stop_after_epochs", "quiet"}
    assert {f.name for f in fields(TrainConfig)} == {*train_mod.PER_SITTING, *train_mod.RUN_SETTINGS, "model"}
    out = tmp_path / "run"
    assert train(cfg(toy, out, limit_steps=1, stop_after_epochs=1))["stopped"]  # amp "auto"
    asked = []
    real = train_mod.amp_dtype
    monkeypatch.setattr(train_mod, "amp_dtype", lambda amp, device: asked.append(amp) or real(amp, device))
    train(cfg(toy, out, limit_steps=1, amp="off"), resume=True, asked=["amp"])  # not refused, and used
    assert asked == ["off"]


def test_a_resume_that_does_not_name_the_precision_keeps_the_runs_own(toy, tmp_path, monkeypatch):
    from linewatch.model import train as train_mod

    out = tmp_path / "run"
    assert train(cfg(toy, out, limit_steps=1, stop_after_epochs=1, amp="off"))["stopped"]
    asked = []
    real = train_mod.amp_dtype
    monkeypatch.setattr(train_mod, "amp_dtype", lambda amp, device: asked.append(amp) or real(amp, device))
    train(cfg(toy, out, limit_steps=1), resume=True)  # amp "auto" by default, not named
    assert asked == ["off"]


def test_a_checkpoint_from_before_the_recipe_options_resumes_under_the_options_typed_at_their_defaults(toy, tmp_path):
    """Its missing settings are the defaults (from_dict fills them in): `--recipe paper` does not clash with them."""
    from linewatch.cli import main
    from linewatch.model.train import save_atomic

    run = tmp_path / "run"
    own = ["--data", str(toy), "--out", str(run), "--epochs-seg", "2", "--epochs-cls", "1", "--limit-steps", "1",
           "--batch", "6", "--input-size", "64x96", "--widths", "4,8,8", "--class-channels", "4", "--quiet"]
    assert main(["train", *own, "--stop-after-epochs", "1"]) == 0
    last = torch.load(run / "last.pt", weights_only=True)
    for k in ("dilate", "seg_distance_p", "balance", "joint_epochs", "pos_weight"):
        del last["train"][k]
    del last["best_saved"]
    save_atomic(last, run / "last.pt")
    assert main(["train", *own, "--resume", "--recipe", "paper", "--dilate", "0"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_seeds_repeat(toy, tmp_path):
    train(cfg(toy, tmp_path / "a", epochs_cls=0, limit_steps=2))
    train(cfg(toy, tmp_path / "b", epochs_cls=0, limit_steps=2))
    train(cfg(toy, tmp_path / "c", epochs_cls=0, limit_steps=2, seed=4))
    a, b, c = (torch.load(tmp_path / n / "last.pt", weights_only=True)["model"] for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mse_linear_uses_linear_activation(toy, tmp_path):
    train(cfg(toy, tmp_path / "lin", seg_loss="mse-linear", epochs_seg=1, epochs_cls=1, limit_steps=1))
    ck = torch.load(tmp_path / "lin" / "best.pt", weights_only=True)
    assert ck["config"]["seg_activation"] == "linear"


# ------------------------------------------------------------------------------------ CLI


def test_cli_train_export_evaluate(toy, tmp_path, capsys):
    from linewatch.cli import main

    run = tmp_path / "run"
    common = ["--batch", "6", "--input-size", "64x96", "--widths", "4,8,8", "--class-channels", "4",
              "--workers", "2", "--quiet"]
    assert main(["train", "--data", str(toy), "--out", str(run), "--epochs-seg", "1", "--epochs-cls", "1",
                 "--limit-steps", "1", "--pos-weight", "2,1", *common]) == 0
    onnx = tmp_path / "engines" / "toy.onnx"
    assert main(["export", "--checkpoint", str(run / "best.pt"), "--out", str(onnx)]) == 0
    assert "self-check batch 3" in capsys.readouterr().out
    man = json.loads(onnx.with_suffix(".json").read_text())
    assert man["training"]["epochs_seg"] == 1 and "val" in man["metrics"]
    assert man["training"]["pos_weight"] == [2.0, 1.0]
    assert main(["evaluate", "--model", str(onnx), "--data", str(toy), "--out", str(tmp_path / "ev")]) == 0
    assert "| anomaly |" in capsys.readouterr().out
    assert (tmp_path / "ev" / "pr_adhesive.png").is_file()
    # user errors: clear message, exit 2, no traceback
    assert main(["train", "--data", str(toy), "--out", str(tmp_path / "bad"), "--depth", "v1", "--resse", "v3",
                 *common]) == 2
    assert "Conv3_3" in capsys.readouterr().err
    assert main(["train", "--data", str(toy), "--out", str(tmp_path / "bad"), "--resume", *common]) == 2
    assert main(["train", "--data", str(toy), "--out", str(run), *common]) == 2  # would overwrite a run
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--data", str(toy), "--out", str(tmp_path / "bad"), "--input-size", "60x96"]) == 2
    assert main(["train", "--data", str(toy), "--out", str(tmp_path / "bad"), "--pos-weight", "0,1", *common]) == 2
    assert "--pos-weight" in capsys.readouterr().err


def test_a_resumed_run_refuses_an_option_that_differs_from_its_own_settings(toy, tmp_path, capsys):
    from linewatch.cli import main

    run = tmp_path / "run"
    own = ["--data", str(toy), "--out", str(run), "--epochs-seg", "2", "--epochs-cls", "1", "--limit-steps", "1",
           "--batch", "6", "--input-size", "64x96", "--widths", "4,8,8", "--class-channels", "4", "--dilate", "3"]
    assert main(["train", *own, "--workers", "2", "--quiet", "--stop-after-epochs", "1"]) == 0
    capsys.readouterr()
    for differs, named in ((["--epochs-seg", "5"], "--epochs-seg 5 (the run's 2)"),
                           (["--dilate", "5"], "--dilate 5 (the run's 3)"),
                           (["--widths", "8,8,8"], "--widths [8, 8, 8] (the run's [4, 8, 8])"),
                           (["--no-crop"], "`crop` False (the run's True)"),
                           (["--epochs-seg", "200"], "--epochs-seg 200 (the run's 2)"),  # typed at its default
                           (["--recipe", "paper"], "--dilate 0 (the run's 3)")):
        assert main(["train", "--data", str(toy), "--out", str(run), "--resume", "--quiet", *differs]) == 2, differs
        err = capsys.readouterr().err
        assert named in err and "--resume continues" in err, err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 0  # nothing trained by a refused resume
    # the run's own options again, and the per-sitting ones changed: it resumes and finishes
    assert main(["train", *own, "--resume", "--workers", "1", "--quiet", "--device", "cpu"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_every_option_of_train_names_the_settings_it_sets():
    """`--resume` compares what each typed option sets; an option added without its place here is caught."""
    import argparse

    from linewatch.cli import build_parser
    from linewatch.cli.train import option_settings

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices["train"]._actions:
        if action.dest != "help":
            option_settings(action.dest)  # raises KeyError for an unplaced one
    assert option_settings("input_size") == ("model.input_height", "model.input_width")
    with pytest.raises(KeyError, match="sets no known setting"):
        option_settings("no_such_option")


def test_init_fine_tunes_from_weights_and_takes_their_config(toy, tmp_path):
    base = tmp_path / "base"
    train(cfg(toy, base, epochs_seg=1, epochs_cls=1, limit_steps=1))
    src = torch.load(base / "best.pt", weights_only=True)
    # lr 0: the parameters stay those of --init (BatchNorm running statistics still update in train mode)
    ft = tmp_path / "ft"
    tc = cfg(toy, ft, epochs_seg=1, epochs_cls=1, limit_steps=1, lr=0.0, init=str(base / "best.pt"), model={})
    train(tc)
    got = torch.load(ft / "last.pt", weights_only=True)
    assert got["config"] == src["config"]  # model options default to the checkpoint's
    assert got["train"]["init"] == str(base / "best.pt")
    params = [k for k in got["model"] if "running" not in k and "num_batches" not in k]
    assert params and all(torch.equal(got["model"][k], src["model"][k]) for k in params)
    fresh = tmp_path / "fresh"  # the same run without --init starts elsewhere
    train(cfg(toy, fresh, epochs_seg=1, epochs_cls=1, limit_steps=1, lr=0.0, seed=9))
    other = torch.load(fresh / "last.pt", weights_only=True)["model"]
    assert not all(torch.equal(other[k], src["model"][k]) for k in params)
    assert torch.load(ft / "best.pt", weights_only=True)["training"]["init"] == str(base / "best.pt")
    # weights that do not fit the configured model, a missing file, a file that is no checkpoint
    with pytest.raises(SettingError, match="`init` .*do not fit"):
        train(cfg(toy, tmp_path / "bad1", init=str(base / "best.pt"), model={**TINY_MODEL, "widths": [8, 8, 8]}))
    with pytest.raises(SettingError, match="no such file"):
        train(cfg(toy, tmp_path / "bad2", init=str(tmp_path / "nope.pt")))
    torch.save({"weights": 1}, tmp_path / "odd.pt")
    with pytest.raises(SettingError, match="'model' and 'config'"):
        train(cfg(toy, tmp_path / "bad3", init=str(tmp_path / "odd.pt")))


def test_cli_init_uses_checkpoint_model_options(toy, tmp_path, capsys):
    from linewatch.cli import main

    base = tmp_path / "base"
    common = ["--batch", "6", "--workers", "2", "--quiet", "--limit-steps", "1", "--epochs-seg", "1",
              "--epochs-cls", "1"]
    assert main(["train", "--data", str(toy), "--out", str(base), "--input-size", "64x96", "--widths", "4,8,8",
                 "--class-channels", "4", *common]) == 0
    # no model options: the checkpoint's (a default-width model would not fit these weights)
    assert main(["train", "--data", str(toy), "--out", str(tmp_path / "ft"), "--init", str(base / "best.pt"),
                 *common]) == 0
    ck = torch.load(tmp_path / "ft" / "best.pt", weights_only=True)
    assert ck["config"]["widths"] == [4, 8, 8] and ck["config"]["input_height"] == 64
    # a model option that changes a weight shape is refused with the reason
    assert main(["train", "--data", str(toy), "--out", str(tmp_path / "bad"), "--init", str(base / "best.pt"),
                 "--widths", "8,8,8", *common]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_amp_choices_per_device():
    from linewatch.model.train import amp_dtype, cpu_bf16_supported

    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None  # FP32 reference by default
    with pytest.raises(SettingError, match="fp16 needs CUDA"):
        amp_dtype("fp16", cpu)
    with pytest.raises(SettingError, match="allowed: auto, bf16, fp16, off"):
        amp_dtype("int8", cpu)
    if cpu_bf16_supported():
        assert amp_dtype("bf16", cpu) is torch.bfloat16
    else:
        with pytest.raises(SettingError, match="no native bf16"):
            amp_dtype("bf16", cpu)


def test_cpu_bf16_training_learns(toy, tmp_path):
    from linewatch.model.train import cpu_bf16_supported

    if not cpu_bf16_supported():
        pytest.skip("this CPU has no native bf16")
    tc = cfg(toy, tmp_path / "run", epochs_seg=8, epochs_cls=1, lr=1e-2, crop=False, amp="bf16")
    train(tc)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [x["train_loss"] for x in lines if x["stage"] == 1]
    assert losses[-1] < 0.7 * losses[0]
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ck["training"]["amp"] == "torch.bfloat16"
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())  # FP32 master weights


TINY_ABLATION = ["--folds", "2", "--epochs-seg", "1", "--epochs-cls", "1", "--limit-steps", "1", "--batch", "6",
                 "--input-size", "64x96", "--widths", "4,8,8", "--class-channels", "4", "--quiet"]
"""A 2-fold ablation of one-step epochs on a tiny network (what the ablate tests run; widths last but one)."""


def tiny_ablation(toy, out, tables: str) -> list[str]:
    return ["ablate", "--data", str(toy), "--out", str(out), "--tables", tables, *TINY_ABLATION]


def test_ablate_kfold_tiny(toy, tmp_path):
    from linewatch.cli import main

    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "5")
    assert main(args) == 0
    md = (out / "ablation.md").read_text()
    for row in ("linear + MSE", "sigmoid + MSE", "sigmoid + CE"):
        assert row in md
    assert "±" in md
    res = json.loads((out / "results.json").read_text())
    assert set(res["rows"]) == {"resse-v1", "resse-v1-mse-linear", "resse-v1-mse-sigmoid"}
    assert len(res["runs"]["resse-v1"]) == 2
    # every row saw the same folds: the test sets are identical across rows
    names = {key: [json.loads((out / key / f"fold{k}" / "eval.json").read_text())["n"] for k in range(2)]
             for key in res["rows"]}
    assert len({tuple(v) for v in names.values()}) == 1
    mtime = (out / "resse-v1" / "fold0" / "eval.json").stat().st_mtime
    assert main(args) == 0  # finished rows are reused
    assert (out / "resse-v1" / "fold0" / "eval.json").stat().st_mtime == mtime


def test_a_resumed_run_counts_the_training_time_of_its_earlier_sittings(toy, tmp_path):
    import torch

    from linewatch.model.train import save_atomic

    out = tmp_path / "run"
    assert train(cfg(toy, out, epochs_seg=2, epochs_cls=1, stop_after_epochs=2))["stopped"]
    last = torch.load(out / "last.pt", weights_only=True)
    assert 0 < last["elapsed_s"] < 1000
    save_atomic({**last, "elapsed_s": 1000.0}, out / "last.pt")  # as if the first sitting had taken 1000 s
    train(cfg(toy, out, epochs_seg=2, epochs_cls=1), resume=True)
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3]
    assert lines[1]["elapsed_s"] < 1000 <= lines[2]["elapsed_s"]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["training"]["wall_s"] >= 1000
    assert best["training"]["host"]  # which machine it was


def test_ablate_reports_each_finished_run_before_the_rest_are_done(toy, tmp_path, monkeypatch):
    from linewatch.cli import main
    from linewatch.model import ablate

    calls = []
    real = ablate._run_one

    def first_only(*a, **k):
        if calls:
            raise KeyboardInterrupt  # the session ends while the second run trains
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ablate, "_run_one", first_only)
    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "resse-v1")
    assert main(args) == 130  # interrupted: Ctrl-C's exit status
    res = json.loads((out / "results.json").read_text())
    cost = res["cost"]["resse-v1"]
    assert cost["folds_done"] == 1 and cost["epochs"] == [2] and cost["train_min_per_fold"] is not None
    assert len(cost["hosts"]) == 1
    assert len(res["runs"]["resse-v1"]) == 1
    assert "| 1/2 (0) |" in (out / "ablation.md").read_text()
    monkeypatch.setattr(ablate, "_run_one", real)
    assert main(args) == 0  # the rest, fold 0 reused
    res = json.loads((out / "results.json").read_text())
    assert res["cost"]["resse-v1"]["folds_done"] == 2 and "| 2/2 |" in (out / "ablation.md").read_text()


def test_ablate_only_folds_trains_those_folds_and_reports_the_others_finished_runs(toy, tmp_path):
    """Folds trained in different sittings (or machines, their folders copied into one --out) make one table."""
    from linewatch.cli import main

    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "resse-v1")
    assert main([*args, "--only-folds", "1"]) == 0
    assert (out / "resse-v1" / "fold1" / "eval.json").is_file()
    assert not (out / "resse-v1" / "fold0").exists(), "fold 0 was not asked for"
    res = json.loads((out / "results.json").read_text())
    assert res["cost"]["resse-v1"]["folds_done"] == 1 and "| 1/2 (1) |" in (out / "ablation.md").read_text()
    mtime = (out / "resse-v1" / "fold1" / "eval.json").stat().st_mtime
    assert main([*args, "--only-folds", "0"]) == 0
    assert (out / "resse-v1" / "fold1" / "eval.json").stat().st_mtime == mtime, "fold 1 reused, not retrained"
    res = json.loads((out / "results.json").read_text())
    assert res["cost"]["resse-v1"]["folds_done"] == 2 and "| 2/2 |" in (out / "ablation.md").read_text()
    folds = [{"run": f"fold{k}", **json.loads((out / "resse-v1" / f"fold{k}" / "eval.json").read_text())}
             for k in (0, 1)]
    assert res["runs"]["resse-v1"] == folds  # in fold order, whichever finished first, each naming its fold
    assert res["cost"]["resse-v1"]["folds"] == ["fold0", "fold1"]
    # the same table as one sitting of both folds
    assert main([*tiny_ablation(toy, tmp_path / "all", "resse-v1")]) == 0
    whole = json.loads((tmp_path / "all" / "results.json").read_text())["rows"]["resse-v1"]["anomaly"]
    for name in ("AP_pos", "AP_neg", "TPR", "TNR"):
        assert res["rows"]["resse-v1"]["anomaly"][name] == pytest.approx(whole[name], abs=1e-6), name


def test_ablate_refuses_a_run_of_another_fold_or_another_k_copied_into_its_out(toy, tmp_path, capsys):
    import shutil

    from linewatch.cli import main

    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "resse-v1")
    assert main(args) == 0
    assert json.loads((out / "resse-v1" / "fold0" / "eval.json").read_text())["fold_split"]["fold"] == 0
    wrong = tmp_path / "wrong"
    shutil.copytree(out / "resse-v1" / "fold0", wrong / "resse-v1" / "fold1")  # fold 0's run, as fold 1
    capsys.readouterr()
    assert main(tiny_ablation(toy, wrong, "resse-v1")) == 2
    err = capsys.readouterr().err
    assert "fold1 holds a run of another split (fold 0 there, 1 here;" in err
    three = [*tiny_ablation(toy, tmp_path / "k3", "resse-v1")]
    three[three.index("--folds") + 1] = "3"
    shutil.copytree(out / "resse-v1" / "fold0", tmp_path / "k3" / "resse-v1" / "fold0")  # a 2-fold run in a 3-fold out
    assert main([*three, "--only-folds", "0"]) == 2
    assert "holds a run of another split (folds 2 there, 3 here;" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "k3" / "resse-v1" / "fold0")
    assert main([*three, "--only-folds", "0"]) == 0  # guard: its own fold 0 trains


def test_ablate_reuses_a_run_finished_before_runs_knew_their_split(toy, tmp_path):
    """An eval.json of the code before split.json (its "split" is evaluate's "test", no "fold_split") is
    reused as it was, not refused and not a crash."""
    from linewatch.cli import main

    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "resse-v1")
    assert main(args) == 0
    for k in (0, 1):
        run = out / "resse-v1" / f"fold{k}"
        res = json.loads((run / "eval.json").read_text())
        assert res["split"] == "test"  # evaluate's own key, as before
        del res["fold_split"], res["trained_on"]
        (run / "eval.json").write_text(json.dumps(res))
        (run / "split.json").unlink()
    mtime = (out / "resse-v1" / "fold0" / "eval.json").stat().st_mtime
    assert main(args) == 0
    assert (out / "resse-v1" / "fold0" / "eval.json").stat().st_mtime == mtime


def test_ablate_report_lists_runs_in_fold_order_past_fold_9(tmp_path):
    from linewatch.model.ablate import report

    def run(ap):
        return {"metrics": {h: {"AP_pos": ap} for h in ("anomaly", "adhesive")}}

    out = tmp_path / "abl"
    out.mkdir()
    dirs = [out / "r" / f"fold{k}" for k in (10, 2, 0)]
    report(out, {"r": [run(0.1), run(0.2), run(0.3)]}, {"r": dirs}, ["r"], 11, TrainConfig(), ["r"])
    res = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in res["runs"]["r"]] == ["fold0", "fold2", "fold10"]
    assert [r["metrics"]["anomaly"]["AP_pos"] for r in res["runs"]["r"]] == [0.3, 0.2, 0.1]
    assert "| 3/11 (0,2,10) |" in (out / "ablation.md").read_text()


@pytest.mark.parametrize("bad", ["2", "-1", "x", ","])
def test_ablate_only_folds_names_a_fold_outside_the_split(toy, tmp_path, bad, capsys):
    from linewatch.cli import main

    out = tmp_path / "abl"
    assert main([*tiny_ablation(toy, out, "resse-v1"), "--only-folds", bad]) == 2
    err = capsys.readouterr().err
    assert "--only-folds " in err and ": allowed: fold numbers" in err and "comma-separated" in err
    if bad in ("2", "-1"):
        assert f"--only-folds {bad!r}: allowed: fold numbers 0 to 1" in err
    assert not (out / "resse-v1").exists()


def test_ablate_refuses_to_reuse_a_run_trained_with_other_settings(toy, tmp_path):
    from linewatch.cli import main

    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "resse-v1")
    assert main(args) == 0
    eval0 = json.loads((out / "resse-v1" / "fold0" / "eval.json").read_text())
    assert eval0["train"]["epochs_seg"] == 1 and eval0["train"]["model"]["widths"] == [4, 8, 8]
    assert main([*args, "--dilate", "3"]) == 2  # a finished run of the paper's recipe is not a +dilate3 run
    assert main([*args, "--widths", "4,8,16"]) == 2  # the last --widths wins
    (out / "resse-v1" / "fold1" / "eval.json").unlink()  # fold 1 as if interrupted: only its last.pt is left
    (out / "resse-v1" / "fold0").rename(tmp_path / "fold0")
    with pytest.raises(SettingError, match=r"fold1 holds a run with other settings \(batch 6 there, 4 here;"):
        from linewatch.model.ablate import check_same_run, row_train_config

        tc = row_train_config(cfg(toy, out, epochs_seg=1, epochs_cls=1, limit_steps=1, batch=4,
                                  model={"input_height": 64, "input_width": 96, "widths": [4, 8, 8],
                                         "class_channels": 4}), "resse-v1", out / "resse-v1" / "fold1")
        check_same_run(tc, out / "resse-v1" / "fold1")
    assert main(args) == 0  # the same settings again: fold 1 resumes, fold 0 trains anew


def test_ablate_checks_every_rows_options_before_the_first_row_trains(toy, tmp_path):
    from linewatch.cli import main

    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "resse-v1,resse-v1+joint20")
    assert main(args) == 2  # joint20 of a 1-epoch stage 2
    assert not (out / "resse-v1").exists(), "nothing trained before the bad row was refused"


def test_ablate_parallel_matches_serial(toy, tmp_path):
    from linewatch.cli import main

    common = ["--tables", "resse-v1", "--folds", "2", "--epochs-seg", "1", "--epochs-cls", "1",
              "--limit-steps", "1", "--batch", "6", "--input-size", "64x96", "--widths", "4,8,8",
              "--class-channels", "4", "--quiet", "--data", str(toy)]
    assert main(["ablate", "--out", str(tmp_path / "serial"), *common]) == 0
    assert main(["ablate", "--out", str(tmp_path / "par"), "--parallel", "2", *common]) == 0
    a = json.loads((tmp_path / "serial" / "results.json").read_text())["rows"]["resse-v1"]["anomaly"]
    b = json.loads((tmp_path / "par" / "results.json").read_text())["rows"]["resse-v1"]["anomaly"]
    for name in ("AP_pos", "AP_neg", "TPR", "TNR"):
        assert a[name][0] == pytest.approx(b[name][0], abs=1e-6), name
    # each of the 2 runs at once trained with its share of the CPUs, not a thread per core
    threads = {torch.load(tmp_path / "par" / "resse-v1" / f"fold{k}" / "best.pt", weights_only=True)["training"]["threads"]
               for k in (0, 1)}
    assert threads == {worker_threads(2)}


def test_ablate_parallel_gives_the_one_run_left_all_the_cpus(toy, tmp_path):
    from linewatch.cli import main

    out = tmp_path / "abl"
    args = tiny_ablation(toy, out, "resse-v1")
    assert main([*args, "--only-folds", "0"]) == 0
    assert main([*args, "--parallel", "2"]) == 0  # fold 0 finished: one run to train, not two workers' share
    threads = torch.load(out / "resse-v1" / "fold1" / "best.pt", weights_only=True)["training"]["threads"]
    assert threads == torch.get_num_threads()


def test_parallel_runs_share_the_cpus_out():
    assert worker_threads(2, cpus=2) == 1
    assert worker_threads(2, cpus=16) == 8
    assert worker_threads(5, cpus=16) == 3
    assert worker_threads(4, cpus=2) == 1  # more runs than CPUs: one thread each, never 0
    assert worker_threads(1, cpus=2) == 2


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A run killed while writing a checkpoint leaves the previous one whole (resume needs it)."""
    import torch

    from linewatch.model import train as train_mod

    path = tmp_path / "last.pt"
    train_mod.save_atomic({"epoch": 1}, path)

    def dying_fsync(fd):
        os.ftruncate(fd, 10)  # a torn write, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.atomicfile.os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        train_mod.save_atomic({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_train_step_benchmark_smoke(capsys):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"
    argv = sys.argv
    sys.argv = [str(script), "--steps", "1", "--batch", "2", "--size", "64x96"]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "| fp32-nchw |" in out and "| fp32-nhwc |" in out and "1.00x" in out
