"""`linewatch hmi`: its options, its lazy imports (`linewatch --help` never imports the web stack, a missing
`hmi` extra is named), and end to end a real daemon (`linewatch run`, synthetic line, null engine) watched by a
real `linewatch hmi` process: counters rise, an overlay is served, a stopped daemon raises the banner, a restarted
one clears it and a killed one falls silent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fakes import stub_model
from test_daemon_cli import PROFILE
from waiting import wait_until

from linewatch.cli import main
from linewatch.cli.hmi import parse_bind


def test_help_imports_neither_starlette_nor_uvicorn():
    code = ("import sys; from linewatch.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'linewatch.hmi.server') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_without_the_hmi_extra_the_command_names_the_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "starlette" else real(name, *a))
    assert main(["hmi", "--connect", "tcp://127.0.0.1:5999"]) == 2
    err = capsys.readouterr().err
    assert "linewatch hmi: error: linewatch hmi needs starlette (the hmi extra): pip install 'linewatch[hmi]'" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--bind", "8080"], "--bind '8080': must be HOST:PORT with a port 0..65535"),
    (["--bind", "localhost:99999"], "--bind 'localhost:99999': must be HOST:PORT"),
    (["--shifts", "06:00,25:00"], "--shifts '25:00': must be a time of day HH:MM"),
    (["--heartbeat-timeout", "0"], "--heartbeat-timeout 0.0: must be > 0 seconds"),
    (["--curve-server-key", "server.key"], "CURVE needs both --curve-server-key and --curve-client-cert"),
    (["--archive", "/nonexistent/record"], "--archive /nonexistent/record: no such folder"),
    (["--nice", "20"], "--nice 20: must be 0..19"),
])
def test_bad_options_exit_2_naming_the_value(argv, message, capsys):
    assert main(["hmi", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_default_shifts_are_the_station_records():
    from linewatch.cli.hmi import DEFAULT_SHIFTS
    from linewatch.record import read

    assert DEFAULT_SHIFTS == read.DEFAULT_SHIFTS


def test_bind_takes_host_and_port():
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind("[::1]:0") == ("::1", 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def status(base: str) -> dict | None:
    try:
        code, body, _ = get(base + "/api/status")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # not listening yet
    return json.loads(body) if code == 200 else None


@pytest.mark.slow
def test_hmi_follows_a_running_daemon_serves_an_overlay_and_shows_the_banner_within_3_s_of_its_stop_or_death(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    stub_model(tmp_path)
    prof = tmp_path / "station.toml"
    prof.write_text(PROFILE + "[publish]\noverlay_pass_every = 5\nheartbeat_s = 0.5\n")
    endpoint, port = f"tcp://127.0.0.1:{free_port()}", free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    run = [sys.executable, "-m", "linewatch"]
    hmi = subprocess.Popen([*run, "hmi", "--connect", endpoint, "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    daemon = subprocess.Popen([*run, "run", "--profile", str(prof), "--log-format", "json", "--endpoint", endpoint],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def alive(p: subprocess.Popen, name: str) -> None:
            if p.poll() is not None:
                raise AssertionError(f"{name} exited {p.returncode}: {p.stderr.read()[-2000:] if p.stderr else ''}")

        def counting() -> dict | None:
            alive(hmi, "linewatch hmi")
            alive(daemon, "linewatch run")
            st = status(base)
            return st if st and st["decisions"] > 200 and st["banner"]["state"] in ("ok", "degraded") else None

        st = wait_until(counting, 60, lambda: f"decisions > 200 on {base}/api/status: {status(base)}", interval=0.1)
        assert os.getpriority(os.PRIO_PROCESS, hmi.pid) - os.getpriority(os.PRIO_PROCESS, 0) == 10  # --nice 10
        assert os.sched_getscheduler(hmi.pid) == os.SCHED_OTHER  # not --idle
        assert set(st["cameras"]) == {"cam0", "cam1"}
        assert st["rejects"] > 0 and "corrupt" in st["by_reason"]  # cam0 sends a corrupt frame every 11th
        assert st["model"]["backend"] == "null" and st["station"] == "cli-test"
        assert st["passes"] + st["rejects"] == st["decisions"]

        def overlay() -> bytes | None:
            code, body, headers = get(base + "/overlay/cam0.jpg")
            return body if code == 200 and headers.get("content-type") == "image/jpeg" else None

        jpeg = wait_until(overlay, 30, "an overlay of cam0", interval=0.1)
        assert jpeg[:2] == b"\xff\xd8"
        code, page, _ = get(base + "/")
        assert code == 200 and b"/static/app.js" in page

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        stopped_at = time.monotonic()
        banner = wait_until(lambda: (status(base) or {}).get("banner", {}).get("failsafe") and status(base)["banner"],
                            3.0, lambda: f"the fail-safe banner: {status(base)}", interval=0.05)
        assert time.monotonic() - stopped_at < 3.0
        assert banner["state"] in ("stopped", "silent")

        # a restarted daemon clears the banner; one that dies without a word falls silent (3 x 0.5 s)
        daemon = subprocess.Popen(
            [*run, "run", "--profile", str(prof), "--log-format", "json", "--endpoint", endpoint],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        st = wait_until(lambda: (s := status(base)) and s["banner"]["state"] in ("ok", "degraded") and s,
                        60, lambda: f"the banner cleared after the restart: {status(base)}", interval=0.05)
        assert st["restarts"] == 1
        daemon.kill()
        daemon.wait(20)
        killed_at = time.monotonic()
        banner = wait_until(lambda: (s := status(base)) and s["banner"]["state"] == "silent" and s["banner"],
                            3.0, lambda: f"the silent banner: {status(base)}", interval=0.05)
        assert time.monotonic() - killed_at < 3.0 and banner["failsafe"] is True
    finally:
        for p in (daemon, hmi):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (daemon, hmi):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    assert hmi.returncode == 0, hmi.stderr.read() if hmi.stderr else ""


def test_the_package_data_carries_the_page(tmp_path):
    import tomllib

    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["linewatch.hmi"]
    on_disk = {p.name for p in (root / "linewatch" / "hmi" / "static").iterdir()}
    covered = {n for n in on_disk if any(Path(n).match(Path(g).name) for g in data)}
    assert covered == on_disk == {"index.html", "app.js", "app.css"}


def test_hmi_idle_runs_the_server_and_its_threads_at_the_idle_scheduling_class(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    hmi = subprocess.Popen([sys.executable, "-m", "linewatch", "hmi", "--connect", f"tcp://127.0.0.1:{free_port()}",
                            "--bind", f"127.0.0.1:{port}", "--idle"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: status(base), 60, f"{base}/api/status answering", interval=0.1)
        threads = list(Path(f"/proc/{hmi.pid}/task").iterdir())
        assert len(threads) >= 2, "the subscriber's thread and the server's"
        assert all(os.sched_getscheduler(int(t.name)) == os.SCHED_IDLE for t in threads)
    finally:
        hmi.send_signal(signal.SIGTERM)
        hmi.wait(30)
