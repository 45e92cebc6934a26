"""The HTTP/2 connection state machine: sans-IO, one per connection.

What it is: everything RFC 9113 and RFC 7541 say about one connection, as
an object with no socket and no process. Bytes from the peer go in
(``feed``); so does what the stream workers send (``on_response``,
``on_interim``, ``on_worker_headers``, ``on_worker_data``,
``on_trailers_from_worker``, ``credit``, ``loop_started``, ``worker_down``)
and the passing of time
(``tick``). Out come frames (``data_to_send``) and events for the process
shell (``take_events``): ``(START, sid, request, ended, credit, field_limit)`` to start a worker,
``(TELL, sid, message)`` to send one a message, ``(KILL, sid)`` to end one.
``rr.http2.conn`` is the shell; tests drive this class directly.

What it owns: the frame reader, the HPACK decoder (and its decode cache),
every stream's state, both directions of flow control (outbound through
``rr.http2.flow``), the flood budgets and the drain/GOAWAY state.

What it must never do: touch a socket, spawn or signal a process, or let a
peer's bytes raise anything but ``ConnectionEnded`` (the GOAWAY is queued
first). Every protocol violation is answered with the error RFC 9113
requires: a connection error is ``GOAWAY(code)`` then the end, a stream error
is ``RST_STREAM(code)`` on that stream while the others go on.

Flow control: inbound, bytes are returned to the peer (``WINDOW_UPDATE``) only
once the worker *consumed* them (``credit``), in increments of at least
``window_refill_threshold``; bytes for a stream without a live worker, and
padding, are returned at once. Outbound, see ``rr.http2.flow``; a stream that
waits longer than ``stall_timeout`` is reset with ``CANCEL``. What the workers
may queue here is paid from credit (``rr.stream``): a stream's worker holds at
most the peer's window plus a chunk (``queue_limit``, at most 64 KiB), and all
of them together at most ``send_budget`` bytes. Unasked, a worker gets a fair
share (``send_budget / (2 × max_concurrent_streams)``) at its start and back as its
bytes are framed, or up to its limit while less than half the budget is out
(a response of a few chunks then needs no ``WANT``); a worker that waits for
more says so (``WANT``) and gets up to its limit, now or when budget frees
(``regrant``, which the shell runs after any message while a worker waits).

Flood guards: per ``flood_window`` the connection may receive ``max_resets``
client resets (refused streams count too: Rapid Reset; so do the resets rr
sends for a peer's stream errors: MadeYouReset), ``max_pings``,
``max_settings``, ``max_priority`` frames, ``max_window_updates`` beyond two
per DATA frame sent (one for the stream, one for the connection), and
``max_empty_data`` empty non-final DATA frames; over any budget:
``GOAWAY(ENHANCE_YOUR_CALM)``. Telemetry: every connection error emits
``("rr", "http2", "goaway")`` with the code's name, and every reset with an
error code (the peer's, and rr's refusals and stream errors) emits
``("rr", "http2", "reset")``. A header block is bounded by
``max_header_block`` encoded bytes and 64 CONTINUATION frames; a decoded one
over ``max_header_list_size`` is answered ``431`` on its stream.

Client gone: when a stream is reset (by the peer or by us) its worker is told
(``CLOSED``: its next send or body read raises ``rr.ClientGone``) and killed
if it has not ended ``CLOSE_GRACE`` seconds later.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

import hpack
import hpack.exceptions

from rr import dispatch, exchange, telemetry
from rr import response as resp
from rr import stream as sw
from rr.http2 import codec, flow
from rr.http2.codec import FrameError, Malformed
from rr.httpdate import http_date
from rr.log import get_logger
from rr.request import Headers, Request, init_request, new_request

if TYPE_CHECKING:
    from rr.runtime import ListenerRuntime

_log = get_logger("rr.http2")

# CONTINUATION frames one header block may have.
MAX_CONTINUATIONS = 64
# Decoded header blocks remembered per connection (see codec.table_neutral).
BLOCK_CACHE = 64
# Decoded lists larger than this (RFC 9113 §6.5.2 sizing) are not cached.
CACHED_LIST_MAX = 8192
# Closed stream ids remembered (to tell "closed" from "never opened").
CLOSED_MEMORY = 512

_THROTTLED = ("rr", "request", "throttled")
_GOAWAY = ("rr", "http2", "goaway")
_RESET = ("rr", "http2", "reset")

# Events for the shell (``take_events``): start a worker, send it a message, kill it.
# (START, sid, request, ended, credit, field_limit): credit = response bytes the worker may
# queue now; field_limit = the peer's SETTINGS_MAX_HEADER_LIST_SIZE (None: it set none).
START = "start"
TELL = "tell"  # (TELL, sid, message)
KILL = "kill"  # (KILL, sid): the machine already counts the worker gone
_BODY_END = (sw.BODY_END,)
_CLOSED = (resp.CLOSED,)
# Seconds a stream worker told the client is gone (``CLOSED``) may take to end before it is killed.
CLOSE_GRACE = sw.CLOSE_GRACE


class ConnectionEnded(Exception):
    """The connection is over (a connection error's GOAWAY is queued, or the peer left)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamError(Exception):
    """A stream error: RST_STREAM(code) on ``sid``, the connection goes on."""

    def __init__(self, sid: int, code: int) -> None:
        self.sid = sid
        self.code = code


class Stream:
    __slots__ = ("sid", "head_sent", "ended_local", "ended_remote", "closed", "pending",
                 "unreturned", "alive", "is_head", "outstanding", "req", "send_window", "recv_window",
                 "expected", "received", "loop", "stalled_since", "start", "credit_out", "wanting")

    def __init__(self, sid: int, send_window: int, recv_window: int) -> None:
        self.sid = sid
        self.head_sent = False
        self.ended_local = False
        self.ended_remote = False
        self.closed = False  # closed on the wire (both ends, or reset)
        # queued sends: ("data", bytes, end_stream, ack) or ("trailers", headers, True, ack)
        self.pending: collections.deque[tuple[str, Any, bool, bool]] = collections.deque()
        self.unreturned = 0
        self.outstanding = 0  # body bytes forwarded to the worker and not yet credited back
        self.alive = False  # a worker runs for it
        # Response bytes its worker may have queued here: credit given and not yet framed
        # (held by the worker, in our mailbox, or in ``pending``); counts in ``H2Machine.credited``.
        self.credit_out = 0
        self.wanting = False  # its worker waits for more credit than it has (WANT)
        self.is_head = False
        self.req: Request | None = None
        self.send_window = send_window
        self.recv_window = recv_window
        self.expected: int | None = None
        self.received = 0
        self.loop = False
        self.stalled_since: float | None = None
        self.start: tuple[Any, ...] | None = None  # its START event, until the shell takes it


class H2Machine:
    """The protocol state of one h2 connection: bytes and worker output in, frames and events out."""

    def __init__(self, peer: Any, runtime: ListenerRuntime, scheme: str, *,
                 proxy: Any = None, peer_cert: dict[str, Any] | None = None) -> None:
        self.peer = peer
        self.proxy = proxy
        self.peer_cert = peer_cert
        self.runtime = runtime
        self.config = runtime.config
        self.opts = opts = runtime.config.http2
        self.scheme = scheme
        self.streams: dict[int, Stream] = {}
        self.open = 0  # streams open on the wire
        self.requests = 0
        self.close_reason = "normal"
        self.goaway_sent = False
        self.goaway_received = False
        self.out: list[bytes] = []  # frames to write, in order
        self.events: list[tuple[Any, ...]] = []  # for the shell: workers to start, tell or end
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
        self.flow = flow.Scheduler()
        self.recv_window = opts.conn_window
        self.conn_unreturned = 0
        self.peer_initial_window = codec.DEFAULT_WINDOW
        self.peer_max_header_list: int | None = None  # the peer's SETTINGS_MAX_HEADER_LIST_SIZE
        self.flood_start = time.monotonic()
        self.flood = [0, 0, 0, 0, 0, 0]  # resets, pings, settings, priority, window updates, empty data
        # sid -> when its worker, told the client is gone, is killed if still alive.
        self.dying: dict[int, float] = {}
        # Outbound budget (``send_budget``): the credit given to all stream workers and not yet
        # framed; ``starved`` when a worker got less than it wants because of the budget.
        self.credited = 0
        self.starved = False
        # Credit a stream gets unasked (at its start, and back as its bytes are framed): a fair
        # share, so the budget is never all reserved by workers that are not sending.
        # Half the budget is for shares (every stream that may open gets its share), the other
        # half for larger unasked grants while it lasts (``grant``): unasked grants together stay
        # within the budget (only asked ones can use it all and make a stream wait: ``regrant``).
        self.share = max(1, opts.send_budget // (2 * opts.max_concurrent_streams))

    @property
    def idle(self) -> bool:
        """No stream open: drain may end this connection at once."""
        return not self.streams

    def data_to_send(self) -> bytes:
        """The frames queued since the last call, as one write."""
        out = self.out
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        return data

    def take_events(self) -> list[tuple[Any, ...]]:
        if self.starved and self.credited < self.opts.send_budget:
            self.regrant()
        events, self.events = self.events, []
        for event in events:
            if event[0] == START:
                st = self.streams.get(event[1])
                if st is not None:
                    st.start = None
        return events

    # -- the connection --------------------------------------------------------

    def start(self) -> None:
        """Queue the server's SETTINGS (and the connection window's opening WINDOW_UPDATE)."""
        opts = self.opts
        self.out.append(codec.settings_frame({
            codec.MAX_CONCURRENT_STREAMS: opts.max_concurrent_streams,
            codec.INITIAL_WINDOW_SIZE: opts.stream_window,
            codec.MAX_HEADER_LIST_SIZE: opts.max_header_list_size,
            codec.ENABLE_CONNECT_PROTOCOL: 1,  # RFC 8441: WebSocket over extended CONNECT
        }))
        if opts.conn_window > codec.DEFAULT_WINDOW:
            self.out.append(codec.window_update_frame(0, opts.conn_window - codec.DEFAULT_WINDOW))
        else:
            self.recv_window = codec.DEFAULT_WINDOW

    def goaway(self, code: int, reason: str = "") -> None:
        """Send GOAWAY naming the last stream we took; open streams may still finish."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out.append(codec.goaway_frame(self.highest, code, reason.encode("ascii", "replace")[:128]))

    def drain(self, deadline: float) -> None:
        """GOAWAY(NO_ERROR); Loop workers hear ``DRAIN``; open streams may finish."""
        self.close_reason = "drain"
        self.goaway(codec.NO_ERROR)
        for st in self.streams.values():
            if st.loop and st.alive:
                self.events.append((TELL, st.sid, (resp.DRAIN, deadline)))

    def connection_error(self, code: int, reason: str) -> None:
        self.close_reason = f"connection_error: {reason}"
        if telemetry.enabled(_GOAWAY):
            telemetry.execute(_GOAWAY, {}, {"listener": self.runtime.name, "peer": self.peer,
                                            "error": codec.ERROR_NAMES.get(code, str(code)), "reason": reason})
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out.append(codec.goaway_frame(self.highest, code, reason.encode("ascii", "replace")[:128]))
        raise ConnectionEnded(self.close_reason)

    # -- inbound -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the peer. Raises ``ConnectionEnded`` after a connection error (GOAWAY queued)."""
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
                except StreamError as err:
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
            self.flow.data_frames = 0
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
                raise StreamError(sid, codec.STREAM_CLOSED)
            if st is not None or how is not None:
                raise FrameError(codec.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
            raise FrameError(codec.PROTOCOL_ERROR, f"HEADERS on stream {sid} below the highest opened")
        self.highest = sid
        if self.hb_error:
            self.remember_closed(sid, "reset")
            raise StreamError(sid, self.hb_error)
        self.open_stream(sid, decoded, self.hb_end, entry)

    def on_trailers(self, st: Stream, decoded: list[Any]) -> None:
        if st.ended_remote:
            raise StreamError(st.sid, codec.STREAM_CLOSED)
        if not self.hb_end:
            raise StreamError(st.sid, codec.PROTOCOL_ERROR)  # a second HEADERS must end the stream
        try:
            codec.validate_trailers(decoded)
        except Malformed:
            raise StreamError(st.sid, codec.PROTOCOL_ERROR) from None
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
                telemetry.execute(_THROTTLED, {"system_time": time.time()},
                                  {"listener": runtime.name, "reason": "max_concurrent_requests"})
            self.refuse(sid)
            return
        checked = entry[1] if entry is not None else None
        if checked is None:
            try:
                pseudo, fields, length = codec.validate_request(decoded, connect_protocol=True)
            except Malformed as exc:
                self.remember_closed(sid, "reset")
                _log.debug("h2 malformed request", stream_id=sid, reason=str(exc))
                raise StreamError(sid, codec.PROTOCOL_ERROR) from None
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
        method = pseudo[":method"]
        protocol = pseudo.get(":protocol")
        if method == "CONNECT":
            # RFC 8441: only ``:protocol: websocket`` is served; it is routed as a GET of
            # ``:path`` (the handshake sees ``req.private["rr.protocol"]``). A plain CONNECT
            # (a tunnel) or another protocol: 501, answered here.
            if protocol != "websocket":
                self.answer_inline(sid, 501, ended)
                return
            method = "GET"
        target = pseudo[":path"]
        path, _, query = target.partition("?")
        req = new_request(Request)  # Request(...) without the kwargs dict (see Request)
        init_request(
            req, method, target, path, query, "HTTP/2", Headers(fields),
            scheme=pseudo.get(":scheme", self.scheme), host=pseudo.get(":authority")
            or next((v for k, v in fields if k == "host"), None), peer=self.peer,
            listener=runtime.name, proxy=self.proxy, peer_cert=self.peer_cert,
        )
        if protocol is not None:
            req.private["rr.protocol"] = protocol
        if ended and length not in (None, 0):
            self.remember_closed(sid, "reset")
            raise StreamError(sid, codec.PROTOCOL_ERROR)  # a declared body that never comes
        st = self.new_stream(sid, req, ended)
        st.expected = length

    def new_stream(self, sid: int, req: Request, ended: bool) -> Stream:
        """Register stream ``sid`` and spawn its worker."""
        recv = self.opts.stream_window if self.settings_acked else max(self.opts.stream_window,
                                                                         codec.DEFAULT_WINDOW)
        st = Stream(sid, self.peer_initial_window, recv)
        st.ended_remote = ended
        st.is_head = req.method == "HEAD"
        st.req = req
        st.alive = True
        # Handed to the shell only with take_events: a stream reset before then (in the same
        # read: MadeYouReset) never gets a process at all (see ``drop``).
        st.start = (START, sid, req, ended, self.grant(st, False), self.peer_max_header_list)
        self.events.append(st.start)
        self.runtime.live_streams += 1
        self.streams[sid] = st
        self.open += 1
        return st

    def refuse(self, sid: int) -> None:
        """REFUSED_STREAM: counted with resets, so open-and-refuse loops are a flood too."""
        self.remember_closed(sid, "reset")
        self.out.append(codec.rst_frame(sid, codec.REFUSED_STREAM))
        if telemetry.enabled(_RESET):
            self.reset_event("rr", codec.REFUSED_STREAM)
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
                raise StreamError(sid, codec.STREAM_CLOSED)
            return  # in flight when we reset it: ignored (§5.1)
        if st.ended_remote:
            self.return_window(None, flow)
            raise StreamError(sid, codec.STREAM_CLOSED)
        if flow > st.recv_window:
            self.return_window(None, flow)
            raise StreamError(sid, codec.FLOW_CONTROL_ERROR)
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
                raise StreamError(sid, codec.PROTOCOL_ERROR)
            if st.alive and not st.ended_local:
                st.outstanding += len(data)
                self.events.append((TELL, sid, (sw.BODY, data)))
            else:
                self.return_window(None, len(data))
        if end:
            if st.expected is not None and st.received != st.expected:
                raise StreamError(sid, codec.PROTOCOL_ERROR)
            self.remote_end(st)

    def remote_end(self, st: Stream) -> None:
        st.ended_remote = True
        if st.alive:
            self.events.append((TELL, st.sid, _BODY_END))
        if st.ended_local:
            self.wire_closed(st, "ended")

    # control frames

    def on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise FrameError(codec.FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 octets")
        self.spend(4, self.opts.max_window_updates + 2 * self.flow.data_frames)  # stream + connection
        inc = codec.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise FrameError(codec.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.flow.window += inc
            if self.flow.window > codec.MAX_WINDOW:
                raise FrameError(codec.FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self.pump_all()
            return
        st = self.streams.get(sid)
        if st is None or st.closed:
            if self.is_idle(sid):
                raise FrameError(codec.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if inc == 0:
            raise StreamError(sid, codec.PROTOCOL_ERROR)
        st.send_window += inc
        if st.send_window > codec.MAX_WINDOW:
            raise StreamError(sid, codec.FLOW_CONTROL_ERROR)
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
                self.flow.max_frame = value
            elif ident == codec.MAX_HEADER_LIST_SIZE:
                self.peer_max_header_list = value
        self.pump_all()

    def on_rst(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise FrameError(codec.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise FrameError(codec.FRAME_SIZE_ERROR, "RST_STREAM not 4 octets")
        if self.is_idle(sid):
            raise FrameError(codec.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        if telemetry.enabled(_RESET):
            self.reset_event("peer", int.from_bytes(payload, "big"))
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
            raise StreamError(sid, codec.FRAME_SIZE_ERROR)
        if codec.u32(payload) & 0x7FFFFFFF == sid:
            raise StreamError(sid, codec.PROTOCOL_ERROR)

    def stream_error(self, sid: int, code: int) -> None:
        """RST_STREAM(code) for a peer's stream-level violation.

        Counted in the same budget as the peer's own resets (``max_resets``): a
        peer that makes rr reset streams for it (MadeYouReset, CVE-2025-8671:
        open a stream, then break it with a bad WINDOW_UPDATE, DATA past its
        window...) is a reset flood too.
        """
        self.spend(0, self.opts.max_resets)
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            self.reset(st, code)
        else:
            self.out.append(codec.rst_frame(sid, code))
            if telemetry.enabled(_RESET):
                self.reset_event("rr", code)
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
        self.flow.header_frames(self.out, sid, block, end)

    def send_head(self, st: Stream, status: int, headers: list[tuple[str, str]], length: int | None,
                  end: bool) -> None:
        block = codec.encode_status(status) + codec.encode_headers(headers)
        if length is not None:
            block += codec.encode_length(length)
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

    def on_interim(self, sid: int, status: int, headers: list[tuple[str, str]]) -> None:
        """An informational head (103 Early Hints): HEADERS without END_STREAM before the final one."""
        st = self.streams.get(sid)
        if st is not None and not st.closed and not st.head_sent:
            self.header_frames(sid, codec.encode_status(status) + codec.encode_headers(headers), False)

    def on_worker_headers(self, sid: int, status: int, headers: list[tuple[str, str]], length: int | None,
                          end: bool) -> None:
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            self.send_head(st, status, headers, length, end)

    def loop_started(self, sid: int, draining: bool, deadline: float) -> None:
        st = self.streams.get(sid)
        if st is not None:
            st.loop = True
            if draining and st.alive:  # drain began before the Loop did
                self.events.append((TELL, sid, (resp.DRAIN, deadline)))

    def on_trailers_from_worker(self, sid: int, fields: list[tuple[str, str]]) -> None:
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            st.pending.append(("trailers", fields, True, False))
            self.pump(st)

    def end_workers(self) -> list[int]:
        """The connection is over: the sids whose workers are still alive (each counted gone)."""
        sids = []
        for st in self.streams.values():
            if st.alive:
                st.alive = False
                self.runtime.live_streams -= 1
                sids.append(st.sid)
        return sids

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

    def pump(self, st: Stream) -> None:
        """Send what the flow-control windows allow from the stream's queue."""
        framed, ended = self.flow.pump(st, self.out)
        if framed:
            self.release(st, framed)
            if st.alive and not st.closed and not ended:  # a complete response needs no more credit
                self.give(st)
        if ended:
            self.local_end(st)

    # -- the outbound budget: credit for stream workers ------------------------------------

    def want(self, sid: int) -> None:
        """The worker of ``sid`` waits for more credit than it has (``WANT``)."""
        st = self.streams.get(sid)
        if st is not None and st.alive and not st.closed:
            st.wanting = True
            self.give(st)

    def give(self, st: Stream) -> None:
        """Credit for ``st``'s worker, if it is owed any: told with ``SENT``."""
        more = self.grant(st, st.wanting)
        if more:
            st.wanting = False
            self.events.append((TELL, st.sid, (sw.SENT, more)))

    def grant(self, st: Stream, asked: bool) -> int:
        """More credit for ``st``'s worker: for a worker that asked, up to what the peer lets
        it send now plus a chunk (``rr.stream.queue_limit``); unasked, up to ``share``, or up to
        that limit while less than half the budget is out; within
        what ``send_budget`` has left (a worker sends what its credit pays for, in parts, so
        any credit is of use; one that asked and got less is come back to by ``regrant``)."""
        cap = sw.queue_limit(min(st.send_window, self.flow.window))
        if asked:
            want = cap - st.credit_out
        else:
            # Unasked: the fair share, or more while under half the budget is out (a response
            # of a few chunks then needs no WANT round trip; the other half stays for askers).
            want = min(cap - st.credit_out, max(self.share - st.credit_out,
                                                self.opts.send_budget // 2 - self.credited))
        if want <= 0:
            return 0
        add = min(want, self.opts.send_budget - self.credited)
        if add < want and asked:
            self.starved = True  # regrant comes back to it
        if add <= 0:
            return 0
        st.credit_out += add
        self.credited += add
        return add

    def release(self, st: Stream, n: int) -> None:
        """``n`` of ``st``'s credited bytes are framed or will never come: back to the budget."""
        n = min(n, st.credit_out)  # the conn's own 500 body was never credited
        st.credit_out -= n
        self.credited -= n

    def regrant(self) -> None:
        """Budget came back while some worker waited for it: hand it out to the workers that
        asked, lowest stream first."""
        self.starved = False
        for st in list(self.streams.values()):
            if self.credited >= self.opts.send_budget:
                self.starved = True
                return
            if st.alive and not st.closed and st.wanting:
                self.give(st)

    def tick(self, now: float) -> None:
        """Time-driven work: streams stalled past ``stall_timeout``, told workers past their grace."""
        if self.flow.stalled:
            for st in self.flow.overdue(self.streams.values(), now, self.opts.stall_timeout):
                _log.info("h2 stream stalled on flow control", stream_id=st.sid,
                          waited=round(now - (st.stalled_since or now), 3))
                self.reset(st, codec.CANCEL)
        if self.dying:
            for sid, deadline in list(self.dying.items()):
                if now >= deadline:
                    del self.dying[sid]
                    st = self.streams.get(sid)
                    if st is not None and st.alive:
                        self.events.append((KILL, sid))
                        self.worker_gone(st)

    @property
    def timed(self) -> bool:
        """Whether ``tick`` has work waiting for time to pass."""
        return self.flow.stalled or bool(self.dying)

    def local_end(self, st: Stream) -> None:
        """Our side of the stream is ended."""
        st.ended_local = True
        if st.ended_remote:
            self.wire_closed(st, "ended")
        else:
            # The response is complete before the request body: ask the peer to stop (§8.1).
            self.out.append(codec.rst_frame(st.sid, codec.NO_ERROR))
            self.wire_closed(st, "reset")

    def wire_closed(self, st: Stream, how: str) -> None:
        if not st.closed:
            st.closed = True
            self.open -= 1
            st.pending.clear()
            st.stalled_since = None
            self.release(st, st.credit_out)
            self.remember_closed(st.sid, how)
            if st.outstanding > 0:
                self.return_window(None, st.outstanding)
                st.outstanding = 0
        if not st.alive:
            self.streams.pop(st.sid, None)

    def reset(self, st: Stream, code: int) -> None:
        """A stream error from our side: RST_STREAM and end its worker."""
        self.out.append(codec.rst_frame(st.sid, code))
        if telemetry.enabled(_RESET):
            self.reset_event("rr", code)
        self.drop(st, "reset")

    def reset_event(self, by: str, code: int) -> None:
        telemetry.execute(_RESET, {}, {"listener": self.runtime.name, "peer": self.peer, "by": by,
                                       "error": codec.ERROR_NAMES.get(code, str(code))})

    def drop(self, st: Stream, how: str) -> None:
        """Close the stream on the wire and stop its worker (a Loop worker is told instead)."""
        self.wire_closed(st, how)
        if st.alive and st.start is not None:
            # Its worker was never started: drop the start, and with it all the stream's
            # events not yet handed out; nothing to tell or kill.
            sid = st.sid
            self.events = [e for e in self.events if not (e[0] in (START, TELL) and e[1] == sid)]
            st.start = None
            self.worker_gone(st)
            return
        if st.alive and st.sid not in self.dying:
            # Told, not killed: its next send or body read raises rr.ClientGone. One that
            # does not end within CLOSE_GRACE is killed (``tick``).
            self.events.append((TELL, st.sid, _CLOSED))
            self.dying[st.sid] = time.monotonic() + CLOSE_GRACE

    def worker_gone(self, st: Stream) -> None:
        st.alive = False
        self.dying.pop(st.sid, None)
        self.runtime.live_streams -= 1
        if st.credit_out:  # credit it never used: only what is queued stays counted
            queued = sum(len(item[1]) for item in st.pending if item[0] == "data")
            self.release(st, st.credit_out - queued)
        if st.outstanding > 0:  # never to be consumed: back to the connection window now
            self.return_window(None, st.outstanding)
            st.outstanding = 0
        if st.closed:
            self.streams.pop(st.sid, None)

    def worker_down(self, sid: int, reason: Any) -> None:
        """The stream's worker ended with ``reason``."""
        st = self.streams.get(sid)
        if st is None:
            return
        self.worker_gone(st)
        if st.closed:
            return
        if reason == "normal" and (st.ended_local or (st.pending and st.pending[-1][2])):
            return  # the whole response is out or queued; pump finishes it
        if not st.head_sent and not st.pending:
            # Died before answering: the conn answers 500 for it, with the request id the
            # exchange would have sent (adopted from a proxy's header if the worker had not).
            req = st.req
            error = dispatch.INTERNAL_ERROR
            headers, _ = exchange.response_fields(error.headers)
            if req is not None:
                exchange.with_request_id(headers, req, self.config)
            if reason != "normal":
                _log.error("h2 stream worker died", stream_id=sid, reason=str(reason),
                           request_id=req.request_id if req else None,
                           method=req.method if req else None, path=req.path if req else None)
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
        if body:
            # Read over HTTP/1.1: the worker's credit for it is owed to nobody (outstanding stays 0).
            self.events.append((TELL, 1, (sw.BODY, body)))
            self.events.append((TELL, 1, _BODY_END))
