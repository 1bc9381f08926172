"""ResSE network, export and evaluation (fast: tiny inputs, tiny widths); the metrics are test_metrics.py's."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from linewatch.errors import SettingError  # noqa: E402
from linewatch.model.resse import (  # noqa: E402
    DEPTHS,
    RESSE_PLACEMENTS,
    DeployNet,
    NetworkConfig,
    ResSE,
    build_model,
    conv_macs,
    normalize,
)

TINY = dict(widths=(4, 8, 16), class_channels=4, input_height=64, input_width=96)


def valid_combos():
    for depth in DEPTHS:
        for resse in RESSE_PLACEMENTS:
            if resse in ("v2", "v3") and depth == "v1":
                continue
            yield depth, resse


# ------------------------------------------------------------------------------------ network


@pytest.mark.parametrize("depth,resse", list(valid_combos()))
def test_shapes_every_depth_and_placement(depth, resse):
    torch.manual_seed(0)
    model = build_model(depth=depth, resse=resse, **TINY).eval()
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
    assert out.seg_logits.shape == (3, 2, 8, 12)
    assert out.masks.shape == (3, 2, 8, 12)
    assert out.cls_logits.shape == (3, 2)
    assert out.scores.shape == (3, 2)
    assert torch.all((out.scores > 0) & (out.scores < 1))
    assert torch.allclose(out.masks, torch.sigmoid(out.seg_logits))
    n_convs = sum(1 for m in model.segmentation.blocks.modules() if type(m).__name__ == "ConvBNAct")
    assert n_convs == sum(DEPTHS[depth])
    n_se = sum(1 for m in model.modules() if isinstance(m, ResSE))
    assert n_se == len(RESSE_PLACEMENTS[resse])


def test_resse_positions():
    model = build_model(depth="v2", resse="v1", **TINY)
    b1, b2, b3 = model.segmentation.blocks
    # v1: after Conv2_1 and Conv3_1
    assert [type(m).__name__ for m in b2.layers] == ["ConvBNAct", "ResSE", "ConvBNAct"]
    assert [type(m).__name__ for m in b3.layers] == ["ConvBNAct", "ResSE", "ConvBNAct", "ConvBNAct"]
    m2 = build_model(depth="v2", resse="v2", **TINY)
    assert [type(m).__name__ for m in m2.segmentation.blocks[0].layers] == ["ConvBNAct", "ConvBNAct", "ResSE"]
    m3 = build_model(depth="v3", resse="v3", **TINY)
    assert [type(m).__name__ for m in m3.segmentation.blocks[2].layers] == [
        "ConvBNAct", "ConvBNAct", "ResSE", "ConvBNAct", "ResSE", "ConvBNAct"]


def test_any_input_size_divisible_by_8():
    model = build_model(**TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 72))
    assert out.masks.shape == (1, 2, 5, 9)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 3, 44, 72))


def test_resse_math():
    torch.manual_seed(1)
    se = ResSE(64)
    assert se.hidden == 8  # r = 8
    assert se.k1.weight.shape == (8, 64, 1, 1) and se.k2.weight.shape == (64, 8, 1, 1)
    assert ResSE(16).hidden == 2 and ResSE(4).hidden == 1
    f = torch.randn(2, 64, 5, 7) * 3
    e = se.excitation(f)
    assert e.shape == (2, 64, 1, 1)
    assert torch.all((e > 0) & (e < 1))
    # E = sigmoid(k2 ReLU(k1 S)), S = spatial mean (eq. 1-2), by hand
    s = f.mean(dim=(2, 3))
    hid = torch.relu(s @ se.k1.weight[:, :, 0, 0].T + se.k1.bias)
    e_hand = torch.sigmoid(hid @ se.k2.weight[:, :, 0, 0].T + se.k2.bias)
    assert torch.allclose(e[:, :, 0, 0], e_hand, atol=1e-6)
    out = se(f)
    assert torch.allclose(out, (1 + e) * f)  # eq. 3
    # residual: |out| between |F| and 2|F|
    assert torch.all(out.abs() >= f.abs() - 1e-6) and torch.all(out.abs() <= 2 * f.abs() + 1e-6)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(depth="v1", resse="v2"), "Conv1_2"),
        (dict(depth="v1", resse="v3"), "Conv3_3"),
        (dict(depth="v9"), "depth"),
        (dict(resse="v4"), "resse"),
        (dict(kernels=(3, 4, 3)), "kernels"),
        (dict(widths=(8, 16)), "widths"),
        (dict(downsample=("max", "bogus", "max")), "downsample"),
        (dict(input_height=500), "input_height"),
        (dict(seg_activation="tanh"), "seg_activation"),
    ],
)
def test_invalid_config(overrides, match):
    with pytest.raises(SettingError, match=match):
        NetworkConfig(**overrides)


def test_config_roundtrip():
    cfg = NetworkConfig(depth="v3", resse="v3", widths=(8, 16, 32), downsample="max", input_height=256, input_width=256)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert NetworkConfig.from_dict(d) == cfg
    with pytest.raises(SettingError, match="unknown keys"):
        NetworkConfig.from_dict({**d, "colour": "red"})


def test_deploy_net_matches_float_path():
    torch.manual_seed(0)
    model = build_model(**TINY).eval()
    u8 = torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        masks, scores = DeployNet(model)(u8)
        ref = model(normalize(u8.permute(0, 3, 1, 2)))
    assert torch.allclose(masks, ref.masks) and torch.allclose(scores, ref.scores)


def test_normalize_is_the_input_normalisation_the_engines_declare():
    from linewatch.engines.base import NORM_SCALE, NORM_SHIFT

    u8 = torch.tensor([0, 64, 128, 255], dtype=torch.uint8)
    assert torch.allclose(normalize(u8), (u8.float() / 255 - 0.5) / 0.25)
    assert torch.allclose(normalize(u8), u8.float() * NORM_SCALE + NORM_SHIFT)


def test_conv_macs_analytic():
    cfg = dict(depth="v1", resse="none", widths=(4, 8, 16), kernels=(3, 3, 3), downsample="max",
               class_channels=4, class_kernel=3, input_height=64, input_width=96)
    model = build_model(**cfg)
    px1, px2, px3 = 32 * 48, 16 * 24, 8 * 12
    expect = (px1 * 4 * 3 * 9 + px2 * 8 * 4 * 9 + px3 * 16 * 8 * 9 + px3 * 16 * 16 * 9  # seg convs
              + px3 * 2 * 16 + px3 * 4 * 18 * 9 + 2 * 12)  # Conv_S, Conv_C, FC
    assert conv_macs(model) == expect


# ------------------------------------------------------------------------------------ export / evaluate


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from linewatch.model.export import export_onnx

    torch.manual_seed(0)
    model = build_model(**TINY).eval()
    # non-trivial BatchNorm statistics, so that BN folding is exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("engines") / "tiny.onnx"
    man = export_onnx(model, out, training={"data": "toy"}, metrics={"val": {"anomaly": {"AP_pos": float("nan")}}})
    return model, out, man


def test_export_files_manifest_and_parity(exported):
    from linewatch.engines.manifest import load_manifest, sha256_file

    model, out, man = exported
    assert out.is_file() and out.with_suffix(".json").is_file() and out.with_suffix(".pt").is_file()
    loaded, onnx_path = load_manifest(out)
    assert loaded.sha256 == sha256_file(onnx_path)
    assert loaded.input_hw == (64, 96)
    assert loaded.weights == "tiny.pt"
    assert loaded.model == model.cfg.to_dict()
    assert loaded.thresholds == {"anomaly": 0.7, "adhesive": 0.7}
    assert loaded.metrics["val"]["anomaly"]["AP_pos"] is None  # NaN -> null, strict JSON
    assert loaded.metrics["parity_max_abs_diff"]["scores"] <= 1e-4
    json.loads(out.with_suffix(".json").read_text())


def test_onnx_io_contract_and_dynamic_batch(exported):
    import onnx
    import onnxruntime as ort

    model, out, _ = exported
    g = onnx.load(str(out)).graph
    assert [i.name for i in g.input] == ["image"]
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in g.output] == ["masks", "scores"]
    assert onnx.load(str(out)).opset_import[0].version >= 17
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    deploy = DeployNet(model).eval()
    rng = np.random.default_rng(0)
    for n in (1, 2, 5):
        x = rng.integers(0, 256, (n, 64, 96, 3), dtype=np.uint8)
        masks, scores = sess.run(["masks", "scores"], {"image": x})
        assert masks.shape == (n, 2, 8, 12) and masks.dtype == np.float32
        assert scores.shape == (n, 2) and scores.dtype == np.float32
        with torch.no_grad():
            tm, ts = deploy(torch.from_numpy(x))
        assert np.abs(scores - ts.numpy()).max() < 1e-4
        assert np.abs(masks - tm.numpy()).max() < 1e-4


def test_ort_graph_has_no_per_layer_transposes(exported):
    from linewatch.model.export import optimized_op_counts

    _, out, _ = exported
    ops = optimized_op_counts(out)
    assert ops.get("Transpose", 0) <= 1  # only the NHWC -> NCHW at the input
    assert "BatchNormalization" not in ops  # folded into the convs


def test_load_model_from_weights_and_weights_only(exported):
    from linewatch.model.export import load_model

    model, out, _ = exported
    raw = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert set(raw) == {"config", "model", "operating_point", "training", "metrics"}  # plain values beside the tensors
    again = load_model(out.with_suffix(".pt"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_parity_check_fails_on_mismatch(exported, tmp_path):
    from linewatch.errors import EngineError
    from linewatch.model.export import parity_check

    model, out, _ = exported
    other = build_model(**TINY).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    with pytest.raises(EngineError, match="disagree"):
        parity_check(other, out)


def test_evaluate_writes_json_markdown_png(exported, tmp_path):
    import cv2

    from linewatch.model.data import write_toy_dataset
    from linewatch.model.evaluate import evaluate

    _, out, _ = exported
    data = write_toy_dataset(tmp_path / "ds", 10, test=6, unknown_every=3)
    r_onnx = evaluate(out, data, "test", tmp_path / "ev_onnx")
    r_pt = evaluate(out.with_suffix(".pt"), data, "test", tmp_path / "ev_pt")
    for name in ("metrics.json", "metrics.md", "scores.csv", "pr_anomaly.png", "pr_adhesive.png"):
        assert (tmp_path / "ev_onnx" / name).is_file()
    img = cv2.imread(str(tmp_path / "ev_onnx" / "pr_anomaly.png"))
    assert img is not None and img.shape[2] == 3 and (img < 250).any()
    js = json.loads((tmp_path / "ev_onnx" / "metrics.json").read_text())
    assert js["n"] == 6 and set(js["metrics"]) == {"anomaly", "adhesive"}
    assert js["metrics"]["adhesive"]["n_unknown"] == 2
    for head in ("anomaly", "adhesive"):
        for k in ("AP_pos", "AP_neg", "TPR_0.7", "TNR_0.7"):
            a, b = r_onnx["metrics"][head][k], r_pt["metrics"][head][k]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
    assert "| anomaly |" in (tmp_path / "ev_onnx" / "metrics.md").read_text()
