"""The HTTP/2 connection process: one per h2 connection (TLS+ALPN "h2", h2c prior knowledge or Upgrade).

What it is: the conn process that accepted the connection, switched to h2.
It owns the socket (for writing) and the connection's protocol state: the
frame reader (``rr.http2.codec``), the HPACK decoder, every stream's state and
both directions of flow control. It is the only process that touches either.
Each request stream runs in its own stream worker (``rr.http2.stream``),
spawned with ``spawn_monitor`` — monitored, not linked, so a crashing handler
resets one stream and nothing else. A small linked reader process
(``rr.h2.reader``) does the blocking ``recv`` and posts what it read, so this
process only ever waits in ``supervisors.receive()``.

What it must never do: run application code, block on a worker, or let a
peer's bytes crash it. Every protocol violation is answered with the error RFC
9113 requires: a connection error is ``GOAWAY(code)`` then close, a stream
error is ``RST_STREAM(code)`` on that stream while the others go on.

Mailbox protocol (messages this process accepts):

=====================================================  =========================================
message                                                meaning
=====================================================  =========================================
``("h2.data", bytes)`` / ``("h2.closed",)``            from the reader: socket bytes / EOF
``("h2.response", sid, status, headers, body)``        from a worker: a whole response (not acked)
``("h2.headers", sid, status, headers, end_stream)``   from a worker: the response head
``("h2.data", sid, bytes, end_stream)``                from a worker: body (acked by ``h2.sent``)
``("h2.trailers", sid, headers)``                      from a worker: trailers, ends the stream
``("h2.credit", sid, n)``                              from a worker: n body bytes consumed
``("h2.loop", sid)``                                   from a worker: it runs a ``Loop`` from now on
``("DOWN", ref, pid, reason)``                         a worker ended
=====================================================  =========================================

Messages it sends: to a worker ``("h2.body", bytes)``, ``("h2.body_end",)``,
``("h2.sent", sid)``, and to a ``Loop`` worker ``(rr.resp.CLOSED,)`` when the
client resets the stream or the connection ends, ``(rr.resp.DRAIN, deadline)``
on drain; to the reader ``("h2.more",)`` (it may read one more chunk).

Flow control: inbound, bytes are returned to the peer (``WINDOW_UPDATE``) only
once the worker *consumed* them, in increments of at least
``window_refill_threshold``; bytes for a stream without a live worker, and
padding, are returned at once. Outbound, each stream's data waits in its own
queue for window (the smaller of its window and the connection's), in frames
of at most the peer's ``MAX_FRAME_SIZE``; a stream that waits longer than
``stall_timeout`` is reset with ``CANCEL``. Workers keep at most 64 KiB of
body bytes unacknowledged here, so a slow client slows only its own streams.

Flood guards: per ``flood_window`` the connection may receive ``max_resets``
client resets (refused streams count too: Rapid Reset), ``max_pings``,
``max_settings``, ``max_priority`` frames, ``max_window_updates`` beyond two
per DATA frame sent (one for the stream, one for the connection), and ``max_empty_data`` empty non-final DATA frames;
over any budget: ``GOAWAY(ENHANCE_YOUR_CALM)``. A header block is bounded by
``max_header_block`` encoded bytes and 64 CONTINUATION frames; a decoded one
over ``max_header_list_size`` is answered ``431`` on its stream.

Drain: when ``runtime.draining`` becomes true (checked at least every
``TICK`` seconds) the connection sends ``GOAWAY(NO_ERROR)``, passes
``DRAIN`` to its Loop workers and closes once its open streams finish;
``idle`` (no stream open) lets ``rr.listener.drain`` end it at once.
"""

from __future__ import annotations

import collections
import socket
import time
from typing import TYPE_CHECKING, Any

import hpack
import hpack.exceptions

import supervisors
from rr import dispatch, exchange, telemetry
from rr import response as resp
from rr import stream as sw
from rr.http2 import codec
from rr.http2.codec import FrameError, Malformed
from rr.httpdate import http_date
from rr.log import get_logger
from rr.request import Headers, Request

if TYPE_CHECKING:
    from rr.runtime import ListenerRuntime

_log = get_logger("rr.http2")

RECV_SIZE = 65536
# How often the loop looks at the drain flag and the idle timeout when nothing arrives.
TICK = 0.5
# Messages handled before the output is written even if more are queued.
BATCH = 64
# Socket chunks the reader may have posted and the conn not yet taken.
READ_AHEAD = 2
# CONTINUATION frames one header block may have.
MAX_CONTINUATIONS = 64
# Decoded header blocks remembered per connection (see codec.table_neutral).
BLOCK_CACHE = 64
# Decoded lists larger than this (RFC 9113 §6.5.2 sizing) are not cached.
CACHED_LIST_MAX = 8192
# Closed stream ids remembered (to tell "closed" from "never opened").
CLOSED_MEMORY = 512

_THROTTLED = ("rr", "request", "throttled")
_BODY_END = (sw.BODY_END,)
_SENT = (sw.SENT,)
_CLOSED = (resp.CLOSED,)
# Seconds a stream worker told the client is gone (``CLOSED``) may take to end before it is killed.
CLOSE_GRACE = 1.0


class _Close(Exception):
    """Internal: end the connection now."""


class _StreamError(Exception):
    def __init__(self, sid: int, code: int) -> None:
        self.sid = sid
        self.code = code


class _Stream:
    __slots__ = ("sid", "pid", "ref", "head_sent", "ended_local", "ended_remote", "closed", "pending",
                 "unreturned", "alive", "is_head", "outstanding", "req", "send_window", "recv_window",
                 "expected", "received", "loop", "stalled_since")

    def __init__(self, sid: int, send_window: int, recv_window: int) -> None:
        self.sid = sid
        self.pid: supervisors.Pid | None = None
        self.ref: Any = None
        self.head_sent = False
        self.ended_local = False
        self.ended_remote = False
        self.closed = False  # closed on the wire (both ends, or reset)
        # queued sends: ("data", bytes, end_stream, ack) or ("trailers", headers, True, ack)
        self.pending: collections.deque[tuple[str, Any, bool, bool]] = collections.deque()
        self.unreturned = 0
        self.outstanding = 0  # body bytes forwarded to the worker and not yet credited back
        self.alive = False
        self.is_head = False
        self.req: Request | None = None
        self.send_window = send_window
        self.recv_window = recv_window
        self.expected: int | None = None
        self.received = 0
        self.loop = False
        self.stalled_since: float | None = None


def reader(sock: Any, owner: supervisors.Pid) -> None:
    """The reader process: blocking ``recv`` on the socket, posted to ``owner``.

    At most ``READ_AHEAD`` chunks are posted ahead of the conn's ``("h2.more",)``
    acknowledgements, so a peer that sends faster than the conn handles (or
    while the conn waits on a write) cannot grow the conn's mailbox.
    """
    ahead = 0
    try:
        while True:
            while ahead >= READ_AHEAD:
                supervisors.receive(_is_more)
                ahead -= 1
            try:
                data = sock.recv(RECV_SIZE)
            except TimeoutError:
                continue  # the timeout is the socket's, shared with the conn's writes
            if not data:
                break
            supervisors.send(owner, ("h2.data", data))
            ahead += 1
    except (OSError, ValueError):
        pass
    supervisors.send(owner, ("h2.closed",))


def _is_more(msg: Any) -> bool:
    return msg == ("h2.more",)


class Http2Conn:
    """The state of one h2 connection; ``serve`` is the loop."""

    def __init__(self, sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str) -> None:
        self.sock = sock
        self.peer = peer
        self.runtime = runtime
        self.config = runtime.config
        self.opts = opts = runtime.config.http2
        self.scheme = scheme
        self.pid = supervisors.self()
        self.streams: dict[int, _Stream] = {}
        self.by_ref: dict[Any, int] = {}
        self.open = 0  # streams open on the wire
        self.requests = 0
        self.close_reason = "normal"
        self.goaway_sent = False
        self.goaway_received = False
        self.last_activity = time.monotonic()
        self.reader: supervisors.Pid | None = None
        self.out: list[bytes] = []
        self.writing = False  # inside a socket write (an exit there must not add bytes mid-frame)
        self.frames = codec.FrameReader(codec.DEFAULT_MAX_FRAME)
        # The decoder bounds decompression work; between max_header_list_size and this
        # cap a request gets 431, beyond it the connection ends.
        self.decoder = hpack.Decoder(max_header_list_size=max(4 * opts.max_header_list_size, 65536))
        # block bytes -> [decoded list, validate_request result or None]
        self.block_cache: dict[bytes, list[Any]] = {}
        self.preface = b""
        self.preface_ok = False
        self.settings_seen = False
        self.settings_acked = False
        self.highest = 0
        self.closed: collections.OrderedDict[int, str] = collections.OrderedDict()
        # header block being assembled: stream id (0: none), fragments, size, END_STREAM, error
        self.hb_sid = 0
        self.hb_parts: list[bytes] = []
        self.hb_size = 0
        self.hb_frames = 0
        self.hb_end = False
        self.hb_error = 0
        self.send_window = codec.DEFAULT_WINDOW
        self.recv_window = opts.conn_window
        self.conn_unreturned = 0
        self.peer_initial_window = codec.DEFAULT_WINDOW
        self.peer_max_frame = codec.DEFAULT_MAX_FRAME
        self.flood_start = time.monotonic()
        self.flood = [0, 0, 0, 0, 0, 0]  # resets, pings, settings, priority, window updates, empty data
        self.data_sent = 0  # DATA frames sent in the current flood window
        self.stalled = False
        # sid -> when its worker, told the client is gone, is killed if still alive.
        self.dying: dict[int, float] = {}

    @property
    def idle(self) -> bool:
        """No stream open: drain may end this connection at once."""
        return not self.streams

    # -- socket writes -------------------------------------------------------

    def flush(self) -> None:
        out = self.out
        if out:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            self.write(data)

    def write(self, data: bytes) -> None:
        self.writing = True
        try:
            self.sock.settimeout(self.config.request_timeout)
            self.sock.sendall(data)
        except OSError:
            self.close_reason = "peer_error"
            raise _Close() from None
        self.writing = False

    # -- the loop ------------------------------------------------------------

    def start(self) -> None:
        opts = self.opts
        self.out.append(codec.settings_frame({
            codec.MAX_CONCURRENT_STREAMS: opts.max_concurrent_streams,
            codec.INITIAL_WINDOW_SIZE: opts.stream_window,
            codec.MAX_HEADER_LIST_SIZE: opts.max_header_list_size,
        }))
        if opts.conn_window > codec.DEFAULT_WINDOW:
            self.out.append(codec.window_update_frame(0, opts.conn_window - codec.DEFAULT_WINDOW))
        else:
            self.recv_window = codec.DEFAULT_WINDOW

    def serve(self, initial: bytes = b"", upgrade: tuple[bytes, Request, bytes] | None = None) -> None:
        """Run until the connection ends.

        ``initial``: bytes already read (they start with the client preface).
        ``upgrade``: for h2c Upgrade, ``(HTTP2-Settings payload, request, body)``:
        the request becomes stream 1, half-closed from the client's side.
        """
        self.start()
        if upgrade is not None:
            self.upgraded(*upgrade)
        self.flush()
        self.reader = supervisors.spawn_link(reader, self.sock, self.pid, label="rr.h2.reader")
        if initial:
            self.feed(initial)
            self.flush()
        runtime = self.runtime
        idle_timeout = self.config.keep_alive_timeout
        receive = supervisors.receive
        mailbox_size = supervisors.mailbox_size
        batched = 0
        while True:
            if runtime.draining and not self.goaway_sent:
                self.close_reason = "drain"
                self.goaway(codec.NO_ERROR)
                for st in self.streams.values():
                    if st.loop and st.alive and st.pid is not None:
                        supervisors.send(st.pid, (resp.DRAIN, runtime.drain_deadline))
            if (self.goaway_sent or self.goaway_received) and not self.streams:
                self.flush()
                return
            try:
                msg = receive(timeout=TICK if not self.stalled else min(TICK, self.opts.stall_timeout / 2))
            except supervisors.Timeout:
                now = time.monotonic()
                if self.stalled:
                    self.check_stalls(now)
                    self.flush()
                if self.dying:
                    self.check_dying(now)
                if not self.streams and now - self.last_activity > idle_timeout:
                    self.close_reason = "idle_timeout"
                    self.goaway(codec.NO_ERROR)
                    return
                continue
            self.handle(msg)
            batched += 1
            if batched >= BATCH or not mailbox_size():
                batched = 0
                if self.stalled:
                    self.check_stalls(time.monotonic())
                if self.dying:
                    self.check_dying(time.monotonic())
                self.flush()

    def handle(self, msg: Any) -> None:
        tag = msg[0] if isinstance(msg, tuple) and msg else None
        if tag == "h2.data":
            self.last_activity = time.monotonic()
            self.feed(msg[1])
            if self.reader is not None:
                supervisors.send(self.reader, ("h2.more",))
        elif tag == sw.DATA:
            self.on_worker_data(msg[1], msg[2], msg[3])
        elif tag == sw.RESPONSE:
            self.on_response(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif tag == sw.HEAD:
            self.on_worker_headers(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif tag == sw.TRAILERS:
            st = self.streams.get(msg[1])
            if st is not None and not st.closed:
                st.pending.append(("trailers", msg[2], True, False))
                self.pump(st)
        elif tag == sw.CREDIT:
            self.credit(msg[1], msg[2])
        elif tag == sw.LOOP:
            st = self.streams.get(msg[1])
            if st is not None:
                st.loop = True
                if self.runtime.draining and st.pid is not None:  # drain began before the Loop did
                    supervisors.send(st.pid, (resp.DRAIN, self.runtime.drain_deadline))
        elif tag == "DOWN":
            self.on_down(msg[1], msg[3])
        elif tag == "h2.closed":
            self.close_reason = "peer_closed"
            raise _Close()

    def goaway(self, code: int, reason: str = "") -> None:
        """Send GOAWAY naming the last stream we took; open streams may still finish."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out.append(codec.goaway_frame(self.highest, code, reason.encode("ascii", "replace")[:128]))
            self.flush()

    def connection_error(self, code: int, reason: str) -> None:
        self.close_reason = f"connection_error: {reason}"
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out.append(codec.goaway_frame(self.highest, code, reason.encode("ascii", "replace")[:128]))
        try:
            self.flush()
        except _Close:
            pass
        raise _Close()

    # -- inbound -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if not self.preface_ok:
            buf = self.preface + data
            if len(buf) < len(codec.PREFACE):
                if not codec.PREFACE.startswith(buf):
                    self.connection_error(codec.PROTOCOL_ERROR, "invalid connection preface")
                self.preface = buf
                return
            if not buf.startswith(codec.PREFACE):
                self.connection_error(codec.PROTOCOL_ERROR, "invalid connection preface")
            self.preface_ok = True
            self.preface = b""
            data = buf[len(codec.PREFACE):]
        try:
            for ftype, flags, sid, payload in self.frames.feed(data):
                try:
                    self.on_frame(ftype, flags, sid, payload)
                except _StreamError as err:
                    self.stream_error(err.sid, err.code)
        except FrameError as err:
            self.connection_error(err.code, str(err))

    def on_frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.hb_sid and ftype != codec.CONTINUATION:
            raise FrameError(codec.PROTOCOL_ERROR, "frame inside a header block")
        if not self.settings_seen:
            if ftype != codec.SETTINGS or flags & codec.ACK:
                raise FrameError(codec.PROTOCOL_ERROR, "the preface is not followed by SETTINGS")
            self.settings_seen = True
        if ftype == codec.DATA:
            self.on_data(flags, sid, payload)
        elif ftype == codec.HEADERS:
            self.on_headers(flags, sid, payload)
        elif ftype == codec.CONTINUATION:
            self.on_continuation(flags, sid, payload)
        elif ftype == codec.WINDOW_UPDATE:
            self.on_window_update(sid, payload)
        elif ftype == codec.SETTINGS:
            self.on_settings(flags, sid, payload)
        elif ftype == codec.RST_STREAM:
            self.on_rst(sid, payload)
        elif ftype == codec.PING:
            self.on_ping(flags, sid, payload)
        elif ftype == codec.PRIORITY:
            self.on_priority(sid, payload)
        elif ftype == codec.GOAWAY:
            if sid:
                raise FrameError(codec.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise FrameError(codec.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets")
            self.goaway_received = True
            self.close_reason = "peer_goaway"
        elif ftype == codec.PUSH_PROMISE:
            raise FrameError(codec.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # other frame types are ignored (RFC 9113 §4.1)

    def spend(self, kind: int, limit: int) -> None:
        """Count one frame of ``kind`` against its budget for the current flood window."""
        now = time.monotonic()
        if now - self.flood_start > self.opts.flood_window:
            self.flood_start = now
            self.flood = [0, 0, 0, 0, 0, 0]
            self.data_sent = 0
        self.flood[kind] += 1
        if self.flood[kind] > limit:
            raise FrameError(codec.ENHANCE_YOUR_CALM, ("reset", "ping", "settings", "priority",
                                                       "window_update", "empty_data")[kind] + " flood")

    def is_idle(self, sid: int) -> bool:
        return sid > self.highest

    def remember_closed(self, sid: int, how: str) -> None:
        closed = self.closed
        closed[sid] = how
        if len(closed) > CLOSED_MEMORY:
            closed.popitem(last=False)

    # HEADERS / CONTINUATION

    def on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or not sid & 1:
            raise FrameError(codec.PROTOCOL_ERROR, "HEADERS on stream 0 or an even stream")
        payload = codec.strip_padding(flags, payload)
        error = 0
        if flags & codec.PRIORITY_FLAG:
            if len(payload) < 5:
                raise FrameError(codec.FRAME_SIZE_ERROR, "HEADERS priority fields truncated")
            if codec.u32(payload) & 0x7FFFFFFF == sid:
                error = codec.PROTOCOL_ERROR  # a stream depending on itself (§5.3.1)
            payload = payload[5:]
        self.hb_sid = sid
        self.hb_parts = [payload]
        self.hb_size = len(payload)
        self.hb_frames = 1
        self.hb_end = bool(flags & codec.END_STREAM)
        self.hb_error = error
        self.check_block_size()
        if flags & codec.END_HEADERS:
            self.end_block()

    def on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if not self.hb_sid or sid != self.hb_sid:
            raise FrameError(codec.PROTOCOL_ERROR, "CONTINUATION outside a header block")
        self.hb_parts.append(payload)
        self.hb_size += len(payload)
        self.hb_frames += 1
        if self.hb_frames > MAX_CONTINUATIONS + 1:
            raise FrameError(codec.ENHANCE_YOUR_CALM, "CONTINUATION flood")
        self.check_block_size()
        if flags & codec.END_HEADERS:
            self.end_block()

    def check_block_size(self) -> None:
        if self.hb_size > self.opts.max_header_block:
            raise FrameError(codec.ENHANCE_YOUR_CALM, f"header block over {self.opts.max_header_block} bytes")

    def end_block(self) -> None:
        sid = self.hb_sid
        block = self.hb_parts[0] if len(self.hb_parts) == 1 else b"".join(self.hb_parts)
        self.hb_sid = 0
        self.hb_parts = []
        # Only table-neutral blocks are ever cached, so a hit needs no parse of the block.
        entry = self.block_cache.get(block)
        if entry is not None:
            decoded = entry[0]
        else:
            neutral = codec.table_neutral(block)
            if not neutral:
                self.block_cache.clear()  # the dynamic table may change: cached decodings go stale
            try:
                decoded = list(self.decoder.decode(block, raw=True))
            except hpack.exceptions.OversizedHeaderListError:
                raise FrameError(codec.ENHANCE_YOUR_CALM, "decoded header list far over the limit") from None
            except (hpack.exceptions.HPACKError, IndexError, ValueError) as exc:
                raise FrameError(codec.COMPRESSION_ERROR, f"HPACK: {exc}") from None
            # Cache only ordinary-sized lists: the cache must not multiply what a peer can pin.
            if neutral and codec.field_list_size(decoded) <= CACHED_LIST_MAX:
                if len(self.block_cache) >= BLOCK_CACHE:
                    self.block_cache.clear()
                entry = self.block_cache[block] = [decoded, None]
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            self.on_trailers(st, decoded)
            return
        if not self.is_idle(sid):
            how = self.closed.get(sid)
            if how == "reset":
                return  # we reset it: frames the peer sent before seeing that are ignored (§5.1)
            if how == "peer_reset":
                raise _StreamError(sid, codec.STREAM_CLOSED)
            if st is not None or how is not None:
                raise FrameError(codec.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
            raise FrameError(codec.PROTOCOL_ERROR, f"HEADERS on stream {sid} below the highest opened")
        self.highest = sid
        if self.hb_error:
            self.remember_closed(sid, "reset")
            raise _StreamError(sid, self.hb_error)
        self.open_stream(sid, decoded, self.hb_end, entry)

    def on_trailers(self, st: _Stream, decoded: list[Any]) -> None:
        if st.ended_remote:
            raise _StreamError(st.sid, codec.STREAM_CLOSED)
        if not self.hb_end:
            raise _StreamError(st.sid, codec.PROTOCOL_ERROR)  # a second HEADERS must end the stream
        try:
            codec.validate_trailers(decoded)
        except Malformed:
            raise _StreamError(st.sid, codec.PROTOCOL_ERROR) from None
        self.remote_end(st)

    def open_stream(self, sid: int, decoded: list[Any], ended: bool, entry: list[Any] | None) -> None:
        opts = self.opts
        runtime = self.runtime
        if self.goaway_sent or self.goaway_received or self.open >= opts.max_concurrent_streams:
            self.refuse(sid)
            return
        cap = self.config.max_concurrent_requests
        if cap is not None and runtime.live_streams >= cap:
            runtime.throttled += 1
            if telemetry.enabled(_THROTTLED):
                telemetry.execute(_THROTTLED, {"system_time": time.time_ns()},
                                  {"listener": runtime.name, "reason": "max_concurrent_requests"})
            self.refuse(sid)
            return
        checked = entry[1] if entry is not None else None
        if checked is None:
            try:
                pseudo, fields, length = codec.validate_request(decoded)
            except Malformed as exc:
                self.remember_closed(sid, "reset")
                _log.debug("h2 malformed request", stream_id=sid, reason=str(exc))
                raise _StreamError(sid, codec.PROTOCOL_ERROR) from None
            size = codec.field_list_size(decoded)
            if entry is not None:
                entry[1] = (pseudo, tuple(fields), length, size)
        else:
            pseudo, cached_fields, length, size = checked
            fields = list(cached_fields)
        self.requests += 1
        runtime.requests_served += 1
        if size > opts.max_header_list_size:
            self.answer_inline(sid, 431, ended)
            return
        if pseudo[":method"] == "CONNECT":
            self.answer_inline(sid, 501, ended)
            return
        target = pseudo[":path"]
        path, _, query = target.partition("?")
        req = Request(
            pseudo[":method"], target, path, query, "HTTP/2", Headers(fields),
            scheme=pseudo.get(":scheme", self.scheme), host=pseudo.get(":authority")
            or next((v for k, v in fields if k == "host"), None), peer=self.peer,
            listener=runtime.name,
        )
        if ended and length not in (None, 0):
            self.remember_closed(sid, "reset")
            raise _StreamError(sid, codec.PROTOCOL_ERROR)  # a declared body that never comes
        st = self.new_stream(sid, req, ended)
        st.expected = length

    def new_stream(self, sid: int, req: Request, ended: bool) -> _Stream:
        """Register stream ``sid`` and spawn its worker."""
        recv = self.opts.stream_window if self.settings_acked else max(self.opts.stream_window,
                                                                         codec.DEFAULT_WINDOW)
        st = _Stream(sid, self.peer_initial_window, recv)
        st.ended_remote = ended
        st.is_head = req.method == "HEAD"
        st.req = req
        pid, ref = supervisors.spawn_monitor(
            sw.run_stream, self.pid, sid, req, self.runtime, ended,
            label="rr.h2.stream", **self.config.handler_spawn.as_kwargs(),
        )
        st.pid, st.ref, st.alive = pid, ref, True
        self.runtime.live_streams += 1
        self.streams[sid] = st
        self.by_ref[ref] = sid
        self.open += 1
        return st

    def refuse(self, sid: int) -> None:
        """REFUSED_STREAM: counted with resets, so open-and-refuse loops are a flood too."""
        self.remember_closed(sid, "reset")
        self.out.append(codec.rst_frame(sid, codec.REFUSED_STREAM))
        self.spend(0, self.opts.max_resets)

    def answer_inline(self, sid: int, status: int, ended: bool) -> None:
        """A bodiless response from the conn itself (431, 501), no worker."""
        block = codec.encode_status(status) + codec.encode_headers(
            [("content-length", "0"), ("date", http_date())])
        self.header_frames(sid, block, True)
        if not ended:
            self.out.append(codec.rst_frame(sid, codec.NO_ERROR))
        self.remember_closed(sid, "reset")

    # DATA

    def on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise FrameError(codec.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flow > self.recv_window:
            raise FrameError(codec.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= flow
        data = codec.strip_padding(flags, payload)
        st = self.streams.get(sid)
        if st is None or st.closed:
            if self.is_idle(sid):
                raise FrameError(codec.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            how = self.closed.get(sid)
            if how == "ended":
                raise FrameError(codec.STREAM_CLOSED, f"DATA on closed stream {sid}")
            self.return_window(None, flow)
            if how == "peer_reset":
                raise _StreamError(sid, codec.STREAM_CLOSED)
            return  # in flight when we reset it: ignored (§5.1)
        if st.ended_remote:
            self.return_window(None, flow)
            raise _StreamError(sid, codec.STREAM_CLOSED)
        if flow > st.recv_window:
            self.return_window(None, flow)
            raise _StreamError(sid, codec.FLOW_CONTROL_ERROR)
        st.recv_window -= flow
        end = flags & codec.END_STREAM
        if not data and not end:
            self.spend(5, self.opts.max_empty_data)
        if flow > len(data):
            self.return_window(sid, flow - len(data))
        if data:
            st.received += len(data)
            if st.expected is not None and st.received > st.expected:
                self.return_window(None, len(data))
                raise _StreamError(sid, codec.PROTOCOL_ERROR)
            if st.alive and not st.ended_local and st.pid is not None:
                st.outstanding += len(data)
                supervisors.send(st.pid, (sw.BODY, data))
            else:
                self.return_window(None, len(data))
        if end:
            if st.expected is not None and st.received != st.expected:
                raise _StreamError(sid, codec.PROTOCOL_ERROR)
            self.remote_end(st)

    def remote_end(self, st: _Stream) -> None:
        st.ended_remote = True
        if st.alive and st.pid is not None:
            supervisors.send(st.pid, _BODY_END)
        if st.ended_local:
            self.wire_closed(st, "ended")

    # control frames

    def on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise FrameError(codec.FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 octets")
        self.spend(4, self.opts.max_window_updates + 2 * self.data_sent)  # stream + connection
        inc = codec.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise FrameError(codec.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += inc
            if self.send_window > codec.MAX_WINDOW:
                raise FrameError(codec.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self.pump_all()
            return
        st = self.streams.get(sid)
        if st is None or st.closed:
            if self.is_idle(sid):
                raise FrameError(codec.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if inc == 0:
            raise _StreamError(sid, codec.PROTOCOL_ERROR)
        st.send_window += inc
        if st.send_window > codec.MAX_WINDOW:
            raise _StreamError(sid, codec.FLOW_CONTROL_ERROR)
        self.pump(st)

    def on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise FrameError(codec.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & codec.ACK:
            if payload:
                raise FrameError(codec.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self.settings_acked = True
            return
        if len(payload) % 6:
            raise FrameError(codec.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        self.spend(2, self.opts.max_settings)
        self.apply_settings(payload)
        self.out.append(codec.SETTINGS_ACK)

    def apply_settings(self, payload: bytes) -> None:
        for ident, value in codec.parse_settings(payload):
            codec.check_setting(ident, value)
            if ident == codec.INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > codec.MAX_WINDOW:
                        raise FrameError(codec.FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif ident == codec.MAX_FRAME_SIZE:
                self.peer_max_frame = value
        self.pump_all()

    def on_rst(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise FrameError(codec.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise FrameError(codec.FRAME_SIZE_ERROR, "RST_STREAM not 4 octets")
        if self.is_idle(sid):
            raise FrameError(codec.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        self.spend(0, self.opts.max_resets)
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            self.drop(st, "peer_reset")
        elif sid not in self.closed:
            self.remember_closed(sid, "peer_reset")

    def on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise FrameError(codec.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise FrameError(codec.FRAME_SIZE_ERROR, "PING not 8 octets")
        self.spend(1, self.opts.max_pings)
        if not flags & codec.ACK:
            self.out.append(codec.frame(codec.PING, codec.ACK, 0, payload))

    def on_priority(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise FrameError(codec.PROTOCOL_ERROR, "PRIORITY on stream 0")
        self.spend(3, self.opts.max_priority)
        if len(payload) != 5:
            raise _StreamError(sid, codec.FRAME_SIZE_ERROR)
        if codec.u32(payload) & 0x7FFFFFFF == sid:
            raise _StreamError(sid, codec.PROTOCOL_ERROR)

    def stream_error(self, sid: int, code: int) -> None:
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            self.reset(st, code)
        else:
            self.out.append(codec.rst_frame(sid, code))
            if sid <= self.highest and sid not in self.closed:
                self.remember_closed(sid, "reset")

    # -- inbound flow control ------------------------------------------------

    def credit(self, sid: int, n: int) -> None:
        st = self.streams.get(sid)
        if st is None or st.outstanding <= 0:
            return  # forgotten: its outstanding bytes were returned then
        n = min(n, st.outstanding)
        st.outstanding -= n
        self.return_window(sid, n)

    def return_window(self, sid: int | None, n: int) -> None:
        """Give ``n`` consumed bytes back to the peer, in increments ≥ the refill threshold."""
        if n <= 0:
            return
        threshold = self.opts.window_refill_threshold
        self.conn_unreturned += n
        if self.conn_unreturned >= threshold:
            self.out.append(codec.window_update_frame(0, self.conn_unreturned))
            self.recv_window += self.conn_unreturned
            self.conn_unreturned = 0
        st = self.streams.get(sid) if sid is not None else None
        if st is None or st.ended_remote or st.closed:
            return
        st.unreturned += n
        if st.unreturned >= threshold:
            self.out.append(codec.window_update_frame(sid, st.unreturned))  # type: ignore[arg-type]
            st.recv_window += st.unreturned
            st.unreturned = 0

    # -- outbound ------------------------------------------------------------

    def header_frames(self, sid: int, block: bytes, end: bool) -> None:
        limit = self.peer_max_frame
        flags = codec.END_STREAM if end else 0
        if len(block) <= limit:
            self.out.append(codec.frame(codec.HEADERS, flags | codec.END_HEADERS, sid, block))
            return
        self.out.append(codec.frame(codec.HEADERS, flags, sid, block[:limit]))
        for i in range(limit, len(block), limit):
            last = i + limit >= len(block)
            self.out.append(codec.frame(codec.CONTINUATION, codec.END_HEADERS if last else 0, sid,
                                        block[i:i + limit]))

    def send_head(self, st: _Stream, status: int, headers: list[tuple[str, str]], length: int | None,
                  end: bool) -> None:
        block = codec.encode_status(status) + codec.encode_headers(headers)
        if length is not None:
            block += codec.encode_field(b"content-length", b"%d" % length)
        self.header_frames(st.sid, block, end)
        st.head_sent = True
        if end:
            self.local_end(st)

    def on_response(self, sid: int, status: int, headers: list[tuple[str, str]], length: int | None,
                    body: bytes) -> None:
        st = self.streams.get(sid)
        if st is None or st.closed:
            return
        self.send_head(st, status, headers, length, not body)
        if body:
            st.pending.append(("data", body, True, False))
            self.pump(st)

    def on_worker_headers(self, sid: int, status: int, headers: list[tuple[str, str]], length: int | None,
                          end: bool) -> None:
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            self.send_head(st, status, headers, length, end)

    def on_worker_data(self, sid: int, data: bytes, end: bool) -> None:
        st = self.streams.get(sid)
        if st is None or st.closed:
            return  # reset meanwhile: the worker is being killed or told
        st.pending.append(("data", data, end, not end))  # the stream's end is not acknowledged
        self.pump(st)

    def pump_all(self) -> None:
        for st in list(self.streams.values()):
            if st.pending and not st.closed:
                self.pump(st)

    def pump(self, st: _Stream) -> None:
        """Send what the flow-control windows allow from the stream's queue."""
        pending = st.pending
        out = self.out
        sid = st.sid
        while pending:
            kind, payload, end, ack = pending[0]
            if kind == "trailers":
                self.header_frames(sid, codec.encode_headers(payload), True)
            elif payload:
                window = min(self.send_window, st.send_window)
                if window <= 0:
                    if st.stalled_since is None:
                        st.stalled_since = time.monotonic()
                        self.stalled = True
                    return
                n = min(len(payload), window, self.peer_max_frame)
                rest = payload[n:] if n < len(payload) else b""
                chunk = payload[:n] if rest else payload
                out.append(codec.frame_head(codec.DATA, codec.END_STREAM if end and not rest else 0, sid, n))
                out.append(chunk)
                self.data_sent += 1
                self.send_window -= n
                st.send_window -= n
                st.stalled_since = None
                if rest:
                    pending[0] = (kind, rest, end, ack)
                    continue
            elif end:
                out.append(codec.frame(codec.DATA, codec.END_STREAM, sid))
            pending.popleft()
            if ack and st.alive and st.pid is not None:
                supervisors.send(st.pid, _SENT)
            if end:
                self.local_end(st)
                return
        st.stalled_since = None

    def check_stalls(self, now: float) -> None:
        limit = self.opts.stall_timeout
        stalled = False
        for st in list(self.streams.values()):
            since = st.stalled_since
            if since is None or st.closed:
                continue
            if now - since > limit:
                _log.info("h2 stream stalled on flow control", stream_id=st.sid, waited=round(now - since, 3))
                self.reset(st, codec.CANCEL)
            else:
                stalled = True
        self.stalled = stalled

    def local_end(self, st: _Stream) -> None:
        """Our side of the stream is ended."""
        st.ended_local = True
        if st.ended_remote:
            self.wire_closed(st, "ended")
        else:
            # The response is complete before the request body: ask the peer to stop (§8.1).
            self.out.append(codec.rst_frame(st.sid, codec.NO_ERROR))
            self.wire_closed(st, "reset")

    def wire_closed(self, st: _Stream, how: str) -> None:
        if not st.closed:
            st.closed = True
            self.open -= 1
            st.pending.clear()
            st.stalled_since = None
            self.remember_closed(st.sid, how)
            if st.outstanding > 0:
                self.return_window(None, st.outstanding)
                st.outstanding = 0
        if not st.alive:
            self.streams.pop(st.sid, None)

    def reset(self, st: _Stream, code: int) -> None:
        """A stream error from our side: RST_STREAM and end its worker."""
        self.out.append(codec.rst_frame(st.sid, code))
        self.drop(st, "reset")

    def drop(self, st: _Stream, how: str) -> None:
        """Close the stream on the wire and stop its worker (a Loop worker is told instead)."""
        self.wire_closed(st, how)
        if st.alive and st.pid is not None and st.sid not in self.dying:
            # Told, not killed: its next send or body read raises rr.ClientGone. One that
            # does not end within CLOSE_GRACE is killed (check_dying).
            supervisors.send(st.pid, _CLOSED)
            self.dying[st.sid] = time.monotonic() + CLOSE_GRACE

    def check_dying(self, now: float) -> None:
        for sid, deadline in list(self.dying.items()):
            if now >= deadline:
                del self.dying[sid]
                st = self.streams.get(sid)
                if st is not None and st.alive and st.pid is not None:
                    self.by_ref.pop(st.ref, None)
                    supervisors.demonitor(st.ref, flush=True)
                    supervisors.exit(st.pid, "kill")
                    self.worker_gone(st)

    def worker_gone(self, st: _Stream) -> None:
        st.alive = False
        self.dying.pop(st.sid, None)
        self.runtime.live_streams -= 1
        if st.outstanding > 0:  # never to be consumed: back to the connection window now
            self.return_window(None, st.outstanding)
            st.outstanding = 0
        if st.closed:
            self.streams.pop(st.sid, None)

    def on_down(self, ref: Any, reason: Any) -> None:
        sid = self.by_ref.pop(ref, None)
        if sid is None:
            return
        st = self.streams.get(sid)
        if st is None:
            return
        self.worker_gone(st)
        if st.closed:
            return
        if reason == "normal" and (st.ended_local or (st.pending and st.pending[-1][2])):
            return  # the whole response is out or queued; pump finishes it
        if not st.head_sent and not st.pending:
            # Died before answering: the conn answers 500 for it.
            req = st.req
            if reason != "normal":
                _log.error("h2 stream worker died", stream_id=sid, reason=str(reason),
                           request_id=req.request_id if req else None,
                           method=req.method if req else None, path=req.path if req else None)
            error = dispatch.INTERNAL_ERROR
            headers, _ = exchange.response_fields(error.headers)
            self.send_head(st, 500, headers, len(error.body), st.is_head)
            if not st.closed and not st.is_head:
                st.pending.append(("data", error.body, True, False))
                self.pump(st)
            return
        self.reset(st, codec.INTERNAL_ERROR)

    # -- h2c Upgrade ---------------------------------------------------------

    def upgraded(self, settings: bytes, req: Request, body: bytes) -> None:
        """Stream 1 from an HTTP/1.1 ``Upgrade: h2c`` request (RFC 7540 §3.2), already read whole."""
        try:
            if len(settings) % 6:
                raise FrameError(codec.PROTOCOL_ERROR, "HTTP2-Settings length")
            self.apply_settings(settings)
        except FrameError as err:
            self.connection_error(err.code, str(err))
        self.highest = 1
        self.requests += 1
        self.runtime.requests_served += 1
        st = self.new_stream(1, req, not body)
        st.ended_remote = True
        if body and st.pid is not None:
            # Read over HTTP/1.1: the worker's credit for it is owed to nobody (outstanding stays 0).
            supervisors.send(st.pid, (sw.BODY, body))
            supervisors.send(st.pid, _BODY_END)


def _reap(pids: list[supervisors.Pid]) -> None:
    """Give workers told the connection ended ``CLOSE_GRACE`` to finish, then kill the rest."""
    refs = {supervisors.monitor(pid): pid for pid in pids}
    deadline = time.monotonic() + CLOSE_GRACE
    while refs:
        try:
            msg = supervisors.receive(lambda m: isinstance(m, tuple) and m[:1] == ("DOWN",) and m[1] in refs,
                                      timeout=max(0.0, deadline - time.monotonic()))
        except supervisors.Timeout:
            break
        refs.pop(msg[1])
    for pid in refs.values():
        supervisors.exit(pid, "kill")


def serve_h2(sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str, initial: bytes = b"",
             upgrade: tuple[bytes, Request, bytes] | None = None) -> Http2Conn:
    """Run an h2 connection in the calling (conn) process until it closes.

    Registers the connection in ``runtime.conns`` (so drain sees ``idle``) and
    ends every stream worker still running when the connection goes.
    Returns the connection (for its ``close_reason`` and ``requests``).
    """
    conn = Http2Conn(sock, peer, runtime, scheme)
    runtime.conns[conn.pid] = conn
    try:
        conn.serve(initial, upgrade)
    except _Close:
        pass
    except supervisors.Exit as exc:
        # rr.drain ends an idle connection with exit "shutdown": say GOAWAY first, so a
        # request the client sent meanwhile is known unprocessed (safe to retry).
        if exc.reason == "shutdown" and conn.preface_ok and not conn.goaway_sent and not conn.writing:
            conn.close_reason = "drain"
            try:
                sock.settimeout(1.0)
                sock.sendall(codec.goaway_frame(conn.highest, codec.NO_ERROR))
            except OSError:
                pass
        raise
    finally:
        orphans = []
        for st in conn.streams.values():
            if st.alive and st.pid is not None:
                runtime.live_streams -= 1
                st.alive = False
                supervisors.demonitor(st.ref, flush=True)
                supervisors.send(st.pid, _CLOSED)
                orphans.append(st.pid)
        if orphans:
            supervisors.spawn(_reap, orphans, label="rr.h2.reaper")
        if conn.reader is not None:
            supervisors.unlink(conn.reader)
            supervisors.exit(conn.reader, "kill")
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    return conn
