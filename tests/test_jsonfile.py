"""Every JSON linewatch writes is strict JSON: NaN and infinity become null, never the bare `NaN` most
parsers refuse (`linewatch.jsonfile`), and no module writes JSON another way."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from linewatch import jsonfile

ROOT = Path(__file__).resolve().parents[1]


def strict_loads(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_strict_parsing_refuses_what_plain_json_dumps_writes() -> None:
    """The check below can fail: Python's own json writes NaN, a strict parser refuses it."""
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"ap": math.nan}))


def test_nan_and_infinity_become_null_and_numpy_values_plain_numbers() -> None:
    doc = {"ap": math.nan, "x": [math.inf, -math.inf, 1.5], "t": (np.float32(0.25), np.int64(3)),
           "a": np.array([[1.0, np.nan]]), "nested": {"k": [{"v": float("nan")}]}}
    back = strict_loads(jsonfile.dumps(doc))
    assert back == {"ap": None, "x": [None, None, 1.5], "t": [0.25, 3], "a": [[1.0, None]],
                    "nested": {"k": [{"v": None}]}}


def test_ablate_results_with_a_head_without_labels_are_strict_json() -> None:
    from linewatch.model.ablate import aggregate

    runs = [{"metrics": {"anomaly": {"AP_pos": 0.9, "AP_neg": 0.8, "TPR_0.7": 0.7, "TNR_0.7": 0.9},
                         "adhesive": {"AP_pos": math.nan, "AP_neg": math.nan, "TPR_0.7": math.nan,
                                      "TNR_0.7": math.nan}}}] * 2
    summary = aggregate(runs)
    assert math.isnan(summary["adhesive"]["AP_pos"][0])
    back = strict_loads(jsonfile.dumps({"rows": {"resse-v1": summary}}))
    assert back["rows"]["resse-v1"]["adhesive"]["AP_pos"] == [None, None]  # type: ignore[index]


def test_evaluate_writes_strict_json_for_a_head_without_labels(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the tiny test model is exported with torch")
    from tinymodel import export_tiny

    from linewatch.data.synth import SynthConfig, write_dataset
    from linewatch.model.evaluate import evaluate

    model = export_tiny(tmp_path / "m")
    data = write_dataset(tmp_path / "d", 8, 3, SynthConfig(height=128, width=304), test_fraction=1.0)
    rows = list(csv.DictReader(open(data / "labels.csv")))
    with open(data / "labels.csv", "w", newline="") as f:  # a station without glue: adhesive unknown
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "adhesive": ""} for r in rows)
    for m in (data / "masks" / "adhesive").glob("*"):
        m.unlink()
    evaluate(model, data, "test", out=tmp_path / "ev")
    back = strict_loads((tmp_path / "ev" / "metrics.json").read_text())
    assert back["metrics"]["adhesive"]["AP_pos"] is None  # type: ignore[index]


def test_no_module_writes_json_but_through_jsonfile() -> None:
    allowed = {"linewatch/jsonfile.py", "linewatch/protocol.py"}  # the wire protocol: allow_nan=False itself
    offenders = []
    for path in sorted((ROOT / "linewatch").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in allowed and re.search(r"\bjson\.dumps?\(", path.read_text()):
            offenders.append(rel)
    assert offenders == [], f"write JSON with linewatch.jsonfile.dumps: {offenders}"
    assert "allow_nan=False" in (ROOT / "linewatch" / "protocol.py").read_text()
