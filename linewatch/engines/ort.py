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

from pathlib import Path
from typing import Any

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
from linewatch.engines.manifest import Manifest
from linewatch.errors import EngineError


class OrtEngine(PlainHostMemory):
    """ONNX Runtime CPU engine with preallocated, bound outputs."""

    name = "onnxruntime"
    precision = "f32"
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

        self.onnx_path = Path(onnx_path)
        self.input_hw = manifest.input_hw
        self.max_batch = int(max_batch)
        self._buf = CpuBuffers(self.name, self.input_hw, self.max_batch, threads)
        self.threads = self._buf.threads
        self.device = self._buf.device()

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

        self._masks, self._scores = self._buf.masks, self._buf.scores
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
                f"{INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)} (not a model `linewatch export` wrote)"
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
        frames = self._buf.contiguous(frames, n)
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
