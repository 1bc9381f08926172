"""A file linewatch replaces is written whole or not at all (`linewatch.atomicfile`), and no module
replaces a text file another way."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from linewatch import atomicfile

ROOT = Path(__file__).resolve().parents[1]


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


def test_a_symlinked_file_has_its_target_replaced_and_the_link_kept(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "station.toml"
    target.write_text("old\n")
    link = tmp_path / "station.toml"
    link.symlink_to(target)
    atomicfile.write_text(str(link), "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    assert sorted(x.name for x in (tmp_path / "real").iterdir()) == ["station.toml"]


def test_new_contents_are_never_more_readable_than_the_old_file(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "station.toml"
    p.write_text("old\n")
    p.chmod(0o644)
    modes: list[int] = []
    real = os.fchmod

    def spy(fd: int, mode: int) -> None:  # the temporary file as created, before it gets the old mode
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real(fd, mode)

    monkeypatch.setattr(atomicfile.os, "fchmod", spy)
    old = os.umask(0o000)
    try:
        atomicfile.write_bytes(p, b"secret\n")
    finally:
        os.umask(old)
    assert modes == [0o600] and p.read_bytes() == b"secret\n" and stat.S_IMODE(p.stat().st_mode) == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file to another owner")
def test_a_file_written_by_root_keeps_its_owner_and_group(tmp_path: Path) -> None:
    """A profile root:linewatch 0640 that calibrate (as root) rewrites stays readable by the daemon's user."""
    p = tmp_path / "station.toml"
    p.write_text("old\n")
    os.chown(p, 4321, 4322)
    p.chmod(0o640)
    atomicfile.write_text(p, "new\n")
    st = p.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4322, 0o640)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file to another group")
def test_a_group_that_cannot_be_kept_gets_no_access_rather_than_another_group_getting_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "station.toml"
    p.write_text("old\n")
    os.chown(p, os.geteuid(), 4322)
    p.chmod(0o640)

    def refused(fd: int, uid: int, gid: int) -> None:  # as for a writer outside that group
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(atomicfile.os, "fchown", refused)
    atomicfile.write_text(p, "new\n")
    st = p.stat()
    assert st.st_gid != 4322 and stat.S_IMODE(st.st_mode) == 0o600 and p.read_text() == "new\n"


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


RENAMERS = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move")}
MAKERS = {"mkstemp", "NamedTemporaryFile"}


def hand_written_renames(source: str) -> list[tuple[str, int]]:
    """(enclosing function, line) of each call that renames or stages a file by hand: `os.replace`,
    `os.rename`, `shutil.move` (also imported bare), a one-argument `.replace(x)` / `.rename(x)` (a Path's; a
    str's takes two), `mkstemp`, `NamedTemporaryFile`."""
    found: list[tuple[str, int]] = []
    tree = ast.parse(source)
    bare = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            for a in n.names if (n.module, a.name) in RENAMERS}
    alias = {a.asname or a.name: a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else func
            if isinstance(child, ast.Call):
                f = child.func
                if isinstance(f, ast.Attribute):
                    owner = f.value.id if isinstance(f.value, ast.Name) else ""
                    owner = alias.get(owner, owner)
                    one_arg = (len(child.args) == 1 and not child.keywords) or (
                        not child.args and [k.arg for k in child.keywords] == ["target"])
                    if ((owner, f.attr) in RENAMERS or f.attr in MAKERS
                            or (f.attr in ("replace", "rename") and one_arg and owner != "dataclasses")):
                        found.append((func, child.lineno))
                elif isinstance(f, ast.Name) and (f.id in bare or f.id in MAKERS):
                    found.append((func, child.lineno))
            visit(child, name)

    visit(ast.parse(source), "<module>")
    return found


# The two writers with their own contract (module doc of linewatch.atomicfile), by file and function.
OWN_WRITERS = {("linewatch/atomicfile.py", "write_bytes"), ("linewatch/record/images.py", "_write_whole")}


def test_the_rename_check_finds_every_hand_written_atomic_write() -> None:
    """The check below can fail: it sees the ways a file can be replaced by hand, and not a str's replace."""
    for src in ("def f(path):\n    tmp.write_text(t)\n    tmp.replace(path)\n",
                "def f(p):\n    tmp.replace(self.dest)\n", "def f():\n    os.replace(a, b)\n",
                "def f():\n    os.rename (a, b)\n", "def f():\n    shutil.move(a, b)\n",
                "import os as _os\ndef f():\n    _os.replace(a, b)\n", "def f():\n    tmp.replace(target=d)\n",
                "from os import replace\ndef f():\n    replace(a, b)\n", "def f():\n    p.rename(q)\n",
                "def f():\n    fd, t = tempfile.mkstemp()\n",
                "def f():\n    t = tempfile.NamedTemporaryFile(delete=False)\n"):
        assert hand_written_renames(src) == [("f", src.count("\n"))], src
    assert hand_written_renames('def f():\n    s.replace("a", "b")\n    dataclasses.replace(c, x=1)\n'
                                '    # os.replace(tmp, path) in a comment\n') == []


def test_no_module_replaces_a_file_except_through_atomicfile() -> None:
    offenders = []
    for p in sorted((ROOT / "linewatch").rglob("*.py")):
        rel = str(p.relative_to(ROOT))
        offenders += [f"{rel}:{line} ({func})" for func, line in hand_written_renames(p.read_text(encoding="utf-8"))
                      if (rel, func) not in OWN_WRITERS]
    assert offenders == [], f"write these through linewatch.atomicfile: {offenders}"
