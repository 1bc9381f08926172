"""INT8 for the OpenVINO engine: NNCF post-training quantization with accuracy control.

    linewatch export --int8 --calib DIR [--model engines/M.onnx] [--max-ap-drop 0.01]

Calibrates on the station's own images (`--calib-split`, default `train`, of a dataset folder)
and validates on another split (`--val-split`, default `val`): NNCF's
`quantize_with_accuracy_control` quantizes the model, measures the validation metric (the mean
AP_pos of the heads that have labels there) and returns layers to float precision until the drop
is at most `max_ap_drop` (absolute). The result is an OpenVINO model (`<stem>.int8.xml` + `.bin`)
beside the ONNX; the manifest's `int8` entry names it with both sha256s, the calibration data and
the AP before and after. `precision="int8"` on the openvino engine then runs it.

Frames become the model input by the one rule of training and the line (`linewatch.preprocess.to_model_input`).
Needs `pip install 'linewatch[int8]'` (nncf).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import HEADS
from linewatch.engines.base import INPUT_NAME
from linewatch.engines.manifest import load_manifest, manifest_path_for, sha256_file
from linewatch.errors import EngineError

INT8_EXTRA = "pip install 'linewatch[int8]'"


def load_frames(data: str | Path, split: str, hw: tuple[int, int], limit: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames [N, H, W, 3] of one split at `hw` (`to_model_input`, as the line makes them), and labels [N, 2]."""
    from linewatch.data.dataset import open_dataset
    from linewatch.preprocess import Scratch, to_model_input

    ds = open_dataset(data)
    samples = ds.split(split)[:limit] if limit else ds.split(split)
    if not samples:
        raise EngineError(f"{data}: split {split!r} has no samples")
    frames = np.empty((len(samples), hw[0], hw[1], 3), np.uint8)
    labels = np.full((len(samples), len(HEADS)), -1, np.int64)
    scratch = Scratch()
    for i, s in enumerate(samples):
        to_model_input(ds.load_image(s), dst=frames[i], scratch=scratch)
        for j, head in enumerate(HEADS):
            v = s.labels.get(head)
            labels[i, j] = -1 if v is None else int(v)
    return frames, labels


def mean_ap_pos(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean AP_pos over the heads with both classes among `labels` (-1 = unknown)."""
    from linewatch.model.metrics import average_precision

    aps = []
    for j in range(labels.shape[1]):
        known = labels[:, j] >= 0
        y = labels[known, j]
        if y.size and 0 < y.sum() < y.size:
            aps.append(average_precision(y, scores[known, j]))
    if not aps:
        raise EngineError("the validation split has no head with both defective and defect-free images")
    return float(np.mean(aps))


def quantize_int8(model_path: str | Path, calib: str | Path, *, calib_split: str = "train", val_split: str = "val",
                  max_ap_drop: float = 0.01, max_calib: int = 300,
                  say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Quantize the exported model at `model_path` (module doc); returns the manifest's new `int8` entry."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise EngineError(f"INT8 quantization needs nncf and openvino: {INT8_EXTRA}") from exc
    if not 0 < max_ap_drop < 1:
        raise EngineError(f"max_ap_drop = {max_ap_drop}: must be in (0, 1)")
    man, onnx = load_manifest(model_path)
    hw = man.input_hw
    t0 = time.monotonic()
    cal, _ = load_frames(calib, calib_split, hw, limit=max_calib)
    val, val_labels = load_frames(calib, val_split, hw)
    mean_ap_pos(val_labels, np.zeros(val_labels.shape, np.float32))  # refuse early when nothing can be validated
    say(f"int8: {len(cal)} calibration frames ({calib_split}), {len(val)} validation frames ({val_split})")

    model = ov.Core().read_model(str(onnx))
    model.reshape({INPUT_NAME: [1, hw[0], hw[1], 3]})

    val_items = list(zip(val, val_labels, strict=True))  # NNCF may validate on subsets: items carry labels

    def validate(compiled: Any, items: Any) -> float:
        request = compiled.create_infer_request()
        port = compiled.output("scores")
        frames, labels = zip(*items, strict=True)
        scores = np.stack([request.infer({0: frame[None]})[port][0] for frame in frames])
        return mean_ap_pos(np.stack(labels), scores)

    float_ap = validate(ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), val_items)
    say(f"int8: FP32 mean AP_pos on {val_split}: {float_ap:.4f}; quantizing (max drop {max_ap_drop})")
    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration_dataset=nncf.Dataset(list(cal), lambda frame: frame[None]),
        validation_dataset=nncf.Dataset(val_items, lambda item: item[0][None]),
        validation_fn=validate,
        max_drop=max_ap_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(cal),
    )
    int8_ap = validate(ov.Core().compile_model(quantized, "CPU"), val_items)
    xml = onnx.with_name(onnx.stem + ".int8.xml")
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    entry = {
        "model": xml.name, "sha256": sha256_file(xml), "bin_sha256": sha256_file(xml.with_suffix(".bin")),
        "calibration": {"data": str(calib), "split": calib_split, "frames": len(cal)},
        "validation": {"split": val_split, "frames": len(val), "mean_ap_pos_fp32": round(float_ap, 5),
                       "mean_ap_pos_int8": round(int8_ap, 5), "max_ap_drop": max_ap_drop},
        "tool": f"nncf {nncf.__version__}, openvino {ov.get_version().split('-')[0]}",
        "seconds": round(time.monotonic() - t0, 1),
    }
    man.int8 = entry
    man.save(manifest_path_for(onnx))
    say(f"int8: wrote {xml} (mean AP_pos {int8_ap:.4f}, FP32 {float_ap:.4f}) and its manifest entry")
    return entry
