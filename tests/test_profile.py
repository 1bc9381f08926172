"""Station profiles: defaults, the shipped examples, and error messages that name key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from linewatch.errors import ProfileError, SettingError
from linewatch.profile import (
    DEFAULT_MODEL,
    ENGINES_DIR,
    SOURCES,
    GenicamCamera,
    ReplayCamera,
    SyntheticCamera,
    default_model,
    default_profile,
    load_profile,
    parse_profile,
)
from linewatch.protocol import DEFAULT_ENDPOINT

REPO = Path(__file__).resolve().parent.parent
MINIMAL = '[[camera]]\nid = "cam0"\nsource = "synthetic"\n'


def err(text: str) -> str:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, name="station.toml")
    msg = str(info.value)
    assert msg.startswith("station.toml: ")
    return msg


def test_minimal_profile_gets_the_defaults():
    p = parse_profile(MINIMAL)
    assert p.station.endpoint == DEFAULT_ENDPOINT and p.station.curve is None
    assert p.model.backend == "auto" and p.model.max_batch == 8 and p.model.threads == 0
    assert p.decision.thresholds.resolve() == (0.7, 0.7)
    assert p.decision.adhesive_rule == "present" and p.decision.deadline_ns == 200_000_000
    assert p.ring.slots == 32
    assert (p.publish.overlay_pass_every, p.publish.heartbeat_s, p.publish.jpeg_quality) == (25, 1.0, 80)
    cam = p.camera[0]
    assert isinstance(cam, SyntheticCamera) and cam.roi is None and cam.count is None
    assert p.camera_ids == ("cam0",)


def test_default_profile_is_the_embedded_demo():
    p = default_profile()
    assert p.station.name == "demo"
    assert [c.source for c in p.camera] == ["synthetic"]
    assert p.model_candidates()[0] == ENGINES_DIR / p.model.path  # the embedded profile lives with the shipped models


@pytest.mark.parametrize("name", ["demo.toml", "viky.toml", "example-station.toml"])
def test_shipped_station_profiles_load(name):
    p = load_profile(REPO / "calib" / name)
    assert p.source_path == str(REPO / "calib" / name)
    assert Path(p.base_dir) == REPO / "calib"


def test_each_source_kind_has_one_camera_model_that_its_tables_validate_as():
    from linewatch.profile import _CAMERA_BY_SOURCE

    models = (GenicamCamera, SyntheticCamera, ReplayCamera)
    assert _CAMERA_BY_SOURCE == dict(zip(SOURCES, models, strict=True))
    for kind, model in zip(SOURCES, models, strict=True):
        extra = {"genicam": '\ncti = "x.cti"', "replay": '\npath = "f"'}.get(kind, "")
        prof = parse_profile(f'[[camera]]\nid = "c"\nsource = "{kind}"{extra}\n')
        assert type(prof.camera[0]) is model
    assert f"missing key 'source' (one of {', '.join(SOURCES)})" in err('[[camera]]\nid = "c"\n')


def test_calib_demo_matches_embedded_demo():
    a, b = load_profile(REPO / "calib" / "demo.toml"), default_profile()
    assert a.model_dump() == b.model_dump()


def test_default_model_is_the_working_directorys_one_model_else_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_model() == ENGINES_DIR / DEFAULT_MODEL
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "a.onnx").write_bytes(b"")
    assert default_model() == Path("engines/a.onnx")
    (tmp_path / "engines" / "b.onnx").write_bytes(b"")
    with pytest.raises(SettingError, match=r"no `model` given and several models in engines/: engines/a.onnx, engines/b"):
        default_model()


def test_all_sources_and_paths(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    text = """
[station]
name = "line-3"
endpoint = "tcp://0.0.0.0:6000"
curve = { secret_key_file = "keys/server.key_secret", authorized_keys_dir = "keys/clients" }
[model]
path = "m.onnx"
backend = "onnxruntime"
max_batch = 4
threads = 2
[[camera]]
id = "top"
source = "genicam"
cti = "/opt/vendor/producer.cti"
device = "SN1234"
roi = [10, 20, 1224, 512]
features = { ExposureTime = 2000.0, PixelFormat = "BayerRG8", ReverseX = true, Width = 1600 }
[[camera]]
id = "replay"
source = "replay"
path = "frames"
loop = true
fps = 10
[decision]
thresholds = { anomaly = 0.55, adhesive = 0.4 }
adhesive_rule = "absent"
deadline_ms = 80
[ring]
slots = 8
"""
    f = tmp_path / "line-3.toml"
    f.write_text(text)
    p = load_profile(f)
    gen, rep = p.camera
    assert isinstance(gen, GenicamCamera) and isinstance(rep, ReplayCamera)
    assert gen.roi == [10, 20, 1224, 512] and gen.features["ExposureTime"] == 2000.0
    assert gen.features["ReverseX"] is True and gen.features["Width"] == 1600
    assert rep.loop and rep.fps == 10.0
    assert p.resolve(rep.path) == tmp_path / "frames"
    assert p.resolve(gen.cti) == Path("/opt/vendor/producer.cti")
    assert p.model_path() == tmp_path / "m.onnx"
    assert p.station.curve is not None and p.resolve(p.station.curve.secret_key_file).parent == tmp_path / "keys"
    assert p.decision.deadline_ns == 80_000_000 and p.decision.adhesive_rule == "absent"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[decision]\nadhesive_rule = "maybe"\n',
         "decision.adhesive_rule = 'maybe': must be one of present, absent, ignore"),
        ("[decision]\ntreshold = 0.5\n",
         "unknown key 'treshold' in [decision]; allowed: thresholds, adhesive_rule, deadline_ms"),
        ("[decision.thresholds]\nanomaly = 1.5\n", "decision.thresholds.anomaly = 1.5: must be a number <= 1"),
        ("[decision.thresholds]\nglue = 0.5\n", "unknown key 'glue' in [decision.thresholds]; allowed: anomaly, adhesive"),
        ('[model]\nbackend = "cuda"\n', "model.backend = 'cuda': must be one of auto, openvino, onnxruntime, tensorrt, torch, null"),
        ('[model]\nmax_batch = "8"\n', "model.max_batch = '8': must be an integer"),
        ("[model]\nmax_batch = 0\n", "model.max_batch = 0: must be a number >= 1"),
        ("[ring]\nslots = 4\n", "ring.slots = 4: must be >= model.max_batch (8)"),
        ("[publish]\njpeg_quality = 101\n", "publish.jpeg_quality = 101: must be a number <= 100"),
        ('[station]\nendpoint = "http://x"\n', "station.endpoint = 'http://x': must be a ZeroMQ endpoint"),
        ("[sation]\nname = 'x'\n", "unknown key 'sation' in the top level; allowed: station, model, camera, decision, ring, publish"),
    ],
)
def test_errors_name_key_value_and_allowed(text, expected):
    assert expected in err(MINIMAL + text)


@pytest.mark.parametrize(
    "camera, expected",
    [
        ('id = "c"\nsource = "webcam"', "camera[0].source = 'webcam': must be one of genicam, synthetic, replay"),
        ('id = "c"', "camera[0]: missing key 'source' (one of genicam, synthetic, replay)"),
        ('id = "c"\nsource = "synthetic"\ncti = "x.cti"',
         "unknown key 'cti' in [[camera]] #0 (camera[0]); allowed: id, roi, source, fps, defect_rate, seed, adhesive_rate, count, pool, corrupt_every"),
        ('id = "c"\nsource = "genicam"', "camera[0].cti: missing (required)"),
        ('id = "c"\nsource = "replay"', "camera[0].path: missing (required)"),
        ('id = "c"\nsource = "synthetic"\nroi = [1, 2, 3]', "camera[0].roi = [1, 2, 3]: must be an array of 4 integers [x, y, w, h]"),
        ('id = "c"\nsource = "synthetic"\nroi = [1, 2, 0, 5]', "camera[0].roi = [1, 2, 0, 5]: width and height"),
        ('id = "c"\nsource = "synthetic"\nroi = [1, -2, 3, 5]', "camera[0].roi[1] = -2: must be a number >= 0"),
        ('id = "c"\nsource = "synthetic"\ndefect_rate = 2.0', "camera[0].defect_rate = 2.0: must be a number <= 1"),
        ('id = "bad id"\nsource = "synthetic"', "camera[0].id = 'bad id': must be letters, digits"),
    ],
)
def test_camera_errors(camera, expected):
    assert expected in err(f"[[camera]]\n{camera}\n")


def test_several_problems_are_all_listed():
    msg = err(MINIMAL + '[decision]\nadhesive_rule = "x"\n[ring]\nslots = 1\n')
    assert "2 problems" in msg and "decision.adhesive_rule" in msg and "ring.slots = 1" in msg


def test_duplicate_camera_ids_and_no_camera():
    assert "camera[1].id = 'cam0': camera ids must be unique" in err(MINIMAL + MINIMAL)
    assert "camera: missing (required)" in err("[ring]\nslots = 8\n")


def test_toml_syntax_and_unreadable_file(tmp_path):
    assert "not valid TOML" in err("[decision\n")
    with pytest.raises(ProfileError, match="cannot read the station profile"):
        load_profile(tmp_path / "missing.toml")


def test_model_not_found_names_the_places(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(MINIMAL + '[model]\npath = "nope.onnx"\n')
    with pytest.raises(ProfileError, match=r"model.path = 'nope.onnx': no such file \(looked in .*nope.onnx, .*engines/nope.onnx\)"):
        load_profile(f).model_path()
