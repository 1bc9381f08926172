"""Security (docs/reliability-security.md): CURVE refuses an unknown client key and says so in the log (once a
minute per key); an endpoint bound beyond loopback without CURVE is a warning at start; a profile others can
write and a CURVE secret key others can read are warnings naming the file and its mode; nothing in linewatch
executes what a profile says (strings that look like code stay strings, or are refused).

Each daemon here runs in-process on the fake engine (tests/fakes.py) with the profile's own publisher, so the
real CurveServer, ZAP authenticator and bind are what is tested.
"""

from __future__ import annotations

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
