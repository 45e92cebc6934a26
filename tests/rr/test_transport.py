"""rr.transport, the front door: handshakes that fail, wrong protocols, ends during a Loop.

Each test here is a bug a user found: a failed TLS handshake used to crash the
connection process (a crash report per health check), and stopping a listener
while an HTTP/1.1 ``Loop`` ran made two greenlets read one socket.
"""

from __future__ import annotations

import logging
import socket
import ssl

import gevent
import gevent.event
import pytest
import structlog

import rr
from rr import resp
from tests.rr.conftest import in_thread


def _crash_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]


@pytest.mark.parametrize("client", ["plaintext_request", "connect_and_close", "garbage_hello"])
def test_a_failed_tls_handshake_is_a_close_event_not_a_crash(serve, tls_files, closes, caplog, client):
    certfile, keyfile = tls_files
    srv = serve(lambda req: resp.text(200, "ok"), tls={"certfile": certfile, "keyfile": keyfile},
                tls_handshake_timeout=5.0)
    events, arrived = closes
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        with srv.connect() as sock:
            if client == "plaintext_request":
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.settimeout(5)
                try:
                    sock.recv(100)
                except OSError:
                    pass
            elif client == "garbage_hello":
                sock.sendall(b"\x16\x03\x01\x00\x05hello")
        assert arrived.wait(10)
    assert events[0]["reason"] == "tls_handshake"
    assert _crash_lines(caplog) == []
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")]
    assert srv.info()["active_clients"] == 0
    # and the listener still serves a real TLS client afterwards
    assert in_thread(_tls_get, srv.port, certfile).startswith(b"HTTP/1.1 200")


def _tls_get(port: int, cafile: str) -> bytes:
    """A blocking stdlib TLS client (run in a thread)."""
    ctx = ssl.create_default_context(cafile=cafile)
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
          ctx.wrap_socket(raw, server_hostname="localhost") as tls):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data


def test_stopping_a_listener_during_an_h1_loop_logs_no_crash(serve, caplog):
    started = gevent.event.Event()

    def handler(req):
        def on_info(msg, push, state):
            push(b"tick\n")
            return state

        started.set()
        return resp.Loop(200, [("content-type", "text/plain")], None, on_info)

    srv = serve(handler)
    caplog.set_level(logging.DEBUG)
    sock = srv.connect()
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert started.wait(10)
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        rr.stop_listener(srv.name)
        gevent.sleep(0)  # let the killed processes finish their exits
        sock.settimeout(10)
        while sock.recv(65536):
            pass
    finally:
        sock.close()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "ConcurrentObjectUseError" in m or "crashed" in m], messages


def test_http1_request_to_an_h2_only_port_gets_goaway_protocol_error(serve):
    srv = serve(lambda req: resp.text(200, "ok"), protocols=["http2"])
    data = srv.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # the server's SETTINGS, then GOAWAY (type 7) with error code PROTOCOL_ERROR (1)
    offset = 0
    frames = []
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset:offset + 3], "big")
        frames.append((data[offset + 3], data[offset + 9:offset + 9 + length]))
        offset += 9 + length
    goaways = [payload for ftype, payload in frames if ftype == 7]
    assert goaways and int.from_bytes(goaways[0][4:8], "big") == 1, frames


def test_h2_prior_knowledge_to_an_h1_only_port_gets_505_and_close(serve):
    srv = serve(lambda req: resp.text(200, "ok"), protocols=["http1"])
    data = srv.request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    assert data.startswith(b"HTTP/1.1 505 ")
    assert b"\r\nconnection: close\r\n" in data
