"""A file linewatch replaces is written whole or not at all (`linewatch.atomicfile`), and no module
replaces a text file another way."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from linewatch import atomicfile

ROOT = Path(__file__).resolve().parents[1]

# Writers with their own contract (atomicfile's module doc): binary records, torch checkpoints.
OWN_WRITERS = {"linewatch/atomicfile.py", "linewatch/record/images.py", "linewatch/model/train.py"}


def test_the_text_is_written_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    atomicfile.write_text(p, "one\n")
    atomicfile.write_text(p, "two — ü\n")
    assert p.read_text(encoding="utf-8") == "two — ü\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]


def test_an_existing_file_keeps_its_permission_bits(tmp_path: Path) -> None:
    p = tmp_path / "station.toml"
    p.write_text("old\n")
    p.chmod(0o640)
    atomicfile.write_text(p, "new\n")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_a_new_file_gets_the_mode_open_gives_under_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomicfile.write_text(tmp_path / "new.json", "{}\n")
        (tmp_path / "plain.json").write_text("{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "plain.json").stat().st_mode)


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "m.manifest.json"
    p.write_text("old\n")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomicfile.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        atomicfile.write_text(p, "new\n")
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.manifest.json"]


def test_two_writers_of_one_path_never_share_a_temporary_name(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(Path(src).name)
        real(src, dst)

    monkeypatch.setattr(atomicfile.os, "replace", spy)
    for _ in range(3):
        atomicfile.write_text(tmp_path / "results.json", "{}\n")
    assert len(set(seen)) == 3 and all(n.startswith(".results.json.") and n.endswith(".tmp") for n in seen)


_REPLACE = re.compile(r"os\.replace\(|\.replace\(\s*path\s*\)|\bmkstemp\(")


def test_the_replace_check_finds_a_hand_written_atomic_write() -> None:
    """The check below can fail: it sees the pattern the four former copies used."""
    assert _REPLACE.search('    tmp.write_text(text)\n    tmp.replace(path)\n')
    assert _REPLACE.search('    os.replace(tmp, path)\n')


def test_no_module_replaces_a_file_except_through_atomicfile() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "linewatch").rglob("*.py"))
                 if str(p.relative_to(ROOT)) not in OWN_WRITERS and _REPLACE.search(p.read_text(encoding="utf-8"))]
    assert offenders == [], f"write these through linewatch.atomicfile.write_text: {offenders}"
