"""The decision stage (SPEC §6): thresholds, the adhesive rule, fail-safe rejects.

Exactly one `Decision` per frame leaves this stage, including frames that were dropped, corrupt
or not inferred in time (those are rejects with their reason).
"""

from __future__ import annotations

from dataclasses import dataclass

# Reasons a frame is rejected or passed. "pass" is the only reason of a passing frame.
REASON_PASS = "pass"
REASON_ANOMALY = "anomaly"                # anomaly score >= threshold
REASON_ADHESIVE_MISSING = "adhesive-missing"  # rule "present" and adhesive score < threshold
REASON_ADHESIVE_PRESENT = "adhesive-present"  # rule "absent" and adhesive score >= threshold
REASON_DROPPED = "dropped"                # no ring slot (fail-safe)
REASON_CORRUPT = "corrupt"                # unreadable / wrong-size frame (fail-safe)
REASON_LATE = "late"                      # not inferred within the profile's deadline (fail-safe)
REASON_ENGINE_ERROR = "engine-error"      # the engine raised (fail-safe)
FAILSAFE_REASONS = (REASON_DROPPED, REASON_CORRUPT, REASON_LATE, REASON_ENGINE_ERROR)


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
    reason: str
    """One of the REASON_* constants; when several apply, reasons joined by "+" (e.g. "anomaly+adhesive-missing")."""
    truth: tuple[int, int] | None = None
    """Ground truth (anomaly, adhesive) when the source knows it (synthetic line), else None."""
