"""TensorRT 10 runtime with pycuda (SPEC §5): a plan from `linewatch build-engine`, run on a stream.

- The plan is found by key beside the ONNX (`linewatch.engines.build.find_plan`); one built on
  another GPU model or by another TensorRT version is refused with the command that rebuilds it.
- Tensors are bound by name (TensorRT 10: `num_io_tensors`, `get_tensor_name`, `get_tensor_mode`,
  `set_input_shape`, `set_tensor_address`) and the plan runs with `execute_async_v3` on a pycuda
  `Stream`. Device buffers (`mem_alloc`) and page-locked host output buffers (`pagelocked_empty`)
  are allocated once for `max_batch`; a call does HtoD copy → execute → DtoH copies → synchronize.
  The input is copied from the caller's array when it is C-contiguous (page-locked arrays from
  `host_empty` make that copy a real asynchronous DMA), otherwise through a page-locked buffer.

Threading rule: the engine retains the device's *primary* CUDA context (no `pycuda.autoinit`) and
makes it current only for the duration of each call (`push` … `pop`), so it may be created on one
thread and used from another — the inference worker. Calls must not overlap: one thread at a
time (a lock enforces it). `close()` must be called from any thread once no call is running.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from linewatch.engines.base import INPUT_NAME, OUTPUT_NAMES, check_frames, output_hw, warm_every_batch
from linewatch.engines.build import PRECISIONS, PlanInfo, find_plan, sidecar_path
from linewatch.engines.build import check_plan as check_plan_info
from linewatch.engines.manifest import Manifest
from linewatch.errors import EngineError


class TrtEngine:
    """A deserialized TensorRT plan with its buffers, stream and execution context."""

    name = "tensorrt"
    pinned = True

    def __init__(self, plan: Path, info: PlanInfo, manifest: Manifest, max_batch: int = 8, device: int = 0) -> None:
        self.plan = plan
        self.info = info
        self.input_hw = manifest.input_hw
        self.max_batch = int(max_batch)
        self._lock = threading.Lock()
        cuda.init()
        self._device = cuda.Device(device)
        self.precision = info.precision
        self.device = f"cuda:{device} {self._device.name()} (TensorRT {trt.__version__}, {info.precision})"
        self._ctx = self._device.retain_primary_context()
        self._ctx.push()
        try:
            self._setup()
        except BaseException:
            cuda.Context.pop()
            self._ctx.detach()
            raise
        cuda.Context.pop()
        self._closed = False

    def _setup(self) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if engine is None:
            raise EngineError(f"{self.plan}: TensorRT could not deserialize the plan; rebuild it (`linewatch build-engine`)")
        self._engine = engine
        h, w = self.input_hw
        mh, mw = output_hw(self.input_hw)
        want: dict[str, tuple[trt.TensorIOMode, np.dtype[Any], tuple[int, ...]]] = {
            INPUT_NAME: (trt.TensorIOMode.INPUT, np.dtype(np.uint8), (h, w, 3)),
            "masks": (trt.TensorIOMode.OUTPUT, np.dtype(np.float32), (2, mh, mw)),
            "scores": (trt.TensorIOMode.OUTPUT, np.dtype(np.float32), (2,)),
        }
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if sorted(names) != sorted(want):
            raise EngineError(f"{self.plan}: tensors {names}; expected {sorted(want)} (not a plan `linewatch build-engine` built)")
        self._context = engine.create_execution_context()
        self._stream = cuda.Stream()
        self._host: dict[str, np.ndarray] = {}
        self._dev: dict[str, cuda.DeviceAllocation] = {}
        for name in names:
            mode, dtype, tail = want[name]
            got = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            dims = engine.get_tensor_shape(name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            if engine.get_tensor_mode(name) != mode or got != dtype or shape[1:] != tail:
                raise EngineError(
                    f"{self.plan}: tensor {name} is {engine.get_tensor_mode(name).name} {got} {list(shape)}; "
                    f"expected {mode.name} {dtype} [N, {', '.join(map(str, tail))}]"
                )
            full = (self.max_batch, *tail)
            self._host[name] = cuda.pagelocked_empty(full, dtype)
            self._dev[name] = cuda.mem_alloc(self._host[name].nbytes)
            if not self._context.set_tensor_address(name, int(self._dev[name])):
                raise EngineError(f"{self.plan}: set_tensor_address({name!r}) failed")

    def host_empty(self, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """A page-locked host array (for the ring's frames: makes the input copy a real async DMA)."""
        self._ctx.push()
        try:
            return cuda.pagelocked_empty(shape, dtype)
        finally:
            cuda.Context.pop()

    def warmup(self) -> None:
        warm_every_batch(self)

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = check_frames(frames, self.input_hw, self.max_batch, self.name)
        h, w = self.input_hw
        with self._lock:
            if self._closed:
                raise EngineError("tensorrt: the engine is closed")
            self._ctx.push()
            try:
                if not self._context.set_input_shape(INPUT_NAME, trt.Dims([n, h, w, 3])):
                    raise EngineError(f"tensorrt: set_input_shape({INPUT_NAME!r}, {[n, h, w, 3]}) was refused")
                src = frames
                if not frames.flags.c_contiguous:
                    src = self._host[INPUT_NAME][:n]
                    np.copyto(src, frames)
                cuda.memcpy_htod_async(self._dev[INPUT_NAME], src, self._stream)
                if not self._context.execute_async_v3(self._stream.handle):
                    raise EngineError(f"{self.plan}: execute_async_v3 failed")
                for name in OUTPUT_NAMES:
                    cuda.memcpy_dtoh_async(self._host[name][:n], self._dev[name], self._stream)
                self._stream.synchronize()
            finally:
                cuda.Context.pop()
        return self._host["masks"][:n], self._host["scores"][:n]

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_closed", True):
                return
            self._closed = True
            self._ctx.push()
            try:
                for buf in self._dev.values():
                    buf.free()
                self._dev.clear()
                self._host.clear()
                del self._context, self._engine, self._runtime
            finally:
                cuda.Context.pop()
            self._ctx.detach()


def current_gpu_and_version(device: int = 0) -> tuple[str, str]:
    """(GPU name, TensorRT version) of this machine, the two halves of a plan's compatibility."""
    from linewatch.engines.build import gpu_name

    return gpu_name(device), str(trt.__version__)


def open_trt_engine(
    onnx_path: Path,
    manifest: Manifest,
    max_batch: int = 8,
    device: int = 0,
    precision: str = "fp16",
    plan: str | Path | None = None,
) -> TrtEngine:
    """Find (or take) the plan for this ONNX here, check it, and load it."""
    if precision not in PRECISIONS:
        raise EngineError(f"tensorrt: precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    gpu, version = current_gpu_and_version(device)
    if plan is not None:
        plan_file = Path(plan)
        side = sidecar_path(plan_file)
        if not plan_file.is_file() or not side.is_file():
            raise EngineError(f"{plan_file}: plan or its sidecar {side.name} not found")
        info = PlanInfo.load(side)
        check_plan_info(info, plan_file, onnx_path, manifest.sha256, gpu, version, max_batch)
    else:
        plan_file, info = find_plan(onnx_path, manifest.sha256, gpu, version, max_batch, precision)
    return TrtEngine(plan_file, info, manifest, max_batch=max_batch, device=device)
