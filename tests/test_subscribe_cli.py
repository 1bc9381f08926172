"""`linewatch subscribe` against a live publisher: --count, --json, exit codes, CURVE, overlays."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq.auth

from linewatch.cli import main
from linewatch.cli.subscribe import format_human
from linewatch.pipeline.decide import Decision
from linewatch.pipeline.publish import CurveServer, Publisher
from linewatch.protocol import validate_header


def _d(i: int) -> Decision:
    t = time.time_ns()
    reject = i % 2 == 1
    return Decision("cam0", i, t, t + 2_000_000, (0.9 if reject else 0.1, 0.8), (0.7, 0.7), reject,
                    ("anomaly",) if reject else ("pass",), "present", False)


class Feeder:
    """Submits a decision every 10 ms (with an image, so rejects get overlays) until stopped."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        image = np.full((32, 32, 3), 100, np.uint8)
        masks = np.zeros((2, 4, 4), np.float32)
        i = 0
        while not self.stop_event.wait(0.01):
            self.pub.submit(_d(i), image=image, masks=masks)
            i += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_subprocess_count_json(tmp_path: Path) -> None:
    pub = Publisher("tcp://127.0.0.1:0", "cli-station", heartbeat_interval=0.1).start()
    feeder = Feeder(pub)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "linewatch", "subscribe", pub.endpoint, "--topic", "reject", "--json",
             "--count", "5", "--timeout", "30"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        feeder.stop()
        pub.stop()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5
    headers = [json.loads(line) for line in lines]
    for h in headers:
        validate_header(h)
        assert h["topic"] == "reject" and h["station"] == "cli-station" and h["decision"] == "reject"
    seqs = [h["seq"] for h in headers]
    assert seqs == list(range(seqs[0], seqs[0] + 5))


def test_human_lines_and_saved_overlays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = Publisher("tcp://127.0.0.1:0", "st", heartbeat_interval=0.05, overlay_pass_every=1).start()
    feeder = Feeder(pub)
    try:
        rc = main(["subscribe", pub.endpoint, "--count", "30", "--timeout", "30",
                   "--save-overlays", str(tmp_path / "ov")])
    finally:
        feeder.stop()
        pub.stop()
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    lines = [line for line in out if line.split()[0] in ("decision", "reject", "overlay", "heartbeat")]
    assert len(lines) == 30  # (other lines are the publisher's log in this same process)
    topics = {line.split()[0] for line in lines}
    assert {"decision", "reject", "overlay", "heartbeat"} <= topics
    assert any("REJECT" in line and "reason=anomaly" in line for line in lines)
    saved = list((tmp_path / "ov").glob("cam0_*.jpg"))
    assert saved and all(p.read_bytes()[:2] == b"\xff\xd8" for p in saved)


def test_format_human_failsafe_line() -> None:
    header = {"topic": "reject", "station": "s", "camera": "c", "seq": 3, "frame_id": 9, "decision": "reject",
              "reason": "dropped", "scores": None, "thresholds": {"anomaly": 0.7, "adhesive": 0.7},
              "t_capture_ns": 0, "t_decision_ns": 5_000_000}
    line = format_human(header, None)
    assert "REJECT" in line and "reason=dropped" in line and "scores=none" in line and "latency=5.0ms" in line


def test_exit_on_failsafe_and_timeout_codes(capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"  # nobody publishes there
    rc = main(["subscribe", endpoint, "--heartbeat-timeout", "0.2", "--exit-on-failsafe", "--timeout", "20"])
    assert rc == 3
    assert "FAIL-SAFE: no heartbeat" in capsys.readouterr().err
    assert main(["subscribe", endpoint, "--count", "1", "--timeout", "0.3"]) == 1
    assert main(["subscribe", endpoint, "--timeout", "0.3"]) == 0


class Watch(io.TextIOBase):
    """A text stream that passes everything on to `out` and sets `seen` once `needle` was written."""

    def __init__(self, out, needle: str) -> None:
        self.out, self.needle, self.seen = out, needle, threading.Event()

    def write(self, s: str) -> int:
        if self.needle in s:
            self.seen.set()
        return self.out.write(s)

    def flush(self) -> None:
        self.out.flush()


def test_exit_on_failsafe_when_publisher_stops(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pub = Publisher("tcp://127.0.0.1:0", "st", heartbeat_interval=0.05).start()
    watch = Watch(sys.stdout, "status=ok")  # the publisher stops once the subscriber has printed a heartbeat
    monkeypatch.setattr(sys, "stdout", watch)
    stopper = threading.Thread(target=lambda: (watch.seen.wait(30), pub.stop()))
    stopper.start()
    try:
        rc = main(["subscribe", pub.endpoint, "--topic", "heartbeat", "--exit-on-failsafe", "--timeout", "20"])
    finally:
        stopper.join()
        pub.stop()
    assert rc == 3
    captured = capsys.readouterr()
    assert "status=ok" in captured.out and "status=stopping" in captured.out
    assert "is stopping" in captured.err


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["subscribe", "tcp://127.0.0.1:1", "--count", "0"]) == 2
    assert main(["subscribe", "tcp://127.0.0.1:1", "--curve-server-key", "x.key"]) == 2
    assert main(["subscribe", "tcp://127.0.0.1:1", "--curve-server-key", str(tmp_path / "no.key"),
                 "--curve-client-cert", str(tmp_path / "no.key_secret")]) == 2
    err = capsys.readouterr().err
    assert "--count must be >= 1" in err and "needs both" in err and "does not exist" in err


def test_curve_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    for name in ("server", "plc"):
        zmq.auth.create_certificates(keys, name)
    (allowed / "plc.key").write_bytes((keys / "plc.key").read_bytes())
    pub = Publisher("tcp://127.0.0.1:0", "st", heartbeat_interval=0.05,
                    curve=CurveServer(keys / "server.key_secret", allowed)).start()
    try:
        rc = main(["subscribe", pub.endpoint, "--topic", "heartbeat", "--count", "2", "--timeout", "20",
                   "--curve-server-key", str(keys / "server.key"),
                   "--curve-client-cert", str(keys / "plc.key_secret")])
    finally:
        pub.stop()
    assert rc == 0
    assert capsys.readouterr().out.count("heartbeat") == 2


def test_cli_defaults_to_the_protocols_endpoint_and_all_its_topics() -> None:
    from linewatch.cli import build_parser
    from linewatch.protocol import DEFAULT_ENDPOINT

    args = build_parser().parse_args(["subscribe"])
    assert args.endpoint == DEFAULT_ENDPOINT and args.topic is None  # None = every protocol topic
