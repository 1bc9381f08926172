"""Dataset readers, writer and checker (folder format + magnetic-tile layout) on tiny tmp data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.cli import main as cli_main
from linewatch.data.check import check_dataset
from linewatch.data.dataset import image_size, open_dataset, read_frame
from linewatch.data.write import write_sample
from linewatch.errors import DatasetError

H, W = 24, 40


def _img(seed: int = 0, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W) if gray else (H, W, 3), dtype=np.uint8)


def _mask(y: int = 5, x: int = 7) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y : y + 3, x : x + 4] = 1
    return m


def file_warnings(report: object) -> list:
    """The warnings about one file (not the dataset-wide findings on training risks, whose path is the root)."""
    return [p for p in report.warnings if p.path != report.root]  # type: ignore[attr-defined]


def _good(root: Path) -> Path:
    """Four samples: anomaly with mask, clean (label 0, no mask files), adhesive mask, all unknown."""
    write_sample(
        root, "a", "train", _img(1), {"anomaly": _mask(), "adhesive": None}, {"anomaly": 1, "adhesive": 0}
    )
    write_sample(root, "b", "train", _img(2), None, (0, 0))
    write_sample(root, "c", "test", _img(3, gray=True), (None, _mask(10, 20)), (None, 1))
    write_sample(root, "d", "val", _img(4), None, (None, None))
    return root


def test_folder_roundtrip(tmp_path: Path) -> None:
    ds = open_dataset(_good(tmp_path))
    assert ds.kind == "folder"
    assert [s.name for s in ds.samples] == ["a", "b", "c", "d"]
    assert [s.name for s in ds.split("train")] == ["a", "b"]
    assert [s.name for s in ds.split("test")] == ["c"]
    a, b, c, d = ds.samples
    assert a.labels == {"anomaly": 1, "adhesive": 0} and a.group == "default"
    img = ds.load_image(a)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert np.array_equal(img, _img(1))  # RGB order preserved through the PNG
    masks, known = ds.load_masks(a)
    assert masks.shape == (2, H, W) and masks.dtype == np.uint8
    assert np.array_equal(masks[0], _mask()) and not masks[1].any()
    assert known.tolist() == [True, True]  # anomaly mask file, adhesive label 0
    # grayscale is replicated to 3 channels
    gimg = ds.load_image(c)
    assert gimg.shape == (H, W, 3)
    assert np.array_equal(gimg[..., 0], _img(3, gray=True)) and np.array_equal(gimg[..., 0], gimg[..., 2])
    assert ds.load_masks(c)[1].tolist() == [False, True]
    # blank labels = unknown, nothing known
    assert d.labels == {"anomaly": None, "adhesive": None}
    assert ds.load_masks(d)[1].tolist() == [False, False]
    assert b.known() == (True, True)


def test_labels_csv_blank_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "x.png"), _img())
    (tmp_path / "labels.csv").write_text("name,split,anomaly,adhesive\nx,train, ,\n")
    s = open_dataset(tmp_path).samples[0]
    assert s.labels == {"anomaly": None, "adhesive": None}


def test_image_size_from_header(tmp_path: Path) -> None:
    for ext in (".png", ".jpg", ".bmp"):
        p = tmp_path / f"i{ext}"
        cv2.imwrite(str(p), _img())
        assert image_size(p) == (H, W)


def test_read_frame_is_rgb_at_the_models_input_size(tmp_path: Path) -> None:
    p = tmp_path / "g.png"
    cv2.imwrite(str(p), _img(gray=True))
    same = read_frame(p, (H, W))
    assert same.shape == (H, W, 3) and same.flags.c_contiguous
    assert (same[..., 0] == same[..., 2]).all() and (same[..., 0] == cv2.imread(str(p), 0)).all()
    assert read_frame(p, (8, 16)).shape == (8, 16, 3) and read_frame(p, (48, 80)).shape == (48, 80, 3)
    with pytest.raises(DatasetError, match="nope.png: no such image"):
        read_frame(tmp_path / "nope.png", (H, W))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png: unreadable image"):
        read_frame(tmp_path / "bad.png", (H, W))


@pytest.mark.parametrize(
    "breakage, fragment",
    [
        ("unreadable_image", "unreadable image"),
        ("mask_size", "mask is"),
        ("mask_without_image", "mask without image"),
        ("label_conflict", "conflicts with the mask"),
        ("unknown_label", "unknown label value"),
        ("duplicate_name", "duplicate name"),
        ("missing_column", "missing column"),
    ],
)
def test_each_error_names_the_file(tmp_path: Path, breakage: str, fragment: str) -> None:
    root = _good(tmp_path)
    culprit = {
        "unreadable_image": root / "images" / "a.png",
        "mask_size": root / "masks" / "anomaly" / "a.png",
        "mask_without_image": root / "masks" / "anomaly" / "zz.png",
        "label_conflict": root / "masks" / "anomaly" / "b.png",
        "unknown_label": root / "labels.csv",
        "duplicate_name": root / "labels.csv",
        "missing_column": root / "labels.csv",
    }[breakage]
    labels = root / "labels.csv"
    if breakage == "unreadable_image":
        culprit.write_bytes(b"not a png at all")
    elif breakage == "mask_size":
        cv2.imwrite(str(culprit), np.zeros((H + 1, W), np.uint8))
    elif breakage == "mask_without_image":
        cv2.imwrite(str(culprit), np.zeros((H, W), np.uint8))
    elif breakage == "label_conflict":
        cv2.imwrite(str(culprit), _mask() * 255)
    elif breakage == "unknown_label":
        labels.write_text(labels.read_text().replace("b,train,0,0", "b,train,2,0"))
    elif breakage == "duplicate_name":
        labels.write_text(labels.read_text() + "a,train,1,0\n")
    elif breakage == "missing_column":
        labels.write_text(
            labels.read_text().replace("name,split,anomaly,adhesive", "name,part,anomaly,adhesive")
        )

    def load_all() -> None:
        ds = open_dataset(root)
        for s in ds.samples:
            ds.load(s)

    with pytest.raises(DatasetError) as exc:
        load_all()
    assert str(culprit) in str(exc.value) and fragment in str(exc.value)
    report = check_dataset(root)
    assert not report.ok
    assert any(str(culprit) in p.path and fragment in p.message for p in report.errors), report.format()
    assert cli_main(["data", "check", str(root)]) == 1


def test_check_reports_all_problems_at_once(tmp_path: Path) -> None:
    root = _good(tmp_path)
    (root / "images" / "a.png").write_bytes(b"garbage")
    cv2.imwrite(str(root / "masks" / "adhesive" / "c.png"), np.zeros((H, W + 3), np.uint8))
    cv2.imwrite(str(root / "masks" / "anomaly" / "orphan.png"), np.zeros((H, W), np.uint8))
    labels = root / "labels.csv"
    labels.write_text(labels.read_text().replace("d,val,,", "d,val,yes,"))
    report = check_dataset(root)
    paths = " ".join(p.path for p in report.errors)
    assert len(report.errors) == 4, report.format()
    for part in ("images/a.png", "masks/adhesive/c.png", "masks/anomaly/orphan.png", "labels.csv"):
        assert part in paths


def test_check_counts_and_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _good(tmp_path)
    write_sample(
        root, "e", "train", _img(5), (np.zeros((H, W), np.uint8), None), (1, None)
    )  # label 1, empty mask
    report = check_dataset(root)
    assert report.ok and report.n_images == 5
    assert len(file_warnings(report)) == 1 and "e.png" in file_warnings(report)[0].path
    assert report.per_head["anomaly"] == {"1": 2, "0": 1, "unknown": 2, "masks": 2, "empty_masks": 1}
    assert report.per_head["adhesive"]["1"] == 1 and report.per_head["adhesive"]["0"] == 2
    assert report.per_split == {"train": 3, "test": 1, "val": 1}
    assert cli_main(["data", "check", str(root)]) == 0  # warnings alone: exit 0
    assert cli_main(["data", "check", "--json", str(root)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out[out.index("{") :])
    assert doc["ok"] and doc["n_images"] == 5 and len([w for w in doc["warnings"] if w["path"] != str(root)]) == 1


def test_image_without_labels_row_is_a_warning(tmp_path: Path) -> None:
    root = _good(tmp_path)
    cv2.imwrite(str(root / "images" / "stray.png"), _img())
    assert [s.name for s in open_dataset(root).samples] == ["a", "b", "c", "d"]
    report = check_dataset(root)
    assert report.ok and [p.path.endswith("stray.png") for p in file_warnings(report)] == [True]


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a dataset"):
        open_dataset(tmp_path)
    assert cli_main(["data", "check", str(tmp_path / "nope")]) == 2


def test_write_sample_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="name"):
        write_sample(tmp_path, "../x", "train", _img(), None, (0, 0))
    with pytest.raises(DatasetError, match="split"):
        write_sample(tmp_path, "x", "training", _img(), None, (0, 0))
    with pytest.raises(DatasetError, match="label"):
        write_sample(tmp_path, "x", "train", _img(), None, (2, 0))


def _fake_magnetic_tile(root: Path) -> Path:
    spec = {
        "MT_Blowhole": ["exp1_num_1", "exp1_num_2"],
        "MT_Free": ["exp0_num_3", "exp0_num_4", "exp0_num_5"],
        "MT_Uneven": ["exp3_num_6"],
    }
    for cls, names in spec.items():
        d = root / cls / "Imgs"
        d.mkdir(parents=True)
        for i, n in enumerate(names):
            h, w = 20 + i, 30 + 2 * i  # sizes vary
            cv2.imwrite(str(d / f"{n}.jpg"), np.full((h, w), 100, np.uint8))
            m = np.zeros((h, w), np.uint8)
            if cls == "MT_Blowhole":
                m[2:5, 3:6] = 255
            cv2.imwrite(str(d / f"{n}.png"), m)  # MT_Uneven's mask is empty, like 4 real ones
    return root


def test_magnetic_tile_layout(tmp_path: Path) -> None:
    root = _fake_magnetic_tile(tmp_path)
    ds = open_dataset(root)
    assert ds.kind == "magnetic-tile" and len(ds) == 6
    by = {s.name: s for s in ds.samples}
    assert by["exp1_num_1"].group == "MT_Blowhole" and by["exp1_num_1"].labels == {
        "anomaly": 1,
        "adhesive": None,
    }
    assert by["exp0_num_3"].labels == {"anomaly": 0, "adhesive": None}
    assert {s.split for s in ds.samples} <= {"train", "test"}
    assert open_dataset(root).samples == ds.samples  # the assigned split is deterministic
    img, masks, known = ds.load(by["exp1_num_2"])
    assert img.shape == (21, 32, 3) and masks.shape == (2, 21, 32)
    assert masks[0].sum() == 9 and known.tolist() == [True, False]  # adhesive unknown
    report = check_dataset(root)
    assert report.ok and report.per_head["anomaly"]["1"] == 3 and report.per_head["anomaly"]["0"] == 3
    assert report.per_head["adhesive"]["unknown"] == 6
    assert report.per_group["MT_Free"]["images"] == 3
    assert [p.path.endswith("exp3_num_6.png") for p in file_warnings(report)] == [True]
    # a mask without its image is an error
    cv2.imwrite(str(root / "MT_Free" / "Imgs" / "lonely.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError, match="lonely.png: mask without image"):
        open_dataset(root)


def test_merge_links_or_copies_selected_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`data merge`: the chosen splits of each source, renamed splits, same pixels/labels; clashes refused."""
    a = _good(tmp_path / "a")
    b = tmp_path / "b"
    write_sample(b, "e", "train", _img(5), (_mask(2, 3), None), (1, None), group="line7")
    write_sample(b, "f", "test", _img(6), None, (0, 1))
    out = tmp_path / "m"
    assert cli_main(["data", "merge", "--out", str(out), f"{a}:train", f"{b}:train,test:val"]) == 0
    assert "wrote 4 samples" in capsys.readouterr().out
    ds = open_dataset(out)
    got = {s.name: (s.split, s.labels["anomaly"], s.labels["adhesive"], s.group) for s in ds.samples}
    srcs = {o.name: (d, o) for d in (open_dataset(a), open_dataset(b)) for o in d.samples}
    assert got == {
        "a": ("train", 1, 0, srcs["a"][1].group),
        "b": ("train", 0, 0, srcs["b"][1].group),
        "e": ("val", 1, None, "line7"),
        "f": ("val", 0, 1, srcs["f"][1].group),
    }
    assert (out / "images" / "e.png").is_symlink() and check_dataset(out).ok
    for s in ds.samples:
        d, o = srcs[s.name]
        for mine, theirs in zip(ds.load(s), d.load(o), strict=True):  # image, masks, known
            assert np.array_equal(mine, theirs)
    copied = tmp_path / "c"
    assert cli_main(["data", "merge", "--out", str(copied), "--copy", str(a)]) == 0
    assert not (copied / "images" / "a.png").is_symlink() and len(open_dataset(copied)) == 4

    from linewatch.data.write import merge_datasets

    with pytest.raises(DatasetError, match="'a' is in both"):
        merge_datasets(tmp_path / "x", [(a, None, None), (a, ["train"], None)])
    with pytest.raises(DatasetError, match="split 'holdout' is not allowed"):
        merge_datasets(tmp_path / "y", [(a, ["holdout"], None)])
    with pytest.raises(DatasetError, match="already exists"):
        merge_datasets(out, [(b, None, None)])
    with pytest.raises(DatasetError, match="no samples"):
        merge_datasets(tmp_path / "z", [(b, ["val"], None)])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _anomaly_only(root: Path, flat_masks: bool) -> Path:
    """A station without glue, as people keep it: labels.csv without an adhesive column, masks flat."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["name,split,anomaly"]
    for i, (name, label) in enumerate([("p1", 1), ("p2", 1), ("n1", 0)]):
        cv2.imwrite(str(root / "images" / f"{name}.png"), _img(i))
        if label:
            folder = root / "masks" if flat_masks else root / "masks" / "anomaly"
            folder.mkdir(exist_ok=True)
            cv2.imwrite(str(folder / f"{name}.png"), _mask(3 + i, 5) * 255)
        rows.append(f"{name},train,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("flat_masks", [False, True], ids=["masks/anomaly", "flat masks/"])
def test_a_table_without_a_head_column_reads_as_unknown_and_flat_masks_belong_to_the_one_head(
    tmp_path: Path, flat_masks: bool,
) -> None:
    root = _anomaly_only(tmp_path, flat_masks)
    ds = open_dataset(root)
    assert [s.labels for s in ds.samples] == [{"anomaly": 1, "adhesive": None}, {"anomaly": 1, "adhesive": None},
                                              {"anomaly": 0, "adhesive": None}]
    masks, known = ds.load_masks(ds.samples[0])
    assert known.tolist() == [True, False] and masks[0].any(), "the defect's mask was not found"
    report = check_dataset(root)
    assert not report.errors
    assert report.per_head["anomaly"]["masks"] == 2
    assert any("no adhesive column" in p.message for p in report.problems)


def test_flat_masks_with_two_labelled_heads_are_named_as_ignored_not_silently_dropped(tmp_path: Path) -> None:
    root = _good(tmp_path)
    cv2.imwrite(str(root / "masks" / "a.png"), _mask() * 255)
    report = check_dataset(root)
    warn = [p for p in report.problems if p.path.endswith("masks") and "ignored" in p.message]
    assert len(warn) == 1 and "masks/anomaly/ or masks/adhesive/" in warn[0].message


def test_a_table_with_no_head_column_at_all_is_an_error_naming_the_heads(tmp_path: Path) -> None:
    root = _anomaly_only(tmp_path, False)
    (root / "labels.csv").write_text((root / "labels.csv").read_text().replace("name,split,anomaly", "name,split,defect"))
    with pytest.raises(DatasetError, match="missing column.*anomaly or adhesive"):
        open_dataset(root)
    report = check_dataset(root)
    assert any("column 'defect' is not one linewatch reads" in p.message for p in report.problems)
