"""Hostile HTTP/3 peers: each answered as RFC 9000/9114 say, with what it holds released.

A flood of forged Initials from many source ports, a client that starts a
handshake and goes silent, a second control stream, unknown unidirectional
streams with data. After each, the listener has no slot, route or process left
for the attacker and serves an honest client.
"""

from __future__ import annotations

import os
import ssl
import time

import gevent
import pytest
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from gevent import socket as gsocket

import rr
import supervisors
from rr import resp
from tests.rr.certs import make_cert
from tests.rr.h3wire import H3Wire

pytestmark = pytest.mark.peers("aioquic")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("h3-abuse"))


@pytest.fixture
def h3(serve, cert):
    def start(**opts):
        return serve(lambda req: resp.text(200, "ok"), tls={"certfile": cert[0], "keyfile": cert[1]},
                     protocols=["http3", "http2"], **opts)

    return start


def settled(name: str, timeout: float = 10.0) -> dict:
    """Bounded poll until no QUIC connection is left (the supervisor releases slots on exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = rr.listener_info(name)
        if info["active_clients"] == 0 and info["quic_connection_ids"] == 0:
            return info
        gevent.sleep(0.02)
    return rr.listener_info(name)


def forged_initial() -> bytes:
    """A long-header Initial for QUIC v1 with a fresh DCID and a payload that decrypts to nothing."""
    dcid, scid = os.urandom(8), os.urandom(8)
    head = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + b"\x00"
    length = 1200 - len(head) - 2
    return head + bytes([0x40 | (length >> 8), length & 0xFF]) + os.urandom(length)


def test_a_flood_of_forged_initials_from_many_ports_holds_nothing(h3):
    srv = h3()
    socks = [gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) for _ in range(25)]
    try:
        for _ in range(20):
            for sock in socks:
                sock.sendto(forged_initial(), ("127.0.0.1", srv.port))
            gevent.sleep(0)  # let the endpoint read (a yield, not a wait)
        info = settled(srv.name)
    finally:
        for sock in socks:
            sock.close()
    assert info["active_clients"] == 0 and info["quic_connection_ids"] == 0, info
    assert not [p for p in supervisors.processes() if p.label == "rr.h3.conn"]
    with H3Wire(srv.port) as c:
        assert c.finish(c.start("GET", "/")).status == 200


def test_a_client_that_never_finishes_its_handshake_is_dropped_at_tls_handshake_timeout(h3):
    srv = h3(tls_handshake_timeout=0.5)
    client = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN),
                                                            verify_mode=ssl.CERT_NONE))
    client.connect(("127.0.0.1", srv.port), now=time.monotonic())
    with gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM) as sock:
        for data, _ in client.datagrams_to_send(now=time.monotonic()):
            sock.sendto(data, ("127.0.0.1", srv.port))  # the Initial, then silence
        sock.settimeout(5)
        sock.recv(65536)  # the server answered (its Initial and Handshake)
        assert rr.listener_info(srv.name)["active_clients"] == 1
        info = settled(srv.name, timeout=5)
    assert info["active_clients"] == 0 and info["quic_connection_ids"] == 0, info


def test_a_second_control_stream_closes_that_connection_only(h3):
    srv = h3()
    with H3Wire(srv.port) as bystander, H3Wire(srv.port) as c:
        sid = c.quic.get_next_available_stream_id(is_unidirectional=True)
        c.quic.send_stream_data(sid, b"\x00" + b"\x04\x00")  # type CONTROL, then an empty SETTINGS
        c.flush()
        c.wait_told_closed()
        assert c.close_code in (None, 0x103)  # H3_STREAM_CREATION_ERROR (seen once aioquic reports it)
        assert bystander.finish(bystander.start("GET", "/")).status == 200


def test_unknown_unidirectional_streams_are_ignored_and_discarded(h3):
    srv = h3()
    with H3Wire(srv.port) as c:
        for _ in range(20):
            sid = c.quic.get_next_available_stream_id(is_unidirectional=True)
            c.quic.send_stream_data(sid, b"\x21" + os.urandom(10_000), end_stream=True)  # a reserved type
        c.flush()
        replies = [c.finish(c.start("GET", "/")) for _ in range(5)]
        assert [r.status for r in replies] == [200] * 5 and not c.closed
