"""`linewatch evaluate`: the paper's metrics of a model on a dataset split (SPEC §3).

The model is a PyTorch checkpoint (`RUN/best.pt`, exported `<stem>.pt`) or an ONNX model with its
manifest (`engines/x.onnx` or `engines/x.json`), run through `open_engine` on a CPU backend
(`onnxruntime`, the FP32 reference, by default; `openvino` with a precision to score what a station
runs, e.g. its INT8 model). Images
become the model input by `linewatch.preprocess.to_model_input`, as in training and on the line. Writes, in the folder `out`:

    metrics.json        per head: AP_pos, AP_neg, TPR_t, TNR_t, counts; plus model/data/split
    metrics.md          the same as a Markdown table
    scores.csv          name, labels and scores per sample
    pr_<head>.png       precision-recall curves (positives and negatives as the positive class), cv2-drawn
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import HEADS, jsonfile
from linewatch.errors import SettingError
from linewatch.model.metrics import DEFAULT_THRESHOLD, all_metrics, markdown_table, pr_curve

Predict = Callable[[np.ndarray], np.ndarray]
"""uint8 [N, H, W, 3] -> scores float [N, 2]."""


def checkpoint_thresholds(path: str | Path) -> dict[str, float]:
    """A checkpoint's recommended thresholds (training's `operating_point`); for exported weights without one
    (exports before 2026-12-03), those of the manifest that names them (`<stem>.json`, its `weights`); else 0.7
    per head."""
    from linewatch.model.export import load_checkpoint

    op = load_checkpoint(path).get("operating_point") or {}
    if not op:
        from linewatch.engines.manifest import load_manifest
        from linewatch.errors import EngineError

        path = Path(path)
        try:
            man, _ = load_manifest(path.with_suffix(".json"), verify=False)
        except EngineError:
            man = None
        if man is not None and man.weights == path.name and isinstance(man.thresholds, dict):
            return {h: float(man.thresholds.get(h, DEFAULT_THRESHOLD)) for h in HEADS}
    return {h: float(op[h]["threshold"]) if isinstance(op.get(h), dict) else DEFAULT_THRESHOLD for h in HEADS}


def open_predictor(
    model_path: str | Path, threads: int = 0, device: str = "cpu", backend: str = "onnxruntime",
    precision: str | None = None, batch: int = 8,
) -> tuple[Predict, tuple[int, int], dict[str, float]]:
    """(predict, (H, W), thresholds) for a checkpoint (.pt, run on `device`) or an ONNX model (.onnx /
    .json, run on `backend` with `precision`, batches of at most `batch`)."""
    path = Path(model_path)
    if path.suffix in (".onnx", ".json"):
        from linewatch.engines.factory import open_engine, precision_opts
        from linewatch.engines.manifest import load_manifest

        if backend not in ("onnxruntime", "openvino"):
            raise SettingError(f"`backend` {backend!r}: evaluate runs an ONNX model on onnxruntime or openvino")
        man, _ = load_manifest(path)
        opts = {"threads": threads} if threads else {}
        engine = open_engine(path, backend=backend, max_batch=batch, **opts, **precision_opts(backend, precision))

        def predict_onnx(frames: np.ndarray) -> np.ndarray:
            return engine.infer(np.ascontiguousarray(frames))[1].copy()

        return predict_onnx, man.input_hw, dict(man.thresholds)
    if path.suffix in (".pt", ".pth"):
        import torch

        from linewatch.model.export import load_model
        from linewatch.model.resse import DeployNet

        model = load_model(path, device)
        deploy = DeployNet(model).eval()

        def predict_torch(frames: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
                return deploy(x)[1].float().cpu().numpy()

        return predict_torch, (model.cfg.input_height, model.cfg.input_width), checkpoint_thresholds(path)
    raise SettingError(f"`model_path` {path}: expected a checkpoint (.pt) or an ONNX model (.onnx / its .json "
                       "manifest)")


def predict_samples(predict: Predict, dataset: Any, samples: list[Any], hw: tuple[int, int], batch: int = 8) -> np.ndarray:
    """Scores float [N, 2] of `samples`, each image made the model input by `to_model_input` (the line's rule)."""
    from linewatch.preprocess import Scratch, to_model_input

    scores = np.zeros((len(samples), 2), np.float32)
    frames = np.empty((batch, hw[0], hw[1], 3), np.uint8)
    scratch = Scratch()
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        for j, s in enumerate(chunk):
            to_model_input(dataset.load_image(s), dst=frames[j], scratch=scratch)
        scores[i : i + len(chunk)] = predict(frames[: len(chunk)])
    return scores


def labels_of(samples: list[Any]) -> np.ndarray:
    return np.array([[np.nan if s.labels[h] is None else s.labels[h] for h in HEADS] for s in samples], np.float64)


def draw_pr_curves(curves: list[tuple[str, np.ndarray, np.ndarray, tuple[int, int, int]]], title: str,
                   path: Path, size: tuple[int, int] = (480, 420)) -> None:
    """Precision (y) over recall (x), step-wise as AP counts it; `curves` = (label, precision, recall, BGR)."""
    import cv2

    w, h = size
    ml, mr, mt, mb = 60, 20, 40, 50
    img = np.full((h, w, 3), 255, np.uint8)
    pw, ph = w - ml - mr, h - mt - mb

    def pt(r: float, p: float) -> tuple[int, int]:
        return int(round(ml + r * pw)), int(round(mt + (1 - p) * ph))

    for k in range(0, 11, 2):
        v = k / 10
        cv2.line(img, pt(v, 0), pt(v, 1), (230, 230, 230), 1)
        cv2.line(img, pt(0, v), pt(1, v), (230, 230, 230), 1)
        cv2.putText(img, f"{v:.1f}", (pt(v, 0)[0] - 10, h - mb + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{v:.1f}", (ml - 32, pt(0, v)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.rectangle(img, pt(0, 1), pt(1, 0), (0, 0, 0), 1)
    cv2.putText(img, "recall", (ml + pw // 2 - 20, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "precision", (4, mt - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, title, (ml, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    for j, (label, precision, recall, color) in enumerate(curves):
        if recall.size and not np.isnan(recall).any():
            pts = [pt(0.0, float(precision[0]))]
            prev_r = 0.0
            for p, r in zip(precision, recall, strict=True):
                pts += [pt(prev_r, float(p)), pt(float(r), float(p))]
                prev_r = float(r)
            cv2.polylines(img, [np.array(pts, np.int32)], False, color, 2, cv2.LINE_AA)
        cv2.putText(img, label, (ml + 10, mt + ph - 12 - 18 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
    if not cv2.imwrite(str(path), img):
        raise SettingError(f"{path}: could not write the PR curve image")


def evaluate(model_path: str | Path, data: str | Path, split: str = "test", out: str | Path | None = None,
             threshold: float | None = None, batch: int = 8, threads: int = 0, device: str = "cpu",
             samples: list[Any] | None = None, backend: str = "onnxruntime",
             precision: str | None = None, also_at: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Metrics per head of `model_path` on `split` of `data`; writes the files of the module doc to `out`.

    `also_at` {name: thresholds per head}: the same scores measured at those thresholds too
    (`result["also"][name]`; e.g. the paper's 0.7 and the model's recommended point side by side)."""
    from linewatch.data.dataset import open_dataset

    predict, hw, thresholds = open_predictor(model_path, threads, device, backend, precision, batch)
    if threshold is not None:
        thresholds = {h: float(threshold) for h in HEADS}
    ds = open_dataset(data)
    if samples is None:
        samples = ds.split(split)
    if not samples:
        raise SettingError(f"{data}: split {split!r} has no samples")
    scores = predict_samples(predict, ds, samples, hw, batch)
    labels = labels_of(samples)
    metrics = all_metrics(labels, scores, thresholds)
    result = {"model": str(model_path), "data": str(data), "split": split, "n": len(samples),
              "backend": backend if Path(model_path).suffix in (".onnx", ".json") else f"torch ({device})",
              "precision": precision,
              "input_hw": list(hw), "metrics": metrics}
    if also_at:
        result["also"] = {name: all_metrics(labels, scores, t) for name, t in also_at.items()}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(jsonfile.dumps(result, indent=2) + "\n")
        (out / "metrics.md").write_text(
            markdown_table(metrics, f"{Path(model_path).name} on {Path(data).name} / {split} ({len(samples)} images)")
        )
        with open(out / "scores.csv", "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["name", *(f"label_{h}" for h in HEADS), *(f"score_{h}" for h in HEADS)])
            for s, lab, sc in zip(samples, labels, scores, strict=True):
                wr.writerow([s.name, *("" if np.isnan(v) else int(v) for v in lab), *(f"{v:.6f}" for v in sc)])
        for c, head in enumerate(HEADS):
            keep = ~np.isnan(labels[:, c])
            y, s = labels[keep, c], scores[keep, c].astype(np.float64)
            m = metrics[head]
            curves = []
            if (y == 1).any():
                p, r, _ = pr_curve(y == 1, s)
                curves.append((f"positives  AP_pos {100 * m['AP_pos']:.1f}", p, r, (200, 80, 0)))
            if (y == 0).any():
                p, r, _ = pr_curve(y == 0, 1 - s)
                curves.append((f"negatives  AP_neg {100 * m['AP_neg']:.1f}", p, r, (0, 120, 230)))
            draw_pr_curves(curves, f"{head}: {int(keep.sum())} labelled images", out / f"pr_{head}.png")
    return result
