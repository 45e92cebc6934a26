"""The stream worker: one process per request on a multiplexed connection (h2 and h3).

What it is: the process a multiplexed conn process spawns (``spawn_monitor``,
the listener's ``handler_spawn`` options) for each request stream. It runs
the exchange (``rr.exchange``) for its ``Request`` with a sink that turns the
response into messages for the conn process, and a body source fed by the
conn process's messages. Nothing here knows a protocol: the conn process
owns the framing, the socket and flow control, and encodes what it is sent.

What it owns: its ``Request``, the request body as it arrives
(``StreamBody``), and the response body bytes the conn process lets it queue
there (its credit: at most ``IN_FLIGHT``, within the connection's
``send_budget``). For a ``WebSocket`` answer to an
extended CONNECT (RFC 8441 on h2, RFC 9220 on h3) it is also the session's process: the session
(``rr.ws.session``) runs here over ``WsStream`` (the BODY messages in, DATA
messages out, the same back-pressure and credits). Its heap budget covers the
body it buffers (``supervisors.charge``) and its mailbox.

What it must never do: touch the socket or the connection's state. It is
monitored, not linked: if it crashes, only its own stream is answered 500
(or reset), and the connection and sibling streams go on.

Mailbox protocol (conn → worker):

- ``(BODY, data)`` — request body bytes, in order; ``(BODY_END,)`` — the
  client ended the request.
- ``(SENT, n)`` — ``n`` more bytes of credit. Back-pressure: every body byte
  a worker sends the conn (``RESPONSE`` and ``DATA``, the last one too) is
  paid from its credit, and a worker without enough says so (``WANT``) and
  waits for ``SENT``. Unasked, the conn gives a fair share of its
  ``send_budget`` (with the worker's arguments, and back as its bytes are
  framed) — on h2, up to what asking would get while less than half the
  budget is out; asked, up to the peer's window plus one chunk (``queue_limit``:
  never 64 KiB for a peer that opened none); never more across the
  connection's streams than its ``send_budget``.
- ``(rr.resp.CLOSED,)`` — the client reset the stream or the connection
  ended: the next body read, ``send`` or ``push`` raises ``rr.ClientGone``
  (a ``Loop``'s ``on_info`` may see the message itself). The conn kills a
  worker that has not ended within its grace after this.
- ``(rr.resp.DRAIN, deadline)`` — only while a ``Loop`` runs.

Messages this worker sends the conn process (``sid`` names the stream):

- ``(RESPONSE, sid, status, fields, length, body)`` — a whole response whose
  body is at most ``2 * CHUNK`` and within the worker's credit (HEAD/204/304: ``b""``).
- ``(INTERIM, sid, status, fields)`` — an informational (1xx) head before the
  final one (103 Early Hints); the stream stays open.
- ``(HEAD, sid, status, fields, length, end)`` — the head of a longer response.
- ``(DATA, sid, data, end)`` — body bytes, within the worker's credit.
- ``(TRAILERS, sid, fields)`` — trailers; ends the stream.
- ``(CREDIT, sid, n)`` — n body bytes were consumed: the conn may give them
  back to the peer's flow-control windows.
- ``(WANT, sid)`` — the worker waits for more send credit than it has.
- ``(LOOP, sid)`` — a ``Loop`` runs from now on: on drain the conn sends it
  ``(DRAIN, deadline)``.

Field sections in these messages are already checked by the exchange, against
the listener's ``max_response_header_size`` and against ``field_limit`` (the
peer's own limit on a field section when its protocol has one — h2's
``SETTINGS_MAX_HEADER_LIST_SIZE``, h3's ``SETTINGS_MAX_FIELD_SECTION_SIZE`` —
as the conn knew it when it started the worker; ``None``: none).

A worker that ends abnormally (a crash after the head, an aborted response)
makes the conn reset its stream; one that ends before any head makes the
conn answer 500 for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent

import supervisors
from rr import exchange
from rr import response as resp
from rr.config import WsOptions
from rr.exchange import BodyError, ClientGone
from rr.request import Request

# Message tags (first element of each tuple), named in rr.streammsg; re-exported for the conns.
from rr.streammsg import (  # noqa: F401
    BODY,
    BODY_END,
    CHUNK,
    CREDIT,
    DATA,
    HEAD,
    INTERIM,
    LOOP,
    RESPONSE,
    SENT,
    TRAILERS,
    WANT,
)

if TYPE_CHECKING:
    from rr.runtime import ListenerRuntime


# Credit one worker may hold (bytes queued at the conn process and not yet framed, or still
# to send): with the connection's send_budget, what a peer that reads nothing can pin.
IN_FLIGHT = 65536
# A worker told its stream is gone (CLOSED) is killed if it has not ended within this.
CLOSE_GRACE = 1.0

_CLOSED = (resp.CLOSED,)


def _is_body_msg(msg: Any) -> bool:
    return isinstance(msg, tuple) and bool(msg) and (msg[0] == BODY or msg[0] == BODY_END or msg == _CLOSED)


def _is_ack(msg: Any) -> bool:
    return type(msg) is tuple and len(msg) == 2 and msg[0] == SENT


def _is_ack_or_closed(msg: Any) -> bool:
    return _is_ack(msg) or msg == _CLOSED


def queue_limit(window: int) -> int:
    """Credit a worker may hold (bytes queued at the conn, unframed): the peer's window plus a chunk."""
    return min(IN_FLIGHT, max(0, window) + CHUNK)


def _is_closed(msg: Any) -> bool:
    return msg == _CLOSED


def _for_loop(msg: Any) -> bool:
    """Messages a Loop's ``on_info`` sees: all but the conn's own stream protocol."""
    return not (isinstance(msg, tuple) and msg and isinstance(msg[0], str) and msg[0].startswith("stream."))


def _for_loop_or_credit(msg: Any) -> bool:
    """What a Loop's process takes: its own messages, and credit (``StreamSink.loop_own``)."""
    return _is_ack(msg) or _for_loop(msg)


class StreamBody:
    """The request body of one stream, fed by the conn process's messages.

    ``read`` hands out what has arrived, waiting (bounded by ``timeout``) for
    more, and credits each consumed byte back to the conn process so the peer's
    flow-control window reopens only as the application actually reads. Over
    ``limit`` bytes → ``BodyError(413)``; no byte for ``timeout`` → 408; the
    client gone → ``ClientGone``.
    """

    def __init__(self, conn: supervisors.Pid, sid: int, ended: bool, limit: int, timeout: float) -> None:
        self.conn = conn
        self.sid = sid
        self.done = ended
        self.limit = limit
        self.timeout = timeout
        self.buf = b""
        self.received = 0
        self.gone = False

    def read(self, max_bytes: int) -> bytes:
        while not self.buf and not self.done:
            if self.gone:
                raise ClientGone()
            try:
                msg = supervisors.receive(_is_body_msg, timeout=self.timeout)
            except supervisors.Timeout:
                raise BodyError(408, "body_timeout") from None
            if msg[0] == BODY_END:
                self.done = True
            elif msg[0] is resp.CLOSED:
                self.gone = True
                raise ClientGone()
            else:
                self.received += len(msg[1])
                if self.received > self.limit:
                    raise BodyError(413, "body_too_large")
                self.buf = msg[1]
        if not self.buf:
            return b""
        data, self.buf = self.buf[:max_bytes], self.buf[max_bytes:]
        supervisors.send(self.conn, (CREDIT, self.sid, len(data)))
        return data


class StreamSink:
    """The exchange's sink for a stream: messages to the conn, with back-pressure.

    Every body byte is paid from the credit the conn gives (``SENT``); without
    enough for the next message the sink waits for more (bounded by ``timeout``).
    Body chunks written without yielding in between go out as one message
    (gathered up to ``CHUNK``, handed over when this process next yields, the
    stream ends, or the chunk is full): the conn cannot run before this
    process yields anyway, so gathering changes no timing a client can see.
    """

    def __init__(self, conn: supervisors.Pid, sid: int, body: StreamBody, timeout: float,
                 credit: int = IN_FLIGHT, ws: WsOptions | None = None, field_limit: int | None = None) -> None:
        self.config_ws = ws if ws is not None else WsOptions()
        self.field_limit = field_limit
        self.conn = conn
        self.sid = sid
        self.body = body
        self.timeout = timeout
        self.credit = credit
        self.asked = False  # a WANT is out, no SENT since
        self.ended = False
        self.buf: list[bytes] = []
        self.buf_len = 0
        self.scheduled = False

    # -- client gone ---------------------------------------------------------------

    def _check_gone(self) -> None:
        """Raise ``ClientGone`` once the conn said so (cheap when the mailbox is empty)."""
        if self.body.gone:
            raise ClientGone()
        if supervisors.mailbox_size():
            while True:
                try:
                    ack = supervisors.receive(_is_ack, timeout=0)
                except supervisors.Timeout:
                    break
                self._acked(ack)
            if supervisors.flush_mailbox(_is_closed):
                self.body.gone = True
                raise ClientGone()

    def _ask(self) -> None:
        if not self.asked:
            self.asked = True
            supervisors.send(self.conn, (WANT, self.sid))

    def _more_credit(self) -> None:
        """Ask for credit (once) and wait for some."""
        self._ask()
        while True:
            try:
                msg = supervisors.receive(_is_ack_or_closed, timeout=self.timeout)
            except supervisors.Timeout:
                raise ClientGone() from None  # the client has not read for request_timeout
            if msg[0] is resp.CLOSED:
                self.body.gone = True
                raise ClientGone()
            self._acked(msg)
            if self.credit > 0:
                return

    def _acked(self, ack: tuple[str, int]) -> None:
        """The conn gave ``ack[1]`` more bytes of credit."""
        self.credit += ack[1]
        self.asked = False

    # -- the sink ------------------------------------------------------------------

    def respond(self, status: int, fields: list[tuple[str, str]], length: int | None, body: bytes,
                close: bool) -> None:
        if len(body) <= 2 * CHUNK and len(body) <= self.credit:
            self.credit -= len(body)
            self.ended = True
            supervisors.send(self.conn, (RESPONSE, self.sid, status, fields, length, body))
            return
        self.head(status, fields, length, close, False)
        self.data(body, True)

    def interim(self, status: int, fields: list[tuple[str, str]]) -> bool:
        supervisors.send(self.conn, (INTERIM, self.sid, status, fields))
        return True

    def head(self, status: int, fields: list[tuple[str, str]], length: int | None, close: bool,
             end: bool) -> None:
        self.ended = end
        supervisors.send(self.conn, (HEAD, self.sid, status, fields, length, end))

    def data(self, data: bytes, end: bool) -> None:
        self._check_gone()
        if len(data) > CHUNK:
            self.flush()
            view = memoryview(data)
            for offset in range(0, len(data), CHUNK):
                last = offset + CHUNK >= len(data)
                self._send(bytes(view[offset:offset + CHUNK]), end and last)
            self.ended = end
            return
        if self.buf_len + len(data) > CHUNK:
            self.flush()
        if data:
            self.buf.append(data)
            self.buf_len += len(data)
        if end:
            self.flush(True)
            self.ended = True
        elif self.buf and not self.scheduled:
            self.scheduled = True
            gevent.get_hub().loop.run_callback(self._flush_soon)

    def trailers(self, fields: list[tuple[str, str]]) -> None:
        self._check_gone()
        self.flush()
        supervisors.send(self.conn, (TRAILERS, self.sid, fields))
        self.ended = True

    def sendfile(self, fd: int, offset: int, length: int) -> None:
        try:
            exchange.copy_file(fd, offset, length, self.data, CHUNK)
        except exchange.FileTruncated:
            self.abort()
            raise exchange.Aborted() from None

    def abort(self) -> None:
        """Nothing to send: the worker's abnormal exit makes the conn reset the stream."""
        self.buf = []
        self.buf_len = 0

    def loop_enter(self) -> Callable[[Any], bool] | None:
        supervisors.send(self.conn, (LOOP, self.sid))
        return _for_loop_or_credit

    def loop_own(self, msg: Any) -> bool:
        """Credit that comes while a Loop waits lets bytes gathered without it go out."""
        if not _is_ack(msg):
            return False
        self._acked(msg)
        self._flush_credited()
        return True

    def loop_exit(self) -> None:
        pass

    def websocket(self, accepted: Any, shape: resp.WebSocket, req: Request) -> None:
        """RFC 8441: answer the extended CONNECT 200 (the stream stays open) and run the
        WebSocket session (``rr.ws.session``) in this worker over the stream's DATA."""
        from rr.ws import session as ws_session

        self.head(200, list(accepted.fields), None, False, False)
        self.loop_enter()  # drain reaches the session as (DRAIN, deadline): it closes 1001
        if self.body.done:  # END_STREAM came with the HEADERS: the session sees the end at once
            supervisors.send(supervisors.self(), (BODY_END,))
        ws_session.run(WsStream(self), req, shape.handler, shape.state, self.config_ws,
                       accepted.extensions)

    # Set by the conn that can carry WebTransport (h3 with the ``webtransport`` option).
    serves_webtransport = False

    def webtransport(self, shape: resp.WebTransport, req: Request) -> None:
        """A WebTransport session (HTTP/3): answer its CONNECT 200 and run it in this worker."""
        from rr import webtransport

        webtransport.run(self, req, shape)

    # -- gathering -----------------------------------------------------------------

    def _take(self) -> bytes:
        data = self.buf[0] if len(self.buf) == 1 else b"".join(self.buf)
        self.buf = []
        self.buf_len = 0
        return data

    def flush(self, end: bool = False) -> None:
        """Hand the gathered bytes to the conn (with ``end``: end the stream, even with none)."""
        if self.buf or end:
            self._send(self._take(), end)

    def _flush_soon(self) -> None:
        # Hub callback: this process yielded. No waiting here (not in the process): without
        # the credit the bytes stay gathered for the next data() or the end, which wait.
        self.scheduled = False
        self._flush_credited()

    def _flush_credited(self) -> None:
        """Hand over as much of the gathered bytes as the credit pays for (no waiting); ask
        for the rest."""
        if not self.buf or self.ended:
            return
        if self.buf_len > self.credit:
            self._ask()
        n = min(self.buf_len, self.credit)
        if n:
            data = self._take()
            if n < len(data):
                self.buf = [data[n:]]
                self.buf_len = len(data) - n
                data = data[:n]
            self.credit -= n
            supervisors.send(self.conn, (DATA, self.sid, data, False))

    def _send(self, piece: bytes, final: bool) -> None:
        """Send ``piece``, in parts as credit comes (each part paid for before it goes)."""
        while len(piece) > self.credit:
            if self.credit > 0:
                part, piece = piece[:self.credit], piece[self.credit:]
                self.credit = 0
                supervisors.send(self.conn, (DATA, self.sid, part, False))
            self._more_credit()
        self.credit -= len(piece)
        supervisors.send(self.conn, (DATA, self.sid, piece, final))


class WsStream:
    """A stream's DATA as a WebSocket session's byte stream (``rr.ws.session.MessageStream``).

    Incoming bytes are the conn's ``BODY`` messages, taken by the session's own loop
    (no reader process) and credited back (``CREDIT``) once processed, so the peer's
    window reopens only as the session keeps up. ``write`` sends ``DATA`` and waits for
    room (``StreamSink``'s back-pressure); ``close`` ends our side (END_STREAM).
    ``BODY_END`` is the end of the stream; ``CLOSED`` (a reset, the connection gone) raises
    ``ClientGone``.
    """

    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink

    def read(self, max_bytes: int) -> bytes:
        return self.sink.body.read(max_bytes)

    def write(self, data: bytes) -> None:
        sink = self.sink
        if sink.ended:
            raise ClientGone()
        sink.data(data, False)
        sink.flush()

    def close(self) -> None:
        sink = self.sink
        if not sink.ended and not sink.body.gone:
            try:
                sink.data(b"", True)
            except ClientGone:
                pass

    def incoming(self, msg: Any) -> bytes | bool:
        if type(msg) is not tuple or not msg:
            return False
        tag = msg[0]
        if tag == BODY:
            return bytes(msg[1])
        if tag == BODY_END:
            return b""
        if tag == SENT and len(msg) == 2:
            self.sink._acked(msg)
            return True
        if msg == _CLOSED:
            self.sink.body.gone = True
            raise ClientGone()
        return False

    def consumed(self, n: int) -> None:
        supervisors.send(self.sink.conn, (CREDIT, self.sink.sid, n))


def reap(pids: list[supervisors.Pid], grace: float = CLOSE_GRACE) -> None:
    """Give workers told their connection ended ``grace`` to finish, then kill the rest.

    Run in a process of its own (a reaper) by a conn process that is ending.
    """
    refs = {supervisors.monitor(pid): pid for pid in pids}
    deadline = time.monotonic() + grace
    while refs:
        try:
            msg = supervisors.receive(lambda m: isinstance(m, tuple) and m[:1] == ("DOWN",) and m[1] in refs,
                                      timeout=max(0.0, deadline - time.monotonic()))
        except supervisors.Timeout:
            break
        refs.pop(msg[1])
    for pid in refs.values():
        supervisors.exit(pid, "kill")


def run_stream(conn: supervisors.Pid, sid: int, req: Request, runtime: ListenerRuntime, ended: bool,
               credit: int = IN_FLIGHT, field_limit: int | None = None, webtransport: bool = False) -> None:
    """The stream worker's body (spawned by the conn process); ``credit``: its first send credit;
    ``field_limit``: the peer's limit on a field section, if it set one."""
    config = runtime.config
    body = StreamBody(conn, sid, ended, config.max_content_length, config.request_timeout)
    if not ended and "rr.protocol" not in req.private:  # an extended CONNECT's DATA is the session's
        req._source = body
    sink = StreamSink(conn, sid, body, config.request_timeout, credit, config.ws, field_limit)
    sink.serves_webtransport = webtransport
    # A declared body over the limit is refused before the application runs (as h1's codec does).
    declared = req.headers.get("content-length") if not ended else None
    answer = exchange.PAYLOAD_TOO_LARGE if declared is not None and declared.isdigit() \
        and int(declared) > config.max_content_length else None
    try:
        exchange.Exchange(req, sink, config, runtime).run(runtime.app, answer)
    except (exchange.Aborted, ClientGone):
        raise supervisors.Exit("abandoned") from None
