"""Changing thresholds from the operator page (`POST /api/thresholds`, `linewatch hmi --allow-changes`):
refused unless turned on, 401 without the token, 400 naming a bad value and the range, 200 rewriting the
profile (load_profile reads the new values back) and signalling the daemon's pid from its heartbeat (a fake
signaller: no real process is ever signalled here), 409 for a daemon on another host or without a pid,
a broken rewrite put back, and the CLI's usage errors (missing options, a token file others can read)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from hmi_stream import Clock, Stream, aggregator, feed  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from linewatch.cli import main  # noqa: E402
from linewatch.hmi.server import Changes, create_app, is_local_endpoint  # noqa: E402
from linewatch.profile import load_profile  # noqa: E402

TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROFILE = """\
# line 3, cell inspection
[station]
name = "line-3"
[model]
path = "stub.onnx"
backend = "null"
[[camera]]
id = "cam0"
source = "synthetic"
[decision]
thresholds = { anomaly = 0.7, adhesive = 0.7 }  # tuned 2026-09
"""


class Signals:
    """A fake signaller: records the pids it was asked to signal."""

    def __init__(self, fail: OSError | None = None) -> None:
        self.pids: list[int] = []
        self.fail = fail

    def __call__(self, pid: int) -> None:
        if self.fail is not None:
            raise self.fail
        self.pids.append(pid)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    (tmp_path / "stub.onnx").write_bytes(b"stub")
    p = tmp_path / "station.toml"
    p.write_text(PROFILE)
    return p


def fed_aggregator(pid: int | None = 4242):
    c = Clock()
    agg, s = aggregator(c), Stream(c)
    hb = s.heartbeat()
    if pid is not None:
        hb.header["pid"] = pid
    else:
        hb.header.pop("pid", None)
    feed(agg, hb)
    return agg


def client_for(profile: Path, *, pid: int | None = 4242, connect: str = "tcp://127.0.0.1:5555",
               signals: Signals | None = None) -> tuple[TestClient, Signals]:
    sig = signals or Signals()
    app = create_app(fed_aggregator(pid), changes=Changes(profile=profile, token=TOKEN, connect=connect, signal=sig))
    return TestClient(app), sig


def test_without_allow_changes_a_post_is_refused_and_the_status_says_no_changes(profile):
    before = profile.read_text()
    with TestClient(create_app(fed_aggregator())) as client:
        r = client.post("/api/thresholds", json={"anomaly": 0.5}, headers=AUTH)
        st = client.get("/api/status").json()
        others = [client.request(m, p).status_code for p in ("/api/status", "/api/rejects", "/")
                  for m in ("POST", "PUT", "DELETE")]
    assert r.status_code == 405 and "--allow-changes" in r.json()["error"]
    assert st["changes"] is False and set(others) == {405}
    assert profile.read_text() == before


def test_with_changes_the_status_says_so_and_a_get_of_the_thresholds_route_is_405(profile):
    client, _ = client_for(profile)
    with client:
        assert client.get("/api/status").json()["changes"] is True
        assert client.get("/api/thresholds").status_code == 405


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}])
def test_a_missing_or_wrong_token_is_401_and_nothing_changes(profile, headers):
    before = profile.read_text()
    client, sig = client_for(profile)
    with client:
        r = client.post("/api/thresholds", json={"anomaly": 0.5}, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <token>" in r.json()["error"]
    assert profile.read_text() == before and sig.pids == []


@pytest.mark.parametrize(("body", "message"), [
    ({"anomaly": 1.5}, "anomaly=1.5: must be a number in [0, 1]"),
    ({"adhesive": -0.1}, "adhesive=-0.1: must be a number in [0, 1]"),
    ({"anomaly": "0.5"}, 'anomaly="0.5": must be a number in [0, 1]'),
    ({"anomaly": True}, "anomaly=true: must be a number in [0, 1]"),
    ({"anomaly": None}, "anomaly=null: must be a number in [0, 1]"),
    ({"rule": "any"}, "unknown key(s) 'rule': allowed are anomaly, adhesive"),
    ({}, "the body must be a JSON object with anomaly and/or adhesive"),
    ([0.5], "the body must be a JSON object with anomaly and/or adhesive"),
])
def test_bad_values_are_400_naming_the_value_and_the_range(profile, body, message):
    before = profile.read_text()
    client, sig = client_for(profile)
    with client:
        r = client.post("/api/thresholds", json=body, headers=AUTH)
    assert r.status_code == 400 and message in r.json()["error"]
    assert profile.read_text() == before and sig.pids == []


def test_a_body_that_is_not_json_is_400(profile):
    client, _ = client_for(profile)
    with client:
        r = client.post("/api/thresholds", content=b"anomaly=0.5", headers=AUTH)
    assert r.status_code == 400 and "the body is not JSON" in r.json()["error"]


def test_a_change_rewrites_the_profile_signals_the_heartbeats_pid_and_logs_one_line(profile):
    import io

    from structlog.testing import capture_logs

    from linewatch.logs import configure

    configure("json", "info", stream=io.StringIO())  # an earlier test may have left the level at warning
    client, sig = client_for(profile, pid=4242)
    with client, capture_logs() as logs:  # whatever earlier tests configured structlog to print to
        r = client.post("/api/thresholds", json={"anomaly": 0.55, "adhesive": 0.8}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"old": {"anomaly": 0.7, "adhesive": 0.7}, "new": {"anomaly": 0.55, "adhesive": 0.8},
                        "pid": 4242, "signalled": True, "profile": str(profile)}
    assert load_profile(profile).decision.thresholds.resolve() == (0.55, 0.8)
    text = profile.read_text()
    assert text.startswith("# line 3, cell inspection\n") and "# tuned 2026-09" in text
    assert sig.pids == [4242]
    logged = [e for e in logs if e["event"] == "thresholds changed"]
    assert len(logged) == 1 and "testclient" in str(logged[0]["client"]) and "0.55" in str(logged[0])


def test_one_head_alone_keeps_the_other_and_the_file_mode(profile):
    profile.chmod(0o640)
    client, _ = client_for(profile)
    with client:
        r = client.post("/api/thresholds", json={"adhesive": 0.25}, headers=AUTH)
    assert r.status_code == 200 and r.json()["new"] == {"anomaly": 0.7, "adhesive": 0.25}
    assert load_profile(profile).decision.thresholds.resolve() == (0.7, 0.25)
    assert profile.stat().st_mode & 0o777 == 0o640
    assert not [p for p in profile.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("connect", ["tcp://line3:5555", "tcp://10.0.0.7:5555"])
def test_a_daemon_on_another_host_is_409_the_file_written_and_nothing_signalled(profile, connect):
    client, sig = client_for(profile, connect=connect)
    with client:
        r = client.post("/api/thresholds", json={"anomaly": 0.6}, headers=AUTH)
    assert r.status_code == 409 and r.json()["signalled"] is False
    err = r.json()["error"]
    assert f"{profile} was written" in err and "another host" in err and "linewatch reload" in err
    assert load_profile(profile).decision.thresholds.anomaly == 0.6 and sig.pids == []


def test_no_pid_yet_or_a_failing_signal_is_409_saying_the_file_was_written(profile):
    client, sig = client_for(profile, pid=None)
    with client:
        r = client.post("/api/thresholds", json={"anomaly": 0.6}, headers=AUTH)
    assert r.status_code == 409 and "no heartbeat with the daemon's pid yet" in r.json()["error"]
    client, _ = client_for(profile, signals=Signals(fail=PermissionError(1, "Operation not permitted")))
    with client:
        r = client.post("/api/thresholds", json={"anomaly": 0.65}, headers=AUTH)
    assert r.status_code == 409 and "cannot signal pid 4242 (Operation not permitted)" in r.json()["error"]
    assert load_profile(profile).decision.thresholds.anomaly == 0.65


def test_a_rewrite_that_does_not_validate_puts_the_old_file_back_and_is_500(profile, monkeypatch):
    import linewatch.profile as lp

    before = profile.read_text()
    monkeypatch.setattr(lp, "rewrite_thresholds", lambda text, t: text.replace('backend = "null"', 'backend = "x"'))
    client, sig = client_for(profile)
    with client:
        r = client.post("/api/thresholds", json={"anomaly": 0.6}, headers=AUTH)
    assert r.status_code == 500 and "does not validate, the old one is back" in r.json()["error"]
    assert profile.read_text() == before and sig.pids == []


def test_a_profile_that_does_not_validate_now_is_500_and_not_written(profile):
    profile.write_text(PROFILE.replace("0.7, adhesive", "7, adhesive"))
    before = profile.read_text()
    client, _ = client_for(profile)
    with client:
        r = client.post("/api/thresholds", json={"adhesive": 0.6}, headers=AUTH)
    assert r.status_code == 500 and "does not validate now, nothing written" in r.json()["error"]
    assert profile.read_text() == before


@pytest.mark.parametrize(("url", "local"), [
    ("tcp://127.0.0.1:5555", True), ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True),
    ("ipc:///run/linewatch.sock", True), ("tcp://line3:5555", False), ("tcp://192.168.1.4:5555", False),
    ("tcp://*:5555", False), ("nonsense", False),
])
def test_only_loopback_and_ipc_endpoints_count_as_this_host(url, local):
    assert is_local_endpoint(url) is local


# -- the CLI ---------------------------------------------------------------------------------------

@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    p = tmp_path / "hmi.token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    return p


def test_allow_changes_without_profile_or_token_file_is_a_usage_error(profile, token_file, capsys):
    assert main(["hmi", "--allow-changes"]) == 2
    assert "--allow-changes needs --profile and --token-file" in capsys.readouterr().err
    assert main(["hmi", "--allow-changes", "--profile", str(profile)]) == 2
    assert "--allow-changes needs --token-file" in capsys.readouterr().err
    assert main(["hmi", "--allow-changes", "--token-file", str(token_file)]) == 2
    assert "--allow-changes needs --profile (" in capsys.readouterr().err


def test_profile_or_token_file_without_allow_changes_is_a_usage_error(profile, capsys):
    assert main(["hmi", "--profile", str(profile)]) == 2
    assert "--profile only with --allow-changes" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_token_file_readable_by_group_or_others_is_refused_naming_it(profile, token_file, mode, capsys):
    token_file.chmod(mode)
    assert main(["hmi", "--allow-changes", "--profile", str(profile), "--token-file", str(token_file)]) == 2
    err = capsys.readouterr().err
    assert f"--token-file {token_file}: mode {mode:04o} gives group/others access" in err
    assert f"chmod 600 {token_file}" in err


def test_a_missing_or_empty_token_file_and_a_missing_profile_are_refused(profile, token_file, tmp_path, capsys):
    missing = tmp_path / "none.token"
    assert main(["hmi", "--allow-changes", "--profile", str(profile), "--token-file", str(missing)]) == 2
    assert f"--token-file {missing}: cannot read it" in capsys.readouterr().err
    token_file.write_text("  \n")
    assert main(["hmi", "--allow-changes", "--profile", str(profile), "--token-file", str(token_file)]) == 2
    assert f"--token-file {token_file}: empty" in capsys.readouterr().err
    gone = tmp_path / "gone.toml"
    assert main(["hmi", "--allow-changes", "--profile", str(gone), "--token-file", str(token_file)]) == 2
    assert f"--profile {gone}: no such file" in capsys.readouterr().err


def test_the_cli_hands_the_server_the_profile_token_and_endpoint(profile, token_file, monkeypatch):
    import linewatch.hmi.server as server

    got = {}
    monkeypatch.setattr(server, "serve", lambda connect, **kw: got.update(connect=connect, **kw))
    assert main(["hmi", "--connect", "ipc:///tmp/lw.sock", "--allow-changes", "--profile", str(profile),
                 "--token-file", str(token_file)]) == 0
    ch = got["changes"]
    assert (ch.profile, ch.token, ch.connect) == (profile, TOKEN, "ipc:///tmp/lw.sock")
    assert ch.signal is server.send_sighup
    monkeypatch.setattr(server, "serve", lambda connect, **kw: got.update(connect=connect, **kw))
    assert main(["hmi"]) == 0 and got["changes"] is None
    assert os.stat(token_file).st_mode & 0o777 == 0o600


def test_the_page_hides_the_form_unless_the_status_says_changes_are_allowed():
    from linewatch.hmi.server import STATIC_DIR

    html = (STATIC_DIR / "index.html").read_text()
    js = (STATIC_DIR / "app.js").read_text()
    assert '<form class="panel" id="changes-panel" hidden>' in html
    assert "if (!s.changes) return;" in js and 'sessionStorage.setItem("linewatch-token"' in js
    assert "localStorage" not in js
