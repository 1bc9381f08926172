"""The operator page benchmark's side-by-side arithmetic (benchmarks/hmi.py `pair_stretches`, `--alternate`):
the windows it keeps and the ratios it pairs, on made-up window counts (the benchmark itself runs by hand)."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


def load_hmi_bench():
    return load_benchmark("hmi")


T0 = 1_000_000.0
TOGGLES = [(T0 - 5, True), (T0 + 10, False), (T0 + 20, True), (T0 + 30, False)]


def windows(on: float, off: float, drift: float = 0.0, junk: float = 0.0) -> list[float]:
    """40 1-s windows: `on` in the thawed stretches, `off` in the frozen ones, times (1 + drift * i); the
    first 2 s after each switch `junk` (what the settling time must leave out)."""
    out = []
    for i in range(40):
        v = (on if (i < 10 or 20 <= i < 30) else off) * (1 + drift * i)
        out.append(junk if i in (10, 11, 20, 21, 30, 31) else v)
    return out


def test_each_thawed_stretch_is_divided_by_the_frozen_ones_beside_it_and_settling_windows_are_left_out():
    res = load_hmi_bench().pair_stretches(TOGGLES, T0, windows(27.0, 30.0, junk=100.0), settle=2.0)
    assert [(s["hmi"], s["windows"]) for s in res["segments"]] == [(True, 10), (False, 8), (True, 8), (False, 8)]
    assert res["paired_ratios"] == [0.9] and res["paired_ratio_median"] == 0.9  # the first stretch: one neighbour
    assert res["ratio_of_means"] == 0.9


def test_without_the_settling_time_the_switch_windows_count_and_the_ratio_moves():  # the guard of the above
    res = load_hmi_bench().pair_stretches(TOGGLES, T0, windows(27.0, 30.0, junk=100.0), settle=0.0)
    assert res["paired_ratios"] != [0.9]


def test_a_slow_drift_of_the_machine_cancels_out_of_the_paired_ratios():
    res = load_hmi_bench().pair_stretches(TOGGLES, T0, windows(27.0, 30.0, drift=0.01), settle=2.0)
    assert res["paired_ratio_median"] == pytest.approx(0.9, abs=0.01)


def test_a_stretch_without_a_frozen_one_on_both_sides_gives_no_ratio():
    res = load_hmi_bench().pair_stretches([(T0, True)], T0, [30, 30, 30], settle=2.0)
    assert res["paired_ratios"] == [] and res["paired_ratio_median"] is None and res["ratio_of_means"] is None
