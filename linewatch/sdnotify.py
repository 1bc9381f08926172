"""The systemd notify protocol (sd_notify(3)) without a dependency.

systemd passes a UNIX datagram socket in `$NOTIFY_SOCKET` (a path, or an abstract-namespace name
starting with '@'); a service of `Type=notify` sends newline-separated `KEY=VALUE` assignments to it:
`READY=1` once it serves, `STATUS=...` free text for `systemctl status`, `WATCHDOG=1` at least every
`$WATCHDOG_USEC` microseconds when the unit has `WatchdogSec=`, `RELOADING=1` / `STOPPING=1`.

Without `$NOTIFY_SOCKET` (not started by systemd) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket
import threading


class Notifier:
    """Sends sd_notify messages; a no-op when `$NOTIFY_SOCKET` is unset.

    `Notifier()` reads the environment; `Notifier(address)` targets a socket explicitly (tests).
    Send errors are counted in `errors`, never raised: systemd going away must not stop the line.
    """

    def __init__(self, address: str | None = None, env: dict[str, str] | None = None) -> None:
        e = os.environ if env is None else env
        self.address = address if address is not None else e.get("NOTIFY_SOCKET") or None
        self.errors = 0
        self.last_error: str | None = None
        self.watchdog_usec = _watchdog_usec(e)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Half of the systemd watchdog timeout (how often to send WATCHDOG=1), or None when off."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            return "\0" + self.address[1:]
        return self.address

    def send(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` assignments in one datagram. True when sent (False when disabled or failed)."""
        if self.address is None or not assignments:
            return False
        for a in assignments:
            if "=" not in a or "\n" in a:
                raise ValueError(f"sd_notify assignment {a!r}: must be KEY=VALUE on one line")
        msg = "\n".join(assignments).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(msg, self._target())
                return True
            except OSError as exc:
                self.errors += 1
                self.last_error = f"{self.address}: {exc}"
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _watchdog_usec(env: os._Environ[str] | dict[str, str]) -> int | None:
    """`$WATCHDOG_USEC` when it is meant for this process (`$WATCHDOG_PID` unset or our pid), else None."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value if value > 0 else None
