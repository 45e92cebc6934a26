"""Fixtures for rr tests: a listener on an ephemeral loopback port, and clients.

The suite does not monkey-patch: rr must work in an unpatched process. The
server runs in this process's gevent hub, so clients either use gevent
sockets (``raw``), run as subprocesses (curl, wrk, h2load via
``gevent.subprocess``), or run in a real OS thread from gevent's threadpool
(``in_thread``, for blocking clients such as httpx).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
import pytest
from gevent import socket as gsocket

import rr
import supervisors

_names = itertools.count()


class Served:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = rr.listener_port(name)
        self.url = f"http://127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        """``rr.listener_info``, after the connection supervisor handled the exits it has
        already been told of (connection slots are given back there): a call to it is
        answered only after the messages queued before it."""
        conn_sup = rr._runtimes[self.name].conn_sup if self.name in rr._runtimes else None
        if conn_sup is not None and conn_sup.is_alive:
            supervisors.count_children(conn_sup)
        return rr.listener_info(self.name)

    def connect(self, timeout: float = 10.0) -> gsocket.socket:
        sock = gsocket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def exchange(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send ``data``, half-close (shut down our write side: the server reads EOF), and
        read until the server closes."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            sock.shutdown(gsocket.SHUT_WR)
            return read_until_close(sock, timeout)

    def request(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send ``data`` and read until the server closes (without half-closing first)."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            return read_until_close(sock, timeout)


def read_until_close(sock: gsocket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    parts = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


_leftover: dict[int, bytes] = {}


def read_response(sock: gsocket.socket, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """Read one Content-Length-framed response; returns (head, body).

    Bytes past the response (pipelined answers) are kept for the next call on
    the same socket.
    """
    sock.settimeout(timeout)
    buf = _leftover.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    if rest[length:]:
        _leftover[sock.fileno()] = rest[length:]
    return head, rest[:length]


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[str] = []

    def start(handler: Any, **opts: Any) -> Served:
        name = f"test{next(_names)}"
        opts.setdefault("port", 0)
        opts.setdefault("ip", "127.0.0.1")
        rr.start_listener(name, {"routes": handler, **opts})
        started.append(name)
        return Served(name)

    yield start
    _leftover.clear()
    for name in started:
        if name in rr.listeners():
            rr.stop_listener(name)


@pytest.fixture
def tls_files(tmp_path: Any) -> tuple[str, str]:
    """A throwaway certificate and key for 127.0.0.1 (tests.rr.certs.make_cert)."""
    from tests.rr.certs import make_cert

    return make_cert(tmp_path)


@pytest.fixture
def closes() -> Iterator[tuple[list[dict], gevent.event.Event]]:
    """Every ``("rr", "conn", "close")`` event's metadata, and an event set at each one."""
    events: list[dict] = []
    arrived = gevent.event.Event()

    def on_close(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        events.append(dict(metadata))
        arrived.set()

    rr.telemetry.attach("test-conn-close", ("rr", "conn", "close"), on_close)
    yield events, arrived
    rr.telemetry.detach("test-conn-close")


def wait_processes_gone(*labels: str, timeout: float = 10.0) -> None:
    """Wait (on DOWN messages) until every process labelled one of ``labels`` has exited."""
    refs = {supervisors.monitor(p.pid): p.label for p in supervisors.processes() if p.label in labels}
    while refs:
        msg = supervisors.receive(lambda m: type(m) is tuple and len(m) == 4 and m[0] == "DOWN" and m[1] in refs,
                                  timeout)
        refs.pop(msg[1])


def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call in a real OS thread while the hub keeps serving."""
    return gevent.get_hub().threadpool.apply(fn, args, kwargs)


@pytest.fixture(scope="session", autouse=True)
def rr_root_supervisor() -> Iterator[None]:
    """rr's root supervisor lives for the whole process, like an OTP application's:
    start it before the per-test leak baseline is taken."""
    rr._root()
    yield
