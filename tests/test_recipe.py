"""Recipe options of training (issue 17, item 3): each a flag, off by default and under `--recipe paper`;
mask dilation, distance-weighted segmentation loss, balanced sampling, positive weights from the class
counts, the classification loss reaching the segmentation stage late; ablate rows BASE+OPTION."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs linewatch[train]")

from linewatch.cli import build_parser  # noqa: E402
from linewatch.errors import SettingError  # noqa: E402
from linewatch.model.ablate import plan, row_config  # noqa: E402
from linewatch.model.data import build_cache, dilate_mask, write_toy_dataset  # noqa: E402
from linewatch.model.train import (  # noqa: E402
    RECIPES,
    TrainConfig,
    auto_pos_weight,
    balanced_indices,
    distance_weights,
    inner_distance,
    seg_loss,
    train,
)

TINY = {"input_height": 64, "input_width": 96, "widths": [8, 16, 24], "class_channels": 8}


def test_inner_distance_counts_erosions_from_the_edge_of_a_defect() -> None:
    t = torch.zeros(1, 1, 9, 9)
    t[0, 0, 1:8, 1:8] = 1  # a 7x7 square
    d = inner_distance(t)[0, 0]
    assert d[1, 1] == 1 and d[2, 2] == 2 and d[3, 3] == 3 and d[4, 4] == 4  # the centre is 4 deep
    assert d[0, 0] == 0 and d[4, 1] == 1
    capped = inner_distance(torch.ones(1, 1, 40, 40), cap=8)
    assert capped.max() == 8, "deeper cells read the cap"


def test_distance_weights_lower_a_defects_edge_and_leave_background_at_one() -> None:
    t = torch.zeros(1, 2, 9, 9)
    t[0, 0, 1:8, 1:8] = 1
    w = distance_weights(t, 2.0)
    assert w[0, 0, 4, 4] == 1.0 and w[0, 0, 1, 1] == pytest.approx((1 / 4) ** 2)
    assert torch.all(w[0, 0][t[0, 0] == 0] == 1) and torch.all(w[0, 1] == 1)
    logits, known = torch.zeros(1, 2, 9, 9), torch.ones(1, 2, dtype=torch.bool)
    plain, weighted = seg_loss(logits, t, known, "bce"), seg_loss(logits, t, known, "bce", w)
    assert weighted < plain, "the weighting changes the loss (a flag that did nothing would not)"


def test_balanced_sampling_draws_both_classes_equally_often() -> None:
    defective = torch.zeros(100, dtype=torch.bool)
    defective[:10] = True
    gen = torch.Generator().manual_seed(0)
    idx = torch.cat([balanced_indices(defective, 100, gen) for _ in range(50)])
    share = float(defective[idx].float().mean())
    assert 0.45 < share < 0.55, share
    assert float(defective[torch.randperm(100)].float().mean()) == pytest.approx(0.1)  # vs plain: 10 %
    one_class = balanced_indices(torch.zeros(7, dtype=torch.bool), 7, gen)
    assert sorted(one_class.tolist()) == list(range(7)), "one class only: a plain permutation"


def test_positive_weight_auto_is_negatives_over_positives_per_head() -> None:
    labels = torch.tensor([[1, 0], [0, 0], [0, 1], [0, float("nan")]])
    assert auto_pos_weight(labels) == (3.0, 2.0)
    assert auto_pos_weight(torch.tensor([[0.0, 1.0]])) == (1.0, 1.0), "a missing class: weight 1"


def test_mask_dilation_is_measured_in_model_input_pixels_whatever_the_image_size() -> None:
    m = np.zeros((200, 300), np.uint8)
    m[100, 150] = 1
    d = dilate_mask(m, 5, (100, 100))  # the image is 2x the input in height, 3x in width
    ys, xs = np.nonzero(d)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (11, 15)
    assert dilate_mask(m, 0, (100, 100)) is m


def test_dilation_grows_the_cached_masks(tmp_path: Path) -> None:
    from linewatch.data.dataset import open_dataset

    ds = open_dataset(write_toy_dataset(tmp_path / "toy", 8))
    plain = build_cache(ds, ds.samples, (64, 96), workers=1)
    grown = build_cache(ds, ds.samples, (64, 96), workers=1, dilate=9)
    assert int(grown.masks.sum()) > int(plain.masks.sum()) > 0
    assert torch.all(grown.masks >= plain.masks)


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("dilate", 4, "odd number"), ("dilate", -1, "odd number"), ("seg_distance_p", -2.0, "number > 0"),
    ("joint_epochs", 5, "0 to `epochs_cls` (2)"),
])
def test_a_recipe_option_out_of_range_is_an_error_naming_it(tmp_path: Path, field: str, value: object,
                                                             allowed: str) -> None:
    data = write_toy_dataset(tmp_path / "toy", 8)
    tc = TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs_seg=1, epochs_cls=2, device="cpu",
                     quiet=True, model=TINY, **{field: value})  # type: ignore[arg-type]
    with pytest.raises(SettingError, match=f"`{field}`.*{allowed.replace('(', '.').replace(')', '.')}"):
        train(tc)


def test_joint_epochs_train_the_segmentation_stage_and_plain_stage_2_does_not(tmp_path: Path) -> None:
    data = write_toy_dataset(tmp_path / "toy", 24, val=6)

    def seg_after(name: str, joint: int) -> dict[str, torch.Tensor]:
        tc = TrainConfig(data=str(data), out=str(tmp_path / name), epochs_seg=1, epochs_cls=2, joint_epochs=joint,
                         device="cpu", workers=1, quiet=True, model=TINY, eval_every=100)  # val at the end only
        train(tc)
        state = torch.load(tmp_path / name / "last.pt", weights_only=True)
        return {k: v for k, v in state["model"].items() if k.startswith("segmentation.") and v.is_floating_point()}

    def seg_after_stage_1(name: str) -> dict[str, torch.Tensor]:
        tc = TrainConfig(data=str(data), out=str(tmp_path / name), epochs_seg=1, epochs_cls=0, device="cpu",
                         workers=1, quiet=True, model=TINY)
        train(tc)
        state = torch.load(tmp_path / name / "last.pt", weights_only=True)
        return {k: v for k, v in state["model"].items() if k.startswith("segmentation.") and v.is_floating_point()}

    ref = seg_after_stage_1("s1")
    frozen, joint = seg_after("frozen", 0), seg_after("joint", 2)
    assert all(torch.equal(frozen[k], ref[k]) for k in ref), "stage 2 left the segmentation stage as stage 1 did"
    assert any(not torch.equal(joint[k], ref[k]) for k in ref), "the joint epochs trained the segmentation stage"
    log = (tmp_path / "joint" / "log.jsonl").read_text().splitlines()
    assert [line.count('"stage": 3') for line in log] == [0, 1, 1]


def test_the_paper_recipe_turns_every_option_off_and_a_given_option_wins() -> None:
    from linewatch.cli.args import recipe_settings

    p = build_parser()
    args = p.parse_args(["train", "--data", "d", "--out", "o", "--recipe", "paper", "--balance"])
    got = recipe_settings(args)
    assert got == {**RECIPES["paper"], "balance": True}
    assert recipe_settings(p.parse_args(["train", "--data", "d", "--out", "o"])) == {}
    defaults = TrainConfig()
    assert all(getattr(defaults, k) == v for k, v in RECIPES["paper"].items()), "today's defaults are the paper's"
    assert recipe_settings(p.parse_args(["train", "--data", "d", "--out", "o", "--pos-weight", "auto"])) == {
        "pos_weight": "auto"}


def test_ablate_rows_carry_recipe_options_and_unknown_ones_are_named() -> None:
    assert row_config("resse-v3+balance+dist2+dilate7+joint20+posauto") == (
        {"depth": "v2", "resse": "v3"}, "bce",
        {"balance": True, "seg_distance_p": 2.0, "dilate": 7, "joint_epochs": 20, "pos_weight": "auto"})
    assert plan(["4", "resse-v1+balance"]) == ["baseline-v2", "resse-v1", "resse-v2", "resse-v3", "resse-v1+balance"]
    with pytest.raises(SettingError, match="unknown option 'fast'; allowed: balance, dilate<px>"):
        row_config("resse-v1+fast")
    with pytest.raises(SettingError, match=r"unknown table or row 'resse-v9\+balance'"):
        plan(["resse-v9+balance"])


def test_recipe_flags_reach_the_trained_checkpoint_from_the_cli_and_from_an_ablate_row(tmp_path: Path) -> None:
    """Not only parsed: the run that trained holds them (its `last.pt` settings), through `linewatch train`
    and through an ablate row key, and a resumed run keeps them."""
    import json

    from linewatch.cli import main

    data = write_toy_dataset(tmp_path / "toy", 24, val=6, test=6)
    small = ["--epochs-seg", "1", "--epochs-cls", "2", "--limit-steps", "1", "--batch", "6", "--input-size", "64x96",
             "--widths", "8,16,24", "--class-channels", "8", "--quiet", "--workers", "1", "--device", "cpu"]
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *small, "--balance", "--dilate", "3",
                 "--seg-distance-p", "2", "--joint-epochs", "1", "--pos-weight", "auto",
                 "--stop-after-epochs", "1"]) == 0
    want = {"balance": True, "dilate": 3, "seg_distance_p": 2.0, "joint_epochs": 1, "pos_weight": "auto"}

    def saved(folder: Path) -> dict[str, object]:
        t = torch.load(folder / "last.pt", weights_only=True)["train"]
        return {k: t[k] for k in want}

    assert saved(run) == want
    assert main(["train", "--data", str(data), "--out", str(run), *small, "--resume"]) == 0
    assert saved(run) == want and torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    abl = tmp_path / "abl"
    assert main(["ablate", "--data", str(data), "--out", str(abl), "--tables", "resse-v1+balance+dilate3+dist2+joint1"
                 "+posauto", *[a for a in small if a not in ("--device", "cpu")]]) == 0
    row = abl / "resse-v1+balance+dilate3+dist2+joint1+posauto"
    assert saved(row) == want
    assert json.loads((row / "eval.json").read_text())["train"]["joint_epochs"] == 1
