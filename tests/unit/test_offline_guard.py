"""The suite's network guard (tests/offline): non-loopback connections fail, in this process and in subprocesses.

192.0.2.1 is TEST-NET-1 (RFC 5737), never routed: the guard raises before any packet would leave.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.offline._airloop_offline import NetworkAccessBlocked

TEST_NET = "192.0.2.1"


def test_a_connection_to_a_non_loopback_address_fails_with_the_guards_error():
    with pytest.raises(NetworkAccessBlocked, match=r"tests are offline: a connection to \('192\.0\.2\.1', 80\)"):
        socket.create_connection((TEST_NET, 80), timeout=2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkAccessBlocked):
        sock.connect_ex((TEST_NET, 443))


def test_a_name_lookup_fails_with_the_guards_error():
    with pytest.raises(NetworkAccessBlocked, match=r"a name lookup of 'pypi\.org'"):
        socket.getaddrinfo("pypi.org", 443)


def _serve_once(server: socket.socket) -> None:
    conn, _ = server.accept()
    conn.sendall(b"ok")
    conn.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_loopback_connections_go_through(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((host if host != "localhost" else "127.0.0.1", 0))
        server.listen(1)
        threading.Thread(target=_serve_once, args=(server,), daemon=True).start()
        with socket.create_connection((host, server.getsockname()[1]), timeout=5) as client:
            assert client.recv(2) == b"ok"


def test_unix_sockets_go_through(tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        threading.Thread(target=_serve_once, args=(server,), daemon=True).start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            assert client.recv(2) == b"ok"


def test_python_subprocesses_started_by_tests_are_guarded_too():
    code = f"import socket; socket.create_connection(({TEST_NET!r}, 80), timeout=2)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode != 0
    assert "NetworkAccessBlocked" in done.stderr and "tests are offline" in done.stderr, done.stderr
