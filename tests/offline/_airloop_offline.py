"""The offline guard of the test suite: any connection to a non-loopback address fails, loudly.

Tests must not reach the internet (or any other machine): a test that does is flaky, slow and leaks data. This
module patches ``socket.socket.connect``/``connect_ex`` and ``socket.getaddrinfo`` so that

* connections to 127.0.0.0/8, ::1 (and IPv4-mapped loopback), ``localhost`` and Unix sockets go through, and
* everything else raises :class:`NetworkAccessBlocked`, naming the address and how to fix the test.

It is installed in the pytest process by ``tests/conftest.py`` and, through the ``sitecustomize`` next to it
(conftest puts this folder first on ``PYTHONPATH``), in every Python subprocess the tests start: Airflow and
MLflow servers, CLI calls, task runners (not one started with ``python -E``/``-I`` or with an environment
without ``PYTHONPATH``). Code that does not go through Python's ``socket`` module (libpq in psycopg2, or
non-Python programs such as Postgres and Redis) is not covered; those only get loopback addresses
from the tests. The module has no imports beyond the standard library so that ``sitecustomize`` can load it
before anything else.

pytest-socket does something similar but only inside the pytest process; subprocesses are the point here.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

ENV_SWITCH = "AIRLOOP_TESTS_ALLOW_NETWORK"  # "1" turns the guard off (for a one-off debugging session only)
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_MARK = "_airloop_offline_guard"


class NetworkAccessBlocked(RuntimeError):
    """A test (or code under test) tried to reach a non-loopback address.

    A RuntimeError, not an OSError, on purpose: libraries that quietly treat OSError as "offline, carry on"
    would hide the attempt; this one surfaces it.
    """


def _is_loopback_host(host: Any) -> bool:
    if host is None:  # getaddrinfo(None, port): the local wildcard/loopback, no lookup
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip().rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _is_ip_literal(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _blocked(what: str) -> NetworkAccessBlocked:
    return NetworkAccessBlocked(
        f"airloop's tests are offline: {what} was refused by the test suite's network guard "
        "(tests/offline/_airloop_offline.py). Only loopback (127.0.0.0/8, ::1, localhost) and Unix sockets "
        "are allowed. Start what the test needs on 127.0.0.1 (see tests/support.py and "
        "tests/distributed/services.py), or stop the code under test from calling out."
    )


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family == getattr(socket, "AF_UNIX", object()):
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_loopback_host(host):
        raise _blocked(f"a connection to {address!r}")


def install() -> bool:
    """Patch the socket module (idempotent). Returns False when ``AIRLOOP_TESTS_ALLOW_NETWORK=1`` turned it off."""
    if os.environ.get(ENV_SWITCH) == "1":
        return False
    if getattr(socket.socket.connect, _MARK, False):
        return True
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo
    own_name = socket.gethostname()

    def connect(self: socket.socket, address: Any) -> None:
        _check_address(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check_address(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # A name lookup is itself network traffic (DNS): only loopback names and IP literals resolve. An IP
        # literal needs no lookup; connecting to a non-loopback one is then refused by connect().
        # This machine's own name is looked up locally (/etc/hosts) by some servers (Celery, Airflow).
        if not (_is_loopback_host(host) or _is_ip_literal(host) or host in ("", own_name)):
            raise _blocked(f"a name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    for fn in (connect, connect_ex, getaddrinfo):
        setattr(fn, _MARK, True)
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    return True


def installed() -> bool:
    """Whether the guard is in place in this process."""
    return bool(getattr(socket.socket.connect, _MARK, False) and getattr(socket.getaddrinfo, _MARK, False))
