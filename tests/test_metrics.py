"""The evaluation metrics (`linewatch.model.metrics`, numpy only: no torch needed): average precision,
per-head TPR/TNR at a threshold with unknown labels left out, the markdown table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linewatch.model.metrics import all_metrics, average_precision, head_metrics, markdown_table


def test_average_precision_hand_cases():
    # P/R steps: (1, .5) (.5, .5) (2/3, 1) (.5, 1) -> .5*1 + .5*2/3
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)
    # scikit-learn's documented example: 0.8333...
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.83333333)
    # ties form one threshold: (.5, .5) then (2/3, 1)
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 1 / 3)
    assert average_precision([1, 1], [0.3, 0.1]) == 1.0
    assert average_precision([0, 1], [0.9, 0.1]) == pytest.approx(0.5)
    assert math.isnan(average_precision([0, 0], [0.3, 0.1]))


def test_head_metrics_with_unknown_labels():
    labels = [1, 0, None, 1, 0]
    scores = [0.9, 0.2, 0.99, 0.6, 0.75]
    m = head_metrics(np.array(labels, dtype=object), np.array(scores))
    assert (m["n_pos"], m["n_neg"], m["n_unknown"]) == (2, 2, 1)
    assert m["TPR_0.7"] == 0.5  # 0.9 >= .7, 0.6 < .7
    assert m["TNR_0.7"] == 0.5  # 0.2 < .7, 0.75 >= .7
    assert m["AP_pos"] == pytest.approx(0.5 + 0.5 * 2 / 3)  # .9 P, .75 N, .6 P
    # negatives as positives, 1 - score: .8 N, .4 P, .25 N, .1 P
    assert m["AP_neg"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # score exactly at t counts as positive
    assert head_metrics([1, 0], [0.7, 0.7])["TPR_0.7"] == 1.0
    assert head_metrics([1, 0], [0.7, 0.7])["TNR_0.7"] == 0.0


def test_all_metrics_per_head_and_table():
    labels = np.array([[1, np.nan], [0, np.nan], [1, np.nan]])
    scores = np.array([[0.8, 0.1], [0.3, 0.9], [0.4, 0.5]])
    m = all_metrics(labels, scores, threshold=0.5)
    assert m["anomaly"]["TPR_0.5"] == 0.5 and m["anomaly"]["TNR_0.5"] == 1.0
    assert m["adhesive"]["n_unknown"] == 3 and math.isnan(m["adhesive"]["AP_pos"])
    table = markdown_table(m)
    assert "| anomaly | 100.0 | 100.0 | 50.0 | 100.0 | 2 | 1 | 0 |" in table
    assert "| adhesive | — | — | — | — | 0 | 0 | 3 |" in table
