"""``http3.max_datagram_size``: larger datagrams once the handshake is complete, never past what
the client takes or the route carries, and back to 1200 bytes when the path drops them.

The client is aioquic's (``H3Wire``) through a UDP relay of the test's own on loopback that
records the size of every datagram the server sends and, for the black-hole case, drops the
server's datagrams above a size (a link with a smaller MTU further along the path).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import gevent
import pytest
from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicTransportParameters, push_quic_transport_parameters
from gevent import socket as gsocket

import rr
from rr import resp
from rr.http3.conn import route_payload_limit
from rr.http3.quic import RrQuic, load_certificate
from tests.rr.certs import make_cert
from tests.rr.h3wire import H3Wire

pytestmark = pytest.mark.peers("aioquic")

PAYLOAD = random.Random(7).randbytes(256 * 1024)


class SizeRelay:
    """127.0.0.1:port ⇄ the server; records the server's datagram sizes, drops those over ``mtu``."""

    def __init__(self, server_port: int, mtu: int | None = None) -> None:
        self.server = ("127.0.0.1", server_port)
        self.mtu = mtu
        self.sizes: list[int] = []  # every datagram the server sent, in order
        self.dropped = 0
        self.sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.client: Any = None
        self.task = gevent.spawn(self.run)

    def run(self) -> None:
        while True:
            data, addr = self.sock.recvfrom(65536)
            if addr != self.server:
                self.client = addr
                self.sock.sendto(data, self.server)
                continue
            self.sizes.append(len(data))
            if self.mtu is not None and len(data) > self.mtu:
                self.dropped += 1
            elif self.client is not None:
                self.sock.sendto(data, self.client)

    def close(self) -> None:
        self.task.kill()
        self.sock.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("h3-dgram"))


def app(req: rr.Request) -> resp.Shape:
    return resp.Response(200, [("content-type", "application/octet-stream")], PAYLOAD)


def fetch(serve: Any, cert: tuple[str, str], mtu: int | None = None, **http3: Any) -> tuple[Any, SizeRelay]:
    srv = serve(app, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=[("http3", http3), "http2"])
    relay = SizeRelay(srv.port, mtu)
    try:
        with H3Wire(relay.port, timeout=30) as c:
            reply = c.finish(c.start("GET", "/"))
    finally:
        relay.close()
    return reply, relay


def test_by_default_no_datagram_is_larger_than_1200_bytes(serve, cert):
    reply, relay = fetch(serve, cert)
    assert reply.status == 200 and reply.body == PAYLOAD
    assert max(relay.sizes) <= 1200


def test_a_larger_max_datagram_size_is_used_once_the_handshake_is_complete(serve, cert):
    reply, relay = fetch(serve, cert, max_datagram_size=16384)
    assert reply.status == 200 and reply.body == PAYLOAD
    assert relay.sizes[0] <= 1200  # the server's handshake flight (one datagram with ECDSA): aioquic's size
    assert 8192 < max(relay.sizes) <= 16384
    assert sum(size > 1200 for size in relay.sizes) >= len(PAYLOAD) // 16384


def test_a_path_that_drops_larger_datagrams_makes_the_connection_fall_back_to_1200(serve, cert):
    reply, relay = fetch(serve, cert, mtu=1300, max_datagram_size=16384)
    assert reply.status == 200 and reply.body == PAYLOAD
    assert relay.dropped > 0  # it tried, the path dropped them ...
    first_drop = next(i for i, size in enumerate(relay.sizes) if size > 1300)
    tail = relay.sizes[first_drop:]
    last_large = max(i for i, size in enumerate(tail) if size > 1300)
    assert max(tail[last_large + 1:]) <= 1200  # ... and everything after went in 1200-byte datagrams
    assert len(tail) - last_large > len(PAYLOAD) // 1200


def test_the_route_mtu_bounds_the_datagram_size():
    mtu = int(Path("/sys/class/net/lo/mtu").read_text())
    assert route_payload_limit(socket.AF_INET, ("127.0.0.1", 9)) == min(mtu, 65535) - 28  # an IPv4 packet is < 64 KiB
    assert route_payload_limit(socket.AF_INET, ("256.0.0.1", 9)) == 1200  # the kernel cannot say: aioquic's size


def _server_quic(cert: tuple[str, str], size: int) -> RrQuic:
    return RrQuic(configuration=load_certificate(*cert), max_streams=10, stream_window=65536,
                  conn_window=65536, max_datagram_size=size, original_destination_connection_id=b"\x01" * 8)


def _params(**fields: Any) -> bytes:
    buf = Buffer(capacity=512)
    push_quic_transport_parameters(buf, QuicTransportParameters(**fields))
    return buf.data


def test_the_clients_max_udp_payload_size_bounds_the_datagram_size(cert):
    quic = _server_quic(cert, 16384)
    quic._parse_transport_parameters(_params(max_udp_payload_size=1500))
    assert quic.grow_datagrams(65000) == 1500
    quic = _server_quic(cert, 16384)
    quic._parse_transport_parameters(_params())  # not said: QUIC's largest
    assert quic.grow_datagrams(65000) == 16384
    assert quic.grow_datagrams(9000) == 16384  # never shrinks by growing
    quic = _server_quic(cert, 16384)
    assert quic.grow_datagrams(4000) == 4000 == quic._loss._pacer._max_datagram_size


def test_max_datagram_size_is_checked(cert):
    for bad in (1199, 65528, "big"):
        with pytest.raises(ValueError, match="protocols.http3.max_datagram_size"):
            rr.child_spec("x", {"port": 0, "tls": {"certfile": cert[0], "keyfile": cert[1]},
                                "protocols": [("http3", {"max_datagram_size": bad}), "http2"]})
