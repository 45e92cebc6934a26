"""The HTTP/2 connection process: one per h2 connection (TLS+ALPN "h2", or h2c prior knowledge).

What it is: the conn process that accepted the connection, switched to h2.
It owns the socket (for writing) and the ``h2.connection.H2Connection``; it
is the only process that touches either. Each request stream runs in its own
stream worker (``rr.http2.stream``), spawned with ``spawn_monitor`` — monitored,
not linked, so a crashing handler resets one stream and nothing else.

What it owns: the ``H2Connection`` state machine, the per-stream send queues
(data waiting for flow-control window), the inbound flow-control accounting,
and the stream-id → worker table. A small linked reader process
(``rr.h2.reader``) does the blocking ``recv`` and posts what it read, so this
process only ever waits in ``supervisors.receive()``; no two greenlets read the
socket and only this process writes it.

What it must never do: run application code, block on a worker, or let a
peer's bytes crash it (h2 protocol errors end the connection with GOAWAY).

Mailbox protocol (messages this process accepts):

=====================================================  =========================================
message                                                meaning
=====================================================  =========================================
``("h2.data", bytes)`` / ``("h2.closed",)``            from the reader: socket bytes / EOF
``("h2.headers", sid, status, headers, end_stream)``   from a worker: the response head
``("h2.data", sid, bytes, end_stream)``                from a worker: body (acked by ``h2.sent``)
``("h2.trailers", sid, headers)``                      from a worker: trailers, ends the stream
``("h2.credit", sid, n)``                              from a worker: n body bytes consumed
``("DOWN", ref, pid, reason)``                         a worker ended
=====================================================  =========================================

Messages it sends a worker: ``("h2.body", bytes)``, ``("h2.body_end",)``,
``("h2.sent", sid)``.

Flow control: inbound, bytes are returned to the peer (``WINDOW_UPDATE``) only
once the worker *consumed* them, in increments of at least
``window_refill_threshold``; bytes for a stream that has no live worker are
returned to the connection window at once. Outbound, data goes out within
``local_flow_control_window`` and ``max_outbound_frame_size``; the rest waits
in the stream's queue until a ``WindowUpdated`` (or a settings change).

Drain: when ``runtime.draining`` becomes true (checked at least every
``TICK`` seconds) the connection sends ``GOAWAY(NO_ERROR)`` and closes once
its open streams finish; ``idle`` (no stream open) lets ``rr.listener.drain``
end it at once.
"""

from __future__ import annotations

import collections
import socket
import time
from typing import TYPE_CHECKING, Any

import gevent
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import GoAwayFrame, HeadersFrame

import supervisors
from rr import dispatch
from rr.http2.stream import run_stream
from rr.log import get_logger
from rr.request import Headers, Request

if TYPE_CHECKING:
    from rr.listener import ListenerRuntime

_log = get_logger("rr.http2")

RECV_SIZE = 16384
# How often the loop looks at the drain flag and the idle timeout when nothing arrives.
TICK = 0.5
# Messages handled before h2's output is written even if more are queued.
BATCH = 32


class _Close(Exception):
    """Internal: end the connection now."""


class _BoundedFrameBuffer(FrameBuffer):
    """h2's frame buffer with a cap on one header block (HEADERS + CONTINUATIONs).

    h2 itself only caps the number of CONTINUATION frames (64), i.e. ~1 MiB at the
    default frame size; ``max_header_block`` bounds what a peer makes us buffer and
    hand to the HPACK decoder. Over it: ``GOAWAY(ENHANCE_YOUR_CALM)``.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(server=True)
        self.limit = limit

    def _update_header_buffer(self, f: Any) -> Any:
        out = super()._update_header_buffer(f)
        pending = sum(len(x.data) for x in self._headers_buffer)
        if pending > self.limit or (isinstance(out, HeadersFrame) and len(out.data) > self.limit):
            raise h2.exceptions.DenialOfServiceError(f"header block over max_header_block ({self.limit})")
        return out


class _Stream:
    __slots__ = ("pid", "ref", "head_sent", "ended_local", "ended_remote", "pending", "unreturned", "alive",
                 "is_head", "outstanding", "req")

    def __init__(self, pid: supervisors.Pid, ref: Any, ended_remote: bool) -> None:
        self.pid = pid
        self.ref = ref
        self.head_sent = False
        self.ended_local = False
        self.ended_remote = ended_remote
        # queued sends: ("data", bytes, end_stream, ack) or ("trailers", headers, True, ack)
        self.pending: collections.deque[tuple[str, Any, bool, bool]] = collections.deque()
        self.unreturned = 0
        # body bytes forwarded to the worker and not yet credited back
        self.outstanding = 0
        self.alive = True
        self.is_head = False
        self.req: Request | None = None


def reader(sock: Any, owner: supervisors.Pid) -> None:
    """The reader process: blocking ``recv`` on the socket, posted to ``owner``."""
    try:
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except TimeoutError:
                # The timeout is the socket's, shared with the conn's writes: not ours to obey.
                continue
            if not data:
                break
            supervisors.send(owner, ("h2.data", data))
            # Let the conn process take it before reading more: its mailbox (charged to its
            # heap budget) then holds a chunk or two, never a burst of the peer's bytes.
            gevent.sleep(0)
    except (OSError, ValueError):
        pass
    supervisors.send(owner, ("h2.closed",))


class Http2Conn:
    """The state of one h2 connection; ``serve`` is the loop."""

    def __init__(self, sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str) -> None:
        self.sock = sock
        self.peer = peer
        self.runtime = runtime
        self.config = runtime.config
        self.opts = runtime.config.http2
        self.scheme = scheme
        self.pid = supervisors.self()
        self.streams: dict[int, _Stream] = {}
        self.by_ref: dict[Any, int] = {}
        self.requests = 0
        self.close_reason = "normal"
        self.goaway_sent = False
        self.conn_unreturned = 0
        self.last_activity = time.monotonic()
        self.reader: supervisors.Pid | None = None
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=cfg)

    @property
    def idle(self) -> bool:
        """No stream open: drain may end this connection at once."""
        return not self.streams

    # -- socket writes -------------------------------------------------------

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.write(data)

    def write(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self.config.request_timeout)
            self.sock.sendall(data)
        except OSError:
            self.close_reason = "peer_error"
            raise _Close() from None

    # -- the loop ------------------------------------------------------------

    def _settings(self, max_streams: int) -> h2.settings.Settings:
        codes = h2.settings.SettingCodes
        return h2.settings.Settings(client=False, initial_values={
            codes.MAX_CONCURRENT_STREAMS: max_streams,
            codes.MAX_HEADER_LIST_SIZE: self.opts.max_header_list_size,
            codes.INITIAL_WINDOW_SIZE: self.opts.stream_window,
            codes.ENABLE_PUSH: 0,
        })

    def start(self) -> None:
        opts = self.opts
        h2c = self.h2
        h2c.local_settings = self._settings(opts.max_concurrent_streams)
        h2c.decoder.max_header_list_size = opts.max_header_list_size
        if hasattr(FrameBuffer, "_update_header_buffer"):  # h2 4.x internals; else h2's own cap only
            bounded = _BoundedFrameBuffer(opts.max_header_block)
            bounded.max_frame_size = h2c.max_inbound_frame_size
            h2c.incoming_buffer = bounded
        h2c.initiate_connection()
        # h2 treats a stream beyond its local MAX_CONCURRENT_STREAMS as a *connection*
        # error; RFC 9113 §5.1.2 wants a stream error (and a client may legitimately
        # exceed it before it has seen our SETTINGS). So once our SETTINGS frame is
        # queued with the real limit, h2's own copy is lifted and on_request refuses
        # the excess streams with REFUSED_STREAM instead.
        h2c.local_settings = self._settings(2**31 - 1)
        if opts.conn_window > 65535:
            h2c.increment_flow_control_window(opts.conn_window - 65535)
        self.flush()

    def serve(self, initial: bytes = b"") -> None:
        self.start()
        self.reader = supervisors.spawn_link(reader, self.sock, self.pid, label="rr.h2.reader")
        if initial:
            self.feed(initial)
        runtime = self.runtime
        idle_timeout = self.config.keep_alive_timeout
        batched = 0
        while True:
            if runtime.draining and not self.goaway_sent:
                self.goaway(ErrorCodes.NO_ERROR)
                self.close_reason = "drain"
            if self.goaway_sent and not self.streams:
                return
            try:
                msg = supervisors.receive(timeout=TICK)
            except supervisors.Timeout:
                if not self.streams and time.monotonic() - self.last_activity > idle_timeout:
                    self.close_reason = "idle_timeout"
                    self.goaway(ErrorCodes.NO_ERROR)
                    return
                continue
            self.handle(msg)
            # Batch: take every queued message into h2 first, then one write (bounded so a
            # busy mailbox cannot grow h2's output buffer without limit).
            batched += 1
            if batched >= BATCH or not supervisors.mailbox_size():
                batched = 0
                self.flush()

    def handle(self, msg: Any) -> None:
        if not isinstance(msg, tuple) or not msg:
            return
        self.last_activity = time.monotonic()
        tag = msg[0]
        if tag == "h2.data":
            if len(msg) == 2:
                self.feed(msg[1])
            else:
                self.on_data(msg[1], msg[2], msg[3])
        elif tag == "h2.headers":
            self.on_headers(msg[1], msg[2], msg[3], msg[4])
        elif tag == "h2.trailers":
            st = self.streams.get(msg[1])
            if st is not None:
                st.pending.append(("trailers", msg[2], True, True))
                self.pump(msg[1])
        elif tag == "h2.credit":
            self.credit(msg[1], msg[2])
        elif tag == "DOWN":
            self.on_down(msg[1], msg[3])
        elif tag == "h2.closed":
            self.close_reason = "peer_closed"
            raise _Close()

    def goaway(self, code: ErrorCodes) -> None:
        """Send GOAWAY naming the last stream we took; open streams still finish.

        Written by hand after h2's pending output: ``H2Connection.close_connection``
        would move the state machine to CLOSED and refuse the open streams' data.
        """
        if not self.goaway_sent:
            self.goaway_sent = True
            self.flush()
            frame = GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id, error_code=code)
            self.write(frame.serialize())

    # -- inbound -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the matching error code.
            self.close_reason = f"protocol_error: {type(exc).__name__}"
            self.goaway_sent = True
            self.flush()
            raise _Close() from None
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.on_request(event)
            elif isinstance(event, h2.events.DataReceived):
                self.on_body(event)
            elif isinstance(event, h2.events.StreamEnded):
                st = self.streams.get(event.stream_id)
                if st is not None:
                    st.ended_remote = True
                    if st.alive:
                        supervisors.send(st.pid, ("h2.body_end",))
            elif isinstance(event, h2.events.StreamReset):
                self.on_reset(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                if event.stream_id:
                    self.pump(event.stream_id)
                else:
                    self.pump_all()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.pump_all()
            elif isinstance(event, h2.events.ConnectionTerminated):
                # h2 closes its state machine on a peer's GOAWAY: nothing more can be
                # sent, so the connection (and its stream workers) ends here.
                self.close_reason = "peer_goaway"
                raise _Close()

    def on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        ended = event.stream_ended is not None
        if self.goaway_sent or len(self.streams) >= self.opts.max_concurrent_streams:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        req = self.build_request(event.headers or [])
        if req is None:
            self.h2.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        self.requests += 1
        self.runtime.requests_served += 1
        pid, ref = supervisors.spawn_monitor(
            run_stream, self.pid, sid, req, self.runtime, ended,
            label="rr.h2.stream", **self.config.handler_spawn.as_kwargs(),
        )
        st = _Stream(pid, ref, ended)
        st.is_head = req.method == "HEAD"
        st.req = req
        self.streams[sid] = st
        self.by_ref[ref] = sid

    def build_request(self, headers: Any) -> Request | None:
        pseudo: dict[str, str] = {}
        fields: list[tuple[str, str]] = []
        for name, value in headers:
            if name.startswith(":"):
                pseudo[name] = value
            else:
                fields.append((name, value))
        method = pseudo.get(":method")
        target = pseudo.get(":path")
        if not method or not target or method == "CONNECT":
            return None
        authority = pseudo.get(":authority")
        if authority is not None and not any(k == "host" for k, _ in fields):
            fields.insert(0, ("host", authority))
        host = authority
        if host is None:
            host = next((v for k, v in fields if k == "host"), None)
        path, _, query = target.partition("?")
        return Request(
            method, target, path, query, "HTTP/2", Headers(fields),
            scheme=pseudo.get(":scheme", self.scheme), host=host, peer=self.peer,
            listener=self.runtime.name,
        )

    def on_body(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        data = event.data or b""
        flow = event.flow_controlled_length or 0
        st = self.streams.get(sid)
        if st is None or not st.alive or st.ended_local:
            # Nobody will read it: give the window back at once.
            self.return_window(None, flow)
            return
        if flow > len(data):  # padding: returned now, it is never consumed
            self.return_window(sid, flow - len(data))
        if data:
            st.outstanding += len(data)
            supervisors.send(st.pid, ("h2.body", data))

    def credit(self, sid: int, n: int) -> None:
        st = self.streams.get(sid)
        if st is None:
            return  # forgotten: its outstanding bytes were returned then
        st.outstanding -= n
        self.return_window(sid, n)

    def forget(self, sid: int) -> _Stream | None:
        """Drop a stream; body bytes its worker never consumed go back to the connection window."""
        st = self.streams.pop(sid, None)
        if st is not None and st.outstanding > 0:
            self.return_window(None, st.outstanding)
            st.outstanding = 0
        return st

    def return_window(self, sid: int | None, n: int) -> None:
        """Give ``n`` consumed bytes back to the peer, in increments ≥ the refill threshold."""
        if n <= 0:
            return
        threshold = self.opts.window_refill_threshold
        self.conn_unreturned += n
        if self.conn_unreturned >= threshold:
            self.h2.increment_flow_control_window(self.conn_unreturned)
            self.conn_unreturned = 0
        st = self.streams.get(sid) if sid is not None else None
        if st is None or st.ended_remote:
            return
        st.unreturned += n
        if st.unreturned >= threshold:
            try:
                self.h2.increment_flow_control_window(st.unreturned, stream_id=sid)
            except h2.exceptions.StreamClosedError:
                pass
            st.unreturned = 0

    def on_reset(self, sid: int) -> None:
        st = self.forget(sid)
        if st is None:
            return
        self.by_ref.pop(st.ref, None)
        if st.alive:
            supervisors.demonitor(st.ref, flush=True)
            supervisors.exit(st.pid, "kill")

    # -- outbound ------------------------------------------------------------

    def on_headers(self, sid: int, status: int, headers: list[tuple[str, str]], end: bool) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        try:
            self.h2.send_headers(sid, [(":status", str(status)), *headers], end_stream=end)
        except (h2.exceptions.ProtocolError, ValueError) as exc:
            _log.error("h2 response head refused", stream_id=sid, error=str(exc))
            self.reset(sid, ErrorCodes.INTERNAL_ERROR)
            return
        st.head_sent = True
        if end:
            self.finished(sid)

    def on_data(self, sid: int, data: bytes, end: bool) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        st.pending.append(("data", data, end, True))
        self.pump(sid)

    def pump_all(self) -> None:
        for sid in list(self.streams):
            self.pump(sid)

    def pump(self, sid: int) -> None:
        """Send what the flow-control window allows from the stream's queue."""
        st = self.streams.get(sid)
        if st is None:
            return
        h2c = self.h2
        pending = st.pending
        while pending:
            kind, payload, end, ack = pending[0]
            try:
                if kind == "trailers":
                    h2c.send_headers(sid, payload, end_stream=True)
                else:
                    if payload:
                        window = h2c.local_flow_control_window(sid)
                        n = min(len(payload), window, h2c.max_outbound_frame_size)
                        if n <= 0:
                            return
                        rest = payload[n:]
                        h2c.send_data(sid, payload[:n], end_stream=end and not rest)
                        if rest:
                            pending[0] = (kind, rest, end, ack)
                            continue
                    elif end:
                        h2c.end_stream(sid)
            except (h2.exceptions.ProtocolError, ValueError) as exc:
                _log.error("h2 send refused", stream_id=sid, error=str(exc))
                self.reset(sid, ErrorCodes.INTERNAL_ERROR)
                return
            pending.popleft()
            if ack and st.alive:
                supervisors.send(st.pid, ("h2.sent", sid))
            if end:
                self.finished(sid)
                return

    def finished(self, sid: int) -> None:
        """Our side of the stream is ended; forget it once its worker is gone too."""
        st = self.streams.get(sid)
        if st is None:
            return
        st.ended_local = True
        if not st.ended_remote:
            # The response is complete before the request body: tell the peer to stop sending.
            try:
                self.h2.reset_stream(sid, ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass
        if not st.alive:
            self.forget(sid)

    def reset(self, sid: int, code: ErrorCodes) -> None:
        st = self.forget(sid)
        try:
            self.h2.reset_stream(sid, code)
        except h2.exceptions.ProtocolError:
            pass
        if st is not None:
            self.by_ref.pop(st.ref, None)
            if st.alive:
                supervisors.demonitor(st.ref, flush=True)
                supervisors.exit(st.pid, "kill")

    def on_down(self, ref: Any, reason: Any) -> None:
        sid = self.by_ref.pop(ref, None)
        if sid is None:
            return
        st = self.streams.get(sid)
        if st is None:
            return
        st.alive = False
        if st.outstanding > 0:  # never to be consumed: back to the connection window now
            self.return_window(None, st.outstanding)
            st.outstanding = 0
        if st.ended_local:
            self.forget(sid)
            return
        if reason == "normal" and st.pending and st.pending[-1][2]:
            return  # the whole response is queued; pump finishes it
        if not st.head_sent and not st.pending:
            # Crashed before answering: the conn answers 500 for it.
            if reason != "normal":
                _log.error("h2 stream worker died", stream_id=sid, reason=str(reason),
                           request_id=st.req.request_id if st.req else None,
                           method=st.req.method if st.req else None, path=st.req.path if st.req else None)
            error = dispatch.INTERNAL_ERROR
            self.on_headers(sid, 500, [*error.headers, ("content-length", str(len(error.body)))],
                            st.is_head)
            if sid in self.streams and not st.is_head:
                st.pending.append(("data", error.body, True, False))
                self.pump(sid)
            return
        self.reset(sid, ErrorCodes.INTERNAL_ERROR)


def serve_h2(sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str) -> Http2Conn:
    """Run an h2 connection in the calling (conn) process until it closes.

    Registers the connection in ``runtime.conns`` (so drain sees ``idle``) and
    ends every stream worker still running when the connection goes.
    Returns the connection (for its ``close_reason`` and ``requests``).
    """
    conn = Http2Conn(sock, peer, runtime, scheme)
    runtime.conns[conn.pid] = conn
    try:
        conn.serve()
    except _Close:
        pass
    finally:
        for st in conn.streams.values():
            if st.alive:
                supervisors.demonitor(st.ref, flush=True)
                supervisors.exit(st.pid, "kill")
        if conn.reader is not None:
            supervisors.unlink(conn.reader)
            supervisors.exit(conn.reader, "kill")
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    return conn
