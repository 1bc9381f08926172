"""The one interface every inference backend implements.

An engine takes uint8 frames [N, H, W, 3] (RGB, as cameras deliver, H and W the model's input
size) and returns `masks` float32 [N, 2, H/8, W/8] and `scores` float32 [N, 2] (columns in
`linewatch.HEADS` order). The returned arrays are views into buffers the engine preallocated:
they stay valid until the next `infer` call, and the caller copies what it keeps.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Engine(Protocol):
    name: str
    """Backend name: "onnxruntime", "tensorrt", "torch", "null"."""
    device: str
    """Human-readable device, e.g. "cpu (2 threads)" or "cuda:0 NVIDIA H100"."""
    input_hw: tuple[int, int]
    """(height, width) of the frames `infer` takes."""
    max_batch: int
    """Largest N `infer` accepts."""
    pinned: bool
    """True when the caller should hand frames in page-locked host memory (GPU engines)."""

    def warmup(self) -> None:
        """Run every batch size once so the first real frame pays no start-up cost."""

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames uint8 [N, H, W, 3], 1 <= N <= max_batch -> (masks, scores) views, see module doc."""
        ...

    def close(self) -> None:
        """Free device memory and sessions. Idempotent."""
