"""Wire clients with one interface for every protocol column of the behaviour matrix.

What it owns: ``H1Wire`` (h11, the python-hyper HTTP/1.1 state machine, over
a gevent socket) and ``H2Wire`` (``tests/rr/http2/frames.Peer``: raw frames,
hpack, over h2c or TLS with ALPN h2), both answering ``Reply`` values built
from what was on the wire: status, header names as sent, body bytes,
trailers, whether the message ended properly, and an h2 stream's reset code.

What it must never do: fix up what the server sent. A name is kept in the
case it had on the wire (h11's ``raw_items``), a body that stops early is
reported incomplete, and bytes a HEAD or 204 must not carry break the next
response on the connection (h11 refuses them) instead of being skipped.

Both clients run in the test's hub (gevent sockets), next to the server:
a test needs no thread for them. The interface, per request handle:
``start`` (head, and a body unless told to stream it), ``send_body``,
``read_head``, ``read_some``, ``finish`` (until the message ends or breaks)
and ``abort`` (h1: close the connection; h2: ``RST_STREAM(CANCEL)``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h11
from gevent import socket as gsocket
from gevent import ssl as gssl
from hyperframe.frame import Frame, WindowUpdateFrame

from tests.rr.http2 import frames


@dataclass
class Reply:
    """One response as the client saw it."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # names as on the wire, no pseudo-headers
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    # informational (1xx) heads before the final one: (status, headers as on the wire)
    interim: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)
    complete: bool = False  # h1: framing satisfied (last chunk / content-length); h2: END_STREAM
    reset: int | None = None  # h2: the RST_STREAM code, if the stream was reset
    error: str | None = None  # what the client library said when the message broke

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def names(self) -> list[str]:
        return [k for k, _ in self.headers]

    def describe(self) -> str:
        return (f"status={self.status} headers={self.headers} body={self.body[:80]!r}"
                f"{'...' if len(self.body) > 80 else ''} ({len(self.body)} bytes) trailers={self.trailers} "
                f"complete={self.complete} reset={frames.name(self.reset) if self.reset is not None else None} "
                f"error={self.error}")


def client_context(cafile: str | None = None) -> Any:
    """A verifying client context whose sockets are gevent's (cooperative: the server shares the hub).

    ``gevent.ssl.create_default_context`` returns the stdlib's blocking class, so build it here.
    """
    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    if cafile is None:
        ctx.load_default_certs()
    else:
        ctx.load_verify_locations(cafile)
    return ctx


def tls_socket(port: int, cafile: str, alpn: list[str], timeout: float = 10.0) -> Any:
    """A cooperative TLS client socket to 127.0.0.1:port that negotiated ``alpn[0]``."""
    ctx = client_context(cafile)
    ctx.set_alpn_protocols(alpn)
    raw = gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    chosen = sock.selected_alpn_protocol()
    if chosen != alpn[0]:
        sock.close()
        raise AssertionError(f"ALPN chose {chosen!r}, expected {alpn[0]!r}")
    return sock


class H1Wire:
    """HTTP/1.1 through h11, one request at a time on one connection."""

    def __init__(self, port: int, sock: Any = None, timeout: float = 10.0) -> None:
        self.sock = sock if sock is not None else gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.authority = f"127.0.0.1:{port}"
        self.conn = h11.Connection(h11.CLIENT)
        self.reply = Reply()
        self.head_seen = False
        self.done = False
        self.eof = False
        self.send_failed = False
        self.chunked = False

    def __enter__(self) -> H1Wire:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _send(self, data: bytes | None) -> None:
        if not data or self.send_failed:
            return
        try:
            self.sock.sendall(data)
        except OSError:  # the server answered early and closed: read what it said
            self.send_failed = True

    def start(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
              *, chunked: bool = False, end: bool = True) -> int:
        """Send a request; ``chunked`` frames the body without a length, ``end=False`` leaves it open."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = [("host", self.authority), *headers]
        declared = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in fields)
        if not declared and (chunked or not end):
            fields.append(("transfer-encoding", "chunked"))
        elif not declared and body:
            fields.append(("content-length", str(len(body))))
        self.reply, self.head_seen, self.done = Reply(), False, False
        self._send(self.conn.send(h11.Request(method=method, target=path, headers=fields)))
        if body:
            self._send(self.conn.send(h11.Data(data=body)))
        if end:
            self._send(self.conn.send(h11.EndOfMessage()))
        return 0

    def send_body(self, handle: int, data: bytes, end: bool = False) -> None:
        if data:
            self._send(self.conn.send(h11.Data(data=data)))
        if end:
            self._send(self.conn.send(h11.EndOfMessage()))

    def _event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.sock.settimeout(self.timeout)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            self.conn.receive_data(data)

    def _step(self) -> bool:
        """Take one event into the reply; False once the response is over (ended or broken)."""
        reply = self.reply
        try:
            event = self._event()
        except h11.RemoteProtocolError as exc:
            reply.error = f"h11: {exc}"
            self.done = True
            return False
        if isinstance(event, h11.InformationalResponse):
            reply.interim.append((event.status_code, [(k.decode("latin-1"), v.decode("latin-1"))
                                                      for k, v in event.headers.raw_items()]))
        elif isinstance(event, h11.Response):
            reply.status = event.status_code
            reply.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
            self.head_seen = True
        elif isinstance(event, h11.Data):
            reply.body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            reply.trailers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
            reply.complete = True
            self.done = True
            return False
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            reply.error = reply.error or f"h11: {event}"
            self.done = True
            return False
        return True

    def read_head(self, handle: int) -> Reply:
        while not self.head_seen and not self.done:
            self._step()
        return self.reply

    def read_some(self, handle: int, n: int) -> Reply:
        """Read until at least ``n`` body bytes arrived (or the response is over)."""
        while len(self.reply.body) < n and not self.done:
            self._step()
        return self.reply

    def finish(self, handle: int) -> Reply:
        while not self.done:
            self._step()
        return self.reply

    def abort(self, handle: int) -> None:
        """Go away mid-response: close the connection (unread bytes make it a reset)."""
        self.close()

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE


class H2Wire(frames.Peer):
    """HTTP/2 with raw frames: every frame is seen, resets and GOAWAY carry their codes.

    Opens its receive windows to the maximum at once (no WINDOW_UPDATE
    bookkeeping needed for a test's bodies) and sends request bodies within
    the server's windows, reading frames while it waits for more.
    """

    def __init__(self, port: int, sock: Any = None, scheme: str = "http", timeout: float = 10.0) -> None:
        super().__init__(port, sock=sock, scheme=scheme, timeout=timeout,
                         settings_frame=frames.settings((frames.INITIAL_WINDOW_SIZE, frames.WINDOW_MAX)))
        self.send(frames.window_update(0, frames.WINDOW_MAX - 65535))
        self.next_sid = 1
        self.conn_credit = 0
        self.stream_credit: dict[int, int] = defaultdict(int)
        self.conn_sent = 0
        self.stream_sent: dict[int, int] = defaultdict(int)

    def track(self, f: Frame) -> None:
        super().track(f)
        if isinstance(f, WindowUpdateFrame):
            if f.stream_id == 0:
                self.conn_credit += f.window_increment
            else:
                self.stream_credit[f.stream_id] += f.window_increment

    def window(self, sid: int) -> int:
        initial = (self.server_settings or {}).get(frames.INITIAL_WINDOW_SIZE, 65535)
        return min(65535 + self.conn_credit - self.conn_sent,
                   initial + self.stream_credit[sid] - self.stream_sent[sid])

    def start(self, method: str, path: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
              *, chunked: bool = False, end: bool = True) -> int:
        """Open a stream; without ``chunked`` a body gets a content-length (as h1's would)."""
        sid = self.next_sid
        self.next_sid += 2
        extra = [(k.lower(), v) for k, v in headers]
        if body and end and not chunked and not any(k == "content-length" for k, _ in extra):
            extra.append(("content-length", str(len(body))))
        self.responses[sid] = frames.Response()
        self.send(self.headers(sid, self.request_fields(method, path, extra), end_stream=end and not body))
        if body or not end:
            self.send_body(sid, body, end)
        return sid

    def send_body(self, sid: int, data: bytes, end: bool = False) -> None:
        view = memoryview(data)
        while True:
            res = self.responses[sid]
            if res.done or self.closed:  # answered (or reset) early: the rest is not wanted
                return
            n = min(len(view), 16384, self.window(sid))
            if n <= 0 and view:
                self.read_frame()
                continue
            last = n == len(view)
            self.send(frames.data(sid, bytes(view[:n]), end_stream=end and last))
            self.conn_sent += n
            self.stream_sent[sid] += n
            view = view[n:]
            if last:
                return

    def _reply(self, sid: int, error: str | None = None) -> Reply:
        res = self.responses[sid]
        fields = res.headers or []
        status = res.status
        interim = [(int(dict(block)[":status"]), [(k, v) for k, v in block if not k.startswith(":")])
                   for block in res.interim]
        if status is not None and status < 200:  # only interim heads so far
            interim.append((status, [(k, v) for k, v in fields if not k.startswith(":")]))
            fields, status = [], None
        return Reply(
            status=status,
            headers=[(k, v) for k, v in fields if not k.startswith(":")],
            body=res.body,
            trailers=list(res.trailers),
            interim=interim,
            complete=res.ended,
            reset=res.reset,
            error=error,
        )

    def _until(self, sid: int, pred: Any, what: str) -> Reply:
        try:
            self.wait(pred, what=what)
        except frames.Closed:
            return self._reply(sid, "the server closed the connection")
        return self._reply(sid)

    def read_head(self, sid: int) -> Reply:
        res = self.responses[sid]
        return self._until(sid, lambda: res.done or (res.status is not None and res.status >= 200),
                           f"the head of stream {sid}")

    def read_some(self, sid: int, n: int) -> Reply:
        res = self.responses[sid]
        return self._until(sid, lambda: res.done or len(res.body) >= n, f"{n} body bytes on stream {sid}")

    def finish(self, sid: int) -> Reply:
        res = self.responses[sid]
        return self._until(sid, lambda: res.done, f"the end of stream {sid}")

    def abort(self, sid: int) -> None:
        """Go away mid-response the h2 way: reset the stream (the connection stays)."""
        self.send(frames.rst(sid, frames.CANCEL))

    def wait_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.read_frame(deadline - time.monotonic())
