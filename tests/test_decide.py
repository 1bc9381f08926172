"""The decision stage: truth table of thresholds and adhesive rules, late frames, fail-safe reasons."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from linewatch.pipeline.decide import (
    FAILSAFE_REASONS,
    REASON_ADHESIVE_MISSING,
    REASON_ADHESIVE_PRESENT,
    REASON_ANOMALY,
    REASON_ENGINE_ERROR,
    REASON_LATE,
    REASON_PASS,
    Decider,
)

T0 = 1_700_000_000_000_000_000
NOW = T0 + 10_000_000  # 10 ms after capture, within the 200 ms deadline


def decide(d: Decider, scores, now=NOW, truth=None):
    return d.decide("cam0", 7, T0, scores, "dropped", truth, now)


@pytest.mark.parametrize(
    "rule, scores, reject, reasons",
    [
        # rule present: the adhesive must be there
        ("present", (0.1, 0.9), False, (REASON_PASS,)),
        ("present", (0.7, 0.9), True, (REASON_ANOMALY,)),  # anomaly == t_a rejects (>=)
        ("present", (0.6999, 0.9), False, (REASON_PASS,)),
        ("present", (0.1, 0.5), False, (REASON_PASS,)),  # adhesive == t_h counts as present
        ("present", (0.1, 0.4999), True, (REASON_ADHESIVE_MISSING,)),
        ("present", (0.95, 0.1), True, (REASON_ANOMALY, REASON_ADHESIVE_MISSING)),
        # rule absent: the adhesive must not be there
        ("absent", (0.1, 0.1), False, (REASON_PASS,)),
        ("absent", (0.1, 0.5), True, (REASON_ADHESIVE_PRESENT,)),  # adhesive == t_h is present
        ("absent", (0.1, 0.4999), False, (REASON_PASS,)),
        ("absent", (0.8, 0.9), True, (REASON_ANOMALY, REASON_ADHESIVE_PRESENT)),
        # rule ignore: the adhesive head never decides
        ("ignore", (0.1, 0.0), False, (REASON_PASS,)),
        ("ignore", (0.1, 1.0), False, (REASON_PASS,)),
        ("ignore", (0.7, 0.0), True, (REASON_ANOMALY,)),
    ],
)
def test_truth_table(rule, scores, reject, reasons):
    d = Decider((0.7, 0.5), rule, 200_000_000)
    out = decide(d, scores)
    assert (out.reject, out.reasons) == (reject, reasons)
    assert out.rule == rule and out.failsafe is False  # judged on its scores
    assert out.scores == pytest.approx(scores)
    assert out.thresholds == (0.7, 0.5)
    assert (out.camera, out.frame_id, out.t_capture_ns, out.t_decision_ns) == ("cam0", 7, T0, NOW)


def test_numpy_row_scores_and_nan_rejects():
    d = Decider({"anomaly": 0.7, "adhesive": 0.7}, "present", 10**9)
    row = np.array([[0.2, 0.8]], np.float32)[0]
    assert decide(d, row).reasons == (REASON_PASS,)
    nan = decide(d, np.array([np.nan, np.nan], np.float32))  # a faulty engine (tests/test_faults.py)
    assert nan.reject and nan.failsafe and nan.reasons == (REASON_ENGINE_ERROR,) and nan.scores is None


def test_late_rejects_but_keeps_scores():
    d = Decider((0.7, 0.7), "present", 200_000_000)
    on_time = decide(d, (0.1, 0.9), now=T0 + 200_000_000)  # exactly the deadline: not late
    assert not on_time.reject and not on_time.failsafe
    late = decide(d, (0.1, 0.9), now=T0 + 200_000_001)
    assert late.reject and late.reasons == (REASON_LATE,) and late.failsafe
    assert late.scores == pytest.approx((0.1, 0.9))


@pytest.mark.parametrize("reason", FAILSAFE_REASONS)
def test_failsafe_reasons(reason):
    d = Decider((0.7, 0.7), "ignore", 200_000_000)
    out = d.decide("cam1", 3, T0, None, reason, (1, -1), NOW)
    assert out.reject and out.reasons == (reason,) and out.scores is None
    assert out.failsafe and out.rule == "ignore"
    assert out.truth == (1, -1)


def test_failsafe_needs_a_failsafe_reason():
    d = Decider((0.7, 0.7))
    with pytest.raises(ValueError, match="fail-safe"):
        d.decide("c", 0, T0, None, "pass", None, NOW)


def test_truth_unknown_is_none():
    d = Decider((0.7, 0.7))
    assert decide(d, (0.1, 0.9), truth=np.array([-1, -1], np.int8)).truth is None
    assert decide(d, (0.1, 0.9), truth=np.array([0, 1], np.int8)).truth == (0, 1)


def test_update_validates_and_swaps():
    d = Decider((0.7, 0.7), "present", 200_000_000)
    with pytest.raises(ValueError, match="adhesive_rule"):
        d.update(adhesive_rule="sometimes")
    with pytest.raises(ValueError, match="thresholds.anomaly"):
        d.update((1.5, 0.2))
    with pytest.raises(ValueError, match="unknown head"):
        d.update({"glue": 0.2})
    assert d.params.thresholds == (0.7, 0.7)  # a rejected update keeps the old settings
    d.update((0.2, 0.3), "absent")
    out = decide(d, (0.25, 0.1))
    assert out.reasons == (REASON_ANOMALY,) and out.thresholds == (0.2, 0.3) and out.rule == "absent"
    assert d.params.adhesive_rule == "absent" and d.params.deadline_ns == 200_000_000


def test_a_decision_keeps_the_rule_it_was_made_under():
    d = Decider((0.7, 0.7), "present", 200_000_000)
    before = decide(d, (0.1, 0.1))
    d.update(adhesive_rule="absent")
    after = decide(d, (0.1, 0.1))
    assert (before.rule, before.reject, before.reasons) == ("present", True, (REASON_ADHESIVE_MISSING,))
    assert (after.rule, after.reject, after.reasons) == ("absent", False, (REASON_PASS,))


def test_adhesive_rules_are_the_literal_the_profile_validates_with():
    from typing import get_args

    from linewatch.pipeline.decide import ADHESIVE_RULES, AdhesiveRule
    from linewatch.profile import DecisionConfig

    assert ADHESIVE_RULES == get_args(AdhesiveRule) == ("present", "absent", "ignore")
    assert DecisionConfig.model_fields["adhesive_rule"].annotation is AdhesiveRule


def test_concurrent_update_never_mixes_settings():
    """Each decision's thresholds are one of the published pairs, never a mix of two."""
    d = Decider((0.1, 0.1), "ignore", 10**9)
    pairs = {(0.1, 0.1), (0.9, 0.9)}
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            d.update((0.9, 0.9) if i % 2 else (0.1, 0.1))
            i += 1

    t = threading.Thread(target=flip)
    t.start()
    try:
        for _ in range(20000):
            out = decide(d, (0.5, 0.5))
            assert out.thresholds in pairs
            assert out.reject == (out.thresholds == (0.1, 0.1))
    finally:
        stop.set()
        t.join()
