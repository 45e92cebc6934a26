"""The HTTP/2 stream worker: one process per request stream.

What it is: the process the h2 conn process spawns (``spawn_monitor``, label
``rr.h2.stream``, the listener's ``handler_spawn`` options) for each request.
It runs ``dispatch.begin/call/finish`` with the listener's application and
turns the returned shape into messages for the conn process.

What it owns: its ``Request``, the request body as it arrives (``H2Body``),
and the encoding of the response shape into (lowercase, validated) header
lists and body chunks. Its heap budget covers the body it buffers
(``supervisors.charge``) and the body chunks queued in its mailbox.

What it must never do: touch the socket or the ``H2Connection`` — only the
conn process does. It talks to the conn process by messages alone, and it is
monitored, not linked: if it crashes, only its own stream is answered 500 (or
reset), and the connection and sibling streams go on.

Mailbox protocol (conn → worker):

- ``("h2.body", data)`` — request body bytes, in order.
- ``("h2.body_end",)`` — the client ended the request stream.
- ``("h2.sent", stream_id)`` — one earlier ``h2.data`` message (not the one
  ending the stream) has been framed in full (back-pressure: at most
  ``IN_FLIGHT`` unacknowledged body bytes per worker).

Messages this worker sends the conn process:

- ``("h2.headers", stream_id, status, headers, end_stream)``
- ``("h2.data", stream_id, data, end_stream)`` (acknowledged by ``h2.sent``
  unless it ends the stream)
- ``("h2.trailers", stream_id, headers)`` (ends the stream)
- ``("h2.credit", stream_id, n)`` — n body bytes were consumed: the conn may
  return them to the peer's flow-control windows.

- ``("h2.response", stream_id, status, headers, body)`` — a whole ``Response``
  whose body is at most ``2 * CHUNK``: one message, not acknowledged.
- ``("h2.loop", stream_id)`` — this worker runs a ``Loop`` from now on: on a
  client reset or the connection's end the conn sends it ``(rr.resp.CLOSED,)``
  (and ``(rr.resp.DRAIN, deadline)`` on drain) instead of killing it.

While a ``Loop`` runs, every message that is not one of the conn's ``h2.*``
messages goes to its ``on_info``. ``WebSocket`` responses are answered 501 over
h2 in this version; the stream's byte-stream interface (``H2Body.read`` in,
``_Out.data`` out) is what an RFC 8441 tunnel will run on.
"""

from __future__ import annotations

import collections
import os
from typing import TYPE_CHECKING, Any

import gevent

import supervisors
from rr import dispatch
from rr import response as resp
from rr.http2 import codec
from rr.httpdate import http_date
from rr.request import Request

if TYPE_CHECKING:
    from rr.listener import ListenerRuntime

# Body chunks sent to the conn process are at most this big: with IN_FLIGHT, a stream
# holds at most 64 KiB + one chunk in the conn's mailbox (counted in the conn's heap budget).
CHUNK = 16384
# Sendfile reads.
FILE_CHUNK = 16384
# Unacknowledged body bytes a worker may have queued at the conn process (plus one final chunk).
IN_FLIGHT = 65536

_NO_BODY_STATUS = frozenset({204, 304})
# Connection-specific fields (RFC 9113 §8.2.2) and fields rr computes itself.
_DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"})

PAYLOAD_TOO_LARGE = resp.Response(413, [("content-type", "text/plain; charset=utf-8")], b"Payload Too Large")
REQUEST_TIMEOUT = resp.Response(408, [("content-type", "text/plain; charset=utf-8")], b"Request Timeout")


class BodyTooLarge(Exception):
    """The request body went over ``max_content_length``."""


class BodyTimeout(Exception):
    """The request body did not arrive within ``request_timeout``."""


def _is_body_msg(msg: Any) -> bool:
    return isinstance(msg, tuple) and bool(msg) and (msg[0] == "h2.body" or msg[0] == "h2.body_end")


class H2Body:
    """The request body of one stream, fed by the conn process's messages.

    ``read`` hands out what has arrived, waiting (bounded by ``timeout``) for
    more, and credits each consumed byte back to the conn process so the peer's
    flow-control window reopens only as the application actually reads.
    """

    def __init__(self, conn: supervisors.Pid, stream_id: int, ended: bool, limit: int, timeout: float) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.done = ended
        self.limit = limit
        self.timeout = timeout
        self.buf = b""
        self.received = 0

    def read(self, max_bytes: int) -> bytes:
        while not self.buf and not self.done:
            try:
                msg = supervisors.receive(_is_body_msg, timeout=self.timeout)
            except supervisors.Timeout:
                raise BodyTimeout() from None
            if msg[0] == "h2.body_end":
                self.done = True
            else:
                self.received += len(msg[1])
                if self.received > self.limit:
                    raise BodyTooLarge()
                self.buf = msg[1]
        if not self.buf:
            return b""
        data, self.buf = self.buf[:max_bytes], self.buf[max_bytes:]
        supervisors.send(self.conn, ("h2.credit", self.stream_id, len(data)))
        return data

    def read_all(self) -> tuple[bytes, int]:
        """The whole body, charged to this process's heap budget; returns (body, charged)."""
        parts = []
        charged = 0
        while chunk := self.read(65536):
            supervisors.charge(len(chunk))
            charged += len(chunk)
            parts.append(chunk)
        return b"".join(parts), charged


class _Out:
    """The sending half: messages to the conn process, at most ``IN_FLIGHT`` unacknowledged body bytes.

    The conn acknowledges (``h2.sent``) every body message but the one that ends
    the stream, in order, once it is framed; the stream's end needs no wait.
    """

    def __init__(self, conn: supervisors.Pid, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.sizes: collections.deque[int] = collections.deque()
        self.in_flight = 0
        self.head_sent = False
        self.ended = False
        self.buf: list[bytes] = []
        self.buf_len = 0
        self.scheduled = False

    def _acked(self, msg: Any) -> bool:
        return isinstance(msg, tuple) and (
            (len(msg) == 2 and msg[0] == "h2.sent" and msg[1] == self.stream_id) or msg == (resp.CLOSED,))

    def _room(self, size: int, timeout: float | None) -> None:
        while self.sizes and self.in_flight + size > IN_FLIGHT:
            msg = supervisors.receive(self._acked, timeout=timeout)
            if msg[0] is resp.CLOSED:
                raise _Abandon()  # the stream is gone (client reset, stall, connection end)
            self.in_flight -= self.sizes.popleft()

    def response(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """A whole small response in one message (the conn queues it; no acknowledgement)."""
        self.head_sent = self.ended = True
        supervisors.send(self.conn, ("h2.response", self.stream_id, status, headers, body))

    def headers(self, status: int, headers: list[tuple[str, str]], end: bool) -> None:
        self.head_sent = True
        self.ended = end
        supervisors.send(self.conn, ("h2.headers", self.stream_id, status, headers, end))

    def data(self, data: bytes, end: bool, timeout: float | None) -> None:
        """Queue body bytes; chunks written without yielding in between go out as one message.

        Small chunks are gathered up to ``CHUNK`` and handed to the conn when this
        process next yields (a hub callback), when the stream ends, or when the
        gathered bytes would exceed ``CHUNK``. The conn cannot run before this
        process yields anyway, so gathering changes no timing a client can see.
        """
        if len(data) > CHUNK:
            self.flush(timeout)
            view = memoryview(data)
            for offset in range(0, len(data), CHUNK):
                last = offset + CHUNK >= len(data)
                self._send(bytes(view[offset:offset + CHUNK]), end and last, timeout)
            self.ended = end
            return
        if self.buf_len + len(data) > CHUNK:
            self.flush(timeout)
        if data:
            self.buf.append(data)
            self.buf_len += len(data)
        if end:
            self.flush(timeout, True)
            self.ended = True
        elif self.buf and not self.scheduled:
            self.scheduled = True
            _run_callback(self._flush_soon)

    def _take(self) -> bytes:
        data = self.buf[0] if len(self.buf) == 1 else b"".join(self.buf)
        self.buf = []
        self.buf_len = 0
        return data

    def flush(self, timeout: float | None, end: bool = False) -> None:
        """Hand the gathered bytes to the conn (with ``end``: end the stream, even with none)."""
        if self.buf or end:
            self._send(self._take(), end, timeout)

    def _flush_soon(self) -> None:
        # Hub callback: this process yielded. No waiting here (not in the process); the
        # next data() waits for room, so the overshoot is at most one CHUNK.
        self.scheduled = False
        if self.buf and not self.ended:
            data = self._take()
            supervisors.send(self.conn, ("h2.data", self.stream_id, data, False))
            self.sizes.append(len(data))
            self.in_flight += len(data)

    def _send(self, piece: bytes, final: bool, timeout: float | None) -> None:
        self._room(len(piece), timeout)
        supervisors.send(self.conn, ("h2.data", self.stream_id, piece, final))
        if not final:
            self.sizes.append(len(piece))
            self.in_flight += len(piece)

    def trailers(self, headers: list[tuple[str, str]], timeout: float | None) -> None:
        self.flush(timeout)
        supervisors.send(self.conn, ("h2.trailers", self.stream_id, headers))
        self.ended = True


def _run_callback(fn: Any) -> None:
    gevent.get_hub().loop.run_callback(fn)


class InvalidHeader(ValueError):
    """A response header name or value that cannot go on the wire."""


# Lowercased response field names already found to be tokens (bounded: cleared when full).
_valid_names: dict[str, str] = {}


def h2_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Response headers for h2: lowercase names, connection-specific fields dropped.

    Raises ``InvalidHeader`` for CR, LF or NUL in a value, or a name that is
    empty or not a token (pseudo-headers included).
    """
    out = []
    valid = _valid_names
    for name, value in headers:
        lname = valid.get(name) if isinstance(name, str) else None
        if lname is None:
            if not isinstance(name, str):
                raise InvalidHeader(f"header {name!r} is not a str pair")
            lname = name.lower()
            if lname in _DROPPED:
                continue
            if not lname or not codec.TOKEN.issuperset(lname):
                raise InvalidHeader(f"invalid response header {name!r}")
            if len(valid) >= 1024:
                valid.clear()
            valid[name] = lname
        if not isinstance(value, str):
            raise InvalidHeader(f"header {name!r} is not a str pair")
        if "\r" in value or "\n" in value or "\0" in value:
            raise InvalidHeader(f"invalid value of response header {name!r}")
        out.append((lname, value))
    return out


class StreamWorker:
    def __init__(self, conn: supervisors.Pid, stream_id: int, req: Request, runtime: ListenerRuntime,
                 body: H2Body) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.req = req
        self.runtime = runtime
        self.body = body
        self.out = _Out(conn, stream_id)
        self.timeout = runtime.config.request_timeout
        self.is_head = req.method == "HEAD"
        self.started = 0.0

    def run(self) -> None:
        req = self.req
        config = self.runtime.config
        self.started = started = dispatch.begin(req)
        charged = 0
        result: resp.Shape | None = None
        declared = req.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_content_length:
            result = PAYLOAD_TOO_LARGE
        elif config.body_buffering == "auto" and not self.body.done:
            try:
                req._body, charged = self.body.read_all()
            except BodyTooLarge:
                result = PAYLOAD_TOO_LARGE
            except BodyTimeout:
                result = REQUEST_TIMEOUT
        if result is None:
            result = dispatch.call(self.runtime.app, req, started)
            if isinstance(result, resp.WebSocket):
                result = dispatch.NOT_IMPLEMENTED
        status = result.status if not isinstance(result, resp.WebSocket) else 501
        try:
            if isinstance(result, resp.Response):
                self.send_response(result)
            elif isinstance(result, resp.Stream):
                self.send_stream(result)
            elif isinstance(result, resp.Sendfile):
                self.send_file(result)
            elif isinstance(result, resp.Loop):
                self.send_loop(result)
        except (BodyTooLarge, BodyTimeout, supervisors.Timeout):
            status = -1
        finally:
            if charged:
                supervisors.release(charged)
            dispatch.finish(req, status, started)

    # -- shapes ----------------------------------------------------------------

    def crashed(self, exc: BaseException) -> None:
        error = dispatch.crashed(self.req, self.started, exc)
        self.send_response(error)

    def fields(self, status: int, headers: list[tuple[str, str]], length: int | None) -> list[tuple[str, str]] | None:
        """The response head's fields; None (and a 500 sent instead) when it is invalid."""
        if not 200 <= status <= 999:
            self.crashed(ValueError(f"a handler may not return the status {status} over h2"))
            return None
        try:
            fields = [f for f in h2_headers(headers) if f[0] != "content-length"]
        except InvalidHeader as exc:
            self.crashed(exc)
            return None
        if not any(name == "date" for name, _ in fields):
            fields.append(("date", http_date()))
        if length is not None:
            fields.append(("content-length", str(length)))
        return fields

    def head(self, status: int, headers: list[tuple[str, str]], length: int | None, end: bool) -> bool:
        """Send the response head; False (and a 500 instead) when it is invalid."""
        fields = self.fields(status, headers, length)
        if fields is None:
            return False
        self.out.headers(status, fields, end)
        return True

    def send_response(self, result: resp.Response) -> None:
        status, body = result.status, result.body
        if status in _NO_BODY_STATUS:
            self.head(status, result.headers, None, True)
            return
        length = len(body)
        if self.is_head and not body:
            declared = resp.get_header(result, "content-length")
            if declared is not None and declared.isdigit():
                length = int(declared)
        if len(body) <= 2 * CHUNK:
            fields = self.fields(status, result.headers, length)
            if fields is not None:
                self.out.response(status, fields, b"" if self.is_head else body)
            return
        if self.head(status, result.headers, length, self.is_head) and not self.is_head:
            self.out.data(body, True, self.timeout)

    def send_stream(self, result: resp.Stream) -> None:
        no_body = self.is_head or result.status in _NO_BODY_STATUS
        out = self.out
        state = {"head": False, "ok": True}

        def write_head(end: bool) -> None:
            if not state["head"]:
                state["head"] = True
                state["ok"] = self.head(result.status, result.headers, None, end)
                if not state["ok"]:
                    raise _Abandon()

        def send(data: bytes = b"", fin: bool = False, trailers: Any = None) -> None:
            if out.ended:
                raise RuntimeError("send() after fin")
            tlist = resp.header_list(trailers) if fin and not no_body else []
            write_head(fin and not data and not tlist or (fin and no_body))
            if out.ended:
                return
            if no_body:
                if fin:
                    out.data(b"", True, self.timeout)
                return
            if data or (fin and not tlist):
                out.data(bytes(data), fin and not tlist, self.timeout)
            if tlist:
                try:
                    fields = h2_headers(tlist)
                except InvalidHeader as exc:
                    dispatch.crashed(self.req, self.started, exc)
                    raise _Abandon() from None
                out.trailers(fields, self.timeout)

        try:
            result.fn(send)
        except _Abandon:
            return
        except Exception as exc:
            if not state["head"]:
                self.crashed(exc)
                return
            dispatch.crashed(self.req, self.started, exc)
            raise _Abandon() from exc
        if not out.ended:
            send(b"", fin=True)

    def send_loop(self, result: resp.Loop) -> None:
        """Run the Loop here: messages to this process go to ``on_info``, ``push`` sends DATA."""
        if self.is_head or result.status in _NO_BODY_STATUS:
            self.head(result.status, result.headers, None, True)
            return
        if not self.head(result.status, result.headers, None, False):
            return
        supervisors.send(self.conn, ("h2.loop", self.stream_id))
        out = self.out

        def push(chunk: bytes) -> None:
            if chunk:
                out.data(bytes(chunk), False, self.timeout)

        try:
            outcome = dispatch.run_loop(self.req, self.started, result, push, (_Abandon,), _for_loop)
        except dispatch.LoopCrashed:
            raise _Abandon() from None
        if outcome == "closed":
            raise _Abandon()  # nothing more can be sent on this stream
        out.data(b"", True, self.timeout)

    def send_file(self, result: resp.Sendfile) -> None:
        try:
            fd = os.open(result.path, os.O_RDONLY)
        except OSError as exc:
            self.crashed(exc)
            return
        try:
            size = os.fstat(fd).st_size
            offset = result.offset
            length = result.length if result.length is not None else max(0, size - offset)
            if offset < 0 or length < 0 or offset + length > size:
                self.crashed(ValueError("sendfile range outside the file"))
                return
            no_body = self.is_head or result.status in _NO_BODY_STATUS or not length
            if not self.head(result.status, result.headers,
                             None if result.status in _NO_BODY_STATUS else length, no_body):
                return
            while length > 0:
                chunk = os.pread(fd, min(FILE_CHUNK, length), offset)
                if not chunk:  # the file shrank: the promised length cannot be met
                    raise _Abandon()
                offset += len(chunk)
                length -= len(chunk)
                self.out.data(chunk, length == 0, self.timeout)
        finally:
            os.close(fd)


def _for_loop(msg: Any) -> bool:
    """Messages a Loop's ``on_info`` sees: all but the conn's own protocol messages."""
    return not (isinstance(msg, tuple) and msg and isinstance(msg[0], str) and msg[0].startswith("h2."))


class _Abandon(Exception):
    """Internal: the response cannot be completed; the worker exits abnormally (→ RST_STREAM)."""


def run_stream(conn: supervisors.Pid, stream_id: int, req: Request, runtime: ListenerRuntime,
               ended: bool) -> None:
    """The stream worker's body (spawned by the conn process)."""
    config = runtime.config
    body = H2Body(conn, stream_id, ended, config.max_content_length, config.request_timeout)
    req._source = body
    worker = StreamWorker(conn, stream_id, req, runtime, body)
    try:
        worker.run()
    except _Abandon:
        raise supervisors.Exit("abandoned") from None
