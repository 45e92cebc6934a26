"""An HTTP/3 wire client for tests: aioquic's sans-IO client over a gevent UDP socket.

What it owns: ``H3Wire``, with the interface of ``tests/rr/wire.py``'s clients
(``start``, ``send_body``, ``read_head``, ``read_some``, ``finish``,
``abort``, ``close``) and the same ``Reply`` values, so the behaviour matrix
runs its rows over HTTP/3 too. The QUIC and HTTP/3 state machines are
aioquic's (``QuicConnection`` + ``H3Connection``, client side: a stack rr
does not write on this side); the socket is gevent's, so the client runs in
the test's hub beside the server, with no thread.

A stream the server resets has ``Reply.reset`` set to the HTTP/3 error code
(``H3_INTERNAL_ERROR`` ...); ``goaway`` says the server sent GOAWAY
(aioquic's client skips GOAWAY frames, so their arrival is watched here),
``closed``/``close_code`` what ended the connection.

What it must never do: fix up what the server sent; a stream that stops
early is incomplete.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any

from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters
from gevent import socket as gsocket

from tests.rr.wire import Reply

H3_NO_ERROR = ErrorCode.H3_NO_ERROR
H3_INTERNAL_ERROR = ErrorCode.H3_INTERNAL_ERROR
H3_REQUEST_CANCELLED = ErrorCode.H3_REQUEST_CANCELLED
H3_REQUEST_REJECTED = ErrorCode.H3_REQUEST_REJECTED
H3_MESSAGE_ERROR = ErrorCode.H3_MESSAGE_ERROR


class Closed(Exception):
    """The QUIC connection ended."""


class _Watcher(H3Connection):
    """aioquic's client H3 layer, also noticing the server's GOAWAY (whose payload aioquic
    discards unread: only its arrival is known).

    aioquic's client holds every response's DATA to its ``content-length``,
    HEAD's included (which has none, RFC 9110 §9.3.2): that check is skipped
    for the streams of HEAD requests.
    """

    goaway: bool | None = None
    head_streams: set[int]

    def _check_control_frame_type(self, frame_type: int) -> None:
        if frame_type == FrameType.GOAWAY:
            self.goaway = True
        super()._check_control_frame_type(frame_type)

    def _check_content_length(self, stream: Any) -> None:
        if stream.stream_id not in self.head_streams:
            super()._check_content_length(stream)


class _SaysPayloadSize(QuicConnection):
    """aioquic's client, which leaves ``max_udp_payload_size`` out of its transport
    parameters, saying one (``rr_max_udp_payload_size``)."""

    rr_max_udp_payload_size = 65527

    def _serialize_transport_parameters(self) -> bytes:
        params = pull_quic_transport_parameters(Buffer(data=super()._serialize_transport_parameters()))
        params.max_udp_payload_size = self.rr_max_udp_payload_size
        buf = Buffer(capacity=4096)
        push_quic_transport_parameters(buf, params)
        return buf.data


class H3Wire:
    """HTTP/3 to 127.0.0.1:port, one QUIC connection, any number of streams (``max_udp_payload_size``:
    the largest datagram the client says it takes; aioquic's own says nothing)."""

    def __init__(self, port: int, cafile: str | None = None, timeout: float = 10.0,
                 max_stream_data: int | None = None, max_data: int | None = None,
                 authority: str | None = None, webtransport: bool = False,
                 max_udp_payload_size: int | None = None) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN), server_name="localhost")
        if cafile is not None:
            config.load_verify_locations(cafile)
        else:
            config.verify_mode = ssl.CERT_NONE
        if max_stream_data is not None:
            config.max_stream_data = max_stream_data
        if max_data is not None:
            config.max_data = max_data
        if webtransport:
            config.max_datagram_frame_size = 65536
        self.addr = ("127.0.0.1", port)
        self.authority = authority or f"127.0.0.1:{port}"
        self.timeout = timeout
        if max_udp_payload_size is None:
            self.quic = QuicConnection(configuration=config)
        else:
            self.quic = _SaysPayloadSize(configuration=config)
            self.quic.rr_max_udp_payload_size = max_udp_payload_size
        self.h3 = _Watcher(self.quic, enable_webtransport=webtransport)
        self.datagrams: list[tuple[int, bytes]] = []  # WebTransport: (session id, payload)
        self.wt_data: dict[int, bytearray] = {}  # WebTransport stream id -> bytes received
        self.wt_ended: set[int] = set()
        self.h3.head_streams = set()
        self.sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        # The server shares this hub: while it sends a window's worth of datagrams this client
        # cannot read, so its socket must hold them (the default ~200 KiB drops them: loss).
        self.sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.connect(self.addr)
        self.replies: dict[int, Reply] = {}
        self.bufs: dict[int, bytearray] = {}  # body bytes as they arrive (Reply.body is set from it)
        self.heads: set[int] = set()
        self.closed = False
        self.close_code: int | None = None
        self.datagrams_in = 0  # datagrams received from the server
        self.handshake = False
        self.quic.connect(self.addr, now=time.monotonic())
        self.flush()
        self.wait(lambda: self.handshake, "the handshake")

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> H3Wire:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.quic.close(error_code=H3_NO_ERROR)
            self.flush()
            self.closed = True
        self.sock.close()

    @property
    def goaway(self) -> bool | None:
        return self.h3.goaway

    @property
    def server_settings(self) -> dict[int, int] | None:
        return self.h3.received_settings

    # -- the network -----------------------------------------------------------------

    def flush(self) -> None:
        for data, _ in self.quic.datagrams_to_send(now=time.monotonic()):
            try:
                self.sock.send(data)
            except OSError:
                pass

    def step(self, timeout: float) -> None:
        """Wait (bounded) for one datagram or the connection's timer, and take it in."""
        timer = self.quic.get_timer()
        now = time.monotonic()
        wait = timeout if timer is None else max(0.0, min(timeout, timer - now))
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            if timer is not None and time.monotonic() >= timer:
                self.quic.handle_timer(now=time.monotonic())
        except OSError:
            self.closed = True
            return
        else:
            self.datagrams_in += 1
            self.quic.receive_datagram(data, self.addr, now=time.monotonic())
        self.process()
        self.flush()

    def process(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted):
                self.handshake = True
            elif isinstance(event, qe.ConnectionTerminated):
                self.closed = True
                self.close_code = event.error_code
            elif isinstance(event, qe.StreamReset):
                reply = self.replies.get(event.stream_id)
                if reply is not None:
                    reply.reset = event.error_code
                    reply.error = f"reset {event.error_code:#x}"
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, DatagramReceived):
                    self.datagrams.append((h3_event.stream_id, h3_event.data))
                    continue
                if isinstance(h3_event, WebTransportStreamDataReceived):
                    self.wt_data.setdefault(h3_event.stream_id, bytearray()).extend(h3_event.data)
                    if h3_event.stream_ended:
                        self.wt_ended.add(h3_event.stream_id)
                    continue
                reply = self.replies.get(getattr(h3_event, "stream_id", -1))
                if reply is None:
                    continue
                if isinstance(h3_event, HeadersReceived):
                    fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in h3_event.headers]
                    if h3_event.stream_id in self.heads:
                        reply.trailers = fields
                    else:
                        status = int(dict(fields)[":status"])
                        if status >= 200:
                            self.heads.add(h3_event.stream_id)
                            reply.status = status
                            reply.headers = [(k, v) for k, v in fields if not k.startswith(":")]
                        else:
                            reply.interim.append((status, [(k, v) for k, v in fields if not k.startswith(":")]))
                    if h3_event.stream_ended:
                        reply.complete = True
                elif isinstance(h3_event, DataReceived):
                    self.bufs[h3_event.stream_id] += h3_event.data
                    if h3_event.stream_ended:
                        reply.complete = True

    def wait(self, pred: Any, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not pred():
            if self.closed:
                raise Closed(f"the connection closed (code {self.close_code}) while waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout or self.timeout}s")
            self.step(left)

    # -- requests --------------------------------------------------------------------

    def start(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
              *, chunked: bool = False, end: bool = True, protocol: str | None = None) -> int:
        """Open a request stream; without ``chunked`` a body gets a content-length (as h1's would)."""
        sid = self.quic.get_next_available_stream_id()
        extra = [(k.lower(), v) for k, v in headers]
        if body and end and not chunked and not any(k == "content-length" for k, _ in extra):
            extra.append(("content-length", str(len(body))))
        fields = [(":method", method), (":scheme", "https"), (":authority", self.authority), (":path", path)]
        if protocol is not None:
            fields.append((":protocol", protocol))
        reply = Reply()
        self.replies[sid] = reply
        self.bufs[sid] = bytearray()
        if method == "HEAD":
            self.h3.head_streams.add(sid)
        self.h3.send_headers(sid, [(k.encode(), v.encode("latin-1")) for k, v in fields + extra],
                             end_stream=end and not body)
        if body:
            self.h3.send_data(sid, body, end)
        self.flush()
        return sid

    def send_raw_headers(self, fields: list[tuple[bytes, bytes]], end: bool = True) -> int:
        """A request stream with exactly these fields (no checks: for malformed requests)."""
        sid = self.quic.get_next_available_stream_id()
        self.replies[sid] = Reply()
        self.bufs[sid] = bytearray()
        frame = self.h3._encode_headers(sid, fields)
        self.quic.send_stream_data(sid, bytes([FrameType.HEADERS]) + _varint(len(frame)) + frame, end)
        self.flush()
        return sid

    def open_wt_stream(self, session: int) -> int:
        """A bidirectional WebTransport stream in ``session``. aioquic's client sends the stream's
        signal but does not expect the server's raw bytes back on it: the stream is marked here
        as a WebTransport stream so its incoming data is reported, not parsed as frames."""
        sid = self.h3.create_webtransport_stream(session)
        with self.h3._get_or_create_stream(sid) as stream:
            stream.frame_type = FrameType.WEBTRANSPORT_STREAM
            stream.session_id = session
        return sid

    def send_body(self, sid: int, data: bytes, end: bool = False) -> None:
        reply = self.replies[sid]
        if reply.complete or reply.reset is not None:
            return  # answered (or reset) early: the rest is not wanted
        self.h3.send_data(sid, data, end)
        self.flush()

    def received(self, sid: int) -> bytearray:
        """The body bytes of stream ``sid`` so far (grows in place; no copy)."""
        return self.bufs[sid]

    def read_head(self, sid: int) -> Reply:
        reply = self.replies[sid]
        self._until(lambda: reply.status is not None or reply.complete or reply.reset is not None,
                    f"the head of stream {sid}", sid)
        return reply

    def read_some(self, sid: int, n: int) -> Reply:
        reply = self.replies[sid]
        buf = self.bufs[sid]
        self._until(lambda: len(buf) >= n or reply.complete or reply.reset is not None,
                    f"{n} body bytes on stream {sid}", sid)
        return reply

    def finish(self, sid: int) -> Reply:
        reply = self.replies[sid]
        self._until(lambda: reply.complete or reply.reset is not None, f"the end of stream {sid}", sid)
        return reply

    def _until(self, pred: Any, what: str, sid: int) -> None:
        reply = self.replies[sid]
        try:
            self.wait(pred, what)
        except Closed:
            reply.error = reply.error or "the server closed the connection"
        finally:
            reply.body = bytes(self.bufs[sid])

    def abort(self, sid: int) -> None:
        """Go away mid-response the h3 way: reset our side and ask the server to stop."""
        self.quic.reset_stream(sid, H3_REQUEST_CANCELLED)
        self.quic.stop_stream(sid, H3_REQUEST_CANCELLED)
        self.flush()

    def read_on(self, timeout: float = 1.0) -> None:
        """Keep the connection serviced (acks, timers) for a while."""
        self.step(timeout)

    def wait_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.step(deadline - time.monotonic())

    @property
    def told_closed(self) -> bool:
        """The server closed the connection (CONNECTION_CLOSE received: aioquic drains for
        3 PTOs, which can be seconds, before it reports the end)."""
        return self.closed or self.quic._state.name in ("DRAINING", "TERMINATED")

    def wait_told_closed(self, timeout: float = 10.0) -> None:
        self.wait(lambda: self.told_closed, "the server's CONNECTION_CLOSE", timeout)

    @property
    def reusable(self) -> bool:
        return not self.closed

    def describe(self) -> str:
        return f"h3 connection closed={self.closed} code={self.close_code} goaway={self.goaway}"


def _varint(n: int) -> bytes:
    buf = Buffer(capacity=8)
    buf.push_uint_var(n)
    return buf.data
