"""Security (docs/reliability-security.md): CURVE refuses an unknown client key and says so in the log (once a
minute per key); an endpoint bound beyond loopback without CURVE is a warning at start; a profile others can
write and a CURVE secret key others can read are warnings naming the file and its mode; nothing in linewatch
executes what a profile says (strings that look like code stay strings, or are refused).

Each daemon here runs in-process on the fake engine (tests/fakes.py) with the profile's own publisher, so the
real CurveServer, ZAP authenticator and bind are what is tested.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog
import zmq
import zmq.auth
from fakes import FakeEngine, FakeLog
from waiting import wait_until

from linewatch.pipeline.daemon import Daemon
from linewatch.pipeline.publish import REFUSED_LOG_KEYS, _CurveClients
from linewatch.profile import parse_profile
from linewatch.security import exposed, file_mode_warnings
from linewatch.subscribe import CurveClient, Subscriber

REFUSED = "CURVE client refused"


def _profile(tmp_path: Path, station: str = "", camera: bool = True):
    cam = ('[[camera]]\nid = "cam0"\nsource = "synthetic"\nfps = 100\npool = 2\n' if camera else
           '[[camera]]\nid = "cam0"\nsource = "synthetic"\n')
    text = ('[station]\nname = "sec"\n' + station + '[model]\nmax_batch = 4\n[ring]\nslots = 8\n'
            '[publish]\nheartbeat_s = 0.1\n' + cam)
    path = tmp_path / "station.toml"
    path.write_text(text)
    path.chmod(0o640)
    return parse_profile(text, name=str(path), base_dir=tmp_path), path


def _start(prof, path: Path | None = None, *, sources=None) -> tuple[Daemon, FakeLog]:
    log = FakeLog()
    d = Daemon(prof, profile_path=path, engine=FakeEngine(), sources=sources, log=log)
    d.start()
    return d, log


def _stop(d: Daemon) -> None:
    d.stop("test over")
    assert d.join(30) == 0


@pytest.fixture()
def certs(tmp_path: Path) -> dict[str, Path]:
    """server, plc (listed in clients/) and intruder (not listed) certificates, modes as a station keeps them."""
    keys = tmp_path / "keys"
    clients = tmp_path / "clients"
    keys.mkdir()
    clients.mkdir(mode=0o750)
    for name in ("server", "plc", "intruder"):
        zmq.auth.create_certificates(keys, name)
    (clients / "plc.key").write_bytes((keys / "plc.key").read_bytes())
    (clients / "plc.key").chmod(0o640)
    (keys / "server.key_secret").chmod(0o600)
    return {"keys": keys, "clients": clients}


def _public(path: Path) -> str:
    public, _ = zmq.auth.load_certificate(path)
    return public.decode("ascii")


# -- (a) CURVE: a client whose key is not listed receives nothing, and the refusal is logged ------------------

def test_a_curve_client_whose_key_is_not_listed_receives_nothing_and_its_refusal_is_logged_once(tmp_path, certs):
    keys, clients = certs["keys"], certs["clients"]
    curve = f'curve = {{ secret_key_file = "{keys}/server.key_secret", authorized_keys_dir = "{clients}" }}\n'
    prof, path = _profile(tmp_path, f'endpoint = "tcp://127.0.0.1:0"\n{curve}')
    with structlog.testing.capture_logs() as logs:
        d, _ = _start(prof, path)
        got: list = []
        good = Subscriber(d.endpoint, ("decision",), on_message=got.append,
                          curve=CurveClient(keys / "server.key", keys / "plc.key_secret"))
        # three connections with the same unlisted key (ZeroMQ does not retry after a refused handshake: each
        # connection is one refusal), and one without CURVE
        bad = [Subscriber(d.endpoint, ("decision",), curve=CurveClient(keys / "server.key", keys / "intruder.key_secret"))
               for _ in range(3)]
        plain = Subscriber(d.endpoint, ("decision",))
        others = [*bad, plain]
        try:
            pub = d.publisher
            wait_until(lambda: good.poll(0.05) is not None and len(got) >= 20 and pub.curve_refused >= 3, 30,
                       lambda: f"20 decisions for the listed client and 3 refusals (got {len(got)}, {pub.curve_refused})")
            assert all(s.poll(0.1) is None for s in others)
        finally:
            for s in (good, *others):
                s.close()
            _stop(d)
    for s in others:
        assert s.received == dict.fromkeys(s.received, 0) and s.last_heartbeat is None
    assert {m.header["session"] for m in got} == {d.publisher.session}
    assert pub.curve_refused == 3  # the NULL client fails before ZAP: it is no refusal of a key
    refusals = [e for e in logs if e["event"] == REFUSED]
    assert [e["client_key"] for e in refusals] == [_public(keys / "intruder.key")], refusals  # 3 refusals, 1 line
    assert refusals[0]["log_level"] == "warning" and refusals[0]["clients_dir"] == str(clients)
    assert refusals[0]["endpoint"] == d.endpoint and refusals[0]["refused"] == 1


def test_refusals_are_logged_once_a_minute_per_key_and_for_at_most_a_few_keys_a_minute():
    now = [1000.0]
    check = _CurveClients({b"listed"}, Path("/etc/linewatch/keys/clients"), "tcp://0.0.0.0:5555", clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        assert check.callback("*", b"listed")
        for _ in range(100):
            assert not check.callback("*", b"intruder")
        now[0] += 59.0
        assert not check.callback("*", b"intruder")
        lines_within_a_minute = len(logs)
        now[0] += 1.5  # a minute after its line
        assert not check.callback("*", b"intruder")
        for i in range(3 * REFUSED_LOG_KEYS):  # a client that makes a new key for each try
            assert not check.callback("*", f"key-{i}".encode())
    assert lines_within_a_minute == 1
    keys = [e["client_key"] for e in logs]
    # the intruder's second line holds one of the minute's REFUSED_LOG_KEYS places: 19 new keys get a line
    assert keys == ["intruder", "intruder"] + [f"key-{i}" for i in range(REFUSED_LOG_KEYS - 1)]
    assert check.refused == 102 + 3 * REFUSED_LOG_KEYS and logs[-1]["refused"] == 102 + REFUSED_LOG_KEYS - 1


# -- (b) an endpoint beyond loopback without CURVE is a warning at start ------------------------------------

EXPOSED = "endpoint_exposed_without_curve"


@pytest.mark.parametrize(("endpoint", "beyond"), [
    ("tcp://0.0.0.0:5555", True), ("tcp://*:5555", True), ("tcp://[::]:5555", True), ("tcp://eth0:5555", True),
    ("tcp://192.168.10.20:5555", True), ("tcp://10.0.0.1:5555", True), ("tcp://line3.plant.local:5555", True),
    ("tcp://[fe80::1]:5555", True), ("pgm://eth0;239.192.1.1:5555", True),
    ("tcp://127.0.0.1:5555", False), ("tcp://127.4.5.6:5555", False), ("tcp://[::1]:5555", False),
    ("tcp://[::ffff:127.0.0.1]:5555", False), ("tcp://localhost:5555", False), ("tcp://LOCALHOST:5555", False),
    ("tcp://lo:5555", False), ("ipc:///run/linewatch/line3.sock", False), ("inproc://line3", False),
])
def test_an_endpoint_is_exposed_unless_it_is_loopback_ipc_or_inproc(endpoint, beyond):
    assert exposed(endpoint) is beyond


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:0", "tcp://*:0"])
def test_a_daemon_bound_beyond_loopback_without_curve_warns_naming_the_endpoint(tmp_path, endpoint):
    prof, path = _profile(tmp_path, f'endpoint = "{endpoint}"\n')
    d, log = _start(prof, path, sources=[])
    _stop(d)
    warned = [kw for level, event, kw in log.events if event == EXPOSED]
    assert len(warned) == 1 and d.endpoint is not None and d.endpoint.startswith("tcp://0.0.0.0:")
    assert warned[0]["endpoint"] == d.endpoint and warned[0]["requested"] == endpoint
    assert [level for level, event, _ in log.events if event == EXPOSED] == ["warning"]


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:0", "tcp://localhost:0", "ipc://{tmp}/st.sock",
                                      "inproc://linewatch-security-test", "tcp://0.0.0.0:0 with curve"])
def test_a_daemon_on_loopback_ipc_inproc_or_with_curve_does_not_warn(tmp_path, certs, endpoint):
    curve = ""
    if endpoint.endswith(" with curve"):
        endpoint = endpoint.removesuffix(" with curve")
        curve = f'curve = {{ secret_key_file = "{certs["keys"]}/server.key_secret" }}\n'
    prof, path = _profile(tmp_path, f'endpoint = "{endpoint.format(tmp=tmp_path)}"\n{curve}')
    d, log = _start(prof, path, sources=[])
    _stop(d)
    assert d.endpoint is not None and EXPOSED not in log.names() and "publisher_bound" in log.names()


# -- (c) a profile others can write, a secret key others can read: a warning naming the file and its mode ----

def _curve_profile(tmp_path: Path, certs: dict[str, Path]):
    keys, clients = certs["keys"], certs["clients"]
    curve = f'curve = {{ secret_key_file = "{keys}/server.key_secret", authorized_keys_dir = "{clients}" }}\n'
    return _profile(tmp_path, f'endpoint = "tcp://127.0.0.1:0"\n{curve}', camera=False)


def _other_gid() -> int | None:
    """A group the key file can be given that is not this process's own (root may give any)."""
    if os.geteuid() == 0:
        return 65534 if os.getegid() != 65534 else 65533
    others = [g for g in os.getgroups() if g != os.getegid()]
    return others[0] if others else None


def test_files_kept_as_the_tested_layout_says_give_no_warning(tmp_path, certs):
    prof, path = _curve_profile(tmp_path, certs)
    secret = certs["keys"] / "server.key_secret"
    for profile_mode, secret_mode in ((0o640, 0o600), (0o644, 0o640), (0o600, 0o400), (0o444, 0o440)):
        path.chmod(profile_mode)
        secret.chmod(secret_mode)  # group-readable: by the daemon's own group (root:linewatch 0640)
        assert file_mode_warnings(prof, path) == [], (oct(profile_mode), oct(secret_mode))


@pytest.mark.parametrize(("mode", "problem"), [
    (0o644, "readable by any user"), (0o604, "readable by any user"), (0o602, "writable by any user"),
    (0o660, "writable by group"), (0o666, "readable by any user; writable by any user; writable by group"),
])
def test_a_secret_key_others_can_read_or_write_is_a_warning_naming_the_file_and_its_mode(tmp_path, certs, mode,
                                                                                           problem):
    prof, path = _curve_profile(tmp_path, certs)
    secret = certs["keys"] / "server.key_secret"
    secret.chmod(mode)
    (w,) = file_mode_warnings(prof, path)
    assert (w.file, w.what, w.mode) == (str(secret), "the CURVE secret key", f"{mode:04o}")
    assert w.problem.startswith(problem) and "chmod 0600" in w.fix


def test_a_secret_key_readable_by_a_group_that_is_not_the_daemons_is_a_warning(tmp_path, certs):
    gid = _other_gid()
    if gid is None:
        pytest.skip("this user has no second group to give the key file")
    prof, path = _curve_profile(tmp_path, certs)
    secret = certs["keys"] / "server.key_secret"
    secret.chmod(0o640)
    assert file_mode_warnings(prof, path) == []
    os.chown(secret, -1, gid)
    (w,) = file_mode_warnings(prof, path)
    assert w.file == str(secret) and w.mode == "0640" and "which is not the daemon's group" in w.problem


@pytest.mark.parametrize(("mode", "problem"), [(0o664, "writable by group"), (0o646, "writable by any user"),
                                               (0o666, "writable by any user and group")])
def test_a_profile_others_can_write_is_a_warning_naming_it_and_its_mode(tmp_path, certs, mode, problem):
    prof, path = _curve_profile(tmp_path, certs)
    path.chmod(mode)
    (w,) = file_mode_warnings(prof, path)
    assert (w.file, w.what, w.mode) == (str(path), "the station profile", f"{mode:04o}")
    assert w.problem.startswith(problem) and w.fix == f"chmod go-w {path}"


def test_a_clients_folder_or_client_key_others_can_write_is_a_warning(tmp_path, certs):
    prof, path = _curve_profile(tmp_path, certs)
    clients = certs["clients"]
    clients.chmod(0o777)
    (clients / "plc.key").chmod(0o666)
    got = [(w.file, w.mode, w.what) for w in file_mode_warnings(prof, path)]
    assert got == [(str(clients), "0777", "the CURVE clients directory"),
                   (str(clients / "plc.key"), "0666", "a CURVE client key")]


def test_the_daemon_logs_every_unsafe_file_mode_at_start_and_starts_all_the_same(tmp_path, certs):
    prof, path = _curve_profile(tmp_path, certs)
    path.chmod(0o666)
    (certs["keys"] / "server.key_secret").chmod(0o644)
    d, log = _start(prof, path, sources=[])
    _stop(d)
    warned = {kw["file"]: kw for level, event, kw in log.events if event == "unsafe_file_mode" and level == "warning"}
    assert set(warned) == {str(path), str(certs["keys"] / "server.key_secret")}
    assert warned[str(path)]["mode"] == "0666" and warned[str(certs["keys"] / "server.key_secret")]["mode"] == "0644"
    assert "publisher_bound" in log.names()  # a warning, not a refusal
