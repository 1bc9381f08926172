"""End to end: a station as it runs on a line, observed from outside.

- the simulated battery line -> `linewatch run` (a subprocess, the shipped model on ONNX Runtime) ->
  a subscriber that shares no code with linewatch (pyzmq, json, jsonschema on the schema files);
- the genicam wheel's simulated camera (viky.cti) through harvesters -> daemon -> ZeroMQ: decisions
  and heartbeats arrive;
- a subscriber killed mid-stream costs the daemon nothing: every frame is still decided, and the next
  subscriber sees a gap-free sequence.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_until

zmq = pytest.importorskip("zmq")
jsonschema = pytest.importorskip("jsonschema", reason="the independent subscriber validates with jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "linewatch" / "schemas"
SHIPPED = ROOT / "engines" / "resse-default.onnx"


def run_daemon(profile: Path, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen([sys.executable, "-m", "linewatch", "run", "--profile", str(profile), "--log-format",
                             "json"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def receive_all(sock, proc: subprocess.Popen[str], quiet_s: float = 2.0, limit_s: float = 240.0):
    """[topic, header dict] of every message until the daemon has exited and the socket is quiet."""
    msgs = []

    def exited_and_quiet() -> bool:
        if sock.poll(int(quiet_s * 1000)):
            parts = sock.recv_multipart()
            msgs.append((parts[0].decode(), json.loads(parts[1])))
            return False
        return proc.poll() is not None

    wait_until(exited_and_quiet, limit_s, lambda: f"the daemon to exit ({len(msgs)} messages so far)", interval=0)
    return msgs


def expected_reject(truth: dict) -> bool:
    """Under adhesive rule `present`: reject a cell with an anomaly or without its adhesive."""
    return bool(truth["anomaly"]) or not truth["adhesive"]


def test_synthetic_line_shipped_model_independent_subscriber(tmp_path: Path) -> None:
    manifest = json.loads(SHIPPED.with_suffix(".json").read_text())
    n_frames = 40
    endpoint = f"ipc://{tmp_path}/station.sock"
    profile = tmp_path / "line.toml"
    profile.write_text(f"""
[station]
name = "e2e"
endpoint = "{endpoint}"
[model]
path = "{SHIPPED}"
backend = "onnxruntime"
max_batch = 4
[[camera]]
id = "cam0"
source = "synthetic"
fps = 10
count = {n_frames}
seed = 7
pool = {n_frames}
[decision]
thresholds = {{ anomaly = 0.7, adhesive = 0.7 }}
adhesive_rule = "present"
deadline_ms = 10000     # a loaded CI machine must not turn this test into a timing test
[publish]
heartbeat_s = 0.2
""")
    schemas = {t: json.loads((SCHEMAS / f"{t}.schema.json").read_text())
               for t in ("decision", "reject", "overlay", "heartbeat")}
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)  # before the daemon binds: libzmq reconnects until it is there
    proc = run_daemon(profile, tmp_path)
    try:
        msgs = receive_all(sub, proc)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(linger=0)
        ctx.term()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""

    for topic, header in msgs:
        jsonschema.validate(header, schemas[topic])
    decisions = [h for t, h in msgs if t == "decision"]
    assert sorted(h["frame_id"] for h in decisions) == list(range(n_frames))  # exactly one decision per frame
    assert [h["seq"] for h in decisions] == list(range(n_frames))  # no gap, from the first message
    rejects = [h for t, h in msgs if t == "reject"]
    assert [h["seq"] for h in rejects] == list(range(len(rejects)))
    assert {h["frame_id"] for h in rejects} == {h["frame_id"] for h in decisions if h["decision"] == "reject"}
    assert any(t == "heartbeat" for t, _ in msgs)
    assert all(h["scores"] is not None and not h["failsafe"] for h in decisions)  # all inferred in time

    # Agreement with the line's ground truth at the rate the shipped model measured on held-out cells:
    # per head P(correct) = TPR for a positive cell, TNR for a negative one (manifest metrics.test).
    test = manifest["metrics"]["test"]
    p = []
    for h in decisions:
        t = h["truth"]
        p_a = test["anomaly"]["TPR_0.7"] if t["anomaly"] else test["anomaly"]["TNR_0.7"]
        p_h = test["adhesive"]["TPR_0.7"] if t["adhesive"] else test["adhesive"]["TNR_0.7"]
        p.append(p_a * p_h)
    expected = sum(p)
    sigma = math.sqrt(sum(q * (1 - q) for q in p))
    agree = sum((h["decision"] == "reject") == expected_reject(h["truth"]) for h in decisions)
    assert agree >= expected - 3 * sigma - 1, (agree, expected, sigma)


def test_viky_camera_through_the_daemon_publishes_decisions_and_heartbeats(tmp_path: Path) -> None:
    pytest.importorskip("harvesters", reason="needs the camera extra: pip install 'linewatch[camera]'")
    from linewatch.engines.null import NullEngine
    from linewatch.pipeline.daemon import Daemon
    from linewatch.profile import load_profile

    prof = load_profile(ROOT / "calib" / "viky.toml")
    if not prof.cti_path(prof.camera[0]).is_file():
        pytest.skip("viky.cti not found in the installed genicam package")
    endpoint = f"ipc://{tmp_path}/viky.sock"
    prof = prof.model_copy(update={
        "station": prof.station.model_copy(update={"endpoint": endpoint}),
        "publish": prof.publish.model_copy(update={"heartbeat_s": 0.1}),
    })
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        d = Daemon(prof, engine=NullEngine((64, 96), 4), max_frames=30)
        d.start()
        assert d.join(60) == 0
        msgs = []
        while sub.poll(1500):
            parts = sub.recv_multipart()
            msgs.append((parts[0].decode(), json.loads(parts[1])))
    finally:
        sub.close(linger=0)
        ctx.term()
    decisions = [h for t, h in msgs if t == "decision"]
    beats = [h for t, h in msgs if t == "heartbeat"]
    assert len(decisions) >= 20 and {h["camera"] for h in decisions} == {prof.camera[0].id}
    seqs = [h["seq"] for h in decisions]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert d.worker.decisions == d.sources[0].frames_seen  # every frame the camera delivered was decided
    assert beats and prof.camera[0].id in beats[-1]["cameras"]


def test_a_killed_subscriber_costs_no_decision(tmp_path: Path) -> None:
    from fakes import stub_model

    stub_model(tmp_path)
    endpoint = f"ipc://{tmp_path}/kill.sock"
    profile = tmp_path / "kill.toml"
    profile.write_text(f"""
[station]
endpoint = "{endpoint}"
[model]
path = "stub.onnx"
backend = "null"
[[camera]]
id = "cam0"
source = "synthetic"
fps = 100
count = 600
pool = 2
[publish]
heartbeat_s = 0.1
""")
    proc = run_daemon(profile, tmp_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    first = subprocess.Popen([sys.executable, "-m", "linewatch", "subscribe", endpoint, "--json"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ctx = zmq.Context()
    second = ctx.socket(zmq.SUB)
    try:
        assert first.stdout is not None
        got = [json.loads(first.stdout.readline()) for _ in range(20)]  # it is receiving...
        assert any(m.get("topic") == "decision" for m in got)
        first.send_signal(signal.SIGKILL)  # ...and dies without a goodbye
        first.wait(10)
        second.setsockopt(zmq.SUBSCRIBE, b"decision")
        second.connect(endpoint)
        msgs = receive_all(second, proc)
        rc = proc.wait(60)
    finally:
        for p in (first, proc):
            if p.poll() is None:
                p.kill()
        second.close(linger=0)
        ctx.term()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    seqs = [h["seq"] for _, h in msgs]
    assert seqs and seqs == list(range(seqs[0], 600))  # gap-free up to the last of the 600 frames
    assert proc.stdout is not None
    records = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    stopped = [r for r in records if r.get("event") == "stopped"][-1]
    assert stopped["decisions"] == 600 and stopped["exit_code"] == 0
