"""OpenVINO on the CPU: the embedded default wherever no GPU is present (SPEC §5).

Precision (`precision=`, the profile's `[model] precision`, `--precision` on the CLI):

- `auto`: `bf16` where the CPU computes bf16 natively (AVX512_BF16 or AMX-BF16 in its flags and
  OpenVINO reports the BF16 capability), else `f32`;
- `f32`, `bf16`: OpenVINO's `INFERENCE_PRECISION_HINT` on the ONNX model;
- `int8`: the INT8 model that `linewatch export --int8 --calib DIR` wrote beside the ONNX (named by
  the manifest's `int8` entry, its sha256 checked like the ONNX's).

Layout of the work: one compiled model per batch size 1..max_batch, each with a static input shape
(on the shipped model a static shape runs 10-15 % faster than one dynamic-batch model; the compile
takes ~0.1 s each and is cached). Each has one infer request whose output tensors are bound to the
first N rows of two buffers allocated once for `max_batch`: a call allocates no tensor memory,
OpenVINO writes straight into them, and `infer` returns views of them (valid until the next call,
per the Engine contract). A C-contiguous input is wrapped as it is (no copy); any other layout is
first copied into a preallocated input buffer.

Threads: `INFERENCE_NUM_THREADS` = `threads` (0 or None = physical cores), one stream, latency hint.
Compiled blobs go to OpenVINO's model cache (`cache_dir=`, default `default_cache_dir()`), so a
restart does not compile again; an unusable cache folder only costs that time, never the engine.

One thread at a time may call `infer` (the requests and buffers are shared state).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from linewatch.engines.base import (
    INPUT_NAME,
    OUTPUT_NAMES,
    CpuBuffers,
    PlainHostMemory,
    check_frames,
    output_hw,
    warm_every_batch,
)
from linewatch.engines.manifest import Manifest, sha256_file
from linewatch.errors import EngineError

Precision = Literal["auto", "f32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""What `precision=` takes (the profile's `[model] precision`, `--precision`)."""
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_bf16(core: Any = None) -> bool:
    """True when this CPU computes bf16 natively and OpenVINO's CPU plugin says it uses it."""
    flags = cpu_flags()
    if flags and not flags.intersection(BF16_CPU_FLAGS):
        return False
    if core is None:
        import openvino as ov

        core = ov.Core()
    try:
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
        return False
    return "BF16" in caps and bool(flags)


def resolve_precision(precision: str | None, core: Any = None) -> str:
    """"auto"/None -> "bf16" or "f32" for this CPU; other names are checked and returned."""
    p = precision or "auto"
    if p not in PRECISIONS:
        raise EngineError(f"openvino: precision {p!r} is unknown; allowed: {', '.join(PRECISIONS)}")
    if p == "auto":
        return "bf16" if native_bf16(core) else "f32"
    return p


def float_hint(precision: str, core: Any = None) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT for a resolved precision: itself for f32/bf16; for int8 (whose
    quantized layers run int8) the CPU's best float precision for the layers NNCF kept in float."""
    return precision if precision != "int8" else resolve_precision("auto", core)


def default_cache_dir() -> Path:
    """Where compiled models are cached: `$LINEWATCH_CACHE_DIR`, else systemd's `$CACHE_DIRECTORY`
    (the unit's `CacheDirectory=linewatch`: /var/cache/linewatch), else `$XDG_CACHE_HOME/linewatch`
    or `~/.cache/linewatch`; the `openvino` folder inside it."""
    base = os.environ.get("LINEWATCH_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "linewatch")
    return Path(base) / "openvino"


def int8_model_path(onnx_path: Path, manifest: Manifest, verify: bool = True) -> Path:
    """The INT8 model the manifest names (beside the ONNX), its sha256 checked. EngineError without one."""
    entry = manifest.int8 or {}
    name = entry.get("model")
    if not name:
        raise EngineError(f"{onnx_path}: no INT8 model in its manifest; make one with "
                          f"`linewatch export --int8 --calib DIR` or use precision bf16 or f32")
    path = onnx_path.parent / str(name)
    weights = path.with_suffix(".bin")
    if not path.is_file() or not weights.is_file():
        raise EngineError(f"{path}: the manifest's INT8 model (and its .bin) is missing")
    if verify:
        for file, key in ((path, "sha256"), (weights, "bin_sha256")):
            digest = sha256_file(file)
            if digest != entry.get(key):
                raise EngineError(f"{file}: sha256 {digest[:12]}… does not match the manifest's "
                                  f"int8.{key} {str(entry.get(key))[:12]}…")
    return path


class OpenVinoEngine(PlainHostMemory):
    """OpenVINO CPU engine: a static compiled model per batch size, outputs in preallocated buffers."""

    name = "openvino"
    pinned = False

    def __init__(
        self,
        onnx_path: str | Path,
        manifest: Manifest,
        max_batch: int = 8,
        threads: int | None = None,
        precision: str | None = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        import openvino as ov

        self.onnx_path = Path(onnx_path)
        self.input_hw = manifest.input_hw
        self.max_batch = int(max_batch)
        self._buf = CpuBuffers(self.name, self.input_hw, self.max_batch, threads)
        self.threads = self._buf.threads
        core = ov.Core()
        self.precision = resolve_precision(precision, core)
        self.cache_dir = self._use_cache(core, Path(cache_dir) if cache_dir else default_cache_dir())
        self.device = self._buf.device(f"{self.precision}, OpenVINO {ov.get_version().split('-')[0]}")
        self.model_file = int8_model_path(self.onnx_path, manifest) if self.precision == "int8" else self.onnx_path
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": float_hint(self.precision, core),
        }
        h, w = self.input_hw
        self._masks, self._scores = self._buf.masks, self._buf.scores
        self._ov = ov
        self._compiled: list[Any] = []
        self._requests: dict[int, Any] = {}
        try:
            base = core.read_model(str(self.model_file))
            self._check_io(base)
            for n in range(1, self.max_batch + 1):
                model = base.clone()
                model.reshape({INPUT_NAME: [n, h, w, 3]})
                compiled = core.compile_model(model, "CPU", config)
                request = compiled.create_infer_request()
                for name, buf in zip(OUTPUT_NAMES, (self._masks, self._scores), strict=True):
                    request.set_tensor(name, ov.Tensor(buf[:n], shared_memory=True))
                self._compiled.append(compiled)
                self._requests[n] = request
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise EngineError(f"{self.model_file}: OpenVINO cannot compile it for the CPU ({self.precision}): "
                              f"{exc}") from exc

    @staticmethod
    def _use_cache(core: Any, cache_dir: Path) -> Path | None:
        """Point OpenVINO's model cache at `cache_dir` when it can be written; None (no cache) otherwise."""
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(cache_dir, os.W_OK):
                return None
            core.set_property({"CACHE_DIR": str(cache_dir)})
        except (OSError, RuntimeError):
            return None
        return cache_dir

    def _check_io(self, model: Any) -> None:
        h, w = self.input_hw
        mh, mw = output_hw(self.input_hw)
        ins = {p.get_any_name(): p for p in model.inputs}
        outs = {p.get_any_name(): p for p in model.outputs}
        where = str(self.model_file)
        if set(ins) != {INPUT_NAME} or set(outs) != set(OUTPUT_NAMES):
            raise EngineError(f"{where}: inputs {sorted(ins)} / outputs {sorted(outs)}; expected input "
                              f"{INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}")
        want = {INPUT_NAME: ("u8", [h, w, 3]), "masks": ("f32", [2, mh, mw]), "scores": ("f32", [2])}
        for name, port in {**ins, **outs}.items():
            dtype, tail = want[name]
            shape = port.get_partial_shape()
            got = [str(d) for d in shape][1:] if shape.rank.is_static else ["?"]
            if port.get_element_type().get_type_name() != dtype or got != [str(v) for v in tail]:
                raise EngineError(f"{where}: {name} is {port.get_element_type().get_type_name()} {shape}; the "
                                  f"manifest's input size {h}x{w} needs {dtype} [N, {', '.join(map(str, tail))}]")

    def warmup(self) -> None:
        warm_every_batch(self)

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = check_frames(frames, self.input_hw, self.max_batch, self.name)
        request = self._requests.get(n)
        if request is None:
            raise EngineError("openvino: the engine is closed")
        frames = self._buf.contiguous(frames, n)
        request.set_tensor(INPUT_NAME, self._ov.Tensor(frames, shared_memory=True))
        request.infer(share_outputs=True)  # outputs are bound to our buffers: no copies returned
        return self._masks[:n], self._scores[:n]

    def close(self) -> None:
        self._requests.clear()
        self._compiled.clear()
