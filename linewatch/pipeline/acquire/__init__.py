"""Acquisition sources: one thread per camera, writing RGB frames into the ring.

* `synthetic.SyntheticSource(SyntheticConfig)`: simulated battery line (ground truth carried)
* `replay.ReplaySource(ReplayConfig)`: folder of images / linewatch dataset / video file
* `genicam.GenicamSource(GenicamConfig)`: GenICam/GenTL cameras via harvesters (`camera` extra)

`make_source(kind, config, camera=...)` builds one from its config dataclass. Importing this
package imports none of the sources (harvesters is only imported when a GenICam camera opens).
See docs/acquisition.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from linewatch.pipeline.acquire.base import BaseSource

SOURCE_KINDS = ("synthetic", "replay", "genicam")


def make_source(kind: str, config: Any, *, camera: str) -> BaseSource:
    """The source of `kind` ("synthetic" | "replay" | "genicam") for its config dataclass."""
    if kind == "synthetic":
        from linewatch.pipeline.acquire.synthetic import SyntheticConfig, SyntheticSource

        _check(kind, config, SyntheticConfig)
        return SyntheticSource(config, camera=camera)
    if kind == "replay":
        from linewatch.pipeline.acquire.replay import ReplayConfig, ReplaySource

        _check(kind, config, ReplayConfig)
        return ReplaySource(config, camera=camera)
    if kind == "genicam":
        from linewatch.pipeline.acquire.genicam import GenicamConfig, GenicamSource

        _check(kind, config, GenicamConfig)
        return GenicamSource(config, camera=camera)
    from linewatch.pipeline.acquire.base import SourceError

    raise SourceError(f"camera {camera!r}: unknown source {kind!r}; allowed: {', '.join(SOURCE_KINDS)}")


def _check(kind: str, config: Any, cls: type) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"source {kind!r} takes a {cls.__name__}, got {type(config).__name__}")


__all__ = ["SOURCE_KINDS", "make_source"]
