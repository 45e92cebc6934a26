"""When rr acknowledges: a pending ACK rides on the response, and a request head whose body
follows is acknowledged at once (``RrQuic.ack_now``), rather than in a datagram of its own
after aioquic's 1 ms ACK delay — a client that waits for its request to be acknowledged
(libcurl with ngtcp2 does, docs/bench_h3.md) would otherwise wait that long per request.

Seen from aioquic's client (``H3Wire``): the packet that carried the request is acknowledged
by the first datagram it gets back. (Were rr slower than 1 ms to answer, the delayed ACK would come first
and these would pass anyway: they can fail only the way that matters.)
"""

from __future__ import annotations

import time

import pytest
from aioquic.tls import Epoch

import rr
from rr import resp
from tests.rr.certs import make_cert
from tests.rr.h3wire import H3Wire

pytestmark = pytest.mark.peers("aioquic")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("h3-acks"))


def app(req: rr.Request) -> resp.Shape:
    return resp.text(200, f"{req.method} {len(req.read_body())}")


def unacked(c: H3Wire) -> set[int]:
    """Numbers of the client's 1-RTT packets not yet acknowledged."""
    return set(c.quic._spaces[Epoch.ONE_RTT].sent_packets)


def test_the_response_carries_the_ack_of_its_request(serve, cert):
    srv = serve(app, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=["http3", "http2"])
    with H3Wire(srv.port) as c:
        c.finish(c.start("GET", "/warm"))  # the handshake's and the control streams' packets settle
        got = []
        for i in range(5):
            sid = c.start("GET", f"/{i}")
            request = c.quic._packet_number - 1  # the packet that carried it
            reply = c.finish(sid)
            got.append((reply.body, request in unacked(c)))
    assert got == [(b"GET 0", False)] * 5


def test_a_request_head_whose_body_follows_is_acknowledged_at_once(serve, cert):
    srv = serve(app, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=["http3", "http2"])
    with H3Wire(srv.port) as c:
        c.finish(c.start("GET", "/warm"))
        sid = c.start("POST", "/echo", [("content-length", "3")], end=False)
        head = c.quic._packet_number - 1
        assert head in unacked(c)
        seen = c.datagrams_in
        deadline = time.monotonic() + 5.0
        while c.datagrams_in == seen and time.monotonic() < deadline:
            c.step(deadline - time.monotonic())  # the client's own timers may fire first
        assert c.datagrams_in == seen + 1  # the first datagram back acknowledges the head
        assert head not in unacked(c)
        c.send_body(sid, b"abc", end=True)
        assert c.finish(sid).body == b"POST 3"
