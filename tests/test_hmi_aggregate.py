"""The operator page's state from recorded message streams (linewatch.hmi.aggregate): counters, yield per hour
and shift, the reject overlay hold, rates and latency, and the fail-safe banner (silent, stopping, stopped, gap)."""

from __future__ import annotations

import calendar
import time

import pytest
from hmi_stream import Clock, Stream, aggregator, feed

from linewatch.errors import SettingError


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


def test_counters_count_each_decision_once_and_each_reason_of_a_reject():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    feed(agg, s.heartbeat())
    for i in range(6):
        feed(agg, s.decision("cam0", i))
    feed(agg, s.decision("cam0", 6, reasons=("anomaly", "adhesive-missing")))
    feed(agg, s.decision("cam1", 0, reasons=("anomaly",)))
    feed(agg, s.decision("cam1", 1, reasons=("corrupt",)))
    snap = agg.snapshot()
    assert (snap["decisions"], snap["passes"], snap["rejects"], snap["failsafe"]) == (9, 6, 3, 1)
    assert snap["by_reason"] == {"adhesive-missing": 1, "anomaly": 2, "corrupt": 1}
    assert snap["yield"]["since_start"] == {"inspected": 9, "passed": 6, "rejected": 3, "yield_pct": 66.667}
    assert snap["cameras"]["cam1"]["rejects"] == 2 and snap["cameras"]["cam1"]["failsafe"] == 1
    assert snap["cameras"]["cam0"]["state"] == "up" and snap["cameras"]["cam1"]["state"] == "unknown"
    assert snap["thresholds"] == {"anomaly": 0.7, "adhesive": 0.6} and snap["adhesive_rule"] == "present"
    assert snap["model"]["id"] == "0123456789ab" and snap["model"]["backend"] == "null"
    assert snap["version"] == "0.1.0" and snap["station"] == "line-3"
    assert snap["gaps"]["count"] == 0


def test_yield_this_hour_and_this_shift_bucket_by_decision_time_at_the_shift_start():
    c = Clock(wall_s=utc("2026-09-21 13:59:00"))
    agg, s = aggregator(c, shifts=("06:00", "14:00", "22:00")), Stream(c)
    for i in range(4):  # the 06:00 shift, hour 13
        feed(agg, s.decision(frame_id=i, reasons=("anomaly",) if i == 0 else ("pass",)))
    c.tick(61)  # 14:00:01: the 14:00 shift, hour 14
    feed(agg, s.decision(frame_id=10))
    feed(agg, s.decision(frame_id=11, reasons=("anomaly",)))
    y = agg.snapshot()["yield"]
    assert y["since_start"]["inspected"] == 6 and y["since_start"]["rejected"] == 2
    assert y["hour"] == {"key": "2026-09-21 14:00", "inspected": 2, "passed": 1, "rejected": 1, "yield_pct": 50.0}
    assert y["shift"] == {"key": "2026-09-21 14:00", "inspected": 2, "passed": 1, "rejected": 1, "yield_pct": 50.0}
    c.tick(3600)  # 15:00: a new hour, the same shift
    y = agg.snapshot()["yield"]
    assert y["hour"]["inspected"] == 0 and y["hour"]["yield_pct"] is None
    assert y["shift"]["inspected"] == 2


def test_a_decision_before_the_first_shift_start_belongs_to_the_previous_days_last_shift():
    c = Clock(wall_s=utc("2026-09-22 05:30:00"))
    agg, s = aggregator(c, shifts=("06:00", "14:00", "22:00")), Stream(c)
    feed(agg, s.decision())
    assert agg.snapshot()["yield"]["shift"]["key"] == "2026-09-21 22:00"
    assert agg.snapshot()["yield"]["shift"]["inspected"] == 1


def test_rejects_per_minute_cover_the_last_60_minutes_oldest_first():
    c = Clock(wall_s=utc("2026-09-21 10:00:10"))
    agg, s = aggregator(c), Stream(c)
    feed(agg, s.decision(reasons=("anomaly",)))
    c.tick(120)
    feed(agg, s.decision(reasons=("anomaly",)))
    feed(agg, s.decision(reasons=("late",)))
    feed(agg, s.decision())
    per_minute = agg.snapshot()["rejects_per_minute"]
    assert len(per_minute) == 60 and per_minute[-1] == 2 and per_minute[-3] == 1 and sum(per_minute) == 3
    c.tick(3600)
    assert sum(agg.snapshot()["rejects_per_minute"]) == 0


def test_the_last_rejects_overlay_is_held_3_s_against_later_passes():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    assert agg.overlay("cam0") is None
    feed(agg, s.overlay(frame_id=1, jpeg=b"pass-1"))
    assert agg.overlay("cam0")[0] == b"pass-1"
    feed(agg, s.overlay(frame_id=2, reject=True, jpeg=b"reject-2"))
    c.tick(2.9)
    feed(agg, s.overlay(frame_id=3, jpeg=b"pass-3"))
    jpeg, header = agg.overlay("cam0")
    assert jpeg == b"reject-2" and header["frame_id"] == 2
    assert agg.snapshot()["cameras"]["cam0"]["overlay"]["held"] is True
    feed(agg, s.overlay(frame_id=4, reject=True, jpeg=b"reject-4"))  # a newer reject replaces it at once
    assert agg.overlay("cam0")[0] == b"reject-4"
    c.tick(3.1)
    feed(agg, s.overlay(frame_id=5, jpeg=b"pass-5"))
    assert agg.overlay("cam0")[0] == b"pass-5"
    assert agg.snapshot()["cameras"]["cam0"]["overlay"]["held"] is False


def test_decisions_per_second_and_latency_percentiles_per_camera():
    c = Clock()
    agg, s = aggregator(c, rate_window_s=5.0), Stream(c)
    c.tick(10)
    for i in range(100):  # 20 per second for 5 s, latency 1..100 ms
        feed(agg, s.decision(frame_id=i, latency_ms=i + 1))
        c.tick(0.05)
    cam = agg.snapshot()["cameras"]["cam0"]
    assert cam["decisions_per_s"] == pytest.approx(20.0, abs=0.5)
    assert cam["latency_ms"]["p50"] == pytest.approx(50.5, abs=0.01)
    assert cam["latency_ms"]["p99"] == pytest.approx(99.01, abs=0.01)
    c.tick(10)
    assert agg.snapshot()["cameras"]["cam0"]["decisions_per_s"] == 0


def test_the_banner_waits_for_the_first_heartbeat_then_falls_silent_after_3_intervals_and_recovers():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    b = agg.snapshot()["banner"]
    assert b["state"] == "waiting" and b["failsafe"] is True
    feed(agg, s.heartbeat(interval_s=0.5))
    assert agg.snapshot()["banner"] == {"state": "ok", "failsafe": False, "text": "inspecting"}
    c.tick(1.4)
    assert agg.snapshot()["banner"]["state"] == "ok"
    c.tick(0.2)  # 1.6 s > 3 x 0.5 s
    snap = agg.snapshot()
    assert snap["banner"]["state"] == "silent" and snap["banner"]["failsafe"] is True
    assert "no heartbeat for 1.6 s (timeout 1.5 s)" in snap["banner"]["text"]
    assert snap["heartbeat_age_s"] == pytest.approx(1.6)
    feed(agg, s.heartbeat(interval_s=0.5))
    assert agg.snapshot()["banner"]["state"] == "ok"


def test_a_given_heartbeat_timeout_overrides_3_intervals():
    c = Clock()
    agg, s = aggregator(c, heartbeat_timeout=10.0), Stream(c)
    feed(agg, s.heartbeat(interval_s=0.5))
    c.tick(9.0)
    assert agg.snapshot()["banner"]["state"] == "ok"
    c.tick(1.5)
    assert agg.snapshot()["banner"]["state"] == "silent"


def test_the_banner_says_stopping_then_stopped_at_the_final_heartbeat_and_clears_on_a_new_session():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    feed(agg, s.heartbeat())
    feed(agg, s.heartbeat("stopping"))
    assert agg.snapshot()["banner"]["state"] == "stopping" and agg.snapshot()["banner"]["failsafe"]
    feed(agg, s.heartbeat("stopping", final=True, sent={"decision": 0, "reject": 0, "overlay": 0}))
    assert agg.snapshot()["banner"]["state"] == "stopped"
    c.tick(60)
    assert agg.snapshot()["banner"]["state"] == "stopped"
    restarted = Stream(c, session="b" * 32)
    feed(agg, restarted.heartbeat())
    snap = agg.snapshot()
    assert snap["banner"]["state"] == "ok" and snap["restarts"] == 1 and snap["gaps"]["count"] == 0


def test_a_sequence_jump_raises_the_gap_banner_for_gap_hold_s():
    c = Clock()
    agg, s = aggregator(c, gap_hold_s=10.0), Stream(c)
    feed(agg, s.heartbeat())
    feed(agg, s.decision(frame_id=0))
    feed(agg, s.decision(frame_id=3, skip=2))  # seq 0 -> 3: two decisions lost
    snap = agg.snapshot()
    assert snap["banner"]["state"] == "gap" and snap["banner"]["failsafe"] is True
    assert snap["banner"]["text"] == "2 decision message(s) lost (seq 1 -> 3)"
    assert snap["gaps"]["count"] == 1 and snap["gaps"]["missing"] == {"decision": 2}
    for _ in range(11):
        c.tick(1.0)
        feed(agg, s.heartbeat())
    assert agg.snapshot()["banner"]["state"] == "ok"


def test_a_lost_tail_told_by_the_final_heartbeat_is_a_gap():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    feed(agg, s.heartbeat())
    feed(agg, s.decision(frame_id=0))
    feed(agg, s.heartbeat("stopping", final=True, sent={"decision": 4, "reject": 0, "overlay": 0}))
    snap = agg.snapshot()
    assert snap["gaps"]["missing"] == {"decision": 3} and snap["banner"]["state"] == "stopped"


def test_a_new_session_starts_new_baselines_and_is_no_gap():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    feed(agg, s.heartbeat())
    for i in range(5):
        feed(agg, s.decision(frame_id=i))
    again = Stream(c, session="c" * 32)
    feed(agg, again.heartbeat())
    feed(agg, again.decision(frame_id=0))
    snap = agg.snapshot()
    assert snap["gaps"]["count"] == 0 and snap["restarts"] == 1 and snap["decisions"] == 6


def test_the_degraded_banner_names_the_camera_that_is_not_up():
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    feed(agg, s.heartbeat("degraded", cameras={"cam0": "up", "cam1": "down"}))
    snap = agg.snapshot()
    assert snap["banner"]["state"] == "degraded" and snap["banner"]["failsafe"] is False
    assert "camera cam1 not up" in snap["banner"]["text"]
    assert snap["cameras"]["cam1"]["state"] == "down"


@pytest.mark.parametrize(("kw", "message"), [
    ({"shifts": ("25:00",)}, "`shifts` '25:00': must be a time of day HH:MM (00:00 .. 23:59)"),
    ({"shifts": ()}, "`shifts`: give at least one shift start"),
    ({"heartbeat_timeout": 0}, "`heartbeat_timeout` 0: must be > 0 seconds"),
    ({"hold_reject_s": -1}, "`hold_reject_s` -1: must be > 0 seconds"),
    ({"latency_window": 0}, "`latency_window` 0: must be >= 1"),
])
def test_bad_settings_are_refused_naming_the_setting_and_value(kw, message):
    with pytest.raises(SettingError) as err:
        aggregator(Clock(), **kw)
    assert message in str(err.value)


def test_recent_rejects_list_the_newest_last_and_stay_bounded():
    from linewatch.hmi.aggregate import RECENT_REJECTS

    c = Clock()
    agg, s = aggregator(c), Stream(c)
    for i in range(RECENT_REJECTS + 10):
        feed(agg, s.decision("cam0", i, reasons=("anomaly",) if i % 2 else ("pass",)))
    recent = agg.snapshot()["recent_rejects"]
    assert len(recent) == (RECENT_REJECTS + 10) // 2 if (RECENT_REJECTS + 10) // 2 <= RECENT_REJECTS else RECENT_REJECTS
    assert [r["frame_id"] for r in recent] == sorted(r["frame_id"] for r in recent) and recent[-1]["frame_id"] == 59
    assert all(r["reason"] == "anomaly" and r["t_decision_ns"] for r in recent)
