"""ONNX export of a trained ResSENet, its manifest, and the ORT-vs-PyTorch self-check (SPEC §5).

The graph (docs/architecture.md, "ONNX model"): input `image` uint8 [N, H, W, 3]; the cast,
the normalisation and NHWC→NCHW are inside; outputs `masks` float32 [N, 2, H/8, W/8] and
`scores` float32 [N, 2]; N dynamic. Beside `<stem>.onnx`: `<stem>.json` (the manifest, see
`linewatch.engines.manifest`) and `<stem>.pt` (weights: {"config": ..., "model": state dict},
loadable with `torch.load(weights_only=True)` and `load_model`).

API used by the engines: `export_onnx(model, out_path, ...) -> Manifest`, `load_model(path) -> ResSENet`.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from linewatch import DEFAULT_THRESHOLD, HEADS, jsonfile
from linewatch.engines.base import INPUT_NAME, OUTPUT_NAMES
from linewatch.engines.manifest import Manifest, sha256_file
from linewatch.errors import EngineError, SettingError
from linewatch.model.resse import DeployNet, NetworkConfig, ResSENet

OPSET = 17
PARITY_TOL = 1e-4


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint/weights file as a dict with at least "model" (state dict) and "config"."""
    path = Path(path)
    if not path.is_file():
        raise SettingError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; name the file
        raise SettingError(f"{path}: not a loadable PyTorch checkpoint ({exc})") from exc
    if isinstance(ckpt, dict) and "model" in ckpt and "config" in ckpt:
        return ckpt
    if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        # a bare state dict: the config comes from the manifest beside it
        man = path.with_suffix(".json")
        if not man.is_file():
            raise SettingError(f"{path}: a bare state dict needs its manifest {man} for the model config")
        return {"model": ckpt, "config": json.loads(man.read_text())["model"]}
    raise SettingError(f"{path}: expected a linewatch checkpoint with keys 'model' and 'config'")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ResSENet:
    """A ResSENet (eval mode) from a training checkpoint (`RUN/best.pt`) or exported weights (`<stem>.pt`)."""
    ckpt = load_checkpoint(path)
    cfg = NetworkConfig.from_dict(ckpt["config"])
    model = ResSENet(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise SettingError(f"{path}: weights do not match its config: {exc}") from exc
    return model.to(device).eval()


def sample_frames(cfg: NetworkConfig, n: int, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 test frames [n, H, W, 3]: smooth gradients plus noise and a few blobs."""
    rng = np.random.default_rng(seed)
    h, w = cfg.input_height, cfg.input_width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        base = 90 + 60 * np.sin(xx / w * (2 + i)) * np.cos(yy / h * 3)
        img = base[..., None] + rng.normal(0, 12, (h, w, 3))
        for _ in range(3):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, max(3, h / 10))
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] -= 70
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def _ort_session(onnx_path: Path, threads: int = 2, optimized_path: Path | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def optimized_op_counts(onnx_path: Path) -> dict[str, int]:
    """Op types of the graph ONNX Runtime actually runs (after ORT_ENABLE_ALL), for layout checks."""
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "opt.onnx"
        _ort_session(onnx_path, optimized_path=opt)
        graph = onnx.load(str(opt)).graph
    return dict(Counter(n.op_type for n in graph.node))


def parity_check(model: ResSENet, onnx_path: Path, batches: tuple[int, ...] = (1, 3)) -> dict[str, float]:
    """Run ORT and PyTorch on the same frames; raise EngineError when they differ by more than 1e-4."""
    sess = _ort_session(onnx_path)
    deploy = DeployNet(model).eval()
    frames = sample_frames(model.cfg, max(batches))
    worst = {"masks": 0.0, "scores": 0.0}
    for n in batches:
        x = frames[:n]
        masks_o, scores_o = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        with torch.no_grad():
            masks_t, scores_t = deploy(torch.from_numpy(x))
        h8, w8 = model.cfg.output_hw
        if masks_o.shape != (n, 2, h8, w8) or scores_o.shape != (n, 2):
            raise EngineError(f"{onnx_path}: ORT output shapes {masks_o.shape}, {scores_o.shape} at batch {n}")
        dm = float(np.abs(masks_o - masks_t.numpy()).max())
        ds = float(np.abs(scores_o - scores_t.numpy()).max())
        print(f"self-check batch {n}: max |ORT - torch| masks {dm:.2e}, scores {ds:.2e}")
        worst["masks"] = max(worst["masks"], dm)
        worst["scores"] = max(worst["scores"], ds)
    if worst["scores"] > PARITY_TOL or worst["masks"] > PARITY_TOL:
        raise EngineError(
            f"{onnx_path}: ONNX Runtime and PyTorch disagree (max abs diff masks {worst['masks']:.2e}, "
            f"scores {worst['scores']:.2e}; allowed {PARITY_TOL:g})"
        )
    return worst


def export_onnx(
    model: ResSENet,
    out_path: str | Path,
    *,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    thresholds: dict[str, float] | None = None,
    operating_point: dict[str, Any] | None = None,
    opset: int = OPSET,
    self_check: bool = True,
    write_weights: bool = True,
    write_manifest: bool = True,
) -> Manifest:
    """Export `model` to `out_path` (.onnx) with its manifest `<stem>.json` and weights `<stem>.pt` (which keep
    the operating point, training and metrics too: evaluating or exporting them again decides where the ONNX does).

    The manifest's thresholds: `thresholds` when given, else the `operating_point`'s (training's
    recommendation, kept in the manifest with its rule and validation rates), else the paper's 0.7."""
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise SettingError(f"{out_path}: the export target must end in .onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    cfg = model.cfg
    deploy = DeployNet(model).eval()
    dummy = torch.zeros(1, cfg.input_height, cfg.input_width, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            deploy,
            (dummy,),
            str(out_path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            do_constant_folding=True,
        )
    parity: dict[str, float] = {}
    if self_check:
        parity = parity_check(model, out_path)
    decide_at = dict(thresholds) if thresholds else {
        h: float(operating_point[h]["threshold"]) if operating_point and h in operating_point else DEFAULT_THRESHOLD
        for h in HEADS}
    op = {} if thresholds or not operating_point else jsonfile.clean(dict(operating_point))
    weights_name = ""
    if write_weights:  # the weights decide where the ONNX does (`evaluate` of either, an export again from them)
        weights_path = out_path.with_suffix(".pt")
        kept = {h: {"threshold": float(t), "rule": "given to linewatch export"} for h, t in decide_at.items()} \
            if thresholds else op
        torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "operating_point": kept,
                    "training": jsonfile.clean(dict(training or {})), "metrics": jsonfile.clean(dict(metrics or {}))},
                   weights_path)
        weights_name = weights_path.name
    manifest = Manifest(
        onnx=out_path.name,
        sha256=sha256_file(out_path),
        input_height=cfg.input_height,
        input_width=cfg.input_width,
        heads=list(HEADS),
        thresholds=decide_at,
        operating_point=op,
        model=cfg.to_dict(),
        training={**(training or {}), "onnx_opset": opset},
        metrics=jsonfile.clean({**(metrics or {}), **({"parity_max_abs_diff": parity} if parity else {})}),
        weights=weights_name,
    )
    if write_manifest:
        manifest.save(out_path.with_suffix(".json"))
    return manifest
