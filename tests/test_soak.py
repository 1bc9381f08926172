"""The soak benchmark's short variant (benchmarks/soak.py; the hour-long run is by hand, docs/reliability.md).

A real `linewatch run` subprocess on the null engine at 50 fps for 14 s, sampled every second: every
frame decided and received without a gap, exit 0, no file descriptor or thread growth after 8 s of warm-up.
Some 5 s in, a second ZeroMQ context (its 2 ZMQbg threads, 7 fds) and one Python thread appear once: pyzmq's
garbage collector for zero-copy sends (`copy=False` above its copy threshold), started lazily. RSS is
reported but not bounded here: a few seconds say nothing about growth per hour.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the soak reads /proc")


def load_soak():
    return load_benchmark("soak")


def test_a_short_soak_decides_every_frame_and_grows_no_fds_or_threads(capsys):
    soak = load_soak()
    code = soak.main(["--duration", "14", "--sample-s", "1", "--warmup-s", "8", "--backend", "null", "--fps", "50",
                      "--max-rss-mb-per-h", "1e9", "--check", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report["problems"]
    assert report["frames_seen"] >= 300 and report["decisions"] == report["frames_seen"] == report["received"]
    assert report["samples_after_warmup"] >= 4 and report["resources"]["rss_mb"]["first"] > 0


def test_the_soak_check_fails_on_growth_and_on_a_frame_without_a_decision():
    soak = load_soak()
    flat = {"first": 10.0, "last": 10.0, "max": 10.0, "per_hour": 0.0}
    good = {"exit_code": 0, "frames_seen": 100, "decisions": 100, "gaps": 0, "missing": 0, "bad_messages": 0,
            "restarts": 0, "samples_after_warmup": 5,
            "resources": {"rss_mb": dict(flat), "fds": dict(flat), "threads": dict(flat)}}
    assert soak.problems(good, 5.0) == []
    assert "decisions 99 != frames 100" in soak.problems({**good, "decisions": 99}, 5.0)
    grown = {**good, "resources": {**good["resources"], "fds": {**flat, "max": 11.0}}}
    assert any("fds grew" in p for p in soak.problems(grown, 5.0))
    leaky = {**good, "resources": {**good["resources"], "rss_mb": {**flat, "per_hour": 6.0}}}
    assert any("RSS grows 6.00 MB/hour" in p for p in soak.problems(leaky, 5.0))


def test_the_growth_per_hour_is_the_least_squares_slope():
    soak = load_soak()
    assert soak.slope_per_hour([0, 10, 20, 30], [100, 100.01, 100.02, 100.03]) == pytest.approx(3.6)
    assert soak.slope_per_hour([5.0], [1.0]) == 0.0
