"""The one interface every inference backend implements.

An engine takes uint8 frames [N, H, W, 3] (RGB, as cameras deliver, H and W the model's input
size) and returns `masks` float32 [N, 2, H/8, W/8] and `scores` float32 [N, 2] (columns in
`linewatch.HEADS` order). The returned arrays are views into buffers the engine preallocated:
they stay valid until the next `infer` call, and the caller copies what it keeps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

INPUT_NAME = "image"
"""The model's one input: uint8 frames [N, H, W, 3] (SPEC §5)."""
OUTPUT_NAMES = ("masks", "scores")
"""The model's outputs: float32 masks [N, 2, H/8, W/8] and scores [N, 2]."""
NORM_SCALE = 1.0 / (255.0 * 0.25)
NORM_SHIFT = -0.5 / 0.25
"""The network's input normalisation, x = u8 * NORM_SCALE + NORM_SHIFT = (u8 / 255 - 0.5) / 0.25: inside the
exported graph, and in every PyTorch path (`linewatch.model.resse.normalize`, the torch engine)."""


@runtime_checkable
class Engine(Protocol):
    name: str
    """Backend name: "openvino", "onnxruntime", "tensorrt", "torch", "null"."""
    device: str
    """Human-readable device, e.g. "cpu (2 threads)" or "cuda:0 NVIDIA H100"."""
    input_hw: tuple[int, int]
    """(height, width) of the frames `infer` takes."""
    max_batch: int
    """Largest N `infer` accepts."""
    precision: str
    """The arithmetic it runs: "f32", "bf16", "int8" (openvino), "fp16" or "fp32" (tensorrt, torch),
    "none" (null)."""
    pinned: bool
    """True when the caller should hand frames in page-locked host memory (GPU engines): the ring then
    allocates its slots with `host_empty`."""

    def host_empty(self, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """An uninitialised host array for frames handed to `infer`: page-locked on a pinned engine."""
        ...

    def warmup(self) -> None:
        """Run every batch size once so the first real frame pays no start-up cost."""

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames uint8 [N, H, W, 3], 1 <= N <= max_batch -> (masks, scores) views, see module doc."""
        ...

    def close(self) -> None:
        """Free device memory and sessions. Idempotent."""


class PlainHostMemory:
    """`host_empty` of the engines that run on the CPU: a plain numpy array (nothing to pin)."""

    def host_empty(self, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        return np.empty(shape, dtype)


def output_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    """Mask size for an input size: 1/8 of each side (the input is a multiple of 8)."""
    return (input_hw[0] // 8, input_hw[1] // 8)


def check_frames(frames: object, input_hw: tuple[int, int], max_batch: int, engine: str) -> int:
    """Validate what an engine's `infer` got; return N. Raises EngineError naming what is wrong."""
    from linewatch.errors import EngineError

    if not isinstance(frames, np.ndarray):
        raise EngineError(f"{engine}: frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise EngineError(f"{engine}: frames must be uint8 [N, H, W, 3], got dtype {frames.dtype}")
    h, w = input_hw
    if frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
        raise EngineError(
            f"{engine}: frames must have shape [N, {h}, {w}, 3] (the model's input), got {list(frames.shape)}"
        )
    n = int(frames.shape[0])
    if not 1 <= n <= max_batch:
        raise EngineError(f"{engine}: batch of {n} frames; allowed 1..{max_batch} (max_batch)")
    return n


def warm_every_batch(engine: Engine) -> None:
    """Run every batch size 1..max_batch once on zero frames (what `warmup` does in every engine):
    sessions allocate, kernels are chosen and graphs exist before the first real frame."""
    h, w = engine.input_hw
    frames = np.zeros((engine.max_batch, h, w, 3), np.uint8)
    for n in range(1, engine.max_batch + 1):
        engine.infer(frames[:n])


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            core = (topo / "core_id").read_text().strip()
            pkg = (topo / "physical_package_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((pkg, core))
    return max(1, len(cores))


class CpuBuffers:
    """What a CPU engine allocates once for `max_batch` (outputs are views of these, per the Engine
    contract) and the threads it runs on; raises EngineError naming `engine` for a bad value."""

    def __init__(self, engine: str, input_hw: tuple[int, int], max_batch: int, threads: int | None) -> None:
        from linewatch.errors import EngineError

        if max_batch < 1:
            raise EngineError(f"{engine}: max_batch={max_batch}; must be >= 1")
        self.threads = int(threads) if threads else physical_cores()
        if self.threads < 1:
            raise EngineError(f"{engine}: threads={threads}; must be >= 1")
        h, w = input_hw
        mh, mw = output_hw(input_hw)
        self.masks = np.empty((max_batch, 2, mh, mw), np.float32)
        self.scores = np.empty((max_batch, 2), np.float32)
        self.frames = np.empty((max_batch, h, w, 3), np.uint8)  # for non-contiguous input only

    def contiguous(self, frames: np.ndarray, n: int) -> np.ndarray:
        """`frames` itself when C-contiguous (no copy), else a copy in the preallocated input buffer."""
        if frames.flags.c_contiguous:
            return frames
        np.copyto(self.frames[:n], frames)
        return self.frames[:n]

    def device(self, extra: str = "") -> str:
        """ "cpu (2 threads)", with `extra` after the threads."""
        return f"cpu ({self.threads} thread{'s' if self.threads > 1 else ''}{', ' + extra if extra else ''})"
