"""WebSocket over HTTP/2 (RFC 8441) against a client rr did not write.

The client is the ``h2`` library (extended CONNECT with ``:protocol``) carrying
``wsproto`` client framing (masked frames) in the stream's DATA, on a gevent
socket in the test's hub. Server-side facts (terminate reasons, the request's
version) are waited for with gevent events, never sleeps.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.event
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from gevent import socket as gsocket
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

import rr
import supervisors
from rr import resp

H2C = {"protocols": ["http2"]}


class Recorder:
    """Echo plus commands; records the request it served and how the session ended."""

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


@pytest.fixture
def h2ws(serve):
    rec = Recorder()

    def app(req):
        if req.path == "/plain":
            return resp.text(200, f"plain {req.version}")
        return resp.WebSocket(rec, None)

    srv = serve(app, **H2C)
    return rec, srv.port


class WsOverH2:
    """One h2 connection; WebSocket streams on it (wsproto client framing) and plain requests."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.port = port
        self.timeout = timeout
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                        header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.flush()
        self.responses: dict[int, list[tuple[str, str]]] = {}
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}
        self.settings: dict[int, int] = {}
        self.wait(lambda: h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL in self.settings)

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def wait(self, cond: Any) -> None:
        deadline = time.monotonic() + self.timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the server did not answer in time")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for event in self.h2.receive_data(data):
                self.on_event(event)
            self.flush()

    def on_event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings.update({k: v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ResponseReceived):
            self.responses[sid] = [(str(k), str(v)) for k, v in event.headers]
        elif isinstance(event, h2.events.DataReceived):
            self.data.setdefault(sid, bytearray()).extend(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(sid)
        elif isinstance(event, h2.events.StreamReset):
            self.reset[sid] = event.error_code

    def open(self, path: str = "/ws", extra: list[tuple[str, str]] | None = None,
             protocol: str | None = "websocket") -> int:
        sid = self.h2.get_next_available_stream_id()
        fields = [(":method", "CONNECT"), (":scheme", "http"), (":path", path),
                  (":authority", f"127.0.0.1:{self.port}")]
        if protocol is not None:
            fields.insert(1, (":protocol", protocol))
        else:
            fields = [f for f in fields if f[0] not in (":scheme", ":path")]
        fields += extra if extra is not None else [("sec-websocket-version", "13")]
        self.h2.send_headers(sid, fields)
        self.flush()
        self.wait(lambda: sid in self.responses or sid in self.reset)
        return sid

    def get(self, path: str) -> tuple[int, bytes]:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", path),
                                   (":authority", f"127.0.0.1:{self.port}")], end_stream=True)
        self.flush()
        self.wait(lambda: sid in self.ended)
        return int(dict(self.responses[sid])[":status"]), bytes(self.data.get(sid, b""))

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        """DATA under the stream's flow control (waits for WINDOW_UPDATEs as needed)."""
        view = memoryview(data)
        while view:
            n = min(len(view), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if n <= 0:
                self.flush()
                self.wait(lambda: self.h2.local_flow_control_window(sid) > 0)
                continue
            self.h2.send_data(sid, bytes(view[:n]))
            view = view[n:]
        if end:
            self.h2.end_stream(sid)
        self.flush()


class Ws:
    """wsproto client framing over one extended-CONNECT stream."""

    def __init__(self, conn: WsOverH2, sid: int, extensions: list[Any] | None = None) -> None:
        self.conn = conn
        self.sid = sid
        self.ws = Connection(ConnectionType.CLIENT, extensions=extensions)
        self.fed = 0
        self.events: list[Any] = []

    def send(self, event: Any) -> None:
        self.conn.send(self.sid, self.ws.send(event))

    def _more(self) -> bool:
        buf = self.conn.data.get(self.sid, bytearray())
        if len(buf) > self.fed:
            self.ws.receive_data(bytes(buf[self.fed:]))
            self.fed = len(buf)
            self.events.extend(self.ws.events())
        return bool(self.events) or self.sid in self.conn.ended or self.sid in self.conn.reset

    def recv(self) -> Any:
        """The next event; messages come whole (fragments joined)."""
        parts: list[Any] = []
        while True:
            self.conn.wait(self._more)
            if not self.events:
                raise ConnectionError("stream ended without an event")
            event = self.events.pop(0)
            if not isinstance(event, Message):
                return event
            parts.append(event.data)
            if event.message_finished:
                joined = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                return type(event)(data=joined)


def status(conn: WsOverH2, sid: int) -> int:
    return int(dict(conn.responses[sid])[":status"])


def test_settings_advertise_extended_connect_and_messages_round_trip(h2ws):
    rec, port = h2ws
    c = WsOverH2(port)
    assert c.settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    sid = c.open()
    assert status(c, sid) == 200
    names = {k for k, _ in c.responses[sid]}
    assert not names & {"connection", "upgrade", "sec-websocket-accept"}
    assert sid not in c.ended  # the 200 leaves the stream open
    assert rec.req.get(timeout=5) == ("GET", "HTTP/2", "/ws")
    ws = Ws(c, sid)
    ws.send(TextMessage("héllo"))
    assert ws.recv() == TextMessage("héllo")
    ws.send(BytesMessage(b"\x00\x01\xff"))
    assert ws.recv() == BytesMessage(b"\x00\x01\xff")
    big = bytes(range(256)) * 273 + b"x" * 112  # 70,000 bytes: several DATA frames and windows
    assert len(big) == 70_000
    ws.send(BytesMessage(big))
    assert ws.recv() == BytesMessage(big)
    ws.send(Ping(b"are you there"))
    assert ws.recv() == Pong(b"are you there")
    ws.send(CloseConnection(1000, "done here"))
    event = ws.recv()
    assert isinstance(event, CloseConnection) and event.code == 1000
    assert rec.ended.get(timeout=5) == ("remote", 1000, "done here")
    c.wait(lambda: sid in c.ended)  # the server ended its side of the stream (END_STREAM)
    c.sock.close()


def test_handler_close_code_reaches_the_client(h2ws):
    rec, port = h2ws
    c = WsOverH2(port)
    ws = Ws(c, c.open())
    ws.send(TextMessage("bye"))
    assert ws.recv() == TextMessage("so long")
    event = ws.recv()
    assert isinstance(event, CloseConnection) and (event.code, event.reason) == (4001, "done")
    ws.send(event.response())
    assert rec.ended.get(timeout=5) == ("local", 4001, "done")
    c.sock.close()


def test_a_plain_request_on_the_same_connection_while_the_websocket_is_open(h2ws):
    rec, port = h2ws
    c = WsOverH2(port)
    ws = Ws(c, c.open())
    ws.send(TextMessage("first"))
    assert ws.recv() == TextMessage("first")
    assert c.get("/plain") == (200, b"plain HTTP/2")
    ws.send(TextMessage("still here"))
    assert ws.recv() == TextMessage("still here")
    ws.send(CloseConnection(1000))
    assert isinstance(ws.recv(), CloseConnection)
    assert rec.ended.get(timeout=5)[:2] == ("remote", 1000)
    c.sock.close()


def test_rst_stream_ends_the_session_as_client_gone(h2ws):
    rec, port = h2ws
    c = WsOverH2(port)
    sid = c.open()
    ws = Ws(c, sid)
    ws.send(TextMessage("x"))
    assert ws.recv() == TextMessage("x")
    c.h2.reset_stream(sid, 0x8)  # CANCEL
    c.flush()
    assert rec.ended.get(timeout=5) == ("error", 1006, "client gone")
    assert c.get("/plain") == (200, b"plain HTTP/2")  # the connection goes on
    c.sock.close()


def test_end_stream_from_the_client_ends_the_session(h2ws):
    rec, port = h2ws
    c = WsOverH2(port)
    sid = c.open()
    c.send(sid, b"", end=True)
    assert rec.ended.get(timeout=5) == ("error", 1006, "connection lost")
    c.wait(lambda: sid in c.ended)
    c.sock.close()


def test_subprotocol_and_permessage_deflate_negotiated(h2ws):
    rec, port = h2ws
    c = WsOverH2(port)
    sid = c.open(extra=[("sec-websocket-version", "13"), ("sec-websocket-protocol", "chat.v1, chat.v2"),
                        ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits")])
    fields = dict(c.responses[sid])
    assert fields[":status"] == "200"
    assert fields["sec-websocket-protocol"] == "chat.v2"
    ext = PerMessageDeflate()
    ext.finalize(fields["sec-websocket-extensions"])
    ws = Ws(c, sid, [ext])
    text = "compress me " * 5000
    ws.send(TextMessage(text))
    assert ws.recv() == TextMessage(text)
    ws.send(CloseConnection(1000))
    assert isinstance(ws.recv(), CloseConnection)
    c.sock.close()


@pytest.mark.parametrize("extra, expected", [
    ([], 426),                                    # no Sec-WebSocket-Version
    ([("sec-websocket-version", "8")], 426),
])
def test_bad_handshake_over_h2(h2ws, extra, expected):
    rec, port = h2ws
    c = WsOverH2(port)
    sid = c.open(extra=extra)
    fields = dict(c.responses[sid])
    assert int(fields[":status"]) == expected
    assert fields.get("sec-websocket-version") == "13" and "upgrade" not in fields
    c.sock.close()


@pytest.mark.parametrize("protocol", [None, "connect-udp"])
def test_plain_connect_and_other_protocols_stay_501(h2ws, protocol):
    rec, port = h2ws
    c = WsOverH2(port)
    sid = c.open(protocol=protocol)
    assert status(c, sid) == 501
    c.sock.close()


def test_a_small_stream_window_is_reopened_as_the_session_reads(serve):
    """The server's stream window is 16 KiB: a 70,000-byte message (and its echo, under the
    client's default 64 KiB window) gets through only if the session credits each chunk back
    (WINDOW_UPDATE) and its writes wait for the client's WINDOW_UPDATEs."""
    rec = Recorder()
    srv = serve(lambda req: resp.WebSocket(rec, None),
                protocols=[("http2", {"stream_window": 16384, "conn_window": 65535,
                                          "window_refill_threshold": 4096})])
    c = WsOverH2(srv.port)
    ws = Ws(c, c.open())
    big = b"\x07" * 70_000
    for _ in range(3):
        ws.send(BytesMessage(big))
        assert ws.recv() == BytesMessage(big)
    ws.send(CloseConnection(1000))
    assert isinstance(ws.recv(), CloseConnection)
    assert rec.ended.get(timeout=5)[:2] == ("remote", 1000)
    c.sock.close()


def test_drain_reaches_an_h2_websocket_session_which_closes_1001(serve, caplog):
    """The drain's GOAWAY puts the ``h2`` library's connection in its CLOSED state (it
    refuses every later frame), so the client cannot read the 1001 here: the server side
    is asserted instead (the session closed 1001 and ended at close_timeout, not killed)."""
    rec = Recorder()
    srv = serve(lambda req: resp.WebSocket(rec, None), ws={"close_timeout": 0.2}, **H2C)
    c = WsOverH2(srv.port)
    ws = Ws(c, c.open())
    ws.send(TextMessage("before"))
    assert ws.recv() == TextMessage("before")
    drain = gevent.spawn(rr.drain, srv.name, 10)
    assert rec.ended.get(timeout=5) == ("local", 1001, "server shutting down")
    assert drain.get(timeout=10)["killed"] == 0
    assert not [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]
    c.sock.close()


@pytest.mark.parametrize("fields", [
    [(":method", "GET"), (":protocol", "websocket"), (":scheme", "http"), (":path", "/ws")],
    [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http")],  # no :path
    [(":method", "CONNECT"), (":protocol", "websocket"), (":path", "/ws")],  # no :scheme
], ids=["protocol-on-get", "no-path", "no-scheme"])
def test_a_malformed_extended_connect_is_reset_protocol_error(h2ws, fields):
    rec, port = h2ws
    c = WsOverH2(port)
    c.h2.config.validate_outbound_headers = False  # h2 would refuse to send these itself
    c.h2.config.normalize_outbound_headers = False
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, [*fields, (":authority", f"127.0.0.1:{port}"), ("sec-websocket-version", "13")])
    c.flush()
    c.wait(lambda: sid in c.reset or sid in c.responses)
    assert c.reset.get(sid) == 0x1  # PROTOCOL_ERROR
    assert c.get("/plain") == (200, b"plain HTTP/2")  # the connection goes on
    c.sock.close()


def test_a_client_that_never_reads_stalls_the_session_until_the_stream_is_reset(serve):
    """The handler answers one frame with 2 MiB; the client never reads (its window stays
    at 64 KiB): the session's writes wait under h2 flow control instead of queueing the
    rest, so the message it sent itself before replying is never handled; the conn's
    ``stall_timeout`` resets the stream and terminate sees "client gone"."""

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

    rec = Flood()
    srv = serve(lambda req: resp.WebSocket(rec, None),
                protocols=[("http2", {"stall_timeout": 0.3})])
    c = WsOverH2(srv.port)
    ws = Ws(c, c.open())
    ws.send(TextMessage("go"))  # and then never read the socket again
    assert rec.ended.get(timeout=10) == ("error", 1006, "client gone")
    assert rec.info == []  # still blocked in the replies' writes when the reset came
    c.sock.close()


def test_an_extended_connect_that_ends_its_stream_at_once_ends_the_session(h2ws):
    rec, port = h2ws
    c = WsOverH2(port)
    sid = c.h2.get_next_available_stream_id()
    c.h2.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                            (":path", "/ws"), (":authority", f"127.0.0.1:{port}"),
                            ("sec-websocket-version", "13")], end_stream=True)
    c.flush()
    assert rec.ended.get(timeout=5) == ("error", 1006, "connection lost")
    c.wait(lambda: sid in c.ended)
    assert status(c, sid) == 200
    c.sock.close()
