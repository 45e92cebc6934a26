"""One WebTransport session over HTTP/3: HTTP datagrams and streams, driving a handler.

What it owns: the life of one WebTransport session (draft-ietf-webtrans-http3,
as aioquic and browsers speak it) after rr answered its extended CONNECT
(``:protocol: webtransport``) with 200: the handler's callbacks, its replies,
and the end of the session. It runs in the stream worker of the CONNECT
stream (``rr.stream``), which is monitored like every stream worker: a crash
ends this session only. HTTP datagrams (RFC 9297) of the session and data on
the WebTransport streams the client opens arrive as messages from the conn
process; what the handler sends goes back as messages, which the conn turns
into QUIC DATAGRAM frames and stream data.

What it must never do: know QUIC or touch the connection. Memory: the client
cannot make it queue without bound — stream data is credited back
(``CREDIT`` with the WebTransport stream's id) only after the handler has
taken it, so QUIC flow control holds the rest at the client; datagrams beyond
``max_queued_datagrams`` waiting at this process are dropped by the conn
(they are unreliable by definition). Nor can a client that reads nothing make
the conn hold what the handler sends: stream data leaves in chunks of at most
``rr.streammsg.CHUNK`` bytes, each paid from the session's send credit (the
CONNECT stream's, ``SENT``, as a response body's bytes are), which comes back
only as the conn hands the bytes to the network; a session waits for credit
at most ``request_timeout``, and its sends stalled on the client's flow
control for ``http3.stall_timeout`` reset the session. HTTP datagrams are not
queued: QUIC sends or drops them.

Handler API (``resp.WebTransport(handler, state)``; an absent callable is skipped):

- ``init(req, state) -> state`` — once, after the 200.
- ``handle_datagram(data, state) -> (replies, state)`` — one HTTP datagram.
- ``handle_stream(stream_id, data, end, state) -> (replies, state)`` — bytes on a
  stream the client opened in the session (bidirectional: ``stream_id & 2 == 0``);
  ``end`` when the client finished it.
- ``handle_info(msg, state) -> (replies, state)`` — any other message sent to the
  session process (``rr.send(pid, msg)``).
- ``terminate(reason, state)`` — once, at the end: ``"closed"`` (the handler
  closed), ``"client closed"`` (the client ended the CONNECT stream),
  ``"client gone"`` (reset, or the connection ended), ``"drain"``.

Replies (a list): ``("datagram", bytes)``; ``("send", stream_id, bytes, end)`` on a
client's bidirectional stream; ``("open_uni", bytes, end)`` opens a
server-to-client stream and sends on it; ``("close",)`` ends the session (the
CONNECT stream ends). A reply that sends stream data returns once the bytes
are paid for (above): a handler that sends faster than the client reads waits.
"""

from __future__ import annotations

from typing import Any

import supervisors
from rr import response as resp
from rr import streammsg as sw
from rr.exchange import ClientGone
from rr.request import Request

# Messages between the conn process and the session (``sid``: the CONNECT stream).
DATAGRAM_IN = "stream.wt_datagram"  # conn → session: (DATAGRAM_IN, data)
STREAM_IN = "stream.wt_data"  # conn → session: (STREAM_IN, stream_id, data, end)
DATAGRAM_OUT = "stream.wt_send_datagram"  # session → conn: (DATAGRAM_OUT, sid, data)
STREAM_OUT = "stream.wt_send"  # session → conn: (STREAM_OUT, sid, stream_id, data, end)
OPEN_UNI = "stream.wt_open_uni"  # session → conn: (OPEN_UNI, sid, ref)
OPENED = "stream.wt_opened"  # conn → session: (OPENED, ref, stream_id or None: no session any more)

_CLOSED = (resp.CLOSED,)


class Session:
    def __init__(self, sink: Any, req: Request, handler: Any, state: Any) -> None:
        self.sink = sink
        self.conn = sink.conn
        self.sid = sink.sid
        self.req = req
        self.handler = handler
        self.state = state
        self.done = False

    def _call(self, name: str, *args: Any) -> None:
        fn = getattr(self.handler, name, None)
        if fn is None:
            return
        replies, self.state = fn(*args, self.state)
        self.apply(replies or [])

    def apply(self, replies: list[Any]) -> None:
        conn, sid = self.conn, self.sid
        for reply in replies:
            kind = reply[0]
            if kind == "datagram":
                supervisors.send(conn, (DATAGRAM_OUT, sid, bytes(reply[1])))
            elif kind == "send":
                self._send(int(reply[1]), bytes(reply[2]), bool(reply[3]))
            elif kind == "open_uni":
                data, end = bytes(reply[1]), bool(reply[2])
                stream_id = self._open_uni()
                if stream_id is not None:
                    self._send(stream_id, data, end)
            elif kind == "close":
                self.done = True
            else:
                raise ValueError(f"unknown WebTransport reply {reply!r}")

    def _send(self, stream_id: int, data: bytes, end: bool) -> None:
        """Stream data to the conn in chunks, each paid from the session's send credit first
        (``ClientGone`` when the client is gone or has not read for ``request_timeout``)."""
        sink, conn, sid = self.sink, self.conn, self.sid
        view = memoryview(data)
        offset = 0
        while True:
            chunk = bytes(view[offset:offset + sw.CHUNK])
            offset += len(chunk)
            last = offset >= len(data)
            while sink.credit < len(chunk):
                sink._more_credit()
            sink.credit -= len(chunk)
            supervisors.send(conn, (STREAM_OUT, sid, stream_id, chunk, end and last))
            if last:
                return

    def _open_uni(self) -> int | None:
        """A new server-to-client stream of the session, from the conn (None: no session any more)."""
        ref = supervisors.Ref()
        supervisors.send(self.conn, (OPEN_UNI, self.sid, ref))
        try:
            msg = supervisors.receive(lambda m: m == _CLOSED or (type(m) is tuple and len(m) == 3
                                                                 and m[0] == OPENED and m[1] == ref),
                                      timeout=self.sink.timeout)
        except supervisors.Timeout:
            raise ClientGone() from None
        if msg == _CLOSED:
            self.sink.body.gone = True
            raise ClientGone()
        return msg[2]

    def run(self) -> str:
        init = getattr(self.handler, "init", None)
        if init is not None:
            self.state = init(self.req, self.state)
        reason = "closed"
        try:
            reason = self.loop()
        finally:
            if reason in ("closed", "drain", "client closed"):
                try:
                    self.sink.data(b"", True)  # our side of the CONNECT stream ends: the session is over
                except ClientGone:
                    reason = "client gone"
            terminate = getattr(self.handler, "terminate", None)
            if terminate is not None:
                terminate(reason, self.state)
        return reason

    def loop(self) -> str:
        receive = supervisors.receive
        while not self.done:
            msg = receive()
            tag = msg[0] if type(msg) is tuple and msg else None
            if tag == DATAGRAM_IN:
                self._call("handle_datagram", msg[1])
            elif tag == STREAM_IN:
                self._call("handle_stream", msg[1], msg[2], msg[3])
                if msg[2]:
                    supervisors.send(self.conn, (sw.CREDIT, msg[1], len(msg[2])))
            elif tag == sw.BODY:
                # Capsules on the CONNECT stream (e.g. CLOSE_WEBTRANSPORT_SESSION): read and let go.
                supervisors.send(self.conn, (sw.CREDIT, self.sid, len(msg[1])))
            elif tag == sw.BODY_END:
                return "client closed"
            elif msg == _CLOSED:
                self.sink.body.gone = True
                return "client gone"
            elif tag == resp.DRAIN:
                return "drain"
            elif tag == sw.SENT:
                self.sink._acked(msg)
            else:
                self._call("handle_info", msg)
        return "closed"


def run(sink: Any, req: Request, shape: resp.WebTransport) -> str:
    """Answer the session's CONNECT (200, the stream stays open) and run it in this process."""
    sink.head(200, [], None, False, False)
    sink.loop_enter()  # drain reaches the session as (DRAIN, deadline)
    if sink.body.done:  # the CONNECT stream already ended with its HEADERS
        supervisors.send(supervisors.self(), (sw.BODY_END,))
    return Session(sink, req, shape.handler, shape.state).run()
