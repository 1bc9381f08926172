"""What a station exposes, checked at start: warnings the daemon logs, never a refusal.

- `exposed(endpoint)`: True when a bound ZeroMQ endpoint can be reached from beyond this host. `ipc://` and
  `inproc://` cannot; `tcp://` can unless its address is a loopback one (127.0.0.0/8, ::1, `localhost`,
  the interface `lo`). `*`, `0.0.0.0`, `::`, an interface name or any other address count as exposed. The
  daemon passes the endpoint as bound (ZeroMQ's `LAST_ENDPOINT`: `tcp://*:5555` reads `tcp://0.0.0.0:5555`,
  `tcp://lo:5555` reads `tcp://127.0.0.1:5555`). Without CURVE, whoever reaches an exposed endpoint reads
  every decision: the daemon logs `endpoint_exposed_without_curve` naming it.
- `file_mode_warnings(profile, profile_path)`: the files whose mode lets someone other than the daemon
  read its secret or change what it decides, one `FileModeWarning` each (the daemon logs `unsafe_file_mode`):

  | file | warned when | why |
  |---|---|---|
  | the station profile | writable by its group or by others | it sets thresholds, the model and the GenTL producer (a shared library) the daemon loads |
  | `curve.secret_key_file` | readable or writable by others; writable by its group; readable by a group that is not the daemon's own | whoever reads it can pose as this publisher and decrypt the traffic |
  | `curve.authorized_keys_dir` and its `*.key` files | writable by their group or by others | whoever writes there authorizes any subscriber |

  A profile readable by others is not warned about: it holds no secret (the key file does). The tested
  layout (docs/operations.md) is root:linewatch 0640 for profiles and keys, which passes.

These are warnings, not refusals: a station that ran yesterday must not stay down after a restart because
a file mode is wider than it should be. Files that do not exist are skipped (starting fails on them, with
its own message).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from linewatch.profile import Profile

LOOPBACK_NAMES = ("localhost", "lo")
"""Host parts of a tcp endpoint that are loopback by name (`lo` is the loopback interface)."""


def exposed(endpoint: str) -> bool:
    """True when `endpoint` (as bound) can be reached from beyond this host (module doc)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return False
    if scheme != "tcp":
        return True  # a transport linewatch does not bind (pgm, ws ...): not known to stay on this host
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return True  # '*', an interface name (eth0) or a host name: beyond loopback as far as one can tell
    mapped = getattr(ip, "ipv4_mapped", None)
    return not (ip.is_loopback or (mapped is not None and mapped.is_loopback))


@dataclass(frozen=True, slots=True)
class FileModeWarning:
    """One file whose mode is wider than it should be."""

    file: str
    what: str
    """What the file is ("the station profile", "the CURVE secret key" ...)."""
    mode: str
    """Its permission bits in octal, e.g. "0644"."""
    problem: str
    """Who can do what, e.g. "readable by any user"."""
    why: str
    fix: str

    def fields(self) -> dict[str, str]:
        """The log line's fields."""
        return {"file": self.file, "what": self.what, "mode": self.mode, "problem": self.problem, "why": self.why,
                "fix": self.fix}


def _group_name(gid: int) -> str:
    try:
        import grp

        return f"'{grp.getgrgid(gid).gr_name}'"
    except (ImportError, KeyError):
        return str(gid)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _writable(path: Path, what: str, why: str) -> list[FileModeWarning]:
    """A warning when `path` is writable by its group or by others."""
    st = _stat(path)
    if st is None:
        return []
    mode = stat.S_IMODE(st.st_mode)
    who = [w for bit, w in ((stat.S_IWOTH, "any user"), (stat.S_IWGRP, f"group {_group_name(st.st_gid)}"))
           if mode & bit]
    if not who:
        return []
    return [FileModeWarning(str(path), what, f"{mode:04o}", "writable by " + " and ".join(who), why,
                            f"chmod go-w {path}")]


def _secret(path: Path) -> list[FileModeWarning]:
    """A warning when the CURVE secret key can be read or written by anyone but the daemon (module doc)."""
    st = _stat(path)
    if st is None:
        return []
    mode = stat.S_IMODE(st.st_mode)
    group = _group_name(st.st_gid)
    problems: list[str] = []
    if mode & stat.S_IROTH:
        problems.append("readable by any user")
    if mode & stat.S_IWOTH:
        problems.append("writable by any user")
    if mode & stat.S_IWGRP:
        problems.append(f"writable by group {group}")
    if mode & stat.S_IRGRP and st.st_gid != os.getegid():
        problems.append(f"readable by group {group}, which is not the daemon's group")
    if not problems:
        return []
    return [FileModeWarning(str(path), "the CURVE secret key", f"{mode:04o}", "; ".join(problems),
                            "whoever reads it can pose as this station's publisher and decrypt its traffic",
                            f"chmod 0600 {path} (or 0640 with the daemon's group, docs/operations.md)")]


def file_mode_warnings(profile: Profile, profile_path: str | Path | None) -> list[FileModeWarning]:
    """The profile's and its CURVE files' mode problems (module doc); [] when there are none."""
    out: list[FileModeWarning] = []
    if profile_path is not None:
        out += _writable(Path(profile_path), "the station profile",
                         "whoever can write it sets the thresholds, the model and the GenTL producer (a shared "
                         "library) the daemon loads")
    curve = profile.station.curve
    if curve is not None:
        out += _secret(profile.resolve(curve.secret_key_file))
        if curve.authorized_keys_dir:
            folder = profile.resolve(curve.authorized_keys_dir)
            why = "whoever can write there authorizes any subscriber"
            out += _writable(folder, "the CURVE clients directory", why)
            if folder.is_dir():
                for key in sorted(folder.glob("*.key")):
                    out += _writable(key, "a CURVE client key", why)
    return out
