"""WebSocket over HTTP/3 (RFC 9220) against a client rr did not write.

The client is aioquic's HTTP/3 client (``tests/rr/h3wire.py``: an extended
CONNECT with ``:protocol: websocket``) carrying ``wsproto`` client framing
(masked frames) in the stream's DATA. The session on the server is the same
one h1 and h2 run (``rr.ws.session`` in the stream worker, as on h2).
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event
import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

import rr
import supervisors
from rr import resp
from tests.rr.certs import make_cert
from tests.rr.h3wire import H3_REQUEST_CANCELLED, H3Wire

pytestmark = pytest.mark.peers("aioquic")


class Recorder:
    subprotocols = ["chat.v2", "chat.v1"]

    def __init__(self) -> None:
        self.ended = gevent.event.AsyncResult()
        self.req = gevent.event.AsyncResult()

    def init(self, req, state):
        self.req.set((req.method, req.version, req.path))
        return state

    def handle_frame(self, frame, state):
        if frame == ("text", "bye"):
            return [("text", "so long"), ("close", 4001, "done")], state
        return [frame], state

    def terminate(self, reason, state):
        self.ended.set(reason)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("ws-h3"))


@pytest.fixture
def h3ws(serve, cert):
    def start(rec: Any = None, **opts: Any) -> tuple[Any, Any]:
        rec = rec or Recorder()

        def app(req):
            if req.path == "/plain":
                return resp.text(200, f"plain {req.version}")
            return resp.WebSocket(rec, None)

        srv = serve(app, tls={"certfile": cert[0], "keyfile": cert[1]},
                    protocols=opts.pop("protocols", ["http3", "http2", "http1"]), **opts)
        return rec, srv

    return start


class Ws:
    """wsproto client framing over one extended-CONNECT stream of an ``H3Wire``."""

    def __init__(self, conn: H3Wire, sid: int, extensions: list[Any] | None = None) -> None:
        self.conn = conn
        self.sid = sid
        self.ws = Connection(ConnectionType.CLIENT, extensions=extensions)
        self.fed = 0
        self.events: list[Any] = []

    def send(self, event: Any) -> None:
        self.conn.send_body(self.sid, self.ws.send(event))

    def _more(self) -> bool:
        reply = self.conn.replies[self.sid]
        buf = self.conn.received(self.sid)
        if len(buf) > self.fed:
            self.ws.receive_data(bytes(buf[self.fed:]))
            self.fed = len(buf)
            self.events.extend(self.ws.events())
        return bool(self.events) or reply.complete or reply.reset is not None

    def recv(self) -> Any:
        parts: list[Any] = []
        while True:
            self.conn.wait(self._more, "a WebSocket event")
            if not self.events:
                raise ConnectionError("stream ended without an event")
            event = self.events.pop(0)
            if not isinstance(event, Message):
                return event
            parts.append(event.data)
            if event.message_finished:
                joined = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                return type(event)(data=joined)


def open_ws(c: H3Wire, extra: list[tuple[str, str]] | None = None, protocol: str | None = "websocket") -> int:
    sid = c.start("CONNECT", "/ws", extra if extra is not None else [("sec-websocket-version", "13")],
                  end=False, protocol=protocol)
    c.read_head(sid)
    return sid


def test_settings_advertise_extended_connect_and_messages_round_trip(h3ws):
    rec, srv = h3ws()
    with H3Wire(srv.port) as c:
        sid = open_ws(c)
        assert c.server_settings is not None and c.server_settings.get(0x8) == 1  # SETTINGS_ENABLE_CONNECT_PROTOCOL
        head = c.replies[sid]
        assert head.status == 200 and not head.complete  # the 200 leaves the stream open
        assert not {k for k, _ in head.headers} & {"connection", "upgrade", "sec-websocket-accept"}
        assert rec.req.get(timeout=5) == ("GET", "HTTP/3", "/ws")
        ws = Ws(c, sid)
        ws.send(TextMessage("héllo"))
        assert ws.recv() == TextMessage("héllo")
        ws.send(BytesMessage(b"\x00\x01\xff"))
        assert ws.recv() == BytesMessage(b"\x00\x01\xff")
        big = bytes(range(256)) * 273 + b"x" * 112
        ws.send(BytesMessage(big))
        assert ws.recv() == BytesMessage(big)
        ws.send(Ping(b"are you there"))
        assert ws.recv() == Pong(b"are you there")
        ws.send(CloseConnection(1000, "done here"))
        event = ws.recv()
        assert isinstance(event, CloseConnection) and event.code == 1000
        assert rec.ended.get(timeout=5) == ("remote", 1000, "done here")
        c.wait(lambda: c.replies[sid].complete, "the server's end of the stream")


def test_handler_close_code_and_a_plain_request_beside_the_session(h3ws):
    rec, srv = h3ws()
    with H3Wire(srv.port) as c:
        ws = Ws(c, open_ws(c))
        plain = c.finish(c.start("GET", "/plain"))
        assert plain.status == 200 and plain.body == b"plain HTTP/3"
        ws.send(TextMessage("bye"))
        assert ws.recv() == TextMessage("so long")
        event = ws.recv()
        assert isinstance(event, CloseConnection) and (event.code, event.reason) == (4001, "done")
        ws.send(event.response())
        assert rec.ended.get(timeout=5) == ("local", 4001, "done")


def test_a_stream_reset_ends_the_session_as_client_gone(h3ws):
    rec, srv = h3ws()
    with H3Wire(srv.port) as c:
        sid = open_ws(c)
        ws = Ws(c, sid)
        ws.send(TextMessage("x"))
        assert ws.recv() == TextMessage("x")
        c.quic.reset_stream(sid, H3_REQUEST_CANCELLED)
        c.quic.stop_stream(sid, H3_REQUEST_CANCELLED)
        c.flush()
        assert rec.ended.get(timeout=5) == ("error", 1006, "client gone")
        again = c.finish(c.start("GET", "/plain"))
        assert again.status == 200  # the connection goes on


def test_subprotocol_and_permessage_deflate_negotiated(h3ws):
    rec, srv = h3ws()
    with H3Wire(srv.port) as c:
        sid = open_ws(c, [("sec-websocket-version", "13"), ("sec-websocket-protocol", "chat.v1, chat.v2"),
                          ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits")])
        fields = dict(c.replies[sid].headers)
        assert fields["sec-websocket-protocol"] == "chat.v2"
        ext = PerMessageDeflate()
        ext.finalize(fields["sec-websocket-extensions"])
        ws = Ws(c, sid, [ext])
        text = "compress me " * 5000
        ws.send(TextMessage(text))
        assert ws.recv() == TextMessage(text)
        ws.send(CloseConnection(1000))
        assert isinstance(ws.recv(), CloseConnection)


@pytest.mark.parametrize("protocol, extra, expected", [
    ("websocket", [], 426),
    ("websocket", [("sec-websocket-version", "8")], 426),
    ("connect-udp", [("sec-websocket-version", "13")], 501),
])
def test_bad_handshakes_and_other_protocols(h3ws, protocol, extra, expected):
    rec, srv = h3ws()
    with H3Wire(srv.port) as c:
        sid = open_ws(c, extra, protocol)
        assert c.replies[sid].status == expected


def test_drain_reaches_an_h3_websocket_session_which_closes_1001(h3ws):
    rec, srv = h3ws(ws={"close_timeout": 5})
    with H3Wire(srv.port) as c:
        ws = Ws(c, open_ws(c))
        ws.send(TextMessage("before"))
        assert ws.recv() == TextMessage("before")
        drain = gevent.spawn(rr.drain, srv.name, 10)
        event = ws.recv()
        assert isinstance(event, CloseConnection) and event.code == 1001, event
        assert c.goaway is not None  # the drain's GOAWAY on the control stream
        ws.send(event.response())
        assert rec.ended.get(timeout=5) == ("local", 1001, "server shutting down")
        assert drain.get(timeout=10)["killed"] == 0


def test_a_client_that_never_reads_stalls_the_session_until_the_stream_is_reset(h3ws):
    """The handler answers one frame with 2 MiB; the client's stream window is 64 KiB and it
    never reads past it: the session's writes wait under QUIC flow control, and the conn's
    ``stall_timeout`` resets the stream; terminate sees "client gone"."""

    class Flood(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.info: list = []

        def handle_frame(self, frame, state):
            supervisors.send(supervisors.self(), "after the replies")
            return [("binary", b"\0" * 16384)] * 128, state

        def handle_info(self, msg, state):
            self.info.append(msg)
            return [], state

    rec, srv = h3ws(Flood(), protocols=[("http3", {"stall_timeout": 0.3}), "http2"])
    with H3Wire(srv.port, max_stream_data=65536) as c:
        ws = Ws(c, open_ws(c))
        ws.send(TextMessage("go"))
        # From here the client services nothing (its socket is not read): nothing it was sent
        # is acknowledged or credited, as with a peer that stopped reading.
        assert rec.ended.get(timeout=10) == ("error", 1006, "client gone")
        assert rec.info == []
