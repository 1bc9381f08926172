"""A simulated battery line: a camera that films synthetic cell surfaces (`linewatch.data.synth`).

Every frame carries its ground truth (anomaly, adhesive) into the ring's `truth` array, so the
daemon, the bench and the demo can score their own decisions.

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
from dataclasses import dataclass

import numpy as np

from linewatch.pipeline.acquire.base import ROI, BaseSource, Grab, SourceError

_GARBAGE = np.zeros(17, dtype=np.uint8)  # a "frame" of the wrong size: 17 bytes


@dataclass
class SyntheticConfig:
    """Options of the simulated line camera (the profile's `[camera]` with `source = "synthetic"`)."""

    seed: int = 0
    """Stream seed: the same seed gives the same frames and truth."""
    fps: float = 30.0
    """Frames per second, paced on a monotonic clock; 0 = as fast as possible."""
    defect_rate: float | None = None
    """Share of frames with an anomaly (SynthConfig.anomaly_rate); None = the renderer's default (0.5)."""
    adhesive_rate: float | None = None
    """Share of frames with adhesive (SynthConfig.adhesive_rate); None = the renderer's default (0.6)."""
    height: int = 512
    """Rendered frame height (divisible by 8); the ROI and the resize to the ring's size follow."""
    width: int = 1224
    """Rendered frame width (divisible by 8)."""
    frames: int | None = None
    """Stop after this many frames (the thread ends, state "done"); None = endless."""
    pool: int = 64
    """Distinct frames rendered up front and cycled; 0 = render every frame live."""
    start_index: int = 0
    """First synth image index."""
    corrupt_every: int | None = None
    """Every Nth frame (N >= 2) arrives corrupt (for tests); None = never."""
    roi: ROI | None = None
    """(x, y, w, h) crop of the rendered frame before the resize into the ring; None = full frame."""

    def __post_init__(self) -> None:
        if self.fps < 0:
            raise SourceError(f"synthetic fps={self.fps}: must be >= 0 (0 = as fast as possible)")
        if self.pool < 0:
            raise SourceError(f"synthetic pool={self.pool}: must be >= 0 (0 = render live)")
        if self.frames is not None and self.frames < 0:
            raise SourceError(f"synthetic frames={self.frames}: must be >= 0 or None (endless)")
        if self.corrupt_every is not None and self.corrupt_every < 2:
            raise SourceError(f"synthetic corrupt_every={self.corrupt_every}: must be >= 2 or None")
        for name in ("defect_rate", "adhesive_rate"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise SourceError(f"synthetic {name}={v}: must be in [0, 1] or None")

    def synth_config(self):  # -> linewatch.data.synth.SynthConfig
        from linewatch.data.synth import SynthConfig

        over: dict = {"height": self.height, "width": self.width}
        if self.defect_rate is not None:
            over["anomaly_rate"] = self.defect_rate
        if self.adhesive_rate is not None:
            over["adhesive_rate"] = self.adhesive_rate
        return dataclasses.replace(SynthConfig(), **over)


class SyntheticSource(BaseSource):
    """The simulated line camera (module doc)."""

    kind = "synthetic"

    def __init__(self, config: SyntheticConfig | None = None, *, camera: str = "synthetic") -> None:
        cfg = config or SyntheticConfig()
        super().__init__(camera, roi=cfg.roi, fps=cfg.fps)
        self.config = cfg
        try:
            self._synth = cfg.synth_config()  # validates sizes and rates now, not in the thread
        except ValueError as exc:
            raise SourceError(f"synthetic camera {camera!r}: {exc}") from exc
        self._pool: np.ndarray | None = None
        self._pool_truth: list[tuple[int, int]] = []
        self._live: np.ndarray | None = None
        self._k = 0  # frames produced

    def _open(self) -> None:
        from linewatch.data.synth import render_into

        cfg = self.config
        h, w = cfg.height, cfg.width
        n = cfg.pool if cfg.frames is None else min(cfg.pool, cfg.frames)
        if n and self._pool is None:
            t0 = time.monotonic()
            pool = np.empty((n, h, w, 3), dtype=np.uint8)
            truth = [render_into(cfg.seed, cfg.start_index + i, pool[i], self._synth) for i in range(n)]
            self._pool, self._pool_truth = pool, truth
            self._log.info("synthetic pool rendered", frames=n, size=f"{h}x{w}", seconds=round(time.monotonic() - t0, 2))
        elif not n and self._live is None:
            self._live = np.empty((h, w, 3), dtype=np.uint8)

    def _grab(self) -> Grab | None:
        cfg = self.config
        k = self._k
        if cfg.frames is not None and k >= cfg.frames:
            return None
        self._k = k + 1
        if self._pool is not None:
            j = k % len(self._pool)
            image, truth = self._pool[j], self._pool_truth[j]
        else:
            from linewatch.data.synth import render_into

            assert self._live is not None
            image = self._live
            truth = render_into(cfg.seed, cfg.start_index + k, image, self._synth)
        t_ns = time.time_ns()
        if cfg.corrupt_every and (k + 1) % cfg.corrupt_every == 0:
            return Grab(_GARBAGE, "RGB8", t_ns, truth)
        return Grab(image, "RGB8", t_ns, truth)
