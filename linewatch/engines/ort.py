"""ONNX Runtime on the CPU: the embedded default wherever no GPU is present (SPEC §5).

Tuning (all explicit, see `OrtEngine.__init__`):

- `intra_op_num_threads` = physical cores available to this process (override with `threads=`),
  `inter_op_num_threads` = 1, sequential execution, `ORT_ENABLE_ALL` graph optimisations.
- I/O binding: the output buffers are allocated once for `max_batch`; for every batch size N an
  `IOBinding` binds the outputs to the first N rows of those buffers, so a call allocates no
  tensor memory: ONNX Runtime writes straight into them, and `infer` returns views of them
  (valid until the next call, per the Engine contract). A C-contiguous input is bound as it is
  (no copy); any other layout is first copied into a preallocated input buffer.

One thread at a time may call `infer` (the bindings and buffers are shared state).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.engines.base import INPUT_NAME, OUTPUT_NAMES, check_frames, output_hw, warm_every_batch
from linewatch.engines.manifest import Manifest
from linewatch.errors import EngineError


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


class OrtEngine:
    """ONNX Runtime CPU engine with preallocated, bound outputs."""

    name = "onnxruntime"
    pinned = False

    def __init__(
        self,
        onnx_path: str | Path,
        manifest: Manifest,
        max_batch: int = 8,
        threads: int | None = None,
        spin: bool = False,
    ) -> None:
        import onnxruntime as ort

        if max_batch < 1:
            raise EngineError(f"onnxruntime: max_batch={max_batch}; must be >= 1")
        self.onnx_path = Path(onnx_path)
        self.input_hw = manifest.input_hw
        self.max_batch = int(max_batch)
        self.threads = int(threads) if threads else physical_cores()
        if self.threads < 1:
            raise EngineError(f"onnxruntime: threads={threads}; must be >= 1")
        self.device = f"cpu ({self.threads} thread{'s' if self.threads > 1 else ''})"

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            # ORT's worker threads busy-wait between ops by default. In the daemon they share the
            # cores with acquisition, decision and publishing threads, which spinning starves.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._sess = ort.InferenceSession(
                str(self.onnx_path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"{self.onnx_path}: onnxruntime cannot load it: {exc}") from exc
        self._check_io()

        h, w = self.input_hw
        mh, mw = output_hw(self.input_hw)
        self._masks = np.empty((self.max_batch, 2, mh, mw), np.float32)
        self._scores = np.empty((self.max_batch, 2), np.float32)
        self._frames = np.empty((self.max_batch, h, w, 3), np.uint8)  # for non-contiguous input only
        self._ort = ort
        self._bindings: dict[int, Any] = {}
        self._bound: list[Any] = []  # the output OrtValues, kept alive with their bindings
        for n in range(1, self.max_batch + 1):
            b = self._sess.io_binding()
            for name, buf in zip(OUTPUT_NAMES, (self._masks, self._scores), strict=True):
                value = ort.OrtValue.ortvalue_from_numpy(buf[:n])
                b.bind_ortvalue_output(name, value)
                self._bound.append(value)
            self._bindings[n] = b

    def _check_io(self) -> None:
        h, w = self.input_hw
        mh, mw = output_hw(self.input_hw)
        ins = {i.name: i for i in self._sess.get_inputs()}
        outs = {o.name: o for o in self._sess.get_outputs()}
        where = str(self.onnx_path)
        if set(ins) != {INPUT_NAME} or set(outs) != set(OUTPUT_NAMES):
            raise EngineError(
                f"{where}: inputs {sorted(ins)} / outputs {sorted(outs)}; expected input "
                f"{INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)} (SPEC §5)"
            )
        want = {
            INPUT_NAME: ("tensor(uint8)", [h, w, 3]),
            "masks": ("tensor(float)", [2, mh, mw]),
            "scores": ("tensor(float)", [2]),
        }
        for name, node in {**ins, **outs}.items():
            dtype, tail = want[name]
            if node.type != dtype or list(node.shape[1:]) != tail:
                raise EngineError(
                    f"{where}: {name} is {node.type} {node.shape}; the manifest's input size "
                    f"{h}x{w} needs {dtype} [N, {', '.join(map(str, tail))}]"
                )

    def warmup(self) -> None:
        warm_every_batch(self)

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = check_frames(frames, self.input_hw, self.max_batch, self.name)
        if not frames.flags.c_contiguous:
            np.copyto(self._frames[:n], frames)
            frames = self._frames[:n]
        binding = self._bindings.get(n)
        if binding is None:
            raise EngineError("onnxruntime: the engine is closed")
        binding.bind_ortvalue_input(INPUT_NAME, self._ort.OrtValue.ortvalue_from_numpy(frames))
        self._sess.run_with_iobinding(binding)
        return self._masks[:n], self._scores[:n]

    def close(self) -> None:
        self._bindings.clear()
        self._bound.clear()
        self.__dict__.pop("_sess", None)
