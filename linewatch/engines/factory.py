"""`open_engine(model, backend=...)`: the one way the rest of linewatch gets an engine.

Backends (SPEC §5):

| name          | device | needs                                                   |
|---------------|--------|---------------------------------------------------------|
| `openvino`    | CPU    | the base install (bf16 where the CPU has it, else f32)  |
| `onnxruntime` | CPU    | the base install (the FP32 reference)                   |
| `tensorrt`    | GPU    | `pip install 'linewatch[gpu]'` + a plan (`linewatch build-engine`) |
| `torch`       | GPU    | `pip install 'linewatch[train]'` (a CUDA build of torch) |
| `null`        | none   | nothing: zeros, for pipeline benchmarks                 |

`auto` picks TensorRT when it is importable and a GPU is present, else torch on CUDA when a GPU
is present and torch is installed, else OpenVINO on the CPU (ONNX Runtime where OpenVINO is not
installed). GPU presence is probed through
the CUDA driver (`libcuda`) with ctypes, so choosing never imports torch.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from linewatch.engines.base import Engine
from linewatch.engines.manifest import load_manifest
from linewatch.errors import EngineError

Backend = Literal["auto", "openvino", "onnxruntime", "tensorrt", "torch", "null"]
CHOICES: tuple[str, ...] = get_args(Backend)
"""What `backend=` takes (the profile's `[model] backend`, `--backend`)."""
BACKENDS = CHOICES[1:]

GPU_EXTRA = "pip install 'linewatch[gpu]'"
TRAIN_EXTRA = "pip install 'linewatch[train]'"


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver). Imports nothing heavy."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def missing_modules(*modules: str) -> list[str]:
    """The modules of `modules` that cannot be found (without importing them).

    A folder without code (a namespace package, e.g. what `tensorrt-stubs` leaves in
    site-packages) does not count as installed.
    """
    missing = []
    for m in modules:
        try:
            spec = importlib.util.find_spec(m)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            missing.append(m)
    return missing


def list_backends() -> dict[str, tuple[bool, str]]:
    """{backend: (available, why)} on this machine. "why" says what is missing, or what it runs on."""
    gpus = cuda_device_count()
    gpu_why = f"{gpus} CUDA device(s)" if gpus else "no CUDA device (no NVIDIA driver or GPU)"
    out: dict[str, tuple[bool, str]] = {}
    missing = missing_modules("openvino")
    out["openvino"] = (not missing, "CPU" if not missing else "openvino is not installed")
    missing = missing_modules("onnxruntime")
    out["onnxruntime"] = (not missing, "CPU" if not missing else "onnxruntime is not installed")
    missing = missing_modules("tensorrt", "pycuda")
    if missing:
        out["tensorrt"] = (False, f"{' and '.join(missing)} not installed: {GPU_EXTRA}")
    else:
        out["tensorrt"] = (bool(gpus), gpu_why)
    missing = missing_modules("torch")
    if missing:
        out["torch"] = (False, f"torch not installed: {TRAIN_EXTRA}")
    else:
        out["torch"] = (bool(gpus), gpu_why)
    out["null"] = (True, "no computation")
    return out


def require_gpu(backend: str, device: int) -> None:
    """GPU backends refuse early and clearly without a GPU (TensorRT would crash, not raise)."""
    count = cuda_device_count()
    if count == 0:
        raise EngineError(f"backend {backend} needs an NVIDIA GPU: the CUDA driver sees none here; use openvino or onnxruntime")
    if not 0 <= device < count:
        raise EngineError(f"backend {backend}: CUDA device {device} does not exist; allowed 0..{count - 1}")


def resolve_backend(backend: str) -> str:
    """"auto" -> the backend `open_engine` would use here; other names are checked and returned."""
    if backend not in CHOICES:
        raise EngineError(f"backend {backend!r} is unknown; allowed: {', '.join(CHOICES)}")
    if backend != "auto":
        return backend
    avail = list_backends()
    for name in ("tensorrt", "torch", "openvino"):
        if avail[name][0]:
            return name
    return "onnxruntime"


def precision_opts(backend: str, precision: str | None) -> dict[str, Any]:
    """`open_engine` options for a `--precision` on the (resolved) `backend`: {"precision": p} on
    openvino; nothing for the other backends when p is None or "auto"; EngineError otherwise."""
    if backend == "openvino":
        return {"precision": precision or "auto"}
    if precision in (None, "auto"):
        return {}
    raise EngineError(f"precision {precision!r} applies to the openvino backend; {backend} chooses its own")


def open_engine(
    model_path: str | Path,
    backend: str = "auto",
    max_batch: int = 8,
    device: int = 0,
    **opts: Any,
) -> Engine:
    """Open `model_path` (the ONNX or its manifest JSON) on `backend`.

    opts by backend: openvino `threads=`, `precision="auto"|"f32"|"bf16"|"int8"`, `cache_dir=`;
    onnxruntime `threads=`; tensorrt `precision="fp16"|"fp32"`, `plan=` (a plan
    file instead of the lookup by key in the model's folder); torch `precision="fp16"|"fp32"`,
    `graphs=True`. The manifest's sha256 is verified before anything is loaded.
    """
    name = resolve_backend(backend)
    if max_batch < 1:
        raise EngineError(f"max_batch={max_batch}; must be >= 1")
    manifest, onnx_path = load_manifest(model_path, verify=True)

    def reject_unknown(allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise EngineError(
                f"{name}: unknown options {unknown}; allowed: {', '.join(allowed) or 'none'}"
            )

    if name == "null":
        reject_unknown(())
        from linewatch.engines.null import NullEngine

        return NullEngine(manifest.input_hw, max_batch)
    if name == "openvino":
        reject_unknown(("threads", "precision", "cache_dir"))
        if missing_modules("openvino"):
            raise EngineError("backend openvino needs openvino: pip install openvino")
        from linewatch.engines.openvino import OpenVinoEngine

        return OpenVinoEngine(onnx_path, manifest, max_batch=max_batch, **opts)
    if name == "onnxruntime":
        reject_unknown(("threads",))
        from linewatch.engines.ort import OrtEngine

        return OrtEngine(onnx_path, manifest, max_batch=max_batch, **opts)
    if name == "tensorrt":
        reject_unknown(("precision", "plan"))
        missing = missing_modules("tensorrt", "pycuda")
        if missing:
            raise EngineError(f"backend tensorrt needs {' and '.join(missing)}: {GPU_EXTRA}")
        require_gpu(name, device)
        from linewatch.engines.trt import open_trt_engine

        return open_trt_engine(onnx_path, manifest, max_batch=max_batch, device=device, **opts)
    # torch
    reject_unknown(("precision", "graphs"))
    if missing_modules("torch"):
        raise EngineError(f"backend torch needs torch: {TRAIN_EXTRA}")
    require_gpu(name, device)
    from linewatch.engines.torch_cuda import TorchEngine

    return TorchEngine(onnx_path, manifest, max_batch=max_batch, device=f"cuda:{device}", **opts)
