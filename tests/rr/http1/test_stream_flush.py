"""A streamed h1 body on plain TCP: bytes wait until the conn process blocks, then go out.

``Http1Conn.hold`` keeps a ``Stream``'s (and a ``Loop``'s) bytes until the
handler next blocks or yields, when a loop callback writes them in one
``send`` (``flush_held``); what the socket does not take is sent by the
socket's write watcher. These tests hold it to what a client must see: every
event before the handler waits for the next, all bytes in order through
partial writes, ``ClientGone`` once the peer is gone, and bounded buffering
against a client that does not read.
"""

from __future__ import annotations

import socket

import gevent
import gevent.event
import gevent.socket
import pytest
from gevent import subprocess

import rr
import supervisors
from rr import resp
from rr.http1 import conn as h1conn

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
SSE = [("content-type", "text/event-stream")]


@pytest.mark.peers("curl")
def test_each_event_reaches_curl_before_the_handler_sends_the_next_after_a_wait(serve):
    """The handler waits, after each event, until curl has printed it: a byte still held
    when the handler blocks would never arrive, and the wait would time out."""
    seen = [gevent.event.Event() for _ in range(3)]
    waited: list[bool] = []

    def run(send):
        for i in range(3):
            send(b"data: %d\n\n" % i)
            waited.append(seen[i].wait(5))
        send(b"", fin=True)

    srv = serve(lambda req: resp.Stream(200, SSE, run))
    curl = subprocess.Popen(["curl", "-sN", "--max-time", "30", srv.url + "/"], stdout=subprocess.PIPE)
    try:
        for i in range(3):
            assert curl.stdout.readline() == b"data: %d\n" % i
            assert curl.stdout.readline() == b"\n"
            seen[i].set()
        assert curl.wait(10) == 0
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.wait()
        curl.stdout.close()
    assert waited == [True, True, True]


def test_a_loop_push_reaches_the_client_before_the_loop_waits_for_its_next_message(serve):
    """A ``Loop`` pushes from its messages and then blocks in ``receive``: each push must be
    on the wire by then (the client's reply drives the next message)."""
    box: dict[str, supervisors.Pid] = {}

    def on_info(msg, push, state):
        push(b"tick %d\n" % msg)
        return resp.STOP if msg == 2 else state

    def looper(req):
        box["pid"] = supervisors.self()
        supervisors.send(box["pid"], 0)
        return resp.Loop(200, SSE, None, on_info)

    srv = serve(looper)
    with srv.connect(timeout=5) as sock:
        sock.sendall(GET)
        data = b""
        for i in range(3):
            while b"tick %d\n" % i not in data:
                data += sock.recv(65536)  # times out (5 s) if the push sat in the conn
            if i < 2:
                supervisors.send(box["pid"], i + 1)
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(65536)
    assert b"transfer-encoding: chunked" in data


def test_bursts_larger_than_the_socket_takes_arrive_whole_and_in_order(serve, monkeypatch):
    """Bursts of 8 MiB, over the 4 MiB tcp_wmem maximum (the hold limit raised so each stays held whole) to a client with a
    small receive buffer: the loop callback's ``send`` takes only part, the write watcher
    sends the rest while the handler is blocked waiting for the client to have it all."""
    monkeypatch.setattr(h1conn, "HOLD_LIMIT", 64 << 20)
    event = b"%07d" + b"x" * 1017 + b"\n"  # 1 KiB, numbered
    per_burst, bursts = 8192, 3
    got_burst = [gevent.event.Event() for _ in range(bursts)]
    waited: list[bool] = []

    def run(send):
        n = 0
        for b in range(bursts):
            for _ in range(per_burst):
                send(event % n)
                n += 1
            waited.append(got_burst[b].wait(10))  # blocks: the burst is flushed from the hub
        send(b"", fin=True)

    srv = serve(lambda req: resp.Stream(200, [("content-type", "text/plain")], run))
    with gevent.socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(15)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(GET)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        parts = [data.split(b"\r\n\r\n", 1)[1]]
        received = len(parts[0])
        framed = len(b"%x\r\n\r\n" % len(event % 0)) + len(event % 0)  # each event is one chunk
        for b in range(bursts):
            while received < (b + 1) * per_burst * framed:
                parts.append(sock.recv(65536))
                assert parts[-1], "closed early"
                received += len(parts[-1])
            got_burst[b].set()
        while not b"".join(parts[-2:]).endswith(b"\r\n0\r\n\r\n"):
            parts.append(sock.recv(65536))
            assert parts[-1], "closed early"
    body, payload, at = b"".join(parts), bytearray(), 0
    while True:
        eol = body.index(b"\r\n", at)
        size = int(body[at:eol], 16)
        if not size:
            break
        payload += body[eol + 2:eol + 2 + size]
        at = eol + 4 + size
    assert waited == [True] * bursts
    assert bytes(payload) == b"".join(event % i for i in range(bursts * per_burst))


def test_a_peer_that_closes_mid_stream_ends_the_handler_with_client_gone(serve):
    """The client reads one event and resets the connection; the handler, yielding between
    sends (so its bytes are flushed from the hub), gets ``ClientGone`` (not 100,000 sends into the void)."""
    outcome: dict[str, object] = {}
    done = gevent.event.Event()

    def run(send):
        try:
            for i in range(100_000):
                send(b"data: %d\n\n" % i)
                gevent.sleep(0)
            outcome["result"] = "never told"
        except rr.ClientGone:
            outcome["result"] = "gone"
            outcome["sends"] = i
            raise
        finally:
            done.set()

    srv = serve(lambda req: resp.Stream(200, SSE, run))
    sock = srv.connect(timeout=5)
    sock.sendall(GET)
    data = b""
    while b"data: 0" not in data:
        data += sock.recv(65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    sock.close()
    assert done.wait(10)
    assert outcome["result"] == "gone", outcome


def test_a_client_that_never_reads_blocks_the_handler_at_the_hold_limit(serve):
    """Held bytes are bounded: at HOLD_LIMIT a send writes them itself and waits for the
    socket, so a handler that never blocks is stopped by a client that never reads
    (``request_timeout`` → ``ClientGone``) after the kernel's buffers and at most
    HOLD_LIMIT more, not after it has buffered all it wanted to send."""
    event = b"y" * 1024
    outcome: dict[str, object] = {}
    done = gevent.event.Event()

    def run(send):
        sent = 0
        try:
            while sent < 96 << 20:
                send(event)
                sent += len(event)
        except rr.ClientGone:
            outcome["result"] = "gone"
            raise
        finally:
            outcome["sent"] = sent
            done.set()

    srv = serve(lambda req: resp.Stream(200, [("content-type", "text/plain")], run), request_timeout=1)
    with srv.connect(timeout=5) as sock:
        sock.sendall(GET)
        assert done.wait(20)  # never reading
    assert outcome.get("result") == "gone", outcome
    # loopback's kernel buffers (tcp_wmem / tcp_rmem maxima: 4 + 32 MiB here) plus HOLD_LIMIT
    assert outcome["sent"] < 64 << 20, outcome


def test_bytes_held_when_the_conn_is_killed_still_get_one_attempt(serve):
    """A kill issued while the handler was woken but had not run yet: its delivery is
    queued before the flush of what the handler then sends, so the process dies with the
    event held, and ``serve`` ends with one non-blocking write of it — the client still
    reads it before the close."""
    go = gevent.event.Event()
    box: dict[str, supervisors.Pid] = {}

    def run(send):
        box["pid"] = supervisors.self()
        send(b"data: first\n\n")
        go.wait(5)
        send(b"data: last words\n\n")
        gevent.sleep(0)  # the kill lands here, before the flush callback queued after it
        send(b"data: never\n\n")

    srv = serve(lambda req: resp.Stream(200, SSE, run))
    with srv.connect(timeout=5) as sock:
        sock.sendall(GET)
        data = b""
        while b"data: first" not in data:
            data += sock.recv(65536)
        go.set()  # wakes the handler on the loop's next turn...
        supervisors.exit(box["pid"], "kill")  # ...and the kill is queued right behind it
        while chunk := sock.recv(65536):
            data += chunk
    assert b"data: last words" in data and b"never" not in data, data
