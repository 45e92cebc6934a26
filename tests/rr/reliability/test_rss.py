"""The zero-window attack, measured as an attacker sees it (issue 13, defect 3): the
server's resident memory.

Before: 200 h2 connections x 100 streams asking for 64 KiB each, reading nothing and
opening no window, held +1.3 GiB for the 30 s stall timeout. The server runs in its own
process (``rss_server``) so its RSS is its own; the clients are the ``h2`` library's
state machine over raw sockets. The bound is computed from the options: what the
connections may queue (``send_budget`` each) plus a measured per-stream and per-connection
cost of the processes and state that serve them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import h2.config
import h2.connection
import h2.settings
import pytest
from gevent import socket as gsocket

from rr.stream import CHUNK

pytestmark = pytest.mark.slow

CONNS = 40
STREAMS = 100  # the default http2.max_concurrent_streams
BODY = 65536
BUDGET = 256 * 1024  # send_budget, below 100 x one chunk, so the budget is what binds
# What a live stream costs besides its queued bytes (its worker process, Request, stream
# state, its greenlet's saved stack) and what a connection costs (its process, reader,
# buffers): ~26 KiB a stream all told, measured on CPython 3.11 with gevent 24 (the
# connections' share included). Without the budget each stream would add its queued chunk
# (16 KiB; 32 KiB before issue 13), which this bound does not leave room for.
PER_STREAM = 32 * 1024
PER_CONN = 128 * 1024
DEADLINE = 25.0


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.loads(r.read())


def _attacker(port: int) -> gsocket.socket:
    """One connection: a zero initial window, STREAMS requests for BODY bytes, nothing read."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0,
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: STREAMS})
    conn.initiate_connection()
    for i in range(STREAMS):
        conn.send_headers(2 * i + 1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                                      (":path", f"/bytes/{BODY}")], end_stream=True)
    sock = gsocket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(conn.data_to_send())
    return sock


@pytest.fixture
def server():
    opts = {"http2": {"send_budget": BUDGET}, "max_concurrent_requests": CONNS * STREAMS}
    proc = subprocess.Popen([sys.executable, "-m", "tests.rr.reliability.rss_server", json.dumps(opts)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ})
    try:
        port = int(proc.stdout.readline())
        yield proc, port
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_zero_window_streams_on_many_connections_hold_memory_bounded_by_the_options(server):
    proc, port = server
    for _ in range(3):  # warm the code paths (imports, caches) before the baseline
        _status(port)
    before = _rss(proc.pid)
    started = time.monotonic()
    socks = [_attacker(port) for _ in range(CONNS)]
    try:
        peak = 0
        while True:  # every stream admitted and every connection's budget filled
            status = _status(port)
            peak = max(peak, _rss(proc.pid))
            if status["live_streams"] == CONNS * STREAMS and status["credited"] > CONNS * (BUDGET - CHUNK):
                break
            assert time.monotonic() - started < DEADLINE, status
            time.sleep(0.1)
        for _ in range(10):  # and it stays there
            status = _status(port)
            assert status["credited"] <= CONNS * BUDGET, status
            peak = max(peak, _rss(proc.pid))
            time.sleep(0.05)
    finally:
        for sock in socks:
            sock.close()
    grown = peak - before
    bound = CONNS * BUDGET + CONNS * STREAMS * PER_STREAM + CONNS * PER_CONN
    print(f"RSS grew {grown / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB, "
          f"queued {status['queued'] / 2**20:.1f} MiB")
    assert status["queued"] <= CONNS * BUDGET
    assert grown <= bound, f"RSS grew {grown / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB"
