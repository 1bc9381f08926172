"""A fake TensorRT: stand-ins for the `tensorrt` and `pycuda.driver` modules, enough for
`linewatch.engines.trt` to find a plan, deserialize it, bind its tensors by name and run it (on ONNX
Runtime), with every CUDA call checked against a current context. No GPU, no TensorRT: the tests put
these modules into `sys.modules` (monkeypatch) before importing `linewatch.engines.trt`.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np


def fake_gpu_modules(onnx_path: Path, input_hw: tuple[int, int]) -> tuple[object, object, dict[str, int]]:
    """Minimal stand-ins for `tensorrt` and `pycuda.driver`: a "plan" that runs `onnx_path` (input
    `input_hw`, the model's) on ONNX Runtime. Returns (tensorrt, pycuda, state counters).

    Device memory is numpy; every call that needs a CUDA context asserts that one is current, so
    the engine's push/pop discipline (the threading rule) is checked, not assumed.
    """
    import onnxruntime as ort

    h, w = input_hw

    state = {"depth": 0, "pushes": 0, "executes": 0, "freed": 0, "detached": 0}
    memory: dict[int, np.ndarray] = {}

    def need_ctx() -> None:
        assert state["depth"] > 0, "CUDA call without a current context"

    cuda = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class Context:
        def push(self) -> None:
            state["depth"] += 1
            state["pushes"] += 1

        @staticmethod
        def pop() -> None:
            assert state["depth"] > 0, "pop without push"
            state["depth"] -= 1

        def detach(self) -> None:
            state["detached"] += 1

    class Device:
        def __init__(self, n: int) -> None:
            assert n == 0

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return "Fake GPU"

        def retain_primary_context(self) -> Context:
            return Context()

    class Alloc:
        def __init__(self, nbytes: int) -> None:
            need_ctx()
            self.buf = np.zeros(nbytes, np.uint8)
            memory[id(self)] = self.buf

        def __int__(self) -> int:
            return id(self)

        def free(self) -> None:
            need_ctx()
            state["freed"] += 1

    class Stream:
        handle = 1234

        def __init__(self) -> None:
            need_ctx()

        def synchronize(self) -> None:
            need_ctx()

    def pagelocked_empty(shape: tuple[int, ...], dtype: object) -> np.ndarray:
        need_ctx()
        return np.empty(shape, dtype)

    def memcpy_htod_async(dest: Alloc, src: np.ndarray, stream: Stream) -> None:
        need_ctx()
        assert src.flags.c_contiguous
        raw = src.reshape(-1).view(np.uint8)
        dest.buf[: raw.size] = raw

    def memcpy_dtoh_async(dest: np.ndarray, src: Alloc, stream: Stream) -> None:
        need_ctx()
        dest.reshape(-1).view(np.uint8)[:] = src.buf[: dest.nbytes]

    for name, obj in dict(
        Error=Error, Context=Context, Device=Device, DeviceAllocation=Alloc, Stream=Stream,
        init=lambda: None, mem_alloc=Alloc, pagelocked_empty=pagelocked_empty,
        memcpy_htod_async=memcpy_htod_async, memcpy_dtoh_async=memcpy_dtoh_async,
    ).items():
        setattr(cuda, name, obj)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda  # type: ignore[attr-defined]

    trt = types.ModuleType("tensorrt")

    class Mode:
        def __init__(self, name: str) -> None:
            self.name = name

    class TensorIOMode:
        INPUT = Mode("INPUT")
        OUTPUT = Mode("OUTPUT")

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    mh, mw = h // 8, w // 8
    specs = {
        "image": (TensorIOMode.INPUT, np.uint8, (-1, h, w, 3)),
        "masks": (TensorIOMode.OUTPUT, np.float32, (-1, 2, mh, mw)),
        "scores": (TensorIOMode.OUTPUT, np.float32, (-1, 2)),
    }

    class ExecutionContext:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addr: dict[str, int] = {}
            self.sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

        def set_input_shape(self, name: str, dims: tuple[int, ...]) -> bool:
            need_ctx()
            self.shapes[name] = tuple(dims)
            return True

        def set_tensor_address(self, name: str, addr: int) -> bool:
            need_ctx()
            self.addr[name] = addr
            return True

        def execute_async_v3(self, handle: int) -> bool:
            need_ctx()
            assert handle == Stream.handle
            shape = self.shapes["image"]
            count = int(np.prod(shape))
            image = memory[self.addr["image"]][:count].reshape(shape)
            masks, scores = self.sess.run(None, {"image": image})
            for name, arr in (("masks", masks), ("scores", scores)):
                raw = arr.reshape(-1).view(np.uint8)
                memory[self.addr[name]][: raw.size] = raw
            state["executes"] += 1
            return True

    class CudaEngine:
        num_io_tensors = 3

        def get_tensor_name(self, i: int) -> str:
            return list(specs)[i]

        def get_tensor_mode(self, name: str) -> Mode:
            return specs[name][0]

        def get_tensor_dtype(self, name: str) -> object:
            return specs[name][1]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return specs[name][2]

        def create_execution_context(self) -> ExecutionContext:
            need_ctx()
            return ExecutionContext()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            need_ctx()

        def deserialize_cuda_engine(self, blob: bytes) -> CudaEngine | None:
            need_ctx()
            return CudaEngine() if blob == b"fake plan" else None

    for name, obj in dict(
        __version__="10.13.0.35", Logger=Logger, Runtime=Runtime, TensorIOMode=TensorIOMode,
        nptype=lambda dt: dt, Dims=lambda dims: tuple(dims),
    ).items():
        setattr(trt, name, obj)
    return trt, pycuda, state
