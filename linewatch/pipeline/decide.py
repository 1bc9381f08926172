"""The decision stage (SPEC §6): thresholds, the adhesive rule, fail-safe rejects.

Exactly one `Decision` per frame leaves this stage, including frames that were dropped, corrupt
or not inferred in time (those are rejects with their reason). A `Decision` carries everything the
later stages report about it — its reasons, the adhesive rule it was decided under and whether it is
a fail-safe reject — so no later stage re-derives them (the publisher and the wire format only read
the fields). This module is the one place that compares scores with thresholds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from linewatch import DEFAULT_THRESHOLD, HEADS

# Reasons a frame is rejected or passed. "pass" is the only reason of a passing frame.
REASON_PASS = "pass"
REASON_ANOMALY = "anomaly"                # anomaly score >= threshold
REASON_ADHESIVE_MISSING = "adhesive-missing"  # rule "present" and adhesive score < threshold
REASON_ADHESIVE_PRESENT = "adhesive-present"  # rule "absent" and adhesive score >= threshold
REASON_DROPPED = "dropped"                # no ring slot (fail-safe)
REASON_CORRUPT = "corrupt"                # unreadable / wrong-size frame (fail-safe)
REASON_LATE = "late"                      # not inferred within the profile's deadline (fail-safe)
REASON_ENGINE_ERROR = "engine-error"      # the engine failed: it raised, broke its output contract, or gave
                                          # a score that is NaN or outside [0, 1] (fail-safe)
FAILSAFE_REASONS = (REASON_DROPPED, REASON_CORRUPT, REASON_LATE, REASON_ENGINE_ERROR)

AdhesiveRule = Literal["present", "absent", "ignore"]
"""`present`: the adhesive must be there (reject when adhesive < t_h); `absent`: it must not be
there (reject when adhesive >= t_h); `ignore`: the adhesive head does not decide."""
ADHESIVE_RULES: tuple[str, ...] = get_args(AdhesiveRule)
"""The adhesive rules, in `AdhesiveRule` order (the profile's `[decision] adhesive_rule` is typed by it)."""


@dataclass(slots=True)
class Decision:
    camera: str
    frame_id: int
    t_capture_ns: int
    """Capture time, time.time_ns() (epoch, nanoseconds)."""
    t_decision_ns: int
    scores: tuple[float, float] | None
    """(anomaly, adhesive) scores; None when the frame was not inferred (fail-safe)."""
    thresholds: tuple[float, float]
    reject: bool
    reasons: tuple[str, ...]
    """REASON_* constants: `("pass",)` for a pass, else every reason that rejects, in rule order
    (e.g. `("anomaly", "adhesive-missing")`). The wire joins them with "+" (`linewatch.protocol`)."""
    rule: str
    """The adhesive rule (one of ADHESIVE_RULES) in force when the frame was decided."""
    failsafe: bool
    """True when the frame was not judged on its scores: its reason is one of FAILSAFE_REASONS."""
    truth: tuple[int, int] | None = None
    """Ground truth (anomaly, adhesive) when the source knows it (synthetic line), else None."""
    model: str = ""
    """Id of the model that decided (sha256 prefix of its ONNX; the inference worker stamps it); "" = none."""


@dataclass(frozen=True, slots=True)
class DecisionParams:
    """The decision stage's settings as one immutable value, swapped atomically on reload."""

    thresholds: tuple[float, float]
    adhesive_rule: str
    deadline_ns: int


# The reasons tuples a decision can carry, built once (a decision shares them; none is built per frame).
_FAILSAFE: dict[str, tuple[str, ...]] = {r: (r,) for r in FAILSAFE_REASONS}
_SCORED: dict[tuple[bool, str | None], tuple[str, ...]] = {
    (False, None): (REASON_PASS,),
    (True, None): (REASON_ANOMALY,),
    **{(False, r): (r,) for r in (REASON_ADHESIVE_MISSING, REASON_ADHESIVE_PRESENT)},
    **{(True, r): (REASON_ANOMALY, r) for r in (REASON_ADHESIVE_MISSING, REASON_ADHESIVE_PRESENT)},
}


def _truth_tuple(truth: Any) -> tuple[int, int] | None:
    """Ring truth (int8 [2], -1 = unknown) -> (anomaly, adhesive), or None when neither is known."""
    if truth is None:
        return None
    a, h = int(truth[0]), int(truth[1])
    if a < 0 and h < 0:
        return None
    return (a, h)


class Decider:
    """Turns one frame's scores (or the reason it has none) into exactly one `Decision`.

    Rules, in order:

    1. No scores (`scores is None`): reject with `reason_if_failsafe` (dropped, corrupt, engine-error,
       late). The decision carries no scores.
    2. A score that is not a number in [0, 1] (NaN, infinite or out of range: the network ends in a
       sigmoid, so the engine is faulty): reject "engine-error", without scores. Judged on its scores,
       such a frame could pass (-inf, or NaN in a head the rule ignores), and its message could not
       go on the wire, whose schema bounds scores to [0, 1].
    3. Late: `now_ns - t_capture_ns > deadline_ns` -> reject with reason "late", even when the frame
       was inferred: the reject gate may already have passed the cell, so the line must treat it as
       a reject. The scores are kept in the decision (and in its message) for diagnosis.
    4. Otherwise: reject "anomaly" when anomaly >= t_a; with rule `present` reject
       "adhesive-missing" when adhesive < t_h; with rule `absent` reject "adhesive-present" when
       adhesive >= t_h; with `ignore` the adhesive head never rejects. Every reason that applies is
       kept, in this order (e.g. ("anomaly", "adhesive-missing")); no reason -> pass.

    Each decision carries the adhesive rule it was decided under (`rule`) and `failsafe` (rules 1
    to 3), so a decision made before a reload is reported under its own settings.

    `update(...)` swaps the settings as one immutable `DecisionParams` (a single attribute store,
    atomic under the GIL): a `decide` running concurrently uses either the old or the new settings,
    never a mix. Safe to call from a signal-driven reload while the worker decides.
    """

    def __init__(self, thresholds: tuple[float, float] | Mapping[str, float], adhesive_rule: str = "present",
                 deadline_ns: int = 200_000_000) -> None:
        self._params = self._make(thresholds, adhesive_rule, deadline_ns)

    @staticmethod
    def _make(thresholds: tuple[float, float] | Mapping[str, float], adhesive_rule: str,
              deadline_ns: int) -> DecisionParams:
        if isinstance(thresholds, Mapping):
            unknown = set(thresholds) - set(HEADS)
            if unknown:
                raise ValueError(f"thresholds: unknown head(s) {sorted(unknown)}; allowed: {', '.join(HEADS)}")
            t = (float(thresholds.get(HEADS[0], DEFAULT_THRESHOLD)), float(thresholds.get(HEADS[1], DEFAULT_THRESHOLD)))
        else:
            if len(thresholds) != 2:
                raise ValueError(f"thresholds={thresholds!r}: need 2 values ({', '.join(HEADS)})")
            t = (float(thresholds[0]), float(thresholds[1]))
        for head, v in zip(HEADS, t, strict=True):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"thresholds.{head} = {v}: must be in [0, 1]")
        if adhesive_rule not in ADHESIVE_RULES:
            raise ValueError(f"adhesive_rule = {adhesive_rule!r}: must be one of {', '.join(ADHESIVE_RULES)}")
        if deadline_ns <= 0:
            raise ValueError(f"deadline_ns = {deadline_ns}: must be > 0")
        return DecisionParams(t, adhesive_rule, int(deadline_ns))

    @property
    def params(self) -> DecisionParams:
        return self._params

    @property
    def thresholds(self) -> tuple[float, float]:
        return self._params.thresholds

    def update(self, thresholds: tuple[float, float] | Mapping[str, float] | None = None,
               adhesive_rule: str | None = None, deadline_ns: int | None = None) -> DecisionParams:
        """Validate, then atomically swap in new settings (None keeps the current value). Returns them."""
        cur = self._params
        new = self._make(cur.thresholds if thresholds is None else thresholds,
                         cur.adhesive_rule if adhesive_rule is None else adhesive_rule,
                         cur.deadline_ns if deadline_ns is None else deadline_ns)
        self._params = new
        return new

    def decide(self, camera: str, frame_id: int, t_capture_ns: int, scores: Any | None,
               reason_if_failsafe: str = REASON_DROPPED, truth: Any = None,
               now_ns: int | None = None) -> Decision:
        """One frame -> one Decision. `scores` is (anomaly, adhesive) (any 2-sequence) or None."""
        p = self._params  # one read: the settings of this decision
        now = time.time_ns() if now_ns is None else int(now_ns)
        t_truth = _truth_tuple(truth)
        if scores is None:
            reasons = _FAILSAFE.get(reason_if_failsafe)
            if reasons is None:
                raise ValueError(f"reason {reason_if_failsafe!r} is not a fail-safe reason; "
                                 f"allowed: {', '.join(FAILSAFE_REASONS)}")
            return Decision(camera, int(frame_id), int(t_capture_ns), now, None, p.thresholds, True, reasons,
                            p.adhesive_rule, True, t_truth)
        s = (float(scores[0]), float(scores[1]))
        if not (0.0 <= s[0] <= 1.0 and 0.0 <= s[1] <= 1.0):  # False for NaN too
            return Decision(camera, int(frame_id), int(t_capture_ns), now, None, p.thresholds, True,
                            _FAILSAFE[REASON_ENGINE_ERROR], p.adhesive_rule, True, t_truth)
        if now - int(t_capture_ns) > p.deadline_ns:
            return Decision(camera, int(frame_id), int(t_capture_ns), now, s, p.thresholds, True, _FAILSAFE[REASON_LATE],
                            p.adhesive_rule, True, t_truth)
        t_a, t_h = p.thresholds
        anomalous = not s[0] < t_a
        adhesive = None
        if p.adhesive_rule == "present" and not s[1] >= t_h:
            adhesive = REASON_ADHESIVE_MISSING
        elif p.adhesive_rule == "absent" and not s[1] < t_h:
            adhesive = REASON_ADHESIVE_PRESENT
        return Decision(camera, int(frame_id), int(t_capture_ns), now, s, p.thresholds,
                        anomalous or adhesive is not None, _SCORED[anomalous, adhesive], p.adhesive_rule, False, t_truth)
