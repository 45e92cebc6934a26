"""Connection slots: released by whoever observes a connection's end (issue 13, defect 1).

A connection process killed before it runs a single line never reaches its own
``finally``; once ``max_clients`` such slots leaked, a listener refused every
client forever. The connection supervisor sees every end and gives the slot back.
"""

from __future__ import annotations

import gevent.event

import supervisors
from rr import listener as rr_listener
from rr import resp, telemetry
from tests.rr.conftest import read_response


def test_connection_processes_killed_before_they_run_give_their_slot_back(serve, monkeypatch):
    original = rr_listener._start_conn
    killed = []
    done = gevent.event.Event()

    def start_and_kill(runtime, sock, peer):
        pid = original(runtime, sock, peer)
        if len(killed) < 5:
            supervisors.exit(pid, "kill")  # dies before its first line: no finally runs
            killed.append(pid)
            if len(killed) == 5:
                done.set()
        return pid

    monkeypatch.setattr(rr_listener, "_start_conn", start_and_kill)
    srv = serve(lambda req: resp.text(200, "ok"), max_clients=3)
    for _ in range(5):  # more than max_clients: every slot would leak without the fix
        with srv.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(10)
            try:  # closed (or reset, the request unread): its process never ran
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
    assert done.wait(10)
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    assert srv.info()["rejected"] == 0


def test_an_h2_connection_that_never_sends_its_preface_is_closed_at_first_byte_timeout(serve):
    srv = serve(lambda req: resp.text(200, "ok"), protocols=["http2"], first_byte_timeout=0.3)
    reasons = []
    done = gevent.event.Event()
    telemetry.attach("fbt-h2", ("rr", "conn", "close"),
                     lambda e, m, md, c: (reasons.append((md["reason"], m["duration"])), done.set()))
    try:
        with srv.connect() as sock:
            sock.settimeout(10)
            data = b""
            while chunk := sock.recv(65536):  # the server's SETTINGS, then GOAWAY and the close
                data += chunk
        assert done.wait(10)
    finally:
        telemetry.detach("fbt-h2")
    assert reasons[0][0] == "first_byte_timeout" and reasons[0][1] < 3, reasons
    assert data[3] == 0x4 and b"\x07" in data[9:]  # SETTINGS first; a GOAWAY frame follows


def test_at_the_cap_the_oldest_idle_keep_alive_connection_makes_room(serve):
    srv = serve(lambda req: resp.text(200, "ok"), max_clients=2)
    idle = [srv.connect(), srv.connect()]
    try:
        for sock in idle:  # each served one request, now idle between requests
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0].startswith(b"HTTP/1.1 200")
        with srv.connect() as third:
            third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head, body = read_response(third)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        info = srv.info()
        assert info["evicted"] == 1 and info["rejected"] == 0
        idle[0].settimeout(10)
        assert idle[0].recv(100) == b""  # the oldest was closed (cleanly: it lingered)
    finally:
        for sock in idle:
            sock.close()


def test_over_the_cap_with_no_idle_connection_a_client_gets_503_and_retry_after(serve):
    release = gevent.event.Event()
    entered = gevent.event.Event()

    def busy(req):
        entered.set()
        release.wait(10)
        return resp.text(200, "done")

    srv = serve(busy, max_clients=1)
    with srv.connect() as first:
        first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(10)
        with srv.connect() as second:
            second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_response(second)
        assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in head
        assert head.endswith(b"\r\nconnection: close")
        release.set()
        assert read_response(first)[1] == b"done"
    assert srv.info()["rejected"] == 1
