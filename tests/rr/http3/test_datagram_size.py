"""``http3.max_datagram_size``: path MTU discovery once the handshake is complete — larger
datagrams only after a probe of that size was acknowledged, never past what the client takes or
the route carries, lost probes bounded and no congestion signal, and back to 1200 bytes when a
path that carried a size starts dropping it.

The client is aioquic's (``H3Wire``) through a UDP relay of the test's own on loopback that
records every datagram in order (the server's sizes, the client's) and drops the server's
datagrams above a size (a link with a smaller MTU further along the path), from the start or
once some larger ones went through (the path changed). The congestion-control side (a lost probe
is no congestion event, no probe while the window is full) is checked on ``RrQuic`` and aioquic's
client exchanging datagrams in memory. libcurl's ngtcp2 (curl_cffi) and gtlsclient acknowledge
the probe as aioquic's client does.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import gevent
import pytest
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicTransportParameters, push_quic_transport_parameters
from gevent import socket as gsocket

import rr
from rr import resp
from rr.http3.conn import route_payload_limit
from rr.http3.quic import PMTU_PLATEAUS, RrQuic, load_certificate
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread
from tests.rr.h3wire import H3Wire

pytestmark = pytest.mark.peers("aioquic")

PAYLOAD = random.Random(7).randbytes(256 * 1024)
BIG = random.Random(8).randbytes(10 * 1024 * 1024)
MAX_PROBES = 1 + len(PMTU_PLATEAUS)


class SizeRelay:
    """127.0.0.1:port ⇄ the server; logs every datagram's side and size, drops the server's over
    ``mtu`` once ``after`` larger-than-``mtu`` ones went through."""

    def __init__(self, server_port: int, mtu: int | None = None, after: int = 0) -> None:
        self.server = ("127.0.0.1", server_port)
        self.mtu = mtu
        self.after = after
        self.log: list[tuple[str, int]] = []  # ("s", size) from the server, ("c", size) from the client
        self.dropped = 0
        self.sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        self.sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.client: Any = None
        self.task = gevent.spawn(self.run)

    @property
    def sizes(self) -> list[int]:
        """The server's datagram sizes, in order."""
        return [size for side, size in self.log if side == "s"]

    def run(self) -> None:
        while True:
            data, addr = self.sock.recvfrom(65536)
            if addr != self.server:
                self.client = addr
                self.log.append(("c", len(data)))
                self.sock.sendto(data, self.server)
                continue
            self.log.append(("s", len(data)))
            if self.mtu is not None and len(data) > self.mtu:
                if self.after <= 0:
                    self.dropped += 1
                    continue
                self.after -= 1
            if self.client is not None:
                self.sock.sendto(data, self.client)

    def close(self) -> None:
        self.task.kill()
        self.sock.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("h3-dgram"))


def app(req: rr.Request) -> resp.Shape:
    return resp.Response(200, [("content-type", "application/octet-stream")], BIG if req.path == "/big" else PAYLOAD)


def fetch(serve: Any, cert: tuple[str, str], mtu: int | None = None, after: int = 0, path: str = "/",
          client_max: int | None = None, **http3: Any) -> tuple[Any, SizeRelay, RrQuic]:
    """One GET through the relay; the reply, the relay, and the server connection's ``RrQuic``."""
    srv = serve(app, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=[("http3", http3), "http2"])
    relay = SizeRelay(srv.port, mtu, after)
    try:
        with H3Wire(relay.port, timeout=30, max_udp_payload_size=client_max) as c:
            reply = c.finish(c.start("GET", path))
            (conn,) = rr._runtimes[srv.name].conns.values()
    finally:
        relay.close()
    return reply, relay, conn.quic


def large(relay: SizeRelay, above: int = 1200) -> list[int]:
    return [size for size in relay.sizes if size > above]


def test_by_default_datagrams_grow_only_once_a_probe_of_their_size_is_acknowledged(serve, cert):
    reply, relay, quic = fetch(serve, cert)
    assert reply.status == 200 and reply.body == PAYLOAD
    log = relay.log
    probe = next(i for i, (side, size) in enumerate(log) if side == "s" and size > 1200)
    assert log[probe] == ("s", 16384)  # the probe: the default ceiling (loopback and aioquic take more)
    after = next(i for i in range(probe + 1, len(log)) if log[i][0] == "s" and log[i][1] > 1200)
    assert any(side == "c" for side, _ in log[probe + 1:after])  # the client's ACK came first
    assert quic.rr_probes_sent == 1 and quic.datagram_size == 16384
    assert 8192 < max(relay.sizes) <= 16384
    assert sum(size > 1200 for size in relay.sizes) >= len(PAYLOAD) // 16384


def test_max_datagram_size_1200_turns_probing_off(serve, cert):
    reply, relay, quic = fetch(serve, cert, max_datagram_size=1200)
    assert reply.status == 200 and reply.body == PAYLOAD
    assert max(relay.sizes) <= 1200 and quic.rr_probes_sent == 0


def test_the_clients_max_udp_payload_size_caps_the_probes(serve, cert):
    reply, relay, quic = fetch(serve, cert, client_max=1400)
    assert reply.status == 200 and reply.body == PAYLOAD
    assert max(relay.sizes) == 1400 == quic.datagram_size  # probed at the client's size, acknowledged
    assert quic.rr_probes_sent == 1


def test_a_path_that_drops_datagrams_above_1460_settles_on_the_largest_plateau_it_carries(serve, cert):
    reply, relay, quic = fetch(serve, cert, mtu=1460, path="/big")
    assert reply.status == 200 and reply.complete and reply.body == BIG  # 10 MiB, no stall
    # The ceiling and 1472 were probed and lost, 1452 acknowledged: the data goes in 1452 bytes.
    assert large(relay, 1460) == [16384, 1472] and relay.dropped == 2
    assert quic.rr_probes_sent == 3 and quic.datagram_size == 1452
    assert sum(size == 1452 for size in relay.sizes) > len(BIG) // 1452 * 0.9


def test_a_path_that_drops_every_larger_datagram_keeps_1200_after_a_bounded_number_of_probes(serve, cert):
    reply, relay, quic = fetch(serve, cert, mtu=1300, path="/big")
    assert reply.status == 200 and reply.complete and reply.body == BIG  # 10 MiB, no stall
    # Only probes were ever larger, every one lost, one per size; nothing else was dropped.
    assert large(relay) == [16384, *PMTU_PLATEAUS] and relay.dropped == MAX_PROBES
    assert quic.rr_probes_sent == MAX_PROBES and quic.datagram_size == 1200


def test_a_path_that_starts_dropping_the_size_in_use_makes_the_connection_fall_back_to_1200(serve, cert):
    # The probe and the first larger datagrams pass, then the path drops whatever is above 1300.
    reply, relay, quic = fetch(serve, cert, mtu=1300, after=8)
    assert reply.status == 200 and reply.body == PAYLOAD
    assert relay.dropped > 0  # it used 16384 bytes, the path then dropped them ...
    first_drop = [i for i, size in enumerate(relay.sizes) if size > 1300][8]
    tail = relay.sizes[first_drop:]
    last_large = max(i for i, size in enumerate(tail) if size > 1300)
    assert max(tail[last_large + 1:]) <= 1200  # ... and everything after went in 1200-byte datagrams
    assert quic.datagram_size == 1200 and quic.rr_probes_sent == 1  # for good: no new search


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


def test_the_probed_sizes_are_bounded_by_the_option_the_client_and_the_route(cert):
    quic = _server_quic(cert, 16384)
    quic._parse_transport_parameters(_params(max_udp_payload_size=1500))
    assert quic.start_pmtud(65000) == [1500, *PMTU_PLATEAUS]
    quic = _server_quic(cert, 16384)
    quic._parse_transport_parameters(_params())  # not said: QUIC's largest
    assert quic.start_pmtud(65000) == [16384, *PMTU_PLATEAUS]
    assert _server_quic(cert, 16384).start_pmtud(4000) == [4000, *PMTU_PLATEAUS]
    assert _server_quic(cert, 16384).start_pmtud(1460) == [1460, 1452, 1392]
    assert _server_quic(cert, 16384).start_pmtud(1200) == []  # the route carries no more
    assert _server_quic(cert, 1300).start_pmtud(65000) == [1300]
    quic = _server_quic(cert, 16384)
    quic.set_datagram_size(4000)
    assert quic._loss._pacer._max_datagram_size == 4000 == quic.datagram_size


# -- congestion control, on RrQuic and aioquic's client in memory ---------------------------

CLIENT, SERVER = ("127.0.0.1", 50001), ("127.0.0.1", 50002)


class Pair:
    """aioquic's client and an ``RrQuic`` passing datagrams to each other in memory, on a clock
    of the test's own."""

    def __init__(self, cert: tuple[str, str]) -> None:
        self.now = 1000.0
        config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
        config.verify_mode = 0  # ssl.CERT_NONE
        self.client = QuicConnection(configuration=config)
        self.client.connect(SERVER, now=self.now)
        first = self.client.datagrams_to_send(self.now)
        self.server = RrQuic(configuration=load_certificate(*cert), max_streams=10, stream_window=1 << 20,
                             conn_window=1 << 20, max_datagram_size=16384,
                             original_destination_connection_id=first[0][0][6:6 + first[0][0][5]])
        for data, _ in first:
            self.server.receive_datagram(data, CLIENT, self.now)
        for _ in range(10):
            if self.server._handshake_complete and self.client._handshake_confirmed:
                break
            self.to_client()
            self.to_server()
        assert self.server._handshake_complete and self.client._handshake_confirmed

    def to_client(self, drop_above: int = 65536) -> list[int]:
        """The server's datagrams now (sizes), those up to ``drop_above`` delivered."""
        sizes = []
        for data, _ in self.server.datagrams_to_send(self.now):
            sizes.append(len(data))
            if len(data) <= drop_above:
                self.client.receive_datagram(data, SERVER, self.now)
        return sizes

    def to_server(self) -> None:
        """The client's datagrams (its ACKs, past its ACK delay) delivered."""
        self.now += 0.03
        for data, _ in self.client.datagrams_to_send(self.now):
            self.server.receive_datagram(data, CLIENT, self.now)


def test_a_lost_probe_is_no_congestion_event_and_the_next_size_follows(cert):
    pair = Pair(cert)
    server, loss = pair.server, pair.server._loss
    assert server.start_pmtud(8000) == [8000, *PMTU_PLATEAUS]  # within the initial window
    window = loss.congestion_window
    sid = server.get_next_available_stream_id(is_unidirectional=True)
    server.send_stream_data(sid, b"x" * 6000)
    sizes = pair.to_client(drop_above=1200)  # the probe first, then the data; the probe is lost
    assert sizes[0] == 8000 and max(sizes[1:]) <= 1200 and len(sizes) >= 4
    pair.to_server()  # acknowledges the data: the probe is declared lost (packet threshold)
    assert server.rr_probe_pn is None and server.rr_probe_sizes == list(PMTU_PLATEAUS)
    assert loss._cc.ssthresh is None and loss.congestion_window >= window  # still slow start: no loss seen
    assert loss.bytes_in_flight == 0  # the probe's bytes are out of flight all the same
    assert pair.to_client()[0] == 1472  # the next probe (then the rest of the data), delivered
    pair.to_server()
    assert server.datagram_size == 1472 and server.rr_probe_sizes == [] and server.rr_probes_sent == 2


def test_no_probe_goes_while_the_congestion_window_is_full(cert):
    pair = Pair(cert)
    server, loss = pair.server, pair.server._loss
    sid = server.get_next_available_stream_id(is_unidirectional=True)
    server.send_stream_data(sid, b"x" * 200_000)
    held: list[tuple[bytes, Any]] = []
    for _ in range(50):  # pacing spreads the window over a few passes
        if loss.bytes_in_flight >= loss.congestion_window:
            break
        pair.now += 0.001
        held += server.datagrams_to_send(pair.now)
    assert loss.bytes_in_flight >= loss.congestion_window
    server.start_pmtud(8000)
    assert server.datagrams_to_send(pair.now) == [] and server.rr_probes_sent == 0
    for data, _ in held[:2]:
        pair.client.receive_datagram(data, SERVER, pair.now)
    pair.to_server()  # some room, not 8000 bytes: the data leaves it to the probe
    assert 0 < loss.congestion_window - loss.bytes_in_flight < 8000
    assert pair.to_client() == [] and server.rr_probes_sent == 0
    for data, _ in held[2:]:
        pair.client.receive_datagram(data, SERVER, pair.now)
    pair.to_server()  # the ACKs open the window
    assert loss.congestion_window - loss.bytes_in_flight >= 8000
    assert pair.to_client()[0] == 8000 and server.rr_probes_sent == 1


def test_max_datagram_size_is_checked(cert):
    for bad in (1199, 65528, "big"):
        with pytest.raises(ValueError, match="protocols.http3.max_datagram_size"):
            rr.child_spec("x", {"port": 0, "tls": {"certfile": cert[0], "keyfile": cert[1]},
                                "protocols": [("http3", {"max_datagram_size": bad}), "http2"]})


# -- QUIC stacks rr did not write: libcurl's ngtcp2 (curl_cffi) and gtlsclient ----------------------


@pytest.fixture
def probes(monkeypatch) -> list[tuple[int, str]]:
    """Every probe's outcome on the server, (size, "ACKED" or "LOST"), in order."""
    seen: list[tuple[int, str]] = []
    delivered = RrQuic._probe_delivered

    def record(self: RrQuic, delivery: Any, size: int) -> None:
        seen.append((size, delivery.name))
        delivered(self, delivery, size)

    monkeypatch.setattr(RrQuic, "_probe_delivered", record)
    return seen


def _through_relay(serve: Any, cert: tuple[str, str], client: Any) -> tuple[Any, SizeRelay]:
    srv = serve(app, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=["http3", "http2"])
    relay = SizeRelay(srv.port)
    try:
        return client(relay.port), relay
    finally:
        relay.close()


def _grew_after_an_acknowledged_probe(relay: SizeRelay, probes: list[tuple[int, str]]) -> int:
    """The size the server settled on: the first larger datagram was its probe, acknowledged, and
    the larger datagrams after it were no larger."""
    assert probes and probes[-1][1] == "ACKED", probes
    size = probes[-1][0]
    larger = large(relay)
    assert larger[0] == probes[0][0] and max(larger) == size and larger.count(size) > 8, (probes, larger[:20])
    return size


@pytest.mark.peers("curl_cffi")
def test_libcurls_ngtcp2_acknowledges_a_probe_and_gets_larger_datagrams(serve, cert, probes):
    def client(port: int) -> tuple[int, bool]:
        from curl_cffi import CurlHttpVersion, requests

        r = requests.get(f"https://127.0.0.1:{port}/big", verify=False, http_version=CurlHttpVersion.V3ONLY,
                         timeout=60)
        return r.status_code, r.content == BIG

    got, relay = _through_relay(serve, cert, lambda port: in_thread(client, port))
    assert got == (200, True)
    assert _grew_after_an_acknowledged_probe(relay, probes) == 16384 and len(probes) == 1


@pytest.mark.peers("gtlsclient")
def test_gtlsclient_acknowledges_a_probe_and_gets_larger_datagrams(serve, cert, probes, tmp_path):
    import subprocess

    def client(port: int) -> bytes:
        argv = ["gtlsclient", "--exit-on-all-streams-close", "--timeout=20s", "-q", f"--download={tmp_path}",
                "127.0.0.1", str(port), f"https://127.0.0.1:{port}/big"]
        done = subprocess.run(argv, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return (tmp_path / "big").read_bytes()

    got, relay = _through_relay(serve, cert, lambda port: in_thread(client, port))
    assert got == BIG
    assert _grew_after_an_acknowledged_probe(relay, probes) == 16384 and len(probes) == 1
