"""The independent peers the suite drives, and what happens when one is missing.

A peer is a program rr did not write (curl, nghttp, h2load, wrk, REDbot,
Chromium) that a test uses to talk to rr. ``tools/setup.sh`` installs them
all; a plain ``pytest`` on a machine without them must not go green by
skipping the very tests that check rr against the outside world. So a test
marked ``@pytest.mark.peers("curl", ...)`` *fails* when a named peer is
missing, with a message naming it and where it comes from.

Setting ``RR_ALLOW_MISSING_PEERS=1`` turns those failures into skips, and
the end of the pytest run says how many tests were skipped that way and
for which peers (``tests/conftest.py``'s summary hook), so an opted-out run
never passes for a complete one.

This module only answers "is this peer here?"; it starts no peer.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

ALLOW_MISSING = "RR_ALLOW_MISSING_PEERS"

# One entry per test skipped under ALLOW_MISSING: the peers it lacked.
skipped: list[tuple[str, ...]] = []


@dataclass(frozen=True)
class Peer:
    name: str
    present: Callable[[], bool]
    source: str


def _program(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


def _script(name: str) -> Callable[[], bool]:
    """A console script from a PyPI package: on PATH or beside this interpreter (a venv's bin)."""
    return lambda: script_path(name) is not None


def script_path(name: str) -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or (beside if os.access(beside, os.X_OK) else None)


def _modules(*names: str) -> Callable[[], bool]:
    return lambda: all(importlib.util.find_spec(name) is not None for name in names)


def _node_ws() -> bool:
    """node, and the locked ``ws`` package in tools/bench_ws (``npm ci`` by tools/setup.sh)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return shutil.which("node") is not None and \
        os.path.isfile(os.path.join(root, "tools", "bench_ws", "node_modules", "ws", "package.json"))


def _chromium() -> bool:
    path = os.environ.get("RR_CHROMIUM", "/usr/bin/chromium")
    return os.path.isfile(path) or shutil.which(path) is not None


PEERS = {
    peer.name: peer
    for peer in (
        Peer("curl", _program("curl"), "Debian package 'curl' (tools/apt-packages)"),
        Peer("nghttp", _program("nghttp"), "Debian package 'nghttp2-client' (tools/apt-packages)"),
        Peer("h2load", _program("h2load"), "Debian package 'nghttp2-client' (tools/apt-packages)"),
        Peer("wrk", _program("wrk"), "Debian package 'wrk' (tools/apt-packages)"),
        Peer("haproxy", lambda: shutil.which("haproxy") is not None or os.access("/usr/sbin/haproxy", os.X_OK),
             "Debian package 'haproxy' (tools/apt-packages)"),
        Peer("redbot", _modules("redbot", "httplint"), "PyPI 'redbot' (pyproject.toml test extra)"),
        Peer("chromium", _chromium, "Debian package 'chromium' (tools/apt-packages), or RR_CHROMIUM=<path>"),
        Peer("playwright", _modules("playwright"), "PyPI 'playwright' (pyproject.toml test extra)"),
        Peer("kosoku", _script("kosoku"), "PyPI 'kosoku' (pyproject.toml test extra)"),
        Peer("websockets", _modules("websockets"), "PyPI 'websockets' (pyproject.toml test extra)"),
        Peer("gtlsclient", _program("gtlsclient"), "Debian package 'ngtcp2-client' (tools/apt-packages)"),
        Peer("curl_cffi", _modules("curl_cffi"), "PyPI 'curl_cffi' (pyproject.toml test extra)"),
        Peer("aioquic", _modules("aioquic"), "PyPI 'aioquic' (pyproject.toml http3 extra)"),
        Peer("openssl", _program("openssl"), "Debian package 'openssl' (tools/apt-packages)"),
        Peer("py-spy", _script("py-spy"), "PyPI 'py-spy' (pyproject.toml test and bench extras)"),
        Peer("grpcio", _modules("grpc", "grpc_tools"), "PyPI 'grpcio' and 'grpcio-tools' (pyproject.toml grpc extra)"),
        Peer("starlette", _modules("starlette"), "PyPI 'starlette' (pyproject.toml test and bench extras)"),
        Peer("cc", lambda: shutil.which(os.environ.get("CC") or "cc") is not None,
             "Debian packages 'gcc' and 'libc6-dev' (tools/apt-packages)"),
        Peer("node-ws", _node_ws, "Debian package 'nodejs' (tools/apt-packages) and npm's 'ws' "
                                  "(tools/bench_ws, `npm ci` by tools/setup.sh)"),
    )
}


def missing(names: tuple[str, ...]) -> list[Peer]:
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}: add them to tests/peers.py PEERS")
    return [PEERS[name] for name in names if not PEERS[name].present()]


def require(*names: str) -> None:
    """Fail the running test if a named peer is missing (skip under RR_ALLOW_MISSING_PEERS=1)."""
    absent = missing(names)
    if not absent:
        return
    what = "; ".join(f"{peer.name} (from {peer.source})" for peer in absent)
    if os.environ.get(ALLOW_MISSING) == "1":
        skipped.append(tuple(peer.name for peer in absent))
        pytest.skip(f"missing peer: {what} [{ALLOW_MISSING}=1]")
    pytest.fail(f"missing peer: {what} -- run tools/setup.sh, or set {ALLOW_MISSING}=1 to skip", pytrace=False)
