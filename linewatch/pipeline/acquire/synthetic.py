"""A simulated battery line: a camera that films synthetic cell surfaces (`linewatch.data.synth`).

Every frame carries its ground truth (anomaly, adhesive) into the ring's `truth` array, so the
daemon, the bench and the demo can score their own decisions. Its settings are the profile's
`[[camera]]` table (`linewatch.profile.SyntheticCamera`, keys in docs/operations.md):
`SyntheticCamera(...).make_source(profile)` or `SyntheticSource(camera_table)`.

Rendering one 512x1224 surface takes tens of milliseconds on a CPU core, slower than a line
camera. So by default the source renders a **pool** of `pool` distinct frames up front (in its
thread, while its state is "starting") and then cycles through them with their truth: the
simulated camera runs at hundreds of frames per second, limited by the copy/resize into the ring
only. The pool costs pool x H x W x 3 bytes (64 x 512 x 1224 x 3 = 120 MB by default); `pool=0`
renders every frame live instead (frame k is synth image `start_index + k`, never repeating, at
the renderer's speed).

`corrupt_every=N` turns every Nth frame into a truncated buffer that the frame writer rejects:
it reaches the ring as a DROP_CORRUPT record (with its truth), the way a garbled camera frame
would. For tests of the fail-safe path.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from linewatch.pipeline.acquire.base import BaseSource, Grab, SourceError

if TYPE_CHECKING:
    from linewatch.data.synth import SynthConfig
    from linewatch.profile import SyntheticCamera

_GARBAGE = np.zeros(17, dtype=np.uint8)  # a "frame" of the wrong size: 17 bytes


def synth_config(height: int, width: int, defect_rate: float | None = None,
                 adhesive_rate: float | None = None) -> SynthConfig:
    """The renderer's settings of a simulated camera: frames of `height` x `width` with the camera's
    rates (`defect_rate` is the renderer's `anomaly_rate`; None = the renderer's default)."""
    from linewatch.data.synth import SynthConfig

    over: dict[str, Any] = {"height": height, "width": width}
    if defect_rate is not None:
        over["anomaly_rate"] = defect_rate
    if adhesive_rate is not None:
        over["adhesive_rate"] = adhesive_rate
    return dataclasses.replace(SynthConfig(), **over)


class SyntheticSource(BaseSource):
    """The simulated line camera of a `[[camera]]` table with `source = "synthetic"` (module doc).

    `height` x `width` (divisible by 8) is the rendered frame size (the ROI and the resize to the
    ring's size follow); `start_index` the first synth image index. Not profile keys: the daemon
    renders 512 x 1224 from index 0; tests render smaller frames.
    """

    kind = "synthetic"

    def __init__(self, config: SyntheticCamera, *, height: int = 512, width: int = 1224,
                 start_index: int = 0) -> None:
        super().__init__(config.id, roi=config.roi, fps=config.fps)
        self.config = config
        self.height, self.width, self.start_index = height, width, start_index
        try:  # validates sizes and rates now, not in the thread
            self._synth = synth_config(height, width, config.defect_rate, config.adhesive_rate)
        except ValueError as exc:
            raise SourceError(f"synthetic camera {config.id!r}: {exc}") from exc
        self._pool: np.ndarray | None = None
        self._pool_truth: list[tuple[int, int]] = []
        self._live: np.ndarray | None = None
        self._k = 0  # frames produced

    def _open(self) -> None:
        from linewatch.data.synth import render_into

        cfg = self.config
        h, w = self.height, self.width
        n = cfg.pool if cfg.count is None else min(cfg.pool, cfg.count)
        if n and self._pool is None:
            t0 = time.monotonic()
            pool = np.empty((n, h, w, 3), dtype=np.uint8)
            truth = [render_into(cfg.seed, self.start_index + i, pool[i], self._synth) for i in range(n)]
            self._pool, self._pool_truth = pool, truth
            self._log.info("synthetic pool rendered", frames=n, size=f"{h}x{w}", seconds=round(time.monotonic() - t0, 2))
        elif not n and self._live is None:
            self._live = np.empty((h, w, 3), dtype=np.uint8)

    def _grab(self) -> Grab | None:
        cfg = self.config
        k = self._k
        if cfg.count is not None and k >= cfg.count:
            return None
        self._k = k + 1
        if self._pool is not None:
            j = k % len(self._pool)
            image, truth = self._pool[j], self._pool_truth[j]
        else:
            from linewatch.data.synth import render_into

            assert self._live is not None
            image = self._live
            truth = render_into(cfg.seed, self.start_index + k, image, self._synth)
        t_ns = time.time_ns()
        if cfg.corrupt_every and (k + 1) % cfg.corrupt_every == 0:
            return Grab(_GARBAGE, "RGB8", t_ns, truth)
        return Grab(image, "RGB8", t_ns, truth)
