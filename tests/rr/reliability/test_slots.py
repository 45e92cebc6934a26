"""Connection slots: released by whoever observes a connection's end (issue 13, defect 1).

A connection process killed before it runs a single line never reaches its own
``finally``; once ``max_clients`` such slots leaked, a listener refused every
client forever. The connection supervisor sees every end and gives the slot back.
"""

from __future__ import annotations

import gevent.event

import supervisors
from rr import listener as rr_listener
from rr import resp
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
