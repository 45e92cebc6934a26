"""Listeners on Unix domain sockets (``unix: "/path"``), checked with ``curl --unix-socket``.

h1 and h2c prior knowledge on one socket, ``req.peer`` is None (a Unix
client has no address), the socket file is removed on stop and on drain
but never when it is no longer the listener's file, a stale file left by a
dead server is replaced, a live server's is not, and the address options
exclude one another at ``start_listener``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from gevent import subprocess

import rr
from rr import resp

pytestmark = pytest.mark.peers("curl")


def _echo(req: rr.Request) -> resp.Response:
    return resp.text(200, f"{req.version} peer={req.peer!r} {req.path}")


def _curl(path: Path, *args: str) -> str:
    out = subprocess.run(["curl", "-s", "--max-time", "10", "--unix-socket", str(path), *args],
                         capture_output=True, timeout=20)
    return out.stdout.decode()


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "rr.sock"


def test_unix_listener_serves_http1_and_h2c_prior_knowledge_and_peer_is_none(sock_path):
    rr.start_listener("unix-both", {"unix": str(sock_path), "routes": _echo, "protocols": ["http1", "http2"]})
    try:
        assert rr.listener_info("unix-both")["address"] == f"unix:{sock_path}"
        assert _curl(sock_path, "http://localhost/a") == "HTTP/1.1 peer=None /a"
        assert _curl(sock_path, "--http2-prior-knowledge", "http://localhost/b") == "HTTP/2 peer=None /b"
    finally:
        rr.stop_listener("unix-both")
    assert not sock_path.exists()


def test_unix_socket_file_is_removed_by_drain(sock_path):
    rr.start_listener("unix-drain", {"unix": str(sock_path), "routes": _echo})
    assert _curl(sock_path, "http://localhost/x") == "HTTP/1.1 peer=None /x"
    assert sock_path.exists()
    rr.drain("unix-drain", 5.0)
    assert not sock_path.exists()


def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(sock_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: what a killed server leaves
    rr.start_listener("unix-stale", {"unix": str(sock_path), "routes": _echo})
    try:
        assert _curl(sock_path, "http://localhost/s") == "HTTP/1.1 peer=None /s"
        with pytest.raises(OSError, match="already listening"):
            rr.start_listener("unix-second", {"unix": str(sock_path), "routes": _echo})
    finally:
        rr.stop_listener("unix-stale")


def test_a_regular_file_at_the_path_is_never_removed(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(OSError, match="not a socket"):
        rr.start_listener("unix-file", {"unix": str(path), "routes": _echo})
    assert path.read_text() == "keep me"


def test_stop_leaves_a_successors_socket_file_alone(sock_path):
    rr.start_listener("unix-old", {"unix": str(sock_path), "routes": _echo})
    os.unlink(sock_path)  # someone moved on: a new server binds the same path
    successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    successor.bind(str(sock_path))
    try:
        rr.stop_listener("unix-old")
        assert sock_path.exists()
    finally:
        successor.close()


@pytest.mark.parametrize(("opts", "named"), [
    ({"unix": "/tmp/x.sock", "port": 0}, "'unix'"),
    ({"unix": "/tmp/x.sock", "ip": "127.0.0.1"}, "'ip'"),
    ({"unix": ""}, "'unix'"),
    ({"unix": "/" + "x" * 200}, "'unix'"),
    ({"socket": "not a socket"}, "'socket'"),
    ({}, "'port' is required"),
])
def test_bad_address_options_fail_at_start_listener_naming_the_option(opts, named):
    with pytest.raises(ValueError, match=named):
        rr.start_listener("unix-bad", {"routes": _echo, **opts})
