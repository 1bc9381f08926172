"""An engine that does no work: a clean cell from preallocated buffers (masks 0; scores: anomaly 0,
adhesive 1), so every frame passes under the adhesive rules `present` and `ignore`.

For pipeline benchmarks (`linewatch bench --backend null`): it measures everything around the
network — acquisition, ring, decisions, publishing — at the cost of one slice per call.
"""

from __future__ import annotations

import numpy as np

from linewatch.engines.base import PlainHostMemory, check_frames, output_hw


class NullEngine(PlainHostMemory):
    """Returns views of buffers allocated once for `max_batch`: zero masks, scores (0, 1)."""

    name = "null"
    precision = "none"
    device = "none"
    pinned = False

    def __init__(self, input_hw: tuple[int, int], max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}; must be >= 1")
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.max_batch = int(max_batch)
        mh, mw = output_hw(self.input_hw)
        self._masks = np.zeros((self.max_batch, 2, mh, mw), np.float32)
        self._scores = np.zeros((self.max_batch, 2), np.float32)
        self._scores[:, 1] = 1.0  # adhesive present: a clean cell, not an "adhesive-missing" reject

    def warmup(self) -> None:
        return None

    def infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = check_frames(frames, self.input_hw, self.max_batch, self.name)
        return self._masks[:n], self._scores[:n]

    def close(self) -> None:
        return None
