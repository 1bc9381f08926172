"""The layouts people already have: each is read, checked, converted to the folder format, trained on
for a step and evaluated — MVTec AD, class folders (good/bad, ok/ng), and the folder format's variants
(an anomaly-only table, flat masks)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.cli import main as cli_main
from linewatch.data.check import check_dataset
from linewatch.data.dataset import open_dataset

H, W = 48, 72


def cell(rng: np.random.Generator, defect: bool) -> tuple[np.ndarray, np.ndarray]:
    img = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), np.uint8)
    if defect:
        y, x = int(rng.integers(5, H - 15)), int(rng.integers(5, W - 15))
        img[y : y + 8, x : x + 10] = 240
        mask[y : y + 8, x : x + 10] = 255
    return img, mask


def make_mvtec(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for part, cls in (("train", "good"), ("test", "good"), ("test", "scratch"), ("test", "hole")):
        (root / part / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = cell(rng, cls != "good")
            cv2.imwrite(str(root / part / cls / f"{i:03d}.png"), img)
            if cls != "good":
                (root / "ground_truth" / cls).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "ground_truth" / cls / f"{i:03d}_mask.png"), mask)
    return root


def make_class_folders(root: Path, good: str = "ok", bad: str = "ng", n: int = 8) -> Path:
    rng = np.random.default_rng(1)
    for cls in (good, bad):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img, mask = cell(rng, cls == bad)
            cv2.imwrite(str(root / cls / f"img{i}.jpg"), img)
            if cls == bad and i % 2 == 0:  # half the defects have a mask beside them
                cv2.imwrite(str(root / cls / f"img{i}_mask.png"), mask)
    (root / "thumbs").mkdir()
    return root


def test_mvtec_reads_as_anomaly_labels_with_masks_and_a_stratified_split(tmp_path: Path) -> None:
    ds = open_dataset(make_mvtec(tmp_path / "bottle"))
    assert ds.kind == "mvtec" and len(ds) == 24
    by = {s.name: s for s in ds.samples}
    s = by["test_scratch_002"]
    assert s.labels == {"anomaly": 1, "adhesive": None} and s.group == "scratch"
    assert s.mask_paths["anomaly"] == tmp_path / "bottle" / "ground_truth" / "scratch" / "002_mask.png"
    assert by["train_good_000"].labels["anomaly"] == 0 and by["train_good_000"].mask_paths["anomaly"] is None
    train = ds.split("train")
    assert any(x.labels["anomaly"] == 1 for x in train), "supervised training needs defects in train"
    assert {x.group for x in ds.split("test")} == {"good", "scratch", "hole"}
    assert {x.group for x in ds.split("val")} == {"good", "scratch", "hole"}, "a val split for the threshold"
    masks, known = ds.load_masks(s)
    assert masks[0].any() and known.tolist() == [True, False]
    report = check_dataset(tmp_path / "bottle")
    assert report.ok and any("stratified split was assigned" in p.message for p in report.problems)


def test_an_assigned_split_draws_test_then_val_in_name_hash_order_per_class(tmp_path: Path) -> None:
    import hashlib

    from linewatch.data.dataset import assign_test_split, name_order
    from linewatch.data.layouts import VAL_FRACTION

    names = [f"n{i:02d}" for i in range(20)]
    assert name_order(names) == sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    split = assign_test_split(names, 0.3)
    assert [split[n] for n in name_order(names)] == ["test"] * 6 + ["train"] * 14
    ds = open_dataset(make_mvtec(tmp_path / "bottle"))  # the MVTec layout draws the same way, then val
    for group in {s.group for s in ds.samples}:
        ordered = name_order([s.name for s in ds.samples if s.group == group])
        got = {s.name: s.split for s in ds.samples}
        n_test, n_val = round(0.3 * len(ordered)), round(VAL_FRACTION * len(ordered))
        assert [got[n] for n in ordered] == ["test"] * n_test + ["val"] * n_val + ["train"] * (len(ordered) - n_test - n_val)


@pytest.mark.parametrize(("good", "bad"), [("good", "bad"), ("ok", "ng")])
def test_class_folders_read_as_labels_with_masks_beside_and_name_what_they_ignore(tmp_path: Path, good: str,
                                                                                   bad: str) -> None:
    ds = open_dataset(make_class_folders(tmp_path / "d", good, bad))
    assert ds.kind == "class-folders" and len(ds) == 16
    defects = [s for s in ds.samples if s.labels["anomaly"] == 1]
    assert len(defects) == 8 and sum(s.mask_paths["anomaly"] is not None for s in defects) == 4
    assert all(not s.name.endswith("_mask") for s in ds.samples)
    report = check_dataset(tmp_path / "d")
    assert report.ok
    assert any("folder 'thumbs' is ignored" in p.message for p in report.problems)


def test_a_layout_can_be_named_and_a_wrong_name_is_refused(tmp_path: Path) -> None:
    from linewatch.errors import DatasetError

    root = make_mvtec(tmp_path / "m")
    assert open_dataset(root, layout="mvtec").kind == "mvtec"
    with pytest.raises(DatasetError, match="layout 'mvtecad' is unknown; allowed: folder, magnetic-tile, mvtec"):
        open_dataset(root, layout="mvtecad")
    with pytest.raises(DatasetError, match="no images found"):
        open_dataset(root, layout="class-folders")


def anomaly_only(root: Path, flat: bool) -> Path:
    rng = np.random.default_rng(2)
    (root / "images").mkdir(parents=True)
    rows = ["name,split,anomaly"]
    for i in range(16):
        defect = i % 2 == 0
        img, mask = cell(rng, defect)
        cv2.imwrite(str(root / "images" / f"c{i}.png"), img)
        if defect:
            folder = root / "masks" if flat else root / "masks" / "anomaly"
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"c{i}.png"), mask)
        rows.append(f"c{i},{'test' if i >= 12 else 'train'},{int(defect)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


LAYOUTS = {
    "mvtec": lambda p: make_mvtec(p),
    "class-folders": lambda p: make_class_folders(p),
    "anomaly-only table": lambda p: anomaly_only(p, flat=False),
    "flat masks": lambda p: anomaly_only(p, flat=True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_round_trips_through_convert_check_train_and_evaluate(tmp_path: Path, layout: str,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch", reason="training needs torch (linewatch[train])")
    src = LAYOUTS[layout](tmp_path / "src")
    out = tmp_path / "converted"
    assert cli_main(["data", "convert", str(src), "--out", str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert {r["split"] for r in rows} >= {"train", "test"} and all(r["adhesive"] == "" for r in rows)
    n_masks = len(list((out / "masks" / "anomaly").glob("*")))
    assert n_masks == sum(s.mask_paths["anomaly"] is not None for s in open_dataset(src).samples) > 0
    assert cli_main(["data", "check", str(out)]) == 0
    for data in (src, out):  # the original layout trains and evaluates as it is, too
        run = tmp_path / f"run-{data.name}"
        assert cli_main(["train", "--data", str(data), "--out", str(run), "--epochs-seg", "1", "--epochs-cls", "1",
                         "--limit-steps", "1", "--batch", "4", "--input-size", "48x72", "--widths", "4,8,8",
                         "--class-channels", "4", "--device", "cpu", "--quiet"]) == 0
        assert cli_main(["evaluate", "--model", str(run / "best.pt"), "--data", str(data), "--split", "test",
                         "--out", str(run / "eval")]) == 0
        metrics = json.loads((run / "eval" / "metrics.json").read_text())["metrics"]
        assert metrics["anomaly"]["n_pos"] > 0 and metrics["adhesive"]["AP_pos"] is None


# -- what data check says would silently hurt training ----------------------------------------------------


def risks(root: Path, **kw: object) -> list[str]:
    return [p.message for p in check_dataset(root, **kw).problems if p.path == str(root)]  # type: ignore[arg-type]


def test_check_names_what_would_silently_hurt_training(tmp_path: Path) -> None:
    root = anomaly_only(tmp_path / "d", flat=False)
    assert not [m for m in risks(root) if "defective" in m or "twice" in m or "more than two values" in m]
    (root / "masks" / "anomaly" / "c0.png").unlink()  # a defect without its mask
    soft = cv2.GaussianBlur(cv2.imread(str(root / "masks" / "anomaly" / "c2.png"), cv2.IMREAD_GRAYSCALE), (5, 5), 0)
    cv2.imwrite(str(root / "masks" / "anomaly" / "c2.png"), soft)  # soft edges: not binary
    (root / "images" / "c15.png").write_bytes((root / "images" / "c1.png").read_bytes())  # the same image twice
    text = (root / "labels.csv").read_text()
    (root / "labels.csv").write_text(text.replace("c12,test,1", "c12,test,0").replace("c14,test,1", "c14,test,0"))
    found = risks(root)
    assert any("1 defective image(s) (anomaly=1) have no anomaly mask (e.g. c0)" in m for m in found)
    assert any("1 mask(s) have more than two values (e.g. c2.png" in m for m in found)
    assert any("stored twice" in m and "c1 = c15" in m for m in found)
    assert any("split 'test' has no image with anomaly=1" in m for m in found)
    assert any("the images' aspect (W/H 1.50)" in m and "--input-size 48x72" in m for m in found), found
    assert not any("aspect" in m for m in risks(root, input_hw=(48, 72)))


def test_an_imbalanced_split_is_named(tmp_path: Path) -> None:
    root = anomaly_only(tmp_path / "d", flat=False)
    rows = (root / "labels.csv").read_text().splitlines()
    rows = [r if not r.endswith(",train,1") or r.startswith("c0,") else r[:-1] + "0" for r in rows]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    for i in range(2, 12, 2):
        (root / "masks" / "anomaly" / f"c{i}.png").unlink()
    assert any("split 'train' is imbalanced for anomaly: 1 of 12" in m for m in risks(root))


@pytest.mark.parametrize(("aspect", "size"), [(1224 / 512, (512, 1224)), (500 / 1260, (1256, 496)), (1.0, (784, 784))])
def test_the_suggested_input_size_keeps_the_aspect_within_the_pixel_budget(aspect: float, size: tuple[int, int]) -> None:
    from linewatch.data.input_size import INPUT_PIXEL_BUDGET, aspect_distortion, suggest_input_size

    hw = suggest_input_size(aspect)
    assert hw == size and hw[0] % 8 == 0 and hw[1] % 8 == 0
    assert hw[0] * hw[1] <= INPUT_PIXEL_BUDGET and aspect_distortion(aspect, hw) < 0.01


def test_train_chooses_the_input_size_from_portrait_images_and_warns_on_a_stretching_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    torch = pytest.importorskip("torch", reason="training needs torch (linewatch[train])")
    rng = np.random.default_rng(3)
    root = tmp_path / "portrait"
    (root / "images").mkdir(parents=True)
    rows = ["name,split,anomaly"]
    for i in range(8):
        cv2.imwrite(str(root / "images" / f"p{i}.png"), rng.integers(0, 255, (126, 50, 3), dtype=np.uint8))
        rows.append(f"p{i},{'test' if i >= 6 else 'train'},{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    common = ["--epochs-seg", "1", "--epochs-cls", "1", "--limit-steps", "1", "--batch", "4", "--widths", "4,8,8",
              "--class-channels", "4", "--device", "cpu"]
    assert cli_main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *common]) == 0
    out = capsys.readouterr().out  # the images' own 126x50 pixels bound it: no upscaling
    assert "input size 128x48: chosen from the images' aspect (median W/H 0.397) within 6,300 pixels" in out, out
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert (ck["config"]["input_height"], ck["config"]["input_width"]) == (128, 48)
    assert cli_main(["train", "--data", str(root), "--out", str(tmp_path / "run2"), "--input-size", "64x96",
                     *common]) == 0
    assert "the input size 64x96 stretches the images (median W/H 0.397) by 278%" in capsys.readouterr().err


def test_the_folder_format_names_what_it_ignores_and_where_it_looks(tmp_path: Path) -> None:
    root = anomaly_only(tmp_path / "d", flat=False)
    (root / "extra").mkdir()
    (root / "masks" / "Anomaly").mkdir()
    report = check_dataset(root)
    found = {Path(p.path).name: p.message for p in report.warnings}
    assert "reads labels.csv, images/ and masks/<head>/ only" in found["extra"]
    assert "mask folders are masks/anomaly/, masks/adhesive/" in found["Anomaly"]
