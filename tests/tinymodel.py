"""The tiny ResSENet the engine tests share: exported with the real `export_onnx` (64x96 input, so a
file runs in milliseconds), its classifier rescaled so the scores spread over [0, 1] and the
decisions at 0.7 go both ways (`calibrate_like_trained`), and structured frames to score.
Needs torch (the tests that import it skip without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from linewatch.engines.base import Engine

H, W = 64, 96
THRESHOLD = 0.7


def calibrate_like_trained(model: torch.nn.Module, frames: np.ndarray) -> None:
    """Give a random ResSENet a trained net's behaviour on `frames`, deterministically.

    BatchNorm statistics are set from the frames (unit-scale activations, as after training), and
    the classifier is rescaled so that its logits spread with std 1 and the threshold 0.7 falls in
    the widest gap among the middle frames: the decisions go both ways, none by a hair.
    """
    from linewatch.model.resse import normalize

    x = normalize(torch.from_numpy(frames).permute(0, 3, 1, 2))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
        model.eval()
        fc = model.classification.fc_class
        logits = model(x).cls_logits
        a = 1.0 / logits.std(dim=0)
        fc.weight.mul_(a[:, None])
        fc.bias.mul_(a)
        logits = model(x).cls_logits.sort(dim=0).values  # [16, 2]
        n = len(frames)
        for head in range(2):
            col = logits[:, head]
            gaps = col[n // 4 + 1 : 3 * n // 4 + 1] - col[n // 4 : 3 * n // 4]
            i = n // 4 + int(gaps.argmax())
            mid = float(col[i] + col[i + 1]) / 2
            fc.bias[head] += float(np.log(THRESHOLD / (1 - THRESHOLD))) - mid


def export_tiny(folder: Path, name: str = "tiny", seed: int = 0, width: int = W) -> Path:
    """Export the tiny model (ONNX, manifest, weights) as `folder/<name>.onnx`; returns its path. Another
    `seed` gives other weights (another sha256), another `width` another input size."""
    from linewatch.model.export import export_onnx
    from linewatch.model.resse import build_model

    torch.manual_seed(seed)
    model = build_model(input_height=H, input_width=width, widths=(8, 16, 24), class_channels=8)
    if width == W:
        calibrate_like_trained(model, frames_for(16, seed=1))
    out = folder / f"{name}.onnx"
    export_onnx(model, out, self_check=False)
    return out


def frames_for(n: int, seed: int) -> np.ndarray:
    """Frames with structure (bright blobs on gradients), not just noise: the scores vary."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    out = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        base = rng.uniform(0, 255) * (xx / W) + rng.uniform(0, 80)
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(3, 20)
        blob = rng.uniform(-150, 150) * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        for c in range(3):
            out[i, :, :, c] = np.clip(base + blob + rng.normal(0, 8, (H, W)), 0, 255)
    return out


def run_all(engine: Engine, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run frames through in batches of max_batch (with a ragged last batch); copy the views."""
    ms, ss = [], []
    for i in range(0, len(frames), engine.max_batch):
        m, s = engine.infer(frames[i : i + engine.max_batch])
        ms.append(m.copy())
        ss.append(s.copy())
    return np.concatenate(ms), np.concatenate(ss)
