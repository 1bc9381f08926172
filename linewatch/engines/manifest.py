"""The manifest JSON that sits beside every exported ONNX model (SPEC §5).

Read by the runtime (no torch needed), written by `linewatch export`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from linewatch import DEFAULT_THRESHOLD, HEADS, atomicfile, jsonfile
from linewatch.errors import EngineError

MANIFEST_FORMAT = "linewatch-model/1"


@dataclass
class Manifest:
    onnx: str
    """File name of the ONNX model, relative to the manifest's folder."""
    sha256: str
    input_height: int
    input_width: int
    heads: list[str] = field(default_factory=lambda: list(HEADS))
    thresholds: dict[str, float] = field(default_factory=lambda: {h: DEFAULT_THRESHOLD for h in HEADS})
    """The model's recommended threshold per head: where a profile that leaves a head out decides.
    From training's `operating_point` (chosen on its validation part), else the paper's 0.7."""
    operating_point: dict[str, Any] = field(default_factory=dict)
    """How `thresholds` were chosen, per head: `threshold`, `rule`, the validation `TPR`/`TNR` they give
    and `n_pos`/`n_neg` (`linewatch.calibrate.recommend`); empty = not chosen (0.7, or `export --threshold`)."""
    model: dict[str, Any] = field(default_factory=dict)
    """The model configuration (depth, ResSE placement, widths, kernels ...)."""
    training: dict[str, Any] = field(default_factory=dict)
    """Data, epochs, seeds, commit, wall time."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Held-out metrics per head (AP_pos, AP_neg, TPR_0.7, TNR_0.7)."""
    weights: str = ""
    """File name of the PyTorch state dict beside the ONNX (`<stem>.pt`), for the torch engine and parity tests."""
    int8: dict[str, Any] = field(default_factory=dict)
    """The INT8 OpenVINO model beside the ONNX (`linewatch export --int8`): `model` (the .xml), `sha256`,
    `bin_sha256`, the calibration data and the measured accuracy drop; empty = none."""
    format: str = MANIFEST_FORMAT

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.input_height, self.input_width)

    def onnx_path(self, manifest_path: Path) -> Path:
        return manifest_path.parent / self.onnx

    def save(self, path: Path) -> None:
        """Write the manifest atomically (`atomicfile.write_text`)."""
        atomicfile.write_text(path, jsonfile.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path_for(model_path: Path) -> Path:
    """`engines/x.onnx` -> `engines/x.json`; a `.json` path is returned as it is."""
    return model_path if model_path.suffix == ".json" else model_path.with_suffix(".json")


def load_manifest(model_path: str | Path, verify: bool = True) -> tuple[Manifest, Path]:
    """Load the manifest of an ONNX model (given either path). Returns (manifest, onnx path)."""
    mpath = manifest_path_for(Path(model_path))
    if not mpath.is_file():
        raise EngineError(f"{mpath}: manifest not found (every model needs the JSON written by `linewatch export`)")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineError(f"{mpath}: unreadable manifest: {exc}") from exc
    if raw.get("format") != MANIFEST_FORMAT:
        raise EngineError(f"{mpath}: format {raw.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    known = set(Manifest.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise EngineError(f"{mpath}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    try:
        man = Manifest(**raw)
    except TypeError as exc:
        raise EngineError(f"{mpath}: {exc}") from exc
    onnx = man.onnx_path(mpath)
    if not onnx.is_file():
        raise EngineError(f"{mpath}: its model {onnx} does not exist")
    if verify:
        digest = sha256_file(onnx)
        if digest != man.sha256:
            raise EngineError(f"{onnx}: sha256 {digest[:12]}… does not match the manifest's {man.sha256[:12]}…")
    return man, onnx
