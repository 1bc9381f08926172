"""`linewatch run` as a subprocess: synthetic line + null engine + the real publisher; SIGHUP reloads,
SIGTERM drains (every frame decided) and exits 0; a bad profile exits 2 naming the key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakes import stub_model
from waiting import wait_until

PROFILE = """
[station]
name = "cli-test"
[model]
path = "stub.onnx"
backend = "null"
max_batch = 4
[[camera]]
id = "cam0"
source = "synthetic"
fps = 200
pool = 2
corrupt_every = 11
[[camera]]
id = "cam1"
source = "synthetic"
fps = 100
pool = 2
seed = 5
[decision]
thresholds = { anomaly = 0.7, adhesive = 0.7 }
[ring]
slots = 8
"""


class Proc:
    """`linewatch run` as a subprocess, its stdout (one JSON log record a line) read by a thread."""

    def __init__(self, args: list[str], cwd: Path):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        self.p = subprocess.Popen([sys.executable, "-m", "linewatch", *args], cwd=cwd, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.all: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.all.append(json.loads(line))  # every stdout line is one JSON log record

    def wait_event(self, event: str, timeout: float = 60.0, **match) -> dict:
        """The first record (since the start, in any order) with this event and fields; fails after `timeout` s,
        or as soon as the process has ended without it."""

        def found() -> dict | None:
            ended = not self.reader.is_alive()  # before the look: a record read meanwhile is seen
            for rec in list(self.all):
                if rec.get("event") == event and all(rec.get(k) == v for k, v in match.items()):
                    return rec
            if ended:
                raise AssertionError(f"no {event!r} {match} log record; stderr: {self.stderr_tail()}")
            return None

        return wait_until(found, timeout, f"a {event!r} {match} log record", interval=0.01)

    def stderr_tail(self) -> str:
        if self.p.poll() is None or self.p.stderr is None:
            return "(running)"
        return self.p.stderr.read()[-2000:]

    def sigterm(self) -> int:
        """SIGTERM (the drain), then its exit status, once every record it wrote is read."""
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(60)
        self.reader.join(30)
        return rc

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.p.poll() is None:  # a failed test leaves no process behind
            self.p.kill()


@pytest.mark.slow
def test_run_sighup_reload_then_sigterm_drains_and_exits_0(tmp_path):
    stub_model(tmp_path)
    prof = tmp_path / "station.toml"
    prof.write_text(PROFILE)
    with Proc(["run", "--profile", str(prof), "--log-format", "json", "--endpoint", "tcp://127.0.0.1:0"],
              tmp_path) as proc:
        ready = proc.wait_event("ready")
        assert ready["cameras"] == ["cam0", "cam1"] and ready["station"] == "cli-test"
        proc.wait_event("acquisition started", camera="cam0")
        proc.wait_event("acquisition started", camera="cam1")
        prof.write_text(PROFILE.replace("anomaly = 0.7", "anomaly = 0.4"))
        proc.p.send_signal(signal.SIGHUP)
        assert proc.wait_event("reloaded")["thresholds"] == [0.4, 0.7]
        assert proc.sigterm() == 0, proc.stderr_tail()
    stopped = [r for r in proc.all if r.get("event") == "stopped"][-1]
    seen = {r["camera"]: r["frames_seen"] for r in proc.all if r.get("event") == "acquisition stopped"}
    assert set(seen) == {"cam0", "cam1"} and all(v > 0 for v in seen.values())
    assert stopped["exit_code"] == 0
    assert stopped["decisions"] == sum(seen.values())  # every frame acquired was decided
    assert stopped["ring"]["lost_records"] == 0
    assert any(r.get("event") == "stopping" and r.get("reason") == "SIGTERM" for r in proc.all)


def test_run_bad_profile_exits_2_naming_the_key(tmp_path):
    prof = tmp_path / "bad.toml"
    prof.write_text(PROFILE.replace('backend = "null"', 'backend = "gpu"'))
    r = subprocess.run([sys.executable, "-m", "linewatch", "run", "--profile", str(prof)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "model.backend = 'gpu': must be one of auto, openvino, onnxruntime, tensorrt, torch, null" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_max_frames(tmp_path):
    stub_model(tmp_path)
    prof = tmp_path / "station.toml"
    prof.write_text(PROFILE)
    r = subprocess.run([sys.executable, "-m", "linewatch", "run", "--profile", str(prof), "--log-format", "json",
                        "--endpoint", "tcp://127.0.0.1:0", "--max-frames", "40"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    stopped = [x for x in recs if x.get("event") == "stopped"][-1]
    assert stopped["decisions"] >= 40
    assert any(x.get("event") == "stopping" and "max_frames=40" in x.get("reason", "") for x in recs)


@pytest.mark.slow
def test_run_with_the_onnxruntime_engine(tmp_path):
    """The real ORT engine on a tiny exported ResSENet (64x96) behind the daemon; SIGTERM after frames flowed."""
    torch = pytest.importorskip("torch", reason="exporting the tiny model needs torch (linewatch[train])")
    from linewatch.model.export import export_onnx
    from linewatch.model.resse import build_model

    torch.manual_seed(0)
    model = build_model(input_height=64, input_width=96, widths=(8, 16, 24), class_channels=8)
    export_onnx(model, tmp_path / "tiny.onnx", self_check=False)
    prof = tmp_path / "station.toml"
    prof.write_text(PROFILE.replace('path = "stub.onnx"', 'path = "tiny.onnx"').replace('"null"', '"onnxruntime"'))
    with Proc(["run", "--profile", str(prof), "--log-format", "json", "--endpoint", "tcp://127.0.0.1:0"],
              tmp_path) as proc:
        assert proc.wait_event("engine_open")["backend"] == "onnxruntime"
        proc.wait_event("ready")
        proc.wait_event("acquisition started", camera="cam0")
        proc.wait_event("acquisition started", camera="cam1")
        assert proc.sigterm() == 0, proc.stderr_tail()
    stopped = [r for r in proc.all if r.get("event") == "stopped"][-1]
    seen = sum(r["frames_seen"] for r in proc.all if r.get("event") == "acquisition stopped")
    assert seen > 0 and stopped["decisions"] == seen and stopped["engine_errors"] == 0
    assert stopped["frames"] > 0  # frames went through the network, not only drop records


def test_the_daemon_never_imports_torch(tmp_path):
    stub_model(tmp_path)
    prof = tmp_path / "station.toml"
    prof.write_text(PROFILE.replace("pool = 2", "pool = 2\ncount = 20"))
    code = (
        "import sys\n"
        "from linewatch.cli import main\n"
        f"rc = main(['run', '--profile', {str(prof)!r}, '--log-format', 'json', '--endpoint', 'tcp://127.0.0.1:0'])\n"
        "assert rc == 0, rc\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().endswith("NO-TORCH")
