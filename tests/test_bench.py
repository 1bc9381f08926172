"""`linewatch bench`: a short real run (null engine and a tiny ONNX model), report consistency, exit status.

No speed is asserted (`min_fps=0`): the checks are that the report is complete and adds up.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
import time

import numpy as np
import pytest
from waiting import wait_until

from linewatch.bench import (
    REPORT_KEYS,
    BenchConfig,
    BenchSource,
    exit_status,
    format_report,
    frame_accounting,
    percentiles_ms,
    run_bench,
    verdict,
    window_counts,
)
from linewatch.errors import SettingError
from linewatch.pipeline.ring import Ring
from linewatch.profile import default_profile


def check_report(r: dict, duration: float) -> None:
    """Everything a report must satisfy, whatever the speed."""
    for key in REPORT_KEYS:
        assert key in r, key
    json.dumps(r)  # JSON-able
    f = r["frames"]
    assert f["decisions"] == f["inferred"] + f["failsafe"]
    assert f["decisions"] == f["rejects"] + f["passes"]
    assert sum(f["reasons"].values()) == f["decisions"]
    assert f["missing"] == 0 and f["duplicates"] == 0 and f["unexpected"] == 0
    assert f["not_decided"] == 0 and f["lost_in_transport"] == 0 and f["missing_examples"] == []
    assert f["produced"] == f["decisions"] > 0
    m = r["measured"]
    assert m["decisions"] == m["inferred"] + m["failsafe"]
    t = r["throughput"]
    assert t["windows"] == int(duration) == len(t["per_window"]) == len(t["per_window_inferred"])
    assert sum(t["per_window"]) <= m["decisions"]
    started = datetime.datetime.fromisoformat(r["bench"]["date_utc"].replace("Z", "+00:00")).timestamp()
    assert abs(m["t0_unix_ns"] / 1e9 - started) < 600, "window 0's wall-clock start lies within the run"
    assert t["fps"]["min"] <= t["fps"]["median"] <= t["fps"]["max"]
    for lat in (r["latency_ms"], *r["latency_split_ms"].values()):
        assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert r["latency_ms"]["n"] > 0
    assert r["stages_ms"]["infer"]["n"] > 0 and r["stages_ms"]["submit"]["n"] > 0
    assert sum(r["batch_sizes"].values()) > 0
    assert r["resources"]["max_rss_mb"] > 0 and r["resources"]["cpu_s"] > 0
    assert r["publisher"]["decisions"] == f["decisions"]
    assert r["verdict"]["ok"], r["verdict"]
    assert "verdict: PASS" in format_report(r)


def test_null_engine_pipeline_report_is_complete_and_consistent():
    prof = default_profile()  # a 60 s deadline: no frame is late however loaded this machine is
    prof = prof.model_copy(update={"decision": prof.decision.model_copy(update={"deadline_ms": 60_000.0})})
    cfg = BenchConfig(prof, backend="null", duration_s=2.0, warmup_s=0.5, min_fps=0.0, pool=4)
    r = run_bench(cfg)
    check_report(r, 2.0)
    assert r["engine"]["backend"] == "null"
    assert r["bench"]["inflight"] == 2 * r["engine"]["max_batch"]  # auto: double buffering of the chosen batch
    assert set(map(int, r["batch_sizes"])) <= set(range(1, r["engine"]["max_batch"] + 1))
    assert r["frames"]["failsafe"] == 0  # backpressure: nothing dropped; the null engine is never late
    assert r["frames"]["reasons"] == {"pass": r["frames"]["decisions"]}
    assert r["measured"]["ring"]["dropped_full"] == 0


def test_onnx_pipeline_fixed_pace_accounts_for_drops_and_has_torch_and_openvino_baselines(onnx_path):
    cfg = BenchConfig(default_profile(), backend="onnxruntime", model=onnx_path, duration_s=2.0, warmup_s=0.5,
                      min_fps=0.0, pool=4, pace="fixed", fps=400.0, max_batch=4, baselines=("torch", "openvino"),
                      baseline_duration_s=1.0)
    r = run_bench(cfg)
    check_report(r, 2.0)
    assert r["engine"]["input_hw"] == [64, 96] and r["engine"]["max_batch"] == 4
    # whatever a line camera loses to a full ring comes back as fail-safe decisions
    src = r["measured"]["sources"][0]
    assert src["frames_seen"] == src["committed"] + src["dropped_full"]
    assert r["frames"]["reasons"].get("dropped", 0) == src["dropped_full"]
    assert list(r["baseline"]) == ["torch", "openvino"] == list(r["comparison"])
    for name, b in r["baseline"].items():
        assert b["frames"] > 0 and b["device"] == "cpu"
        assert 0 <= b["rejects"] <= b["frames"]
        assert b["latency_ms"]["p50"] <= b["latency_ms"]["p99"] <= b["latency_ms"]["max"]
        assert r["comparison"][name]["throughput_ratio"] is not None
        assert f"baseline {name}:" in format_report(r)
    assert r["baseline"]["openvino"]["precision"] in ("f32", "bf16")


def fake_report(min_window: float = 30.0, missing: int = 0) -> dict:
    return {
        "bench": {"errors": []},
        "throughput": {"inferred_fps": {"median": 40.0, "min": min_window, "max": 50.0}},
        "frames": {"missing": missing, "duplicates": 0, "unexpected": 0},
    }


def test_exit_status_follows_min_fps_and_frames_without_a_decision():
    r = fake_report()
    r["verdict"] = verdict(r, 25.0)
    assert r["verdict"]["ok"] and exit_status(r) == 0

    slow = fake_report(min_window=24.0)
    slow["verdict"] = verdict(slow, 25.0)
    assert exit_status(slow) == 1 and "minimum 1-s window 24" in slow["verdict"]["failures"][0]

    lost = fake_report(missing=3)
    lost["verdict"] = verdict(lost, 0.0)
    assert exit_status(lost) == 1 and "3 frame(s) without a decision" in lost["verdict"]["failures"][0]

    broken = copy.deepcopy(r)
    broken["bench"]["errors"] = ["the daemon exited with code 1"]
    broken["verdict"] = verdict(broken, 25.0)
    assert exit_status(broken) == 1


def test_frame_accounting_finds_missing_duplicate_and_unexpected_ids():
    camera = np.array([0, 0, 0, 0, 1, 1, 5])
    frame_id = np.array([0, 1, 1, 3, 0, 9, 0])
    acc = frame_accounting({0: 5, 1: 2}, camera, frame_id)
    # camera 0: ids 2 and 4 missing, 1 twice; camera 1: id 1 missing, 9 never produced; camera 5 unknown
    assert acc == {"missing": 3, "duplicates": 1, "unexpected": 2, "missing_examples": [[0, 2], [0, 4], [1, 1]]}
    assert frame_accounting({0: 2}, np.array([0, 0]), np.array([1, 0]))["missing"] == 0


def test_window_counts_and_percentiles():
    t0 = 10**18
    t = t0 + np.array([0, 1, 999_999_999, 1_000_000_000, 2_500_000_000, 3_000_000_000, -5], np.int64)
    assert window_counts(t, t0, 3) == [3, 1, 1]  # the 4th second and the early one are outside
    assert window_counts(t, t0, 0) == []
    p = percentiles_ms(np.arange(1, 101, dtype=np.int64) * 1_000_000)
    assert p["n"] == 100 and p["max"] == 100.0 and p["p50"] <= p["p95"] <= p["p99"] <= p["max"]
    assert percentiles_ms(np.array([], np.int64))["n"] == 0


def run_source(pace: str, inflight: int = 8) -> tuple[BenchSource, Ring]:
    """A bench source feeding a 4-slot ring that nobody consumes, for a moment."""
    ring = Ring(4, 8, 8)
    pool = np.arange(3 * 8 * 8 * 3, dtype=np.uint8).reshape(3, 8, 8, 3)
    go, stop = threading.Event(), threading.Event()
    src = BenchSource("cam0", pool, np.array([[0, 1], [1, 0], [1, 1]], np.int8), pace=pace, inflight=inflight, go=go)
    t = src.start(ring, 0, stop)
    go.set()
    n = 3 if pace == "backpressure" else 20
    wait_until(lambda: src.frames_seen >= n, what=lambda: f"{n} frames from the source (got {src.frames_seen})")
    time.sleep(0.05)  # a moment more: room for a frame too many (none may come: nobody consumes the ring)
    stop.set()
    t.join(5.0)
    assert not t.is_alive() and src.error is None
    return src, ring


def test_bench_source_free_pace_drops_newest_and_backpressure_never_drops():
    src, ring = run_source("free")
    c = ring.counters
    assert src.counters.committed == c.committed == 4  # the ring filled up ...
    assert src.counters.dropped_full == c.dropped_full == src.frames_seen - 4 > 0  # ... and the rest was dropped
    batch = ring.take(4, 0.0)
    assert batch.frame_id.tolist() == [0, 1, 2, 3]
    assert batch.truth.tolist() == [[0, 1], [1, 0], [1, 1], [0, 1]]
    assert np.array_equal(batch.images[1], src.pool[1])

    src, ring = run_source("backpressure", inflight=3)
    assert src.counters.dropped_full == ring.counters.dropped_full == 0
    assert src.counters.committed == ring.counters.committed == 3  # waits for room: never more than `inflight`
    assert src.blocked_ns > 0


def test_config_validation_names_the_setting_and_the_cli_names_the_option(capsys):
    from linewatch.cli import main

    prof = default_profile()
    with pytest.raises(SettingError, match="`pace` fixed needs `fps`"):
        BenchConfig(prof, pace="fixed").validate()
    with pytest.raises(SettingError, match="`fps` 10 only applies to `pace` fixed"):
        BenchConfig(prof, fps=10.0).validate()
    with pytest.raises(SettingError, match="`duration_s` 0.5"):
        BenchConfig(prof, duration_s=0.5).validate()
    with pytest.raises(SettingError, match="`source`"):
        BenchConfig(prof, source="webcam").validate()
    with pytest.raises(SettingError, match="apply to `source` synthetic only"):
        BenchConfig(prof, source="replay", pace="free").validate()
    assert main(["bench", "--duration", "0.5", "--engine", "null"]) == 2
    assert "error: --duration 0.5: must be >= 1 second" in capsys.readouterr().err


def test_bench_with_the_archive_journals_every_decision(tmp_path, capsys):
    from linewatch.cli import main
    from linewatch.record import read

    code = main(["bench", "--engine", "null", "--duration", "1", "--warmup", "0", "--pool", "2", "--quiet",
                 "--json", "--min-fps", "0", "--archive", str(tmp_path / "a")])
    r = json.loads(capsys.readouterr().out)
    assert code == 0 and r["archive"]["rows_missing"] == 0 and r["archive"]["state"] == "ok"
    assert len(read.query(tmp_path / "a")) == r["archive"]["rows"] > 0


def test_cli_json_report_and_exit_status(capsys):
    from linewatch.cli import main

    code = main(["bench", "--engine", "null", "--duration", "1", "--warmup", "0", "--pool", "2", "--quiet",
                 "--json", "--min-fps", "1e9"])
    out = capsys.readouterr().out
    r = json.loads(out)
    assert code == 1  # nothing reaches 1e9 decisions/s
    assert not r["verdict"]["ok"] and "--min-fps 1e+09" in r["verdict"]["failures"][0]
    assert r["frames"]["missing"] == 0 and r["throughput"]["windows"] == 1
    assert main(["bench", "--pace", "fixed", "--engine", "null"]) == 2  # usage error: no --fps


def test_replay_source_from_the_profile(tmp_path):
    import cv2

    from linewatch.profile import load_profile

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), np.full((128, 256, 3), 40 * i, np.uint8))
    (tmp_path / "p.toml").write_text(
        '[model]\npath = "absent.onnx"\nbackend = "null"\nmax_batch = 2\n'
        '[[camera]]\nid = "r0"\nsource = "replay"\npath = "imgs"\nloop = true\nfps = 50\n'
    )
    prof = load_profile(tmp_path / "p.toml")
    r = run_bench(BenchConfig(prof, source="replay", duration_s=1.0, warmup_s=0.2, min_fps=0.0))
    check_report(r, 1.0)
    assert r["bench"]["pace"] == "source" and r["bench"]["inflight"] is None
    assert r["engine"]["model"] is None  # the null engine runs without a model file
    with pytest.raises(SettingError, match="r0 are not genicam"):
        run_bench(BenchConfig(prof, source="genicam", duration_s=1.0))




def test_bench_pool_holds_the_frames_and_truth_the_synthetic_camera_films():
    from linewatch.bench import render_pool
    from linewatch.pipeline.acquire.synthetic import SyntheticSource
    from linewatch.profile import SyntheticCamera

    pool, truth = render_pool(3, (128, 128), seed=5, defect_rate=0.7, adhesive_rate=0.1)
    cam = SyntheticSource(SyntheticCamera(id="line", seed=5, defect_rate=0.7, adhesive_rate=0.1, pool=3),
                          height=128, width=128)
    cam._open()  # renders the camera's pool (what its thread does while "starting")
    assert cam._pool is not None
    np.testing.assert_array_equal(pool, cam._pool)
    assert [tuple(t) for t in truth.tolist()] == cam._pool_truth


def test_pacing_times_the_engine_only_for_inflight_auto():
    from linewatch.bench.run import _pacing
    from linewatch.engines.null import NullEngine

    said: list[str] = []
    prof = default_profile()
    fixed = _pacing(BenchConfig(prof, inflight=5), NullEngine((8, 8), 4), lambda line, **_: said.append(line))
    assert (fixed.inflight, fixed.calibration_ms, fixed.batch_limit) == (5, None, None) and said == []
    auto = _pacing(BenchConfig(prof), NullEngine((8, 8), 4), lambda line, **_: said.append(line))
    assert auto.batch_limit is not None and auto.inflight == 2 * auto.batch_limit  # two batches in flight
    assert auto.calibration_ms is not None and str(auto.batch_limit) in auto.calibration_ms
    assert "(--inflight auto)" in said[0]
    assert _pacing(BenchConfig(prof, pace="fixed", fps=25.0), NullEngine((8, 8), 4), print).calibration_ms is None


def test_pool_settings_are_the_first_synthetic_cameras_else_the_renderers():
    from linewatch.bench.run import _pool_settings
    from linewatch.profile import parse_profile

    line = parse_profile('[[camera]]\nid = "a"\nsource = "synthetic"\nseed = 4\nadhesive_rate = 0.3\n')
    assert _pool_settings(BenchConfig(line, seed=9)) == (4, 0.2, 0.3)  # the camera's (defect_rate default 0.2)
    replay = parse_profile('[[camera]]\nid = "a"\nsource = "replay"\npath = "f"\n')
    assert _pool_settings(BenchConfig(replay, seed=9)) == (9, None, None)
