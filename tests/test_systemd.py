"""The systemd units: `systemd-analyze verify` (Debian: `apt-get install -y systemd`) and the directives
the service contract needs (Type=notify, watchdog, SIGTERM drain, SIGHUP reload, hardening)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")


def directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


@pytest.mark.parametrize("name, profile", [("linewatch.service", "/etc/linewatch/station.toml"),
                                           ("linewatch@.service", "/etc/linewatch/%i.toml")])
def test_unit_directives(name, profile):
    d = directives(UNITS / name)
    one = {k: v[-1] for k, v in d.items()}
    assert one["Service.Type"] == "notify" and one["Service.NotifyAccess"] == "main"
    assert one["Service.ExecStart"] == f"/usr/bin/env linewatch run --profile {profile} --log-format json"
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Service.KillSignal"] == "SIGTERM" and one["Service.Restart"] == "on-failure"
    assert int(one["Service.WatchdogSec"]) > 0 and int(one["Service.TimeoutStopSec"]) > 0
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("User", "linewatch"), ("SupplementaryGroups", "video"),
                       ("StateDirectory", "linewatch"), ("CacheDirectory", "linewatch")]:
        assert one[f"Service.{key}"] == value, key
    assert "/var/lib/linewatch" in one["Service.ReadWritePaths"]
    assert one["Install.WantedBy"] == "multi-user.target"


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (Debian: apt-get install -y systemd)")
@pytest.mark.parametrize("name, unit", [("linewatch.service", "linewatch.service"),
                                        ("linewatch@.service", "linewatch@demo.service")])
def test_systemd_analyze_verify(tmp_path, name, unit):
    # Verify a copy: a template is verified through an instance, and the folder holds nothing else.
    # ExecStart is /usr/bin/env (verify checks that the binary exists), present on every Debian.
    shutil.copy(UNITS / name, tmp_path / name)
    r = subprocess.run([ANALYZE, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    # verify exits 0 on directives it could not parse ("..., ignoring"): fail on any line about the unit.
    about_unit = [line for line in out.splitlines() if name in line or unit in line or "ignoring" in line]
    assert r.returncode == 0 and not about_unit, out


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (Debian: apt-get install -y systemd)")
def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt directive value is reported."""
    bad = (UNITS / "linewatch.service").read_text().replace("Type=notify", "Type=notifyy")
    (tmp_path / "linewatch.service").write_text(bad)
    r = subprocess.run([ANALYZE, "verify", str(tmp_path / "linewatch.service")], capture_output=True, text=True,
                       timeout=120)
    assert "notifyy" in r.stdout + r.stderr
