"""Memory of idle HTTP/1.1 keep-alive connections on rr: RSS per connection, and what holds it.

    PYTHONPATH=. .venv/bin/python tools/idle_memory.py 10000            # RSS growth per connection
    PYTHONPATH=. .venv/bin/python tools/idle_memory.py 2000 --tracemalloc  # + the top allocation sites

Starts an rr server in a subprocess (hello on ``/``, loopback, an ephemeral
port), reads its RSS (``/proc``), opens N keep-alive connections one after
another with one ``GET /`` each (so every connection has served a request and
waits idle for the next), waits until the server's RSS settles, reads it
again and prints the growth divided by the connections still open. With
``--tracemalloc`` the server traces allocations (``tracemalloc``, 25 frames)
and answers ``/__snapshot`` with the top sites allocated since the first
snapshot, grouped by the innermost rr/supervisors/gevent frame; the RSS
figure of such a run includes tracemalloc's own overhead, so take the RSS
number from a run without it. The client raises its fd limit (and the
server's) up to the hard limit.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

SERVER = r"""
import os, resource, sys, tracemalloc
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
TRACE = os.environ.get("IDLE_TRACEMALLOC") == "1"
if TRACE:
    tracemalloc.start(25)
import rr
from rr import resp

base = None
OURS = ("/rr/", "/supervisors/", "/gevent/", "/greenlet/")


def where(tb):
    for frame in reversed(tb):  # innermost first
        if any(part in frame.filename for part in OURS):
            return f"{frame.filename.split('/site-packages/')[-1].split('/wt-')[-1]}:{frame.lineno}"
    return f"{tb[-1].filename}:{tb[-1].lineno}"


def snapshot(req):
    global base
    snap = tracemalloc.take_snapshot()
    if base is None or req.query_string != "diff":
        base = snap
        return resp.text(200, "baseline")
    sites = {}
    for stat in snap.compare_to(base, "traceback"):
        key = where(stat.traceback)
        size, count = sites.get(key, (0, 0))
        sites[key] = (size + stat.size_diff, count + stat.count_diff)
    n = int(req.header("x-conns") or "1")
    lines = [f"{size / n:9.1f} B/conn {count / n:6.2f} blocks/conn  {key}"
             for key, (size, count) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:30]]
    total = sum(size for size, _ in sites.values())
    lines.append(f"{total / n:9.1f} B/conn total traced")
    return resp.text(200, "\n".join(lines) + "\n")


rr.start_listener("idle", {"port": 0, "ip": "127.0.0.1", "max_clients": 1_000_000,
                           "keep_alive_timeout": 3600, "first_byte_timeout": 60,
                           "routes": [("/", lambda req: resp.text(200, "hello")), ("/__snapshot", snapshot)]})
print(rr.listener_port("idle"), flush=True)
rr.wait()
"""


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def get(port: int, path: str, headers: str = "") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def settle(pid: int, seconds: float = 5.0) -> int:
    """RSS once it stops moving (the server finishes the last connections' work)."""
    last, deadline = rss(pid), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = rss(pid)
        if now == last:
            return now
        last = now
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, help="idle keep-alive connections to hold")
    ap.add_argument("--tracemalloc", action="store_true", help="also print the top allocation sites")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.n + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    if args.n + 64 > want:
        sys.exit(f"fd hard limit {hard} is too low for {args.n} connections")
    env = dict(os.environ, IDLE_TRACEMALLOC="1" if args.tracemalloc else "0")
    # The server runs in a neutral directory so PYTHONPATH (made absolute), not the current
    # directory, decides which rr it imports (for A/B runs of two checkouts).
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, env=env, text=True,
                            cwd=tempfile.gettempdir())
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        get(port, "/")  # warm: first request's imports and caches
        if args.tracemalloc:
            get(port, "/__snapshot")
        before = settle(proc.pid)
        socks = []
        for _ in range(args.n):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            if not s.recv(65536):
                break
            socks.append(s)
        after = settle(proc.pid)
        report = get(port, "/__snapshot?diff", f"x-conns: {len(socks)}\r\n") if args.tracemalloc else b""
        still = 0
        for s in socks:
            s.setblocking(False)
            try:
                still += s.recv(1) != b""
            except BlockingIOError:
                still += 1
        print(f"{still} of {args.n} idle keep-alive connections open; server RSS "
              f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB: {(after - before) / max(still, 1) / 1024:.2f} KiB/conn")
        if report:
            print(report.decode())
        for s in socks:
            s.close()
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
