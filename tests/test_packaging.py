"""Packaging: what the wheel carries and where a station's model is found.

The wheel itself is built and run from a fresh venv outside the checkout by `scripts/wheel_smoke.sh`
(a step of `.ci/run`); these tests check the configuration it is built from and the lookup order.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from linewatch.errors import ProfileError
from linewatch.profile import DEFAULT_MODEL, ENGINES_DIR, default_profile, parse_profile, shipped_dir

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def test_every_subpackage_of_linewatch_is_listed_for_the_wheel() -> None:
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "linewatch").rglob("__init__.py")}
    listed = set(SETUPTOOLS["packages"])
    assert on_disk - listed == set(), "a subpackage the wheel would leave out"
    assert listed - on_disk == {"linewatch.shipped"}


def test_the_wheel_carries_the_shipped_model_and_every_file_it_names() -> None:
    assert SETUPTOOLS["package-dir"]["linewatch.shipped"] == "engines"
    files = SETUPTOOLS["package-data"]["linewatch.shipped"]
    for name in files:
        assert (ROOT / "engines" / name).is_file(), name
    stem = Path(DEFAULT_MODEL).stem
    shipped = {p.name for p in (ROOT / "engines").glob(f"{stem}.*")}
    assert set(files) == shipped, "a file of the shipped model that the wheel would leave out (or a stale entry)"
    import json

    man = json.loads((ROOT / "engines" / f"{stem}.json").read_text())
    named = {man["onnx"], man["weights"], man["int8"]["model"], Path(man["int8"]["model"]).with_suffix(".bin").name}
    assert named <= set(files)


def test_in_a_checkout_the_shipped_models_are_the_repository_engines_folder() -> None:
    assert shipped_dir() == ENGINES_DIR == ROOT / "engines"
    assert default_profile().model_path() == ROOT / "engines" / DEFAULT_MODEL


def profile_in(folder: Path, model: str = "m.onnx", store: str | None = None) -> object:
    text = f'[model]\npath = "{model}"\n' + (f'store = "{store}"\n' if store else "")
    text += '[[camera]]\nid = "c"\nsource = "synthetic"\n'
    return parse_profile(text, name=str(folder / "p.toml"), base_dir=folder, source_path=str(folder / "p.toml"))


def test_a_relative_model_is_looked_for_beside_the_profile_then_in_the_store_then_among_the_shipped(
    tmp_path: Path,
) -> None:
    prof_dir, store = tmp_path / "etc", tmp_path / "store"
    prof_dir.mkdir()
    store.mkdir()
    p = profile_in(prof_dir, store=str(store))
    assert p.model_candidates() == [prof_dir / "m.onnx", store / "m.onnx", ENGINES_DIR / "m.onnx"]
    with pytest.raises(ProfileError, match=r"model.path = 'm.onnx': no such file \(looked in .*etc/m.onnx, .*store/m.onnx"):
        p.model_path()
    (store / "m.onnx").write_bytes(b"store")
    assert p.model_path() == store / "m.onnx"
    (prof_dir / "m.onnx").write_bytes(b"beside")
    assert p.model_path() == prof_dir / "m.onnx"
    shipped = profile_in(prof_dir, model=DEFAULT_MODEL, store=str(store))
    assert shipped.model_path() == ENGINES_DIR / DEFAULT_MODEL
    assert profile_in(prof_dir, store="models").model_candidates()[1] == prof_dir / "models" / "m.onnx"
    assert profile_in(prof_dir).model.store == "/var/lib/linewatch/engines"
    absolute = profile_in(prof_dir, model=str(tmp_path / "x.onnx"))
    assert absolute.model_candidates() == [tmp_path / "x.onnx"]
