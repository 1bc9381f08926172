"""`linewatch demo` (what `make demo` runs): the shipped model on the simulated line, every frame decided."""

from __future__ import annotations

import pytest

from linewatch.cli import main
from linewatch.demo import expected_reject


def test_expected_reject_follows_the_adhesive_rule():
    assert expected_reject({"anomaly": 1, "adhesive": 1}, "present") is True
    assert expected_reject({"anomaly": 0, "adhesive": 0}, "present") is True
    assert expected_reject({"anomaly": 0, "adhesive": 1}, "present") is False
    assert expected_reject({"anomaly": 0, "adhesive": 1}, "absent") is True
    assert expected_reject({"anomaly": 0, "adhesive": 0}, "ignore") is False
    assert expected_reject({"anomaly": None, "adhesive": 1}, "present") is None


def test_demo_decides_every_frame(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--frames", "12", "--fps", "20"]) == 0
    out = capsys.readouterr().out
    assert "frames sent 12, decided by the daemon 12, decisions received 12" in out
    assert "without a decision: 0, duplicates: 0, sequence gaps: 0" in out
    assert "agreement with the ground truth" in out
