"""sd_notify against real UNIX datagram sockets (a path and the abstract namespace)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from linewatch.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping(listener):
    path, sock = listener
    n = Notifier(env={"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("warming done")
    assert recv(sock) == ["READY=1", "STATUS=warming done"]
    assert n.status("ok: 25.0 fps\n3 rejects")  # newlines folded: one assignment per line
    assert recv(sock) == ["STATUS=ok: 25.0 fps 3 rejects"]
    assert n.watchdog()
    assert recv(sock) == ["WATCHDOG=1"]
    assert n.reloading()
    assert recv(sock) == ["RELOADING=1"]
    assert n.stopping()
    assert recv(sock) == ["STOPPING=1"]
    assert n.errors == 0
    n.close()


def test_abstract_namespace():
    name = f"linewatch-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert recv(sock) == ["READY=1"]
    finally:
        sock.close()


def test_disabled_without_socket_is_a_noop():
    n = Notifier(env={})
    assert not n.enabled and n.watchdog_interval_s is None
    assert not n.ready() and not n.watchdog()


def test_send_error_is_counted_not_raised(tmp_path):
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert not n.watchdog()
    assert n.errors == 1 and "nobody-listens.sock" in (n.last_error or "")


def test_bad_assignment_is_refused(listener):
    path, _ = listener
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Notifier(env={"NOTIFY_SOCKET": path}).send("READY")


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(env, expected):
    assert Notifier(env={"NOTIFY_SOCKET": "/x", **env}).watchdog_interval_s == expected
