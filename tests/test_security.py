"""Security (docs/reliability.md): CURVE refuses an unknown client key and says so in the log (once a
minute per key); an endpoint bound beyond loopback without CURVE is a warning at start; a profile others can
write and a CURVE secret key others can read are warnings naming the file and its mode; nothing in linewatch
executes what a profile says (strings that look like code stay strings, or are refused).

Each daemon here runs in-process on the fake engine (tests/fakes.py) with the profile's own publisher, so the
real CurveServer, ZAP authenticator and bind are what is tested.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog
import zmq
import zmq.auth
from fakes import FakeEngine, FakeLog, stub_model
from waiting import wait_until

from linewatch.errors import ProfileError
from linewatch.pipeline.acquire.base import SourceError
from linewatch.pipeline.acquire.replay import ReplaySource
from linewatch.pipeline.daemon import Daemon
from linewatch.pipeline.publish import REFUSED_LOG_KEYS, _CurveClients
from linewatch.profile import ReplayCamera, load_profile, parse_profile
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


def test_a_client_key_file_that_cannot_be_read_fails_start_naming_it_and_an_empty_folder_is_a_warning(tmp_path, certs):
    from linewatch.pipeline.publish import CurveServer, Publisher, PublisherError

    keys, clients = certs["keys"], certs["clients"]
    (clients / "broken.key").write_text("not a certificate")
    with pytest.raises(PublisherError, match=r"CURVE client key file .*broken\.key cannot be read"):
        Publisher("tcp://127.0.0.1:0", "st", curve=CurveServer(keys / "server.key_secret", clients)).start()
    empty = tmp_path / "empty"
    empty.mkdir()
    with structlog.testing.capture_logs() as logs:
        pub = Publisher("tcp://127.0.0.1:0", "st", curve=CurveServer(keys / "server.key_secret", empty)).start()
        pub.stop()
    assert [(e["log_level"], e["clients_dir"]) for e in logs if "no subscriber can connect" in e["event"]] == [
        ("warning", str(empty))]


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


# -- (d) nothing in linewatch executes what a profile says ----------------------------------------------------

MARK = "PWNED"
CODE_LIKE = [
    f"__import__('os').system('touch {MARK}')", "{x}", "{0.__class__.__mro__}", "{station.name}", f"$(touch {MARK})",
    f"`touch {MARK}`", "${HOME}", "%s%s%n", "%(x)s", "%d", f"; touch {MARK}", f"| touch {MARK}", "{{x}}",
    "\\x00 \\n", "exec(open('x').read())",
]
"""Strings a shell, str.format, %-formatting, eval or an f-string would act on."""


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


@pytest.mark.parametrize("text", CODE_LIKE)
def test_profile_strings_that_look_like_code_stay_the_same_strings_or_are_refused(tmp_path, text):
    monkey = tmp_path / "cwd"
    monkey.mkdir()
    v = _toml(text)
    profile = (f'[station]\nendpoint = {_toml("tcp://" + text)}\n'
               f'curve = {{ secret_key_file = {v}, authorized_keys_dir = {v} }}\n'
               f'[model]\npath = {v}\nstore = {v}\n'
               f'[[camera]]\nid = "r"\nsource = "replay"\npath = {v}\n'
               f'[[camera]]\nid = "g"\nsource = "genicam"\ncti = {v}\ndevice = {v}\nfeatures = {{ DeviceUserID = {v} }}\n'
               f'[archive]\ndir = {v}\n')
    cwd = os.getcwd()
    os.chdir(monkey)  # where a shell command of the strings would write its file
    try:
        prof = parse_profile(profile, name="station.toml", base_dir=tmp_path)
        for key in ("name", "id"):  # the keys with a pattern refuse them
            bad = profile.replace('id = "r"', f"id = {v}") if key == "id" else f"[station]\nname = {v}\n" + \
                profile.removeprefix("[station]\n")
            with pytest.raises(ProfileError, match=f"{'camera' if key == 'id' else 'station'}.*{key}"):
                parse_profile(bad, name="station.toml", base_dir=tmp_path)
    finally:
        os.chdir(cwd)
    cam, genicam = prof.camera
    assert prof.station.endpoint == "tcp://" + text
    assert prof.station.curve is not None
    assert prof.station.curve.secret_key_file == prof.station.curve.authorized_keys_dir == text
    assert prof.model.path == prof.model.store == cam.path == genicam.cti == genicam.device == text
    assert genicam.features == {"DeviceUserID": text} and prof.archive is not None and prof.archive.dir == text
    assert prof.resolve(text) == tmp_path / text  # a path joined, nothing expanded
    assert os.listdir(monkey) == [] and not (tmp_path / MARK).exists()


class Spy:
    """Records every call of eval, exec, os.system, os.popen and subprocess.Popen whose arguments hold `needle`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, needle: str) -> None:
        self.calls: list[str] = []
        for owner, name in ((builtins, "eval"), (builtins, "exec"), (os, "system"), (os, "popen"),
                            (subprocess, "Popen")):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), f"{owner.__name__}.{name}", needle))

    def _wrap(self, fn, name: str, needle: str):
        def spy(*args, **kwargs):
            if needle in repr((args, kwargs)):
                self.calls.append(f"{name}{args!r}")
            return fn(*args, **kwargs)

        return spy


def test_a_daemon_on_profile_strings_that_look_like_code_runs_none_of_them(tmp_path, monkeypatch):
    """Every path of the profile (model, replay folder and its image, archive, ipc endpoint) is named with code
    a shell, str.format or eval would run: the daemon uses each as a literal name and runs none."""
    from linewatch.record import read

    spy = Spy(monkeypatch, MARK)
    monkeypatch.chdir(tmp_path)  # where `touch PWNED` would land
    name = f"$(touch {MARK}) `touch {MARK}` {{x}} %s %d __import__('os').system('touch {MARK}')"
    model = stub_model(tmp_path, f"{name}.onnx")
    frames = tmp_path / name
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i} {name}.png"), np.full((32, 48, 3), 40 * i, np.uint8))
    short = Path(tempfile.mkdtemp(prefix="lw-", dir="/tmp"))  # an ipc path must fit in 107 bytes
    sock = short / f"$(touch {MARK}){{x}}%s.sock"
    archive = tmp_path / f"archive {name}"
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\nname = "sec"\nendpoint = {_toml("ipc://" + str(sock))}\n'
                    f'[model]\npath = {_toml(model.name)}\nbackend = "null"\nmax_batch = 4\n'
                    f'[[camera]]\nid = "cam0"\nsource = "replay"\npath = {_toml(name)}\n'
                    f'[archive]\ndir = {_toml(archive.name)}\npass_every = 1\n')
    path.chmod(0o640)
    log = FakeLog()
    d = Daemon(load_profile(path), profile_path=path, log=log)
    try:
        d.start()
        assert sock.exists()  # the socket file under its literal name
        assert d.join(30) == 0  # a finite replay: every camera done
        assert not list(short.rglob(MARK))
    finally:
        d.stop()
        d.join(30)
        shutil.rmtree(short, ignore_errors=True)
    rows = read.query(archive)
    assert [r["frame_id"] for r in rows] == [0, 1, 2] and all(r["decision"] == "pass" for r in rows)
    assert all((archive / r["image"]).is_file() for r in rows)
    assert d.model["path"] == str(model)
    assert spy.calls == []
    assert not list(tmp_path.rglob(MARK)) and not Path(MARK).exists()


def test_a_replay_video_path_with_a_percent_is_refused_not_read_as_a_numbered_sequence(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((24, 32, 3), 60 * i, np.uint8))
    video = tmp_path / "frame%d.png"
    video.write_bytes((tmp_path / "frame1.png").read_bytes())
    cap = cv2.VideoCapture(str(video))  # what OpenCV does with it: frame0, frame1, frame2, not this file
    seen = []
    while (got := cap.read())[0]:
        seen.append(int(got[1].mean()))
    cap.release()
    assert seen == [0, 60, 120]
    with pytest.raises(SourceError, match=r"frame%d\.png.*numbered sequence.*rename it"):
        ReplaySource(ReplayCamera(id="r", path=str(video)))
    plain = ReplaySource(ReplayCamera(id="r", path="frame1.png"), path=Path(os.path.relpath(tmp_path / "frame1.png")))
    assert plain.video is not None and plain.video.is_absolute()  # never read as a protocol (concat:, pipe:)


# the grep-level guard: no code in linewatch evaluates, formats or unpickles what it reads

RUNTIME = ("profile.py", "security.py", "protocol.py", "subscribe.py", "logs.py", "jsonfile.py", "pipeline/", "record/")
"""The modules a profile's strings pass through on their way into the daemon (str.format is checked there)."""
ALLOWED = {
    ("profile.py", "bounds[t].format(**ctx)"): "templates from a literal dict in the function, values from pydantic",
    ("cli/__init__.py", "importlib.import_module(f'linewatch.cli.{module}')"): "module names from the literal COMMANDS",
    ("engines/factory.py", "ctypes.CDLL(lib)"): "library names from a literal tuple",
}
UNPICKLERS = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "yaml"}


def code_execution_sites(source: str, rel: str) -> list[str]:
    """Every place in `source` that could run text as code: eval / exec / compile / __import__, format_map,
    os.system / popen / exec* / spawn*, shell=True, an unpickler or yaml, string.Template, torch.load without
    weights_only=True, a dynamic import or library load, and (in RUNTIME modules) str.format on anything but a
    literal. `ALLOWED` sites are left out."""
    out: list[str] = []
    runtime = rel.startswith(RUNTIME)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in UNPICKLERS for n in names) or (
                    isinstance(node, ast.ImportFrom) and node.module == "string" and "Template" in names):
                out.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
            continue
        if not isinstance(node, ast.Call):
            continue
        call = ast.unparse(node)
        f = node.func
        bad = (isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile", "__import__"))
        if isinstance(f, ast.Attribute):
            owner = ast.unparse(f.value)
            bad = bad or f.attr == "format_map" or (owner == "string" and f.attr == "Template")
            bad = bad or (owner == "os" and (f.attr in ("system", "popen") or f.attr.startswith(("exec", "spawn"))))
            bad = bad or (owner == "importlib" and f.attr == "import_module") or f.attr in ("CDLL", "LoadLibrary")
            bad = bad or (owner == "torch" and f.attr == "load" and not any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords))
            if runtime and f.attr == "format" and not (isinstance(f.value, ast.Constant) and isinstance(f.value.value, str)):
                bad = True
        bad = bad or any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                         for k in node.keywords)
        if bad and not any(rel == r and call.startswith(c) for r, c in ALLOWED):
            out.append(f"{rel}:{node.lineno}: {call[:120]}")
    return out


def test_no_code_in_linewatch_evaluates_formats_or_unpickles_what_it_reads():
    root = Path(__file__).resolve().parent.parent / "linewatch"
    files = sorted(root.rglob("*.py"))
    sites = [s for p in files for s in code_execution_sites(p.read_text(encoding="utf-8"), p.relative_to(root).as_posix())]
    assert len(files) > 80 and sites == []


def test_the_guard_finds_each_way_of_running_text_as_code():
    bad = {
        "eval(text)": 1, "exec(text)": 1, "compile(text, 'p', 'exec')": 1, "__import__(text)": 1,
        "template.format_map(values)": 1, "os.system(text)": 1, "os.popen(text)": 1, "os.execvp(a, b)": 1,
        "subprocess.run(text, shell=True)": 1, "import pickle": 1, "from yaml import load": 1,
        "from string import Template": 1, "string.Template(text)": 1, "torch.load(p)": 1,
        "torch.load(p, weights_only=False)": 1, "importlib.import_module(name)": 1, "ctypes.CDLL(name)": 1,
        "text.format(**values)": 1,
    }
    for code, n in bad.items():
        assert len(code_execution_sites(code, "pipeline/x.py")) == n, code
    assert code_execution_sites("text.format(**values)", "model/x.py") == []  # str.format is checked in RUNTIME only
    fine = ("model.eval()", "'{} of {}'.format(a, b)", "torch.load(p, weights_only=True)", "subprocess.run(['ls'])",
            "subprocess.run(args, shell=False)", "json.loads(text)", "re.compile(text)")
    assert [c for c in fine if code_execution_sites(c, "pipeline/x.py")] == []
