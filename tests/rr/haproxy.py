"""HAProxy (Debian's ``haproxy``) started by a test, in front of rr.

``start(config, frontends=n)`` binds ``n`` listening sockets on ephemeral
loopback ports here, hands them to HAProxy as ``fd@N`` (so no port is
guessed and no connection races HAProxy's start: the kernel queues them
until HAProxy accepts), checks the configuration with ``haproxy -c`` first
(a mistake fails the test at once, not as a client timeout), and runs HAProxy
in the foreground. The config is a ``str.format`` template: ``{fe0}``,
``{fe1}``... are the frontends' bind addresses, ``{stats}`` an admin socket
path for runtime commands (``HAProxy.command``).

Everything here is a test helper: it starts only HAProxy and ends only the
process it started.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gevent import socket as gsocket
from gevent import subprocess

BINARY = shutil.which("haproxy") or "/usr/sbin/haproxy"

GLOBAL = """\
global
    maxconn 256
    stats socket {stats} mode 600 level admin
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout check 2s
"""


class HAProxy:
    def __init__(self, proc: subprocess.Popen, ports: list[int], stats: str) -> None:
        self.proc = proc
        self.ports = ports
        self.stats = stats

    def command(self, line: str) -> str:
        """One runtime API command on the admin socket (e.g. ``set server be/rr1 state drain``)."""
        with gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.stats)
            sock.sendall(line.encode() + b"\n")
            parts = []
            while chunk := sock.recv(65536):
                parts.append(chunk)
        return b"".join(parts).decode()


@contextmanager
def start(config: str, directory: Path, frontends: int = 1, ip: str = "127.0.0.1") -> Iterator[HAProxy]:
    socks = []
    for _ in range(frontends):
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((ip, 0))
        sock.listen(128)
        socks.append(sock)
    stats = str(directory / "haproxy.sock")
    text = (GLOBAL + config).format(stats=stats, **{f"fe{i}": f"fd@{s.fileno()}" for i, s in enumerate(socks)})
    path = directory / "haproxy.cfg"
    path.write_text(text)
    fds = [s.fileno() for s in socks]
    check = subprocess.run([BINARY, "-c", "-q", "-f", str(path)], capture_output=True, pass_fds=fds, timeout=30)
    if check.returncode != 0:
        for sock in socks:
            sock.close()
        raise AssertionError(f"haproxy rejected its config:\n{check.stdout.decode()}{check.stderr.decode()}\n{text}")
    proc = subprocess.Popen([BINARY, "-db", "-f", str(path)], pass_fds=fds, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ})
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()  # HAProxy holds its own copy
    try:
        yield HAProxy(proc, ports, stats)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
