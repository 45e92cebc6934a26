"""WebTransport sessions and HTTP datagrams over HTTP/3, against aioquic's client.

``resp.WebTransport`` runs a session in the CONNECT stream's worker
(``rr/webtransport.py``); the listener opts in with
``("http3", {"webtransport": True})``. The client is aioquic's H3 layer with
WebTransport enabled (``tests/rr/h3wire.py``).
"""

from __future__ import annotations

import gevent.event
import pytest

import rr
from rr import resp
from tests.rr.certs import make_cert
from tests.rr.h3wire import H3_REQUEST_CANCELLED, H3Wire

pytestmark = pytest.mark.peers("aioquic")


class Echo:
    def __init__(self) -> None:
        self.ended = gevent.event.AsyncResult()
        self.req = gevent.event.AsyncResult()

    def init(self, req, state):
        self.req.set((req.method, req.version, req.path))
        return {"streams": 0}

    def handle_datagram(self, data, state):
        if data == b"close":
            return [("close",)], state
        return [("datagram", b"echo:" + data)], state

    def handle_stream(self, stream_id, data, end, state):
        replies = [("send", stream_id, data.upper(), end)]
        if end:
            state["streams"] += 1
            replies.append(("open_uni", f"stream {stream_id} done".encode(), True))
        return replies, state

    def terminate(self, reason, state):
        self.ended.set((reason, state))


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("wt"))


@pytest.fixture
def wt(serve, cert):
    def start(handler, enabled=True, protocols=None):
        def app(req):
            if req.path == "/plain":
                return resp.text(200, "plain")
            return resp.WebTransport(handler)

        return serve(app, tls={"certfile": cert[0], "keyfile": cert[1]},
                     protocols=protocols or [("http3", {"webtransport": enabled}), "http2", "http1"])

    return start


def open_session(c: H3Wire, path: str = "/wt") -> int:
    sid = c.start("CONNECT", path, end=False, protocol="webtransport")
    c.read_head(sid)
    return sid


def test_datagrams_bidi_streams_and_server_streams_round_trip(wt):
    echo = Echo()
    srv = wt(echo)
    with H3Wire(srv.port, webtransport=True) as c:
        c.wait(lambda: c.server_settings is not None, "SETTINGS")
        assert c.server_settings.get(0x33) == 1 and c.server_settings.get(0x2B603742) == 1
        session = open_session(c)
        assert c.replies[session].status == 200 and not c.replies[session].complete
        assert echo.req.get(timeout=5) == ("GET", "HTTP/3", "/wt")
        c.h3.send_datagram(session, b"ping")
        c.flush()
        c.wait(lambda: c.datagrams, "a datagram")
        assert c.datagrams == [(session, b"echo:ping")]
        stream = c.open_wt_stream(session)
        c.quic.send_stream_data(stream, b"hello ", False)
        c.quic.send_stream_data(stream, b"world", True)
        c.flush()
        c.wait(lambda: stream in c.wt_ended, "the echo stream's end")
        assert bytes(c.wt_data[stream]) == b"HELLO WORLD"
        c.wait(lambda: len(c.wt_ended) == 2, "the server's uni stream")
        (uni,) = [s for s in c.wt_ended if s != stream]
        assert uni & 3 == 3 and bytes(c.wt_data[uni]) == f"stream {stream} done".encode()
        plain = c.finish(c.start("GET", "/plain"))
        assert plain.status == 200  # requests go on beside the session
        c.h3.send_datagram(session, b"close")
        c.flush()
        c.finish(session)
        assert c.replies[session].complete
    reason, state = echo.ended.get(timeout=5)
    assert reason == "closed" and state == {"streams": 1}


def test_resetting_the_connect_stream_ends_the_session_as_client_gone(wt):
    echo = Echo()
    srv = wt(echo)
    with H3Wire(srv.port, webtransport=True) as c:
        session = open_session(c)
        c.quic.reset_stream(session, H3_REQUEST_CANCELLED)
        c.quic.stop_stream(session, H3_REQUEST_CANCELLED)
        c.flush()
        assert echo.ended.get(timeout=5)[0] == "client gone"


def test_ending_the_connect_stream_ends_the_session(wt):
    echo = Echo()
    srv = wt(echo)
    with H3Wire(srv.port, webtransport=True) as c:
        session = open_session(c)
        c.send_body(session, b"", end=True)
        assert echo.ended.get(timeout=5)[0] == "client closed"
        assert c.finish(session).complete


def test_drain_ends_a_session(wt):
    echo = Echo()
    srv = wt(echo)
    with H3Wire(srv.port, webtransport=True) as c:
        open_session(c)
        drain = gevent.spawn(rr.drain, srv.name, 10)
        assert echo.ended.get(timeout=5)[0] == "drain"
        assert drain.get(timeout=10)["killed"] == 0


def test_without_the_option_a_webtransport_connect_is_501_and_nothing_is_advertised(wt):
    srv = wt(Echo(), enabled=False)
    with H3Wire(srv.port, webtransport=True) as c:
        c.wait(lambda: c.server_settings is not None, "SETTINGS")
        assert 0x2B603742 not in c.server_settings
        sid = c.start("CONNECT", "/wt", end=False, protocol="webtransport")
        assert c.read_head(sid).status == 501


def test_a_plain_request_to_a_webtransport_endpoint_is_400_and_h1_h2_are_501(wt, cert):
    srv = wt(Echo())
    with H3Wire(srv.port) as c:
        r = c.finish(c.start("GET", "/wt"))
        assert r.status == 400 and b"WebTransport endpoint" in r.body
    import ssl

    import httpx

    from tests.rr.conftest import in_thread

    def get(http2):
        with httpx.Client(http2=http2, verify=ssl.create_default_context(cafile=cert[0])) as h:
            return h.get(f"https://127.0.0.1:{srv.port}/wt").status_code

    assert in_thread(get, False) == 501 and in_thread(get, True) == 501


def test_a_datagram_flood_at_a_slow_session_is_dropped_not_queued(wt):
    """The handler takes its time on the first datagram; thousands more arrive meanwhile:
    at most ``max_queued_datagrams`` wait at its process, the rest are dropped."""
    release = gevent.event.Event()
    seen = []

    class Slow:
        def handle_datagram(self, data, state):
            if not seen:
                release.wait(10)
            seen.append(data)
            return [], state

    srv = wt(Slow(), protocols=[("http3", {"webtransport": True, "max_queued_datagrams": 16}), "http2"])
    with H3Wire(srv.port, webtransport=True) as c:
        session = open_session(c)
        for i in range(400):
            c.h3.send_datagram(session, b"%d" % i)
            if i % 20 == 0:
                c.flush()
                c.read_on(0.01)
        c.flush()
        for _ in range(20):
            c.read_on(0.02)
        release.set()
        for _ in range(20):
            c.read_on(0.02)
    assert 1 < len(seen) <= 1 + 16 + 1, len(seen)


class Pusher:
    """On a client stream's ``go``: ``size`` bytes on a new server stream; on ``ping``: a datagram."""

    def __init__(self, size: int) -> None:
        self.body = bytes(range(256)) * (size // 256)
        self.sent = gevent.event.Event()

    def handle_stream(self, stream_id, data, end, state):
        if data == b"go":
            return [("open_uni", self.body, True)], state
        if data == b"ping":
            self.sent.set()
            return [("datagram", b"pong")], state
        return [], state


def start_push(c: H3Wire) -> int:
    """Open a session and tell its Pusher ``go`` on a stream of it; returns the session id."""
    session = open_session(c)
    stream = c.open_wt_stream(session)
    c.quic.send_stream_data(stream, b"go", False)
    c.flush()
    return session


def _h3_conn(srv):
    return next(v for v in rr.listener_info.__globals__["_runtimes"][srv.name].conns.values()
                if v is not None and type(v).__name__ == "Http3Conn")


def _server_streams(conn):
    return [s for s in conn.wt_streams if s & 3 == 3]


def test_a_session_sending_to_a_client_that_reads_slowly_queues_at_most_send_budget(wt):
    """4 MiB on a server stream to a client whose windows let ~1 KiB through per round trip:
    the session's sends are paid from send credit, so what rr has handed to aioquic and not
    sent stays within ``send_budget`` (before, all 4 MiB sat in aioquic's buffer at once)."""
    budget = 65536
    pusher = Pusher(4 * 1024 * 1024)
    srv = wt(pusher, protocols=[("http3", {"webtransport": True, "send_budget": budget}), "http2"])
    with H3Wire(srv.port, webtransport=True, max_data=4096, max_stream_data=1024) as c:
        session = start_push(c)
        conn = _h3_conn(srv)
        most_outstanding = most_buffered = 0
        waited = False
        for _ in range(40):
            c.read_on(0.02)
            most_outstanding = max(most_outstanding, conn.outstanding)
            for s in _server_streams(conn):
                most_buffered = max(most_buffered, conn.quic.buffered_end(s) - max(conn.quic.sent_offset(s), 0))
            waited = waited or session in conn.waiting
        assert waited  # the session ran out of credit and asked for more
        assert 0 < most_buffered <= budget, most_buffered
        assert most_outstanding <= budget, most_outstanding


def test_a_session_streams_a_mebibyte_in_paid_chunks_intact(wt):
    pusher = Pusher(1024 * 1024)
    srv = wt(pusher, protocols=[("http3", {"webtransport": True, "send_budget": 65536}), "http2"])
    with H3Wire(srv.port, webtransport=True) as c:
        session = start_push(c)
        c.wait(lambda: any(s & 3 == 3 for s in c.wt_ended), "the server stream's end", timeout=30)
        (uni,) = [s for s in c.wt_ended if s & 3 == 3]
        assert bytes(c.wt_data[uni]) == pusher.body
        conn = _h3_conn(srv)
        st = conn.streams[session]
        c.wait(lambda: not st.queued, "every queued byte sent (its credit back)")
        assert conn.outstanding == st.granted <= 65536  # only what the session holds unspent


def test_a_stream_the_client_stops_gives_its_credit_back_and_the_session_goes_on(wt):
    budget = 65536
    pusher = Pusher(4 * 1024 * 1024)
    srv = wt(pusher, protocols=[("http3", {"webtransport": True, "send_budget": budget}), "http2"])
    with H3Wire(srv.port, webtransport=True, max_data=4096, max_stream_data=1024) as c:
        session = start_push(c)
        c.wait(lambda: any(s & 3 == 3 for s in c.wt_data), "the server stream's first bytes")
        (uni,) = [s for s in c.wt_data if s & 3 == 3]
        c.quic.stop_stream(uni, H3_REQUEST_CANCELLED)
        c.flush()
        second = c.open_wt_stream(session)
        c.quic.send_stream_data(second, b"ping", False)
        c.flush()
        c.wait(lambda: c.datagrams, "the session's answer after the stopped stream")
        assert c.datagrams == [(session, b"pong")]
        conn = _h3_conn(srv)
        assert conn.outstanding <= budget
        assert uni not in conn.wt_streams
        # Nothing of the stopped stream is still charged to the session: aioquic will never
        # send those bytes, so their credit came back rather than blocking the queue behind.
        assert not [entry for entry in conn.streams[session].queued if entry[0] == uni]
