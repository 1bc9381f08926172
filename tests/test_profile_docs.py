"""docs/operations.md documents every key of the station profile (the reference cannot drift silently)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from linewatch.profile import (
    ArchiveConfig,
    CurveConfig,
    DecisionConfig,
    GenicamCamera,
    ModelSection,
    Profile,
    PublishConfig,
    ReplayCamera,
    RingConfig,
    StationConfig,
    SyntheticCamera,
    Thresholds,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    return [prefix + k for k, f in model.model_fields.items() if not f.exclude]


def test_every_profile_key_is_in_the_reference():
    text = DOC.read_text()
    reference = text[text.index("## Station profile reference"):]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", reference, flags=re.M))
    expected = (
        keys(StationConfig) + keys(CurveConfig, "curve.") + keys(ModelSection) + keys(GenicamCamera)
        + keys(SyntheticCamera) + keys(ReplayCamera) + keys(Thresholds, "thresholds.")
        + [k for k in keys(DecisionConfig) if k != "thresholds"] + keys(RingConfig) + keys(PublishConfig)
        + keys(ArchiveConfig)
    )
    missing = sorted(set(expected) - documented)
    assert not missing, f"undocumented profile keys: {missing}"
    for section in keys(Profile):
        assert f"`[{section}]`" in reference or f"`[[{section}]]`" in reference, section
