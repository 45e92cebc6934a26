#!/usr/bin/env python3
"""Open many idle WebSocket sessions against rr (in a subprocess) and record RSS per session.

    .venv/bin/python tools/ws_idle.py 10000            # ws://, no extension offered
    .venv/bin/python tools/ws_idle.py 10000 --deflate  # the client offers permessage-deflate
    .venv/bin/python tools/ws_idle.py 1000 --trace     # + the server's tracemalloc growth, by site

What it does: starts ``tools/ws_idle.py --serve`` (an rr listener on 127.0.0.1,
ephemeral port, a WebSocket handler that does nothing) as a subprocess, raises
both processes' soft fd limit to what N sessions need (never above the hard
limit: the tool refuses instead), warms the server with one session, reads
its VmRSS, opens N sessions in batches (handshake, then one ping answered by a
pong each, so every session is known to be running before the measurement),
reads VmRSS again and prints the difference per session. The sessions then
sit idle; the tool closes them, stops the server and exits. Everything has a
deadline (``--deadline``, 300 s by default): a run that cannot finish fails.

``--trace``: the server runs ``tracemalloc`` and, asked over HTTP
(``GET /stats``), answers the top allocation sites grown since the baseline:
what a session costs, by line. tracemalloc itself takes memory, so RSS of a
traced run is not the number to record.

``measure(n, deflate)`` is what ``tests/rr/ws/test_idle.py`` runs with a smaller N.
"""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import time
from typing import Any

KEY = base64.b64encode(b"idle-sessions-16").decode()
BATCH = 200


def raise_fd_limit(need: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``need`` (if lower), within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"ws_idle: {need} fds needed, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))  # type: ignore[union-attr]


# -- the server (subprocess) --------------------------------------------------------------


class Idle:
    """A session that does nothing: rr answers its pings."""


def serve(n: int, trace: bool) -> None:
    raise_fd_limit(n + 256)
    if trace:
        import tracemalloc

        tracemalloc.start(4)
    import rr
    from rr import resp

    base: list[Any] = []

    def stats() -> bytes:
        import gc
        import tracemalloc

        gc.collect()
        snap = tracemalloc.take_snapshot()
        if not base:
            base.append(snap)
            return b"baseline\n"
        diffs = snap.compare_to(base[0], "traceback")
        total = sum(stat.size_diff for stat in diffs)
        out = [f"traced growth since the baseline: {total} B", "by file of the allocating line:"]
        for stat in snap.compare_to(base[0], "filename")[:12]:
            out.append(f"{stat.size_diff:>12} B {stat.count_diff:>8} blocks  {stat.traceback[0].filename}")
        out.append("by allocating line:")
        for stat in snap.compare_to(base[0], "lineno")[:30]:
            frame = stat.traceback[0]
            out.append(f"{stat.size_diff:>12} B {stat.count_diff:>8} blocks  {frame.filename}:{frame.lineno}")
        out.append("top sites (traceback, oldest frame first):")
        top = diffs[:25]
        for stat in top:
            out.append(f"{stat.size_diff:>12} B {stat.count_diff:>8} blocks")
            out += [f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback]
        return ("\n".join(out) + "\n").encode()

    def routes(req):
        if req.path == "/stats":
            return resp.text(200, stats().decode() if trace else "tracing is off\n")
        return resp.WebSocket(Idle)

    rr.start_listener("idle", {"port": 0, "ip": "127.0.0.1", "max_clients": n + 100,
                               "socket_backlog": 1024, "routes": routes})
    print(f"port {rr.listener_port('idle')}", flush=True)
    rr.wait(drain_timeout=5.0)


# -- the client ---------------------------------------------------------------------------


def _handshake(deflate: bool) -> bytes:
    lines = ["GET /ws HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


PING = struct.pack("!BB", 0x89, 0x81) + b"\0\0\0\0" + b"p"  # masked with a zero key: payload "p"
PONG = b"\x8a\x01p"


def _read_until(sock: socket.socket, end: bytes, deadline: float) -> bytes:
    buf = b""
    while end not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed by the server after {buf!r}")
        buf += chunk
    return buf


def open_sessions(port: int, n: int, deflate: bool, deadline: float) -> list[socket.socket]:
    """Open ``n`` sessions in batches: all handshakes of a batch sent, then all answers read;
    then one ping each, all pongs read."""
    request = _handshake(deflate)
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            batch = []
            for _ in range(min(BATCH, n - len(socks))):
                s = socket.create_connection(("127.0.0.1", port), timeout=max(0.01, deadline - time.monotonic()))
                socks.append(s)
                batch.append(s)
                s.sendall(request)
            for s in batch:
                head = _read_until(s, b"\r\n\r\n", deadline)
                if not head.startswith(b"HTTP/1.1 101"):
                    raise ConnectionError(f"no 101: {head[:200]!r}")
                if deflate and b"permessage-deflate" not in head.lower():
                    raise ConnectionError("permessage-deflate was not negotiated")
            for s in batch:
                s.sendall(PING)
            for s in batch:
                if _read_until(s, PONG, deadline) != PONG:
                    raise ConnectionError("expected exactly one pong")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(socks)} of {n} sessions open at the deadline")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def get(port: int, path: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2].decode()


def measure(n: int, deflate: bool = False, trace: bool = False, deadline_s: float = 300.0) -> dict[str, Any]:
    """Start the server, open ``n`` idle sessions, and return the RSS figures (KiB)."""
    deadline = time.monotonic() + deadline_s
    raise_fd_limit(n + 256)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout whose rr is measured
    # The measured server never runs under coverage (the suite's `patch = subprocess` passes it
    # on through COVERAGE_* variables): its tracer keeps state per greenlet, ~6-10 KiB a session.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    env["PYTHONPATH"] = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    args = [sys.executable, os.path.abspath(__file__), "--serve", str(n)] + (["--trace"] if trace else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, text=True)
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the server did not start: {line!r}")
        port = int(line.split()[1])
        for s in open_sessions(port, 1, deflate, deadline):  # warm-up: imports, first allocations
            s.close()
        if trace:
            get(port, "/stats")  # the baseline snapshot
        before = rss_kib(proc.pid)
        started = time.monotonic()
        socks = open_sessions(port, n, deflate, deadline)
        opened_s = time.monotonic() - started
        after = rss_kib(proc.pid)
        result = {"sessions": n, "deflate": deflate, "rss_before_kib": before, "rss_after_kib": after,
                  "per_session_kib": round((after - before) / n, 2), "open_seconds": round(opened_s, 2)}
        if trace:
            result["trace"] = get(port, "/stats")
        return result
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--serve":
        serve(int(args[1]), "--trace" in args)
        return
    n = int(args[0]) if args and not args[0].startswith("-") else 10_000
    deadline = 300.0
    if "--deadline" in args:
        deadline = float(args[args.index("--deadline") + 1])
    result = measure(n, "--deflate" in args, "--trace" in args, deadline)
    trace = result.pop("trace", None)
    print(json.dumps(result))
    if trace:
        print(trace)


if __name__ == "__main__":
    main()
