"""Fixtures the test modules share: the tiny ResSENet of `tinymodel.py`, exported once a session, the
frames it is scored on and its PyTorch reference outputs. They need torch (the export): a test that asks
for one skips without it. Tests read these files; one that changes a model copies it first.

Helpers that are no fixtures live beside: `waiting.wait_until` (every wait for a state), `fakes` (stand-ins
for the pipeline's stages), `fake_tensorrt` (TensorRT and pycuda without a GPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NEEDS_TORCH = "the tiny test model is exported with torch (linewatch[train])"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny.onnx, its manifest tiny.json and its weights tiny.pt."""
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    from tinymodel import export_tiny

    return export_tiny(tmp_path_factory.mktemp("tiny")).parent


@pytest.fixture(scope="session")
def onnx_path(model_dir: Path) -> Path:
    return model_dir / "tiny.onnx"


@pytest.fixture(scope="session")
def frames() -> np.ndarray:
    """16 structured frames at the tiny model's input size (scores that go both ways at the threshold)."""
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    from tinymodel import frames_for

    return frames_for(16, seed=1)


@pytest.fixture(scope="session")
def reference(onnx_path: Path, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeployNet, FP32, CPU, on the same uint8 frames (the PyTorch reference): (masks, scores)."""
    import torch

    from linewatch.model.export import load_model
    from linewatch.model.resse import DeployNet

    net = DeployNet(load_model(onnx_path.with_suffix(".pt"))).eval()
    with torch.no_grad():
        masks, scores = net(torch.from_numpy(frames))
    return masks.numpy(), scores.numpy()
