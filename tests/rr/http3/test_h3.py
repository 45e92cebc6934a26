"""HTTP/3 specifics: options, Alt-Svc, limits, hostile streams, the endpoint, drain, slots.

The behaviours every protocol shares are rows of the behaviour matrix (its h3
column); what is here is HTTP/3's own: what the listener advertises and
refuses, how the QUIC endpoint routes and admits, and how a connection's
resources are released whoever ends it. The client is aioquic's
(``tests/rr/h3wire.py``) unless a raw datagram is the point.
"""

from __future__ import annotations

import errno
import ssl
import struct
import time

import gevent
import gevent.event
import httpx
import pytest
from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from gevent import socket as gsocket

import rr
import supervisors
from rr import resp, telemetry
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread
from tests.rr.h3wire import H3_MESSAGE_ERROR, H3_REQUEST_REJECTED, H3Wire, _varint
from tests.rr.wire import Reply

pytestmark = pytest.mark.peers("aioquic")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("h3"))


@pytest.fixture
def h3(serve, cert):
    def start(handler, protocols=("http3", "http2", "http1"), **opts):
        return serve(handler, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=list(protocols), **opts)

    return start


def hello(req):
    return resp.text(200, f"hello {req.version}")


# -- options -----------------------------------------------------------------------------


def test_http3_needs_tls(cert):
    with pytest.raises(ValueError, match="'protocols'.*tls"):
        rr.child_spec("x", {"port": 0, "protocols": ["http3", "http1"]})


def test_http3_alone_is_refused_clients_discover_it_by_alt_svc(cert):
    with pytest.raises(ValueError, match="alt-svc"):
        rr.child_spec("x", {"port": 0, "protocols": ["http3"], "tls": {"certfile": cert[0], "keyfile": cert[1]}})


def test_an_sslcontext_needs_the_files_for_quic(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert[0], cert[1])
    with pytest.raises(ValueError, match="protocols.http3.certfile"):
        rr.child_spec("x", {"port": 0, "protocols": ["http3", "http2"], "tls": ctx})
    rr.child_spec("x", {"port": 0, "tls": ctx,
                        "protocols": [("http3", {"certfile": cert[0], "keyfile": cert[1]}), "http2"]})


@pytest.mark.parametrize("sub, name", [({"max_concurrent_streams": 0}, "max_concurrent_streams"),
                                       ({"stream_window": 10}, "stream_window"),
                                       ({"listeners": 0}, "listeners"),
                                       ({"bogus": 1}, "bogus"),
                                       ({"certfile": "/nonexistent.pem"}, "certfile")])
def test_bad_http3_sub_options_name_the_option(cert, sub, name):
    with pytest.raises(ValueError, match=f"protocols.http3.{name}"):
        rr.child_spec("x", {"port": 0, "tls": {"certfile": cert[0], "keyfile": cert[1]},
                            "protocols": [("http3", sub), "http2"]})


# -- discovery -----------------------------------------------------------------------------


def test_h1_and_h2_responses_advertise_h3_on_the_same_port(h3, cert):
    srv = h3(hello)

    def get(http2):
        with httpx.Client(http2=http2, verify=ssl.create_default_context(cafile=cert[0])) as c:
            return c.get(f"https://127.0.0.1:{srv.port}/")

    for http2 in (False, True):
        r = in_thread(get, http2)
        assert r.status_code == 200 and r.headers["alt-svc"] == f'h3=":{srv.port}"; ma=86400', r.headers
    with H3Wire(srv.port, cert[0]) as c:
        r = c.finish(c.start("GET", "/"))
    assert r.status == 200 and r.body == b"hello HTTP/3" and r.header("alt-svc") is None


def test_an_alt_svc_option_is_used_as_given(h3):
    srv = h3(hello, alt_svc='h3=":443"; ma=60')
    with H3Wire(srv.port) as c:
        r = c.finish(c.start("GET", "/"))
    assert r.header("alt-svc") == 'h3=":443"; ma=60'


# -- field sections ------------------------------------------------------------------------


def test_max_field_section_size_is_advertised_and_enforced_with_431(h3):
    srv = h3(hello, protocols=[("http3", {"max_field_section_size": 4096}), "http2"])
    with H3Wire(srv.port) as c:
        ok = c.finish(c.start("GET", "/"))
        assert ok.status == 200
        assert c.server_settings.get(0x6) == 4096  # SETTINGS_MAX_FIELD_SECTION_SIZE
        big = c.finish(c.start("GET", "/", [("x-big", "v" * 5000)]))
        assert big.status == 431 and big.complete, big.describe()
        after = c.finish(c.start("GET", "/"))
        assert after.status == 200  # the connection goes on


@pytest.mark.parametrize("fields", [
    [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/"),
     (b"connection", b"close")],
    [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/"),
     (b"host", b"b")],
    [(b":method", b"G E T"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")],
    [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"nope")],
], ids=["connection-specific", "host-differs", "method-not-token", "path-not-absolute"])
def test_a_malformed_request_resets_its_stream_only(h3, fields):
    """RFC 9114 §4.1.2: a malformed request is a stream error H3_MESSAGE_ERROR (the same
    field rules as h2: ``rr.fields``); the connection serves the next request."""
    srv = h3(hello)
    with H3Wire(srv.port) as c:
        sid = c.send_raw_headers(fields)
        r = c.finish(sid)
        assert r.reset == H3_MESSAGE_ERROR and r.status is None, r.describe()
        after = c.finish(c.start("GET", "/"))
        assert after.status == 200 and not c.closed


def test_a_declared_body_that_never_comes_is_a_message_error(h3):
    srv = h3(hello)
    with H3Wire(srv.port) as c:
        sid = c.send_raw_headers([(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a"),
                                  (b":path", b"/"), (b"content-length", b"10")], end=True)
        assert c.finish(sid).reset is not None


# -- limits ----------------------------------------------------------------------------------


def test_max_concurrent_requests_is_shared_with_h3_and_refuses_with_request_rejected(h3):
    release = gevent.event.Event()
    started = gevent.event.Event()

    def app(req):
        started.set()
        release.wait(10)
        return resp.text(200, "done")

    srv = h3(app, max_concurrent_requests=1)
    with H3Wire(srv.port) as c:
        first = c.start("GET", "/1")
        c.wait(started.is_set, "the first handler")
        second = c.finish(c.start("GET", "/2"))
        assert second.reset == H3_REQUEST_REJECTED, second.describe()
        assert rr.listener_info(srv.name)["throttled"] == 1
        release.set()
        assert c.finish(first).status == 200


def test_more_streams_than_max_concurrent_streams_wait_for_credit(h3):
    """The client may open ``max_concurrent_streams`` at once (QUIC MAX_STREAMS); more wait for
    credit instead of being refused: 60 requests with a limit of 8 all complete."""
    srv = h3(hello, protocols=[("http3", {"max_concurrent_streams": 8}), "http2"])
    with H3Wire(srv.port) as c:
        assert c.quic._remote_max_streams_bidi == 8
        done = []
        pending = []
        for _ in range(60):
            while len(pending) >= 8:
                done.append(c.finish(pending.pop(0)))
            c.wait(lambda: c.quic._remote_max_streams_bidi * 4 > c.quic._local_next_stream_id_bidi,
                   "stream credit")
            pending.append(c.start("GET", "/"))
        done += [c.finish(sid) for sid in pending]
    assert [r.status for r in done] == [200] * 60


def test_a_slow_reader_holds_only_its_stream_window_of_body(h3):
    """The handler reads nothing until told: the client can send only ``stream_window`` bytes
    of body (QUIC flow control), however much it has; once the handler reads, the rest flows."""
    go = gevent.event.Event()

    def app(req):
        go.wait(10)
        return resp.text(200, str(len(req.read_body())))

    srv = h3(app, body_buffering="manual",
             protocols=[("http3", {"stream_window": 65536, "conn_window": 262144}), "http2"])
    body = b"b" * (1024 * 1024)
    with H3Wire(srv.port) as c:
        sid = c.start("POST", "/", body=body)
        for _ in range(20):
            c.read_on(0.05)
        stream = c.quic._streams[sid]
        assert stream.sender.highest_offset <= 65536 + 64, stream.sender.highest_offset
        go.set()
        r = c.finish(sid)
    assert r.status == 200 and r.body == str(len(body)).encode()


# -- the endpoint ----------------------------------------------------------------------------


def _udp(port):
    sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.5)
    return sock


def test_an_unknown_version_gets_version_negotiation(h3):
    srv = h3(hello)
    with _udp(srv.port) as sock:
        dcid, scid = b"\x01" * 8, b"\x02" * 8
        packet = bytes([0xC0]) + (0x1A2A3A4A).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid
        sock.send(packet + b"\0" * (1200 - len(packet)))
        answer = sock.recv(2048)
    header = pull_quic_header(Buffer(data=answer), host_cid_length=8)
    assert header.packet_type == QuicPacketType.VERSION_NEGOTIATION
    assert header.destination_cid == scid and header.source_cid == dcid
    assert 0x00000001 in header.supported_versions


@pytest.mark.parametrize("datagram", [b"", b"\x00", b"GET / HTTP/1.1\r\n\r\n", b"\xc0\x00\x00\x00\x01" + b"\x08" * 40,
                                      bytes([0xC0, 0, 0, 0, 1, 8]) + b"\x01" * 8 + bytes([8]) + b"\x02" * 8 + b"\0" * 100],
                         ids=["empty", "one-byte", "http", "truncated-long", "small-initial"])
def test_garbage_and_small_initials_start_nothing_and_the_endpoint_survives(h3, datagram):
    srv = h3(hello)
    endpoint = [p for p in supervisors.processes() if p.label == f"rr.quic.{srv.name}"]
    with _udp(srv.port) as sock:
        for _ in range(50):
            sock.send(datagram)
        with pytest.raises(TimeoutError):
            sock.recv(2048)  # nothing is answered
    info = rr.listener_info(srv.name)
    assert info["accepted"] == 0 and info["quic_connection_ids"] == 0
    with H3Wire(srv.port) as c:
        assert c.finish(c.start("GET", "/")).status == 200
    assert [p for p in supervisors.processes() if p.label == f"rr.quic.{srv.name}"] == endpoint


def _received(name):
    return rr.listener_info(name)["quic_received"]


def _wait_received(name, total):
    deadline = time.monotonic() + 10
    while sum(_received(name)) < total and time.monotonic() < deadline:
        gevent.sleep(0.01)
    return _received(name)


def test_listeners_bind_several_sockets_the_kernel_spreads_clients_over(h3):
    srv = h3(hello, protocols=[("http3", {"listeners": 2}), "http2"])
    endpoints = {p.label for p in supervisors.processes() if p.label.startswith(f"rr.quic.{srv.name}")}
    assert endpoints == {f"rr.quic.{srv.name}", f"rr.quic.{srv.name}.1"}
    assert _received(srv.name) == [0, 0]
    socks = [_udp(srv.port) for _ in range(64)]  # 64 source ports: all on one socket has p = 2**-63
    try:
        for sock in socks:
            sock.send(b"\x00")  # not QUIC: counted, then dropped
        counts = _wait_received(srv.name, 64)
    finally:
        for sock in socks:
            sock.close()
    assert sum(counts) == 64 and min(counts) > 0, counts
    for _ in range(4):
        with H3Wire(srv.port) as c:
            assert c.finish(c.start("GET", "/")).status == 200


def test_a_connection_whose_datagrams_move_to_another_socket_is_still_found(h3):
    # One routing table for every endpoint: a client that changes its port (NAT rebinding)
    # and lands on the other socket still reaches its connection.
    srv = h3(hello, protocols=[("http3", {"listeners": 2}), "http2"])
    with H3Wire(srv.port) as c:
        assert c.finish(c.start("GET", "/")).status == 200
        before = _received(srv.name)
        first = max(range(2), key=lambda i: before[i])  # where the handshake went
        for _ in range(32):  # a new source port until the kernel hashes it to the other socket
            old = c.sock
            c.sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
            c.sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, 8 * 1024 * 1024)
            c.sock.connect(("127.0.0.1", srv.port))
            old.close()
            mark = _received(srv.name)
            c.sock.send(b"\x00")  # a probe datagram: which socket does this port reach?
            now = _wait_received(srv.name, sum(mark) + 1)
            if now[1 - first] > mark[1 - first]:
                break
        else:
            pytest.fail("32 source ports all hashed to one socket")
        r = c.finish(c.start("GET", "/"))
        assert r.status == 200 and r.body == b"hello HTTP/3"
        assert _received(srv.name)[1 - first] > now[1 - first]  # the request went that way
    assert rr.listener_info(srv.name)["accepted"] == 1  # the same connection, not a new one


def test_retry_with_several_listeners_shares_one_token_key(h3):
    srv = h3(hello, protocols=[("http3", {"retry": True, "listeners": 3}), "http2"])
    for _ in range(4):
        with H3Wire(srv.port) as c:
            assert c.finish(c.start("GET", "/")).status == 200
            assert c.quic._retry_source_connection_id is not None


def test_retry_proves_the_address_before_a_connection_starts(h3):
    srv = h3(hello, protocols=[("http3", {"retry": True}), "http2"])
    with H3Wire(srv.port) as c:
        r = c.finish(c.start("GET", "/"))
        assert r.status == 200
        assert c.quic._retry_source_connection_id is not None  # the handshake went through a Retry


def _wait_released(name: str, timeout: float = 5.0) -> dict:
    """The connection supervisor gives the slot back when it sees the process end (bounded poll)."""
    deadline = time.monotonic() + timeout
    while rr.listener_info(name)["active_clients"] and time.monotonic() < deadline:
        gevent.sleep(0.01)
    return rr.listener_info(name)


def test_connection_ids_and_the_slot_are_released_when_a_connection_ends(h3):
    closed = gevent.event.AsyncResult()
    telemetry.attach("h3-close", ("rr", "conn", "close"), lambda e, m, meta, cfg: closed.set((m, meta)))
    try:
        srv = h3(hello)
        with H3Wire(srv.port) as c:
            assert c.finish(c.start("GET", "/")).status == 200
            info = rr.listener_info(srv.name)
            assert info["active_clients"] == 1 and info["quic_connection_ids"] >= 2
        measurements, meta = closed.get(timeout=10)
    finally:
        telemetry.detach("h3-close")
    assert measurements["requests"] == 1 and meta["reason"] == "peer_closed", meta
    info = _wait_released(srv.name)
    assert info["active_clients"] == 0 and info["quic_connection_ids"] == 0, info


def test_a_killed_connection_process_gives_back_its_slot_and_routes(h3):
    """Whoever observes the end releases: the connection supervisor's on_exit, even for a kill."""
    srv = h3(hello)
    c = H3Wire(srv.port)
    assert c.finish(c.start("GET", "/")).status == 200
    conn = next(p for p in supervisors.processes() if p.label == "rr.h3.conn")
    ref = supervisors.monitor(conn.pid)
    supervisors.exit(conn.pid, "kill")
    supervisors.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref), timeout=5)
    c.sock.close()
    info = _wait_released(srv.name)
    assert info["active_clients"] == 0 and info["quic_connection_ids"] == 0, info
    with H3Wire(srv.port) as c2:
        assert c2.finish(c2.start("GET", "/")).status == 200


def test_max_clients_counts_quic_connections_and_evicts_an_idle_one_first(h3):
    release = gevent.event.Event()
    started = gevent.event.Event()

    def app(req):
        if req.path == "/slow":
            started.set()
            release.wait(10)
        return resp.text(200, "ok")

    srv = h3(app, max_clients=1)
    with H3Wire(srv.port) as busy:
        sid = busy.start("GET", "/slow")
        busy.wait(started.is_set, "the slow handler")
        with pytest.raises(TimeoutError):
            H3Wire(srv.port, timeout=1.0)  # not admitted: the only connection is busy
        assert rr.listener_info(srv.name)["rejected"] >= 1
        release.set()
        assert busy.finish(sid).status == 200
        # Now idle with a request served: a new connection evicts it (as on TCP).
        with H3Wire(srv.port) as fresh:
            assert fresh.finish(fresh.start("GET", "/")).status == 200
        busy.wait_told_closed()
        assert rr.listener_info(srv.name)["evicted"] == 1


def test_drain_sends_goaway_finishes_in_flight_streams_and_admits_no_new_connection(h3):
    release = gevent.event.Event()
    started = gevent.event.Event()

    def app(req):
        if req.path == "/slow":
            started.set()
            release.wait(10)
        return resp.text(200, "done")

    srv = h3(app)
    with H3Wire(srv.port) as c:
        sid = c.start("GET", "/slow")
        c.wait(started.is_set, "the slow handler")
        drainer = gevent.spawn(rr.drain, srv.name, 10)
        c.wait(lambda: bool(c.goaway), "GOAWAY")
        with pytest.raises(TimeoutError):
            H3Wire(srv.port, timeout=0.5)
        release.set()
        r = c.finish(sid)
        assert r.status == 200 and r.body == b"done" and r.complete
        c.wait_closed(5)
        assert c.closed and c.close_code == 0x100  # H3_NO_ERROR
    assert drainer.get(timeout=10) == {"drained": 1, "killed": 0}


# -- sending ---------------------------------------------------------------------------------


class _Recorder:
    def __init__(self, refuse_gso: bool = False) -> None:
        self.calls: list[tuple] = []
        self.refuse_gso = refuse_gso

    def sendto(self, data, addr):
        self.calls.append(("sendto", len(data), addr))

    def sendmsg(self, buffers, ancdata, flags, addr):
        if self.refuse_gso:
            raise OSError(errno.EIO, "no GSO")
        (level, kind, value), = ancdata
        self.calls.append(("gso", [len(b) for b in buffers], struct.unpack("=H", value)[0], addr))


def test_equal_size_runs_leave_in_one_gso_send_the_rest_one_by_one(monkeypatch):
    from rr.http3 import conn as h3conn

    monkeypatch.setitem(h3conn.gso, "enabled", True)
    a, b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    datagrams = [(b"x" * 1200, a)] * 3 + [(b"x" * 500, a), (b"x" * 1200, a), (b"x" * 1200, b), (b"x" * 90, b)]
    sock = _Recorder()
    h3conn.send_datagrams(sock, datagrams)
    assert sock.calls == [("gso", [1200, 1200, 1200, 500], 1200, a), ("sendto", 1200, a),
                          ("gso", [1200, 90], 1200, b)]


def test_a_kernel_without_gso_gets_every_datagram_by_sendto(monkeypatch):
    from rr.http3 import conn as h3conn

    monkeypatch.setitem(h3conn.gso, "enabled", True)
    a = ("127.0.0.1", 1)
    sock = _Recorder(refuse_gso=True)
    h3conn.send_datagrams(sock, [(b"x" * 1200, a)] * 4)
    assert sock.calls == [("sendto", 1200, a)] * 4 and h3conn.gso["enabled"] is False


def test_a_large_response_is_sent_with_gso(h3):
    from rr.http3 import conn as h3conn

    assert h3conn.gso["enabled"], "the kernel refused UDP GSO (Linux >= 4.18 has it)"
    body = b"g" * (1 << 20)
    srv = h3(lambda req: resp.Response(200, [], body))
    before = h3conn.gso["batches"]
    with H3Wire(srv.port) as c:
        r = c.finish(c.start("GET", "/"))
    assert r.status == 200 and r.body == body
    assert h3conn.gso["batches"] > before


# -- tolerance and timers ------------------------------------------------------------------------


def test_grease_and_unknown_frames_on_a_request_stream_are_ignored(h3):
    """RFC 9114 §7.2.8/§9: unknown frame types (GREASE: 0x1f * N + 0x21) are skipped, wherever
    they stand on a request stream."""
    srv = h3(lambda req: resp.text(200, req.read_body().decode()))
    with H3Wire(srv.port) as c:
        sid = c.quic.get_next_available_stream_id()
        c.replies[sid] = Reply()
        c.bufs[sid] = bytearray()
        grease = bytes([0x21, 3]) + b"abc"  # type 0x21, length 3
        head = c.h3._encode_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"),
                                          (b":authority", b"a"), (b":path", b"/")])
        data = bytes([0x00, 5]) + b"hello"
        wire = grease + bytes([0x01]) + _varint(len(head)) + head + grease + data + grease
        c.quic.send_stream_data(sid, wire, end_stream=True)
        c.flush()
        r = c.finish(sid)
    assert r.status == 200 and r.body == b"hello"


def test_the_clients_max_field_section_size_is_respected(h3):
    """A client that can take only 1024 bytes of response fields gets a 500 instead of a
    field section it would refuse (the exchange sizes the head against it)."""

    import tests.rr.h3wire as wire

    srv = h3(lambda req: resp.Response(200, [("x-big", "v" * 2000)], b"big head"))
    original = wire._Watcher._get_local_settings

    def small_settings(self):
        return {**original(self), 0x6: 1024}

    wire._Watcher._get_local_settings = small_settings
    try:
        with H3Wire(srv.port) as c:
            c.wait(lambda: c.server_settings is not None, "the server's SETTINGS")
            r = c.finish(c.start("GET", "/"))
    finally:
        wire._Watcher._get_local_settings = original
    assert r.status == 500, r.describe()


def test_an_idle_connection_closes_after_keep_alive_timeout(h3):
    srv = h3(hello, keep_alive_timeout=0.5)
    with H3Wire(srv.port) as c:
        assert c.finish(c.start("GET", "/")).status == 200
        c.wait_told_closed(5)
    info = _wait_released(srv.name)
    assert info["active_clients"] == 0


def test_send_budget_bounds_what_all_streams_of_a_non_reading_connection_queue(h3):
    """40 streams each answering 64 KiB to a client whose windows let almost nothing through:
    the workers together never hold more send credit than ``send_budget`` (rr.stream's
    protocol: every queued byte is paid for), and each worker stays within its share."""
    body = b"z" * 65536
    srv = h3(lambda req: resp.Response(200, [], body),
             protocols=[("http3", {"send_budget": 131072, "max_concurrent_streams": 40}), "http2"])
    with H3Wire(srv.port, max_data=4096, max_stream_data=1024) as c:
        sids = [c.start("GET", f"/{i}") for i in range(40)]
        conn = next(v for v in rr.listener_info.__globals__["_runtimes"][srv.name].conns.values()
                    if v is not None and type(v).__name__ == "Http3Conn")
        most = 0
        for _ in range(40):
            c.read_on(0.02)  # services the connection (acks) but the windows stay tiny
            most = max(most, conn.outstanding)
            assert conn.outstanding == sum(st.granted for st in conn.streams.values())
        assert 0 < most <= 131072, most
        assert all(st.granted <= 65536 + 16384 for st in conn.streams.values())
        assert sids
