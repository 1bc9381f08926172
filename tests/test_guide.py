"""docs/your-own-line.md cannot rot: its `sh` blocks run, in order, in a fresh folder, on a small
synthetic set in the MVTec AD layout, with a 1-step schedule (the only substitutions: the size of the
demo set, the schedule, a free port, and this Python for `linewatch` / `python`)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "your-own-line.md"


def guide_script() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 7, "the guide lost its command blocks"
    return "\n".join(blocks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_guide_names_every_step() -> None:
    script = guide_script()
    for step in ("data check", "data convert", "linewatch train", "linewatch evaluate", "linewatch export",
                 "linewatch calibrate", "linewatch run", "linewatch subscribe"):
        assert step in script, step


def test_the_guides_commands_run_as_written(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the guide trains and exports (linewatch[train])")
    script = guide_script()
    port = str(free_port())
    subs = [
        ("python scripts/mvtec_demo.py line7 --good 60 --bad 30",
         f"python {ROOT}/scripts/mvtec_demo.py line7 --good 14 --bad 10 --size 128x192"),
        ("--epochs-seg 40 --epochs-cls 20",
         "--epochs-seg 1 --epochs-cls 1 --limit-steps 1 --batch 4 --widths 4,8,8 --class-channels 4 --device cpu"),
        ("5577", port),
    ]
    for old, new in subs:
        assert old in script, f"the guide no longer says {old!r}: update this test's substitutions"
        script = script.replace(old, new)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, target in (("linewatch", f'exec "{sys.executable}" -m linewatch "$@"'),
                         ("python", f'exec "{sys.executable}" "$@"')):
        (bindir / name).write_text(f"#!/bin/sh\n{target}\n")
        (bindir / name).chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "LINEWATCH_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    assert "converted line7 (mvtec)" in r.stdout and "wrote engines/line7.onnx" in r.stdout
    assert r.stdout.count("decision  seq=") == 8
    assert "wrote thresholds anomaly=" in r.stdout
    log = (work / "runs" / "line7" / "daemon.log").read_text()
    assert '"decisions": 30' in log and '"exit_code": 0' in log
