"""What a bench run is asked to do (`BenchConfig`) and the constants of the bench."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linewatch.errors import SettingError
from linewatch.profile import MAX_BATCH, SOURCES

PACES = ("backpressure", "fixed", "free")
PIXELS = ("copy", "reuse")
BASELINES = ("torch", "openvino")
NULL_INPUT_HW = (512, 1224)
"""Frame size of the null engine when no model file is there (the default model's input)."""
POLL_S = 0.0001
"""Backpressure: a waiting source looks at the ring's occupancy after 50 us, then backs off ..."""
POLL_MAX_S = 0.001
"""... to at most 1 ms (with --inflight auto: a tenth of the engine's batch time, >= POLL_S)."""
SUBSCRIBER_READY_S = 15.0
"""How long the bench waits for the subscriber process to see the first heartbeat."""
DRAIN_S = 60.0
"""How long the bench waits for the daemon to drain and the subscriber to report after the run."""

REPORT_KEYS = ("bench", "engine", "throughput", "latency_ms", "latency_split_ms", "stages_ms", "batch_sizes",
               "frames", "measured", "resources", "publisher", "baseline", "comparison", "verdict")
"""Top-level keys of every report (`--json`)."""




# --------------------------------------------------------------------------------------------------
# configuration


@dataclass
class BenchConfig:
    """Everything `run_bench` needs (the CLI builds it from its options)."""

    profile: Any
    """A validated `linewatch.profile.Profile` (cameras, decision settings, ring, publish)."""
    source: str = "synthetic"
    """The bench's synthetic source, or the profile's own cameras of this kind (one of SOURCES)."""
    backend: str | None = None
    """Overrides the profile's model.backend (None = the profile's)."""
    precision: str | None = None
    """Overrides the profile's model.precision (openvino; None = the profile's)."""
    model: Path | None = None
    """Overrides the profile's model path (an ONNX with its manifest)."""
    duration_s: float = 30.0
    warmup_s: float = 3.0
    pace: str = "backpressure"
    fps: float = 0.0
    """Source rate for pace "fixed"."""
    inflight: int | None = None
    """Backpressure: at most this many frames in the ring (None = the engine's max_batch)."""
    max_batch: int | None = None
    """Overrides the profile's model.max_batch."""
    min_fps: float = 25.0
    """Verdict: the minimum 1-s window of inferred decisions must reach this."""
    pool: int = 32
    pixels: str = "copy"
    overlays: bool = True
    """False: the publisher gets no overlay pool (every overlay is skipped, counted)."""
    baselines: tuple[str, ...] = ()
    """Plain loops to run after the pipeline on the same frames, compared with it (BASELINES)."""
    baseline_duration_s: float | None = None
    """Seconds of the baseline loop (None = min(duration_s, 10))."""
    seed: int = 0
    archive: Path | None = None
    """Journal every decision into this archive folder (the station record, `linewatch.record`), with the
    profile's `[archive]` settings when it has them: what the record costs the pipeline."""

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise SettingError(f"`source` {self.source!r}: allowed {', '.join(SOURCES)}")
        if self.pace not in PACES:
            raise SettingError(f"`pace` {self.pace!r}: allowed {', '.join(PACES)}")
        if self.pixels not in PIXELS:
            raise SettingError(f"`pixels` {self.pixels!r}: allowed {', '.join(PIXELS)}")
        if not self.duration_s >= 1.0:
            raise SettingError(f"`duration_s` {self.duration_s}: must be >= 1 second (throughput is counted per second)")
        if self.warmup_s < 0:
            raise SettingError(f"`warmup_s` {self.warmup_s}: must be >= 0 seconds")
        if self.fps < 0:
            raise SettingError(f"`fps` {self.fps}: must be >= 0")
        if self.pace == "fixed" and self.fps <= 0:
            raise SettingError("`pace` fixed needs `fps` > 0 (the line camera's rate)")
        if self.pace != "fixed" and self.fps > 0:
            raise SettingError(f"`fps` {self.fps:g} only applies to `pace` fixed (got `pace` {self.pace})")
        if self.inflight is not None and self.inflight < 1:
            raise SettingError(f"`inflight` {self.inflight}: must be >= 1")
        if self.max_batch is not None and not 1 <= self.max_batch <= MAX_BATCH:
            raise SettingError(f"`max_batch` {self.max_batch}: must be in 1..{MAX_BATCH}")
        if self.pool < 1:
            raise SettingError(f"`pool` {self.pool}: must be >= 1")
        if self.min_fps < 0:
            raise SettingError(f"`min_fps` {self.min_fps}: must be >= 0")
        for name in self.baselines:
            if name not in BASELINES:
                raise SettingError(f"`baselines` {name!r}: allowed {', '.join(BASELINES)}")
        if self.source != "synthetic" and (self.pace != "backpressure" or self.pixels != "copy"):
            raise SettingError(f"`pace`, `fps` and `pixels` apply to `source` synthetic only; {self.source} cameras pace "
                             "themselves (set their fps in the profile)")


def prof_name(profile: Any) -> str:
    """How a report names the profile of a run."""
    return str(profile.source_path or "<embedded demo profile>")
