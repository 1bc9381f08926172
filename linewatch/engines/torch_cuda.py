"""PyTorch on CUDA: FP16 (or FP32), channels_last, one CUDA graph per captured batch size (SPEC §5).

The GPU path where TensorRT is not installed. The only engines module that imports torch.

- Weights: `manifest.weights` (`<stem>.pt` beside the ONNX) through `linewatch.model.export.load_model`.
- Graphs are captured for the powers of two up to `max_batch` plus `max_batch` itself
  (8 → 1, 2, 4, 8; 6 → 1, 2, 4, 6); a batch of N runs the graph of the smallest captured size
  >= N (the padding rows hold stale frames; their outputs are never returned).
- Frames already in page-locked memory (the daemon's ring, allocated with `host_empty`) are copied
  straight to a static device input; other frames are staged through a page-locked host buffer; the outputs of the graph
  are copied into page-locked host buffers; `infer` returns numpy views of those (valid until the
  next call, per the Engine contract).
- `device="cpu"` (FP32, no graphs, no page-locked memory) exists for the test suite only: it runs
  the same code paths on machines without CUDA.

Threading: the engine may be created on one thread and called from another; calls must not
overlap (a lock enforces one at a time). All work runs on the engine's own CUDA stream.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from linewatch.engines.base import NORM_SCALE, NORM_SHIFT, check_frames, output_hw, warm_every_batch
from linewatch.engines.manifest import Manifest
from linewatch.errors import EngineError

PRECISIONS = ("fp16", "fp32")


def captured_sizes(max_batch: int) -> list[int]:
    """Batch sizes that get a CUDA graph: powers of two below `max_batch`, and `max_batch`."""
    sizes = [1 << i for i in range(max_batch.bit_length()) if (1 << i) < max_batch]
    return [*sizes, max_batch]


def graph_size_for(n: int, sizes: list[int]) -> int:
    """The smallest captured size >= n."""
    for s in sizes:
        if s >= n:
            return s
    raise EngineError(f"torch: batch of {n} frames exceeds max_batch {sizes[-1]}")


class _Deploy(nn.Module):
    """uint8 NHWC → normalised NCHW (channels_last strides, `dtype`) → (masks, scores) in float32."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.scale = NORM_SCALE
        self.shift = NORM_SHIFT

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # NHWC permuted to NCHW *is* channels_last in memory: no copy of the layout
        x = image.permute(0, 3, 1, 2).to(self.dtype) * self.scale + self.shift
        out = self.net(x)
        return out.masks.float(), out.scores.float()


class TorchEngine:
    """ResSENet on a CUDA device, FP16 + CUDA graphs by default."""

    name = "torch"

    def __init__(
        self,
        onnx_path: str | Path,
        manifest: Manifest,
        max_batch: int = 8,
        device: str = "cuda:0",
        precision: str = "fp16",
        graphs: bool = True,
    ) -> None:
        from linewatch.model.export import load_model

        if precision not in PRECISIONS:
            raise EngineError(f"torch: precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
        if max_batch < 1:
            raise EngineError(f"torch: max_batch={max_batch}; must be >= 1")
        dev = torch.device(device)
        on_cuda = dev.type == "cuda"
        if on_cuda and not torch.cuda.is_available():
            raise EngineError(f"torch: {device} asked, but this torch ({torch.__version__}) sees no CUDA device")
        if not on_cuda and precision == "fp16":
            precision = "fp32"  # the CPU test mode
        if not manifest.weights:
            raise EngineError(f"{onnx_path}: its manifest names no weights file (`weights`); re-export the model")
        weights = Path(onnx_path).parent / manifest.weights
        if not weights.is_file():
            raise EngineError(f"{weights}: weights named by the manifest of {onnx_path} not found")

        self.input_hw = manifest.input_hw
        self.max_batch = int(max_batch)
        self.precision = precision
        self.pinned = on_cuda
        self._dev = dev
        self._lock = threading.Lock()
        self._graphs_on = graphs and on_cuda
        dtype = torch.float16 if precision == "fp16" else torch.float32
        net = load_model(weights, device=dev).to(dtype=dtype)
        net = net.to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        cfg_hw = (net.cfg.input_height, net.cfg.input_width)
        if cfg_hw != self.input_hw:
            raise EngineError(f"{weights}: model input {cfg_hw} differs from the manifest's {self.input_hw}")
        self._model = _Deploy(net, dtype).eval()
        name = torch.cuda.get_device_name(dev) if on_cuda else "cpu"
        mode = "CUDA graphs" if self._graphs_on else "eager"
        self.device = f"{dev} {name} ({precision}, {mode})" if on_cuda else f"cpu ({precision}, {mode})"

        h, w = self.input_hw
        mh, mw = output_hw(self.input_hw)
        pin = on_cuda
        self._h_in = torch.empty((self.max_batch, h, w, 3), dtype=torch.uint8, pin_memory=pin)
        self._h_masks = torch.empty((self.max_batch, 2, mh, mw), dtype=torch.float32, pin_memory=pin)
        self._h_scores = torch.empty((self.max_batch, 2), dtype=torch.float32, pin_memory=pin)
        self._np_in = self._h_in.numpy()
        self._np_masks = self._h_masks.numpy()
        self._np_scores = self._h_scores.numpy()
        self._d_in = torch.zeros((self.max_batch, h, w, 3), dtype=torch.uint8, device=dev)
        self._stream = torch.cuda.Stream(dev) if on_cuda else None
        self.sizes = captured_sizes(self.max_batch) if self._graphs_on else list(range(1, self.max_batch + 1))
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        if self._graphs_on:
            self._capture()

    def _capture(self) -> None:
        """One CUDA graph per size, largest first, sharing one memory pool."""
        assert self._stream is not None
        pool = torch.cuda.graph_pool_handle()
        with torch.no_grad(), torch.cuda.device(self._dev):
            side = torch.cuda.Stream(self._dev)
            side.wait_stream(torch.cuda.current_stream(self._dev))
            with torch.cuda.stream(side):
                for s in self.sizes:  # warm-up: cuDNN picks its kernels outside the capture
                    for _ in range(3):
                        self._model(self._d_in[:s])
            torch.cuda.current_stream(self._dev).wait_stream(side)
            for s in sorted(self.sizes, reverse=True):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=pool, stream=self._stream):
                    masks, scores = self._model(self._d_in[:s])
                self._graphs[s] = (g, masks, scores)
            torch.cuda.synchronize(self._dev)

    def host_empty(self, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """A page-locked host array (for the ring's frames) when on CUDA, else a plain one."""
        t = torch.from_numpy(np.empty(0, dtype)).dtype
        return torch.empty(shape, dtype=t, pin_memory=self.pinned).numpy()

    def warmup(self) -> None:
        warm_every_batch(self)

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = check_frames(frames, self.input_hw, self.max_batch, self.name)
        with self._lock:
            if "_model" not in self.__dict__:
                raise EngineError("torch: the engine is closed")
            if self._stream is None:  # CPU test mode: eager, same buffers
                np.copyto(self._np_in[:n], frames)
                with torch.no_grad():
                    masks, scores = self._model(self._h_in[:n])
                self._h_masks[:n].copy_(masks)
                self._h_scores[:n].copy_(scores)
            else:
                src = torch.from_numpy(frames) if frames.flags.c_contiguous else None
                if src is None or not src.is_pinned():
                    # pageable memory: stage it in our page-locked buffer so the copy is a real async DMA.
                    # Frames from the daemon's ring (allocated with `host_empty`) skip this host copy.
                    np.copyto(self._np_in[:n], frames)
                    src = self._h_in[:n]
                with torch.cuda.device(self._dev), torch.cuda.stream(self._stream), torch.no_grad():
                    self._d_in[:n].copy_(src, non_blocking=True)
                    if self._graphs_on:
                        g, masks, scores = self._graphs[graph_size_for(n, self.sizes)]
                        g.replay()
                    else:
                        masks, scores = self._model(self._d_in[:n])
                    self._h_masks[:n].copy_(masks[:n], non_blocking=True)
                    self._h_scores[:n].copy_(scores[:n], non_blocking=True)
                self._stream.synchronize()
        return self._np_masks[:n], self._np_scores[:n]

    def close(self) -> None:
        with self._lock:
            self._graphs.clear()
            self.__dict__.pop("_model", None)
            if self._dev.type == "cuda":
                torch.cuda.empty_cache()
