"""The HTTP/3 connection process: one QUIC connection, its streams' workers, its timer.

What it is: the process the listener's connection supervisor starts for a
``QuicAdmission`` (``rr.http3.endpoint``). It owns aioquic's sans-IO
``QuicConnection`` (``rr.http3.quic.RrQuic``) and ``H3Connection``, a dup of
the listener's first UDP socket to send from (any of them would do: one port), and the map from request stream ids to their
worker processes. Datagrams reach it from the endpoint as messages; it
feeds them to aioquic, acts on the HTTP/3 events, and sends what aioquic
has to send after each batch, with one timer re-armed from ``get_timer()``.

Each request stream runs in a worker process (``rr.stream.run_stream``),
exactly as on h2: the same mailbox protocol (``RESPONSE``, ``INTERIM``, ``HEAD``,
``DATA``, ``TRAILERS``, ``CREDIT``, ``WANT``, ``LOOP``; ``BODY``, ``BODY_END``,
``SENT``, ``CLOSED``, ``DRAIN``), the same exchange, so a request means the
same on h1, h2 and h3. A worker is monitored: if it dies before its head,
its stream is answered 500; after, the stream is reset with
H3_INTERNAL_ERROR; siblings go on.

Sending: all datagrams of a pass leave together, runs of equal size in one
``sendmsg`` with UDP_SEGMENT (GSO) where the kernel has it (``send_datagrams``).
A pass that carries response bytes (or follows a request head whose body is
to come) carries any pending ACK too (``RrQuic.ack_now``) instead of leaving
it to aioquic's 1 ms delayed-ACK timer. With ``max_datagram_size`` above
1200 (the default), path MTU probes start once the handshake is complete,
within the route's MTU (``route_payload_limit``): datagrams grow only to a
size whose probe the peer acknowledged (``RrQuic.start_pmtud``), and fall
back after repeated probe timeouts.

What it must never do: run application code, block on a worker or on the
network beyond one send, or write to a stream after it was reset or
the peer asked it to stop (STOP_SENDING): such a stream is closed here and
its worker told (``CLOSED``), then killed after ``CLOSE_GRACE``.

Flow control and memory: request bodies flow to a worker as fast as it
reads them (``RrQuic`` reopens the client's windows only as the worker
consumes); response bytes are paid from send credit (``SENT``): a fair share
of ``send_budget`` unasked, up to the peer's window plus a chunk when the
worker asks (``WANT``), never more across the connection than
``send_budget``, and given back as aioquic sends them — a client that never
reads pins at most that.

Drain: when ``runtime.draining`` becomes true, a GOAWAY on the control
stream says which requests will still be served; in-flight streams finish;
the connection closes (H3_NO_ERROR) once none is open. ``idle`` lets drain
and eviction end it at once.
"""

from __future__ import annotations

import collections
import errno
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import (
    ErrorCode,
    FrameType,
    H3Connection,
    MessageError,
    Setting,
    encode_frame,
)
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic import events as qe
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE

import supervisors
from rr import dispatch, exchange, telemetry, webtransport
from rr import response as resp
from rr import stream as sw
from rr.fields import Malformed, field_list_size, validate_request
from rr.http3.quic import RrQuic, server_configuration
from rr.httpdate import http_date
from rr.log import get_logger
from rr.request import Headers, Request, init_request, new_request
from rr.stream import CREDIT, DATA, HEAD, INTERIM, LOOP, RESPONSE, TRAILERS, WANT

if TYPE_CHECKING:
    from rr.http3.endpoint import QuicAdmission
    from rr.runtime import ListenerRuntime

_log = get_logger("rr.http3")

# How often the loop looks at the drain flag when nothing else wakes it.
TICK = 0.5
# Messages handled before what aioquic has to send goes out, even if more are queued.
BATCH = 64

_CLOSED = (resp.CLOSED,)
_BODY_END = (sw.BODY_END,)
_THROTTLED = ("rr", "listener", "throttled")
_CONN_CLOSE = ("rr", "conn", "close")


@dataclass
class StreamBroken(H3Event):
    """A request stream whose message aioquic found malformed (rr reset it H3_MESSAGE_ERROR)."""

    stream_id: int


class _H3(H3Connection):
    """aioquic's HTTP/3 layer, advertising rr's SETTINGS_MAX_FIELD_SECTION_SIZE, and holding a
    malformed request to a stream error.

    aioquic closes the whole connection when a request's fields or its length break
    a rule (its ``MessageError``); RFC 9114 §4.1.2 makes that a stream error of type
    H3_MESSAGE_ERROR. Here the stream is reset (and stopped), what else arrives on it
    is dropped, and rr hears of it as ``StreamBroken``.
    """

    def __init__(self, quic: Any, max_field_section_size: int, webtransport: bool = False) -> None:
        self.rr_max_field_section_size = max_field_section_size
        self.rr_broken: set[int] = set()
        super().__init__(quic, enable_webtransport=webtransport)

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self.rr_max_field_section_size
        return settings

    def _receive_request_or_push_data(self, stream: Any, data: bytes, stream_ended: bool) -> list[H3Event]:
        sid = stream.stream_id
        if sid in self.rr_broken:
            if stream_ended:
                self.rr_broken.discard(sid)
            return []
        try:
            return super()._receive_request_or_push_data(stream, data, stream_ended)
        except MessageError:
            self.rr_broken.add(sid)
            stream.buffer = b""
            self._quic.reset_stream(sid, ErrorCode.H3_MESSAGE_ERROR)
            try:
                self._quic.stop_stream(sid, ErrorCode.H3_MESSAGE_ERROR)
            except ValueError:
                pass
            return [StreamBroken(sid)]


def _wire(fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """The exchange's checked fields as the bytes aioquic's QPACK encoder takes."""
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]


class H3Stream:
    """One request stream's state at the conn."""

    __slots__ = ("sid", "pid", "ref", "req", "is_head", "head_sent", "ended_local", "ended_remote",
                 "closed", "alive", "loop", "queued", "granted", "wants", "dying", "stalled_since")

    def __init__(self, sid: int, req: Request, ended: bool) -> None:
        self.sid = sid
        self.pid: supervisors.Pid | None = None
        self.ref: Any = None
        self.req = req
        self.is_head = req.method == "HEAD"
        self.head_sent = False
        self.ended_local = False
        self.ended_remote = ended
        self.closed = False  # no more writes (ended, reset, or the peer stopped it)
        self.alive = True  # its worker runs
        self.loop = False
        # (QUIC stream, offset just past them, byte count) of bytes handed to aioquic and not
        # yet sent — the response body on this stream, or a WebTransport session's data on its
        # own streams: their credit comes back (SENT) once aioquic has sent them.
        self.queued: collections.deque[tuple[int, int, int]] = collections.deque()
        self.granted = 0  # send credit held by the worker or queued here (rr.stream's protocol)
        self.wants = False  # the worker asked for more (WANT) and has not been given any since
        self.dying = 0.0  # when a told worker is killed (0: not told)
        self.stalled_since = 0.0  # since when its queued response has not moved (0: it moves)


class Http3Conn:
    """One QUIC connection's process state; ``serve`` is the loop."""

    def __init__(self, adm: QuicAdmission, peer: Any, runtime: ListenerRuntime) -> None:
        config = runtime.config
        options = config.http3
        assert options is not None and options.certfile is not None
        self.adm = adm
        self.peer = peer
        self.runtime = runtime
        self.config = config
        self.options = options
        self.pid = supervisors.self()
        configuration = runtime.quic_configuration
        if configuration is None:
            # Once per listener (aioquic only reads it; its own server shares one as well), not
            # a read and parse of the certificate files for every new connection.
            configuration = runtime.quic_configuration = server_configuration(
                options.certfile, options.keyfile, conn_window=options.conn_window,
                stream_window=options.stream_window, idle_timeout=config.keep_alive_timeout,
                datagrams=bool(options.webtransport))
        self.quic = RrQuic(configuration=configuration, max_streams=options.max_concurrent_streams,
                           stream_window=options.stream_window, conn_window=options.conn_window,
                           max_datagram_size=options.max_datagram_size,
                           original_destination_connection_id=adm.original_dcid,
                           retry_source_connection_id=adm.retry_scid)
        self.h3 = _H3(self.quic, options.max_field_section_size, bool(options.webtransport))
        self.wt_streams: dict[int, int] = {}  # WebTransport stream id -> its session's stream id
        self.streams: dict[int, H3Stream] = {}
        self.by_ref: dict[Any, int] = {}
        # Send credit (rr.stream): what all workers together may have queued here, unsent.
        self.budget = options.send_budget
        self.fair = max(1024, options.send_budget // options.max_concurrent_streams)
        self.outstanding = 0
        self.waiting: set[int] = set()  # streams whose worker asked for credit and waits
        self.done: set[int] = set()  # request streams refused or finished: later frames ignored
        self.sock: Any = None
        self.requests = 0
        self.highest = -1  # highest request stream id taken (for GOAWAY)
        self.goaway_sent = False
        self.terminated = False
        self.closing = False
        self.close_reason = "normal"
        self.timer: float | None = None
        # Response bytes (or a request head whose body follows) since the last flush: the next
        # flush sends any pending ACK at once (RrQuic.ack_now).
        self.answering = False

    @property
    def idle(self) -> bool:
        """No stream open: drain and eviction may end this connection at once."""
        return not self.streams

    # -- the network ----------------------------------------------------------------

    def flush(self) -> int:
        """Send what aioquic has to send; re-arm the timer; acknowledge what went out.
        Returns the number of datagrams sent."""
        now = time.monotonic()
        if self.answering:  # the pending ACK rides on the response (RrQuic.ack_now)
            self.answering = False
            self.quic.ack_now(now)
        datagrams = self.quic.datagrams_to_send(now)
        if datagrams:
            send_datagrams(self.sock, datagrams)
        self.timer = self.quic.get_timer()
        freed = False
        for st in self.streams.values():
            if st.queued:
                freed = self.sent(st) or freed
        if freed and self.waiting:
            self.regrant()
        return len(datagrams)

    # -- send credit (rr.stream's protocol: every body byte a worker queues is paid for) ------

    def grant(self, st: H3Stream, asked: bool) -> int:
        """Credit for ``st`` up to its target — a fair share of ``send_budget`` unasked, the
        peer's window plus a chunk when asked — within what the budget has left."""
        target = sw.queue_limit(self.quic.send_window(st.sid)) if asked else self.fair
        give = min(target - st.granted, self.budget - self.outstanding)
        if give <= 0:
            return 0
        st.granted += give
        self.outstanding += give
        return give

    def give(self, st: H3Stream, asked: bool) -> None:
        given = self.grant(st, asked)
        if given:
            st.wants = False
            self.waiting.discard(st.sid)
            supervisors.send(st.pid, (sw.SENT, given))  # type: ignore[arg-type]
        elif asked:
            st.wants = True
            self.waiting.add(st.sid)

    def queue(self, st: H3Stream, n: int, stream_id: int | None = None) -> None:
        """``n`` bytes paid from ``st``'s worker's credit went to aioquic: its body, or (with
        ``stream_id``) its WebTransport session's data on that stream."""
        if n:
            sid = st.sid if stream_id is None else stream_id
            st.queued.append((sid, self.quic.buffered_end(sid), n))

    def sent(self, st: H3Stream) -> bool:
        """Credit back for what aioquic has sent of ``st``; True when some was freed."""
        sent_offset = self.quic.sent_offset
        queued = st.queued
        freed = 0
        while queued:
            stream_id, end, n = queued[0]
            sent = sent_offset(stream_id)
            # A WebTransport stream aioquic no longer has (finished both ways): sent.
            if sent < end and (stream_id == st.sid or sent >= 0):
                break
            queued.popleft()
            freed += n
        if not freed:
            if st.queued and not st.stalled_since:
                st.stalled_since = time.monotonic()
            return False
        st.stalled_since = 0.0
        st.granted -= freed
        self.outstanding -= freed
        if st.alive and not st.closed:
            self.give(st, st.wants)  # back as its bytes are sent: a fair share, or what it asked
        return True

    def release(self, st: H3Stream) -> None:
        """``st`` is over: every byte of credit it held goes back to the budget."""
        st.queued.clear()
        st.stalled_since = 0.0
        self.outstanding -= st.granted
        st.granted = 0
        self.waiting.discard(st.sid)
        if self.waiting:
            self.regrant()

    def regrant(self) -> None:
        """Freed budget goes to the workers that asked for credit and wait."""
        for sid in list(self.waiting):
            st = self.streams.get(sid)
            if st is None or not st.alive or st.closed:
                self.waiting.discard(sid)
                continue
            self.give(st, True)
            if self.outstanding >= self.budget:
                break

    def overdue(self, now: float) -> None:
        """Time-driven work: streams stalled on the peer's flow control past ``stall_timeout``
        are reset; workers told to stop and still running past their grace are killed."""
        stall = self.options.stall_timeout
        for st in list(self.streams.values()):
            if st.stalled_since and now - st.stalled_since > stall and not st.closed:
                _log.info("h3 stream stalled on flow control", stream_id=st.sid,
                          waited=round(now - st.stalled_since, 3))
                self.reset(st, ErrorCode.H3_REQUEST_CANCELLED)
            if st.alive and st.dying and now >= st.dying:
                supervisors.demonitor(st.ref, flush=True)
                self.by_ref.pop(st.ref, None)
                supervisors.exit(st.pid, "kill")  # type: ignore[arg-type]
                self.worker_down(st.sid, "killed")

    def on_timer(self, now: float) -> None:
        """aioquic's timer is due: loss detection, probes, idle timeout."""
        quic = self.quic
        quic.handle_timer(now)
        if quic.black_hole():
            _log.info("h3 larger datagrams met repeated probe timeouts: back to 1200 bytes",
                      peer=str(self.peer))
        self.process()

    def receive_datagram(self, data: bytes, addr: Any) -> None:
        self.quic.receive_datagram(data, addr, time.monotonic())
        self.process()

    def process(self) -> None:
        """Act on every event aioquic has for us."""
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, qe.StreamDataReceived):
                for h3_event in self.h3.handle_event(event):
                    if type(h3_event) is DataReceived:
                        self.on_data(h3_event)
                    elif type(h3_event) is HeadersReceived:
                        self.on_headers(h3_event)
                    elif type(h3_event) is StreamBroken:
                        self.on_broken(h3_event.stream_id)
                    elif type(h3_event) is WebTransportStreamDataReceived:
                        self.on_wt_data(h3_event)
                if not event.stream_id & 2 or event.stream_id in quic.rr_controlled:
                    quic.reopen(event.stream_id)  # frame overhead is given back at once
            elif isinstance(event, qe.DatagramFrameReceived):
                for h3_event in self.h3.handle_event(event):
                    if type(h3_event) is DatagramReceived:
                        self.on_datagram(h3_event.stream_id, h3_event.data)
            elif isinstance(event, qe.StreamReset | qe.StopSendingReceived):
                self.h3.handle_event(event)
                st = self.streams.get(event.stream_id)
                if st is not None:
                    self.drop(st)
                elif event.stream_id in self.wt_streams:
                    self.wt_stream_gone(event.stream_id)
            elif isinstance(event, qe.HandshakeCompleted):
                self.h3.handle_event(event)
                if quic.rr_max_datagram_size > SMALLEST_MAX_DATAGRAM_SIZE:
                    quic.start_pmtud(route_payload_limit(self.sock.family, self.adm.addr))
            elif isinstance(event, qe.ConnectionIdIssued):
                self.adm.route(event.connection_id, self.pid)
            elif isinstance(event, qe.ConnectionIdRetired):
                self.adm.unroute(event.connection_id)
            elif isinstance(event, qe.ConnectionTerminated):
                self.terminated = True
                if self.close_reason == "normal":
                    code = event.error_code
                    self.close_reason = ("idle_timeout" if code == 0 and not event.reason_phrase
                                         else "peer_closed" if code in (0, ErrorCode.H3_NO_ERROR)
                                         # CRYPTO_ERROR (RFC 9001 §4.8: 0x100 + a TLS alert) before the
                                         # handshake completed: a failed handshake, as on TCP
                                         else "tls_handshake" if 0x100 <= code <= 0x1FF
                                         and not self.quic._handshake_complete
                                         else "protocol_error")
            else:
                self.h3.handle_event(event)

    # -- requests -------------------------------------------------------------------

    def on_headers(self, event: HeadersReceived) -> None:
        sid = event.stream_id
        st = self.streams.get(sid)
        if st is not None:  # trailers (aioquic checked they end the stream)
            if event.stream_ended:
                self.remote_end(st)
            return
        if sid in self.done or sid & 3:
            return
        self.open_stream(sid, event.headers, event.stream_ended)

    def open_stream(self, sid: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        runtime = self.runtime
        self.highest = max(self.highest, sid)
        if self.goaway_sent:
            self.refuse(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        cap = self.config.max_concurrent_requests
        if cap is not None and runtime.live_streams >= cap:
            runtime.throttled += 1
            if telemetry.enabled(_THROTTLED):
                telemetry.execute(_THROTTLED, {"system_time": time.time()},
                                  {"listener": runtime.name, "reason": "max_concurrent_requests"})
            self.refuse(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        try:
            pseudo, fields, length = validate_request(headers, connect_protocol=True)
        except Malformed as exc:
            _log.debug("h3 malformed request", stream_id=sid, reason=str(exc))
            self.refuse(sid, ErrorCode.H3_MESSAGE_ERROR)
            return
        self.requests += 1
        runtime.requests_served += 1
        if field_list_size(headers) > self.options.max_field_section_size:
            self.answer_inline(sid, 431, ended)
            return
        method = pseudo[":method"]
        protocol = pseudo.get(":protocol")
        if method == "CONNECT":
            # RFC 9220 (RFC 8441's extended CONNECT on h3): ``:protocol: websocket`` is routed as a
            # GET of ``:path``; the stream worker runs the WebSocket session over the stream, as on
            # h2. A plain CONNECT (a tunnel) or another protocol: 501.
            if protocol != "websocket" and not (protocol == "webtransport" and self.options.webtransport):
                self.answer_inline(sid, 501, ended)
                return
            method = "GET"
        if ended and length not in (None, 0):
            self.refuse(sid, ErrorCode.H3_MESSAGE_ERROR)  # a declared body that never comes
            return
        target = pseudo[":path"]
        path, _, query = target.partition("?")
        req = new_request(Request)  # Request(...) without the kwargs dict (see Request)
        init_request(
            req, method, target, path, query, "HTTP/3", Headers(fields), scheme=pseudo.get(":scheme", "https"),
            host=pseudo.get(":authority") or next((v for k, v in fields if k == "host"), None),
            peer=self.peer, listener=runtime.name,
        )
        if protocol is not None:
            req.private["rr.protocol"] = protocol
        st = H3Stream(sid, req, ended)
        peer_settings = self.h3.received_settings or {}
        pid, ref = supervisors.spawn_monitor(
            sw.run_stream, self.pid, sid, req, runtime, ended, self.grant(st, False),
            peer_settings.get(Setting.MAX_FIELD_SECTION_SIZE), bool(self.options.webtransport),
            label="rr.h3.stream", **self.config.handler_spawn.as_kwargs(),
        )
        st.pid, st.ref = pid, ref
        if not ended:
            # A body follows: acknowledge the head at once, not after aioquic's 1 ms ACK delay.
            # A client may send the body only when it next hears from us (libcurl with ngtcp2
            # does, docs/bench_h3.md): the ACK is what it waits for.
            self.answering = True
        self.streams[sid] = st
        self.by_ref[ref] = sid
        runtime.live_streams += 1

    def on_broken(self, sid: int) -> None:
        """aioquic found the request malformed and the stream was reset (``_H3``)."""
        self.done.add(sid)
        st = self.streams.get(sid)
        if st is not None:
            self.drop(st)

    # -- WebTransport -----------------------------------------------------------------

    def session(self, sid: int) -> H3Stream | None:
        """The live WebTransport session on stream ``sid`` (its CONNECT's worker runs it)."""
        st = self.streams.get(sid)
        if st is None or not st.alive or st.closed or st.req.private.get("rr.protocol") != "webtransport":
            return None
        return st

    def on_datagram(self, sid: int, data: bytes) -> None:
        """An HTTP datagram (RFC 9297) for the session on ``sid``: to its process, or dropped
        (no session, or too many already waiting: datagrams are unreliable)."""
        st = self.session(sid)
        if st is not None and supervisors.mailbox_size(st.pid) < self.options.max_queued_datagrams:
            supervisors.send(st.pid, (webtransport.DATAGRAM_IN, data))  # type: ignore[arg-type]

    def on_wt_data(self, event: WebTransportStreamDataReceived) -> None:
        st = self.session(event.session_id)
        if st is None:
            self._reset_wire(event.stream_id, ErrorCode.H3_REQUEST_REJECTED, stop=True)
            return
        self.wt_streams[event.stream_id] = event.session_id
        self.quic.rr_controlled.add(event.stream_id)
        if event.data:
            self.quic.delivered(event.stream_id, len(event.data))
        supervisors.send(st.pid, (webtransport.STREAM_IN, event.stream_id, event.data,  # type: ignore[arg-type]
                                  event.stream_ended))

    def wt_send(self, sid: int, stream_id: int, data: bytes, end: bool) -> None:
        """Session data on one of its streams — a bidirectional one the client opened or a
        unidirectional one rr opened for it — paid from the session's send credit: queued
        until aioquic sends it, or given back at once when it cannot go."""
        st = self.session(sid)
        if st is None:
            return  # the session is over: release() took back its credit
        n = len(data)
        ok = self.wt_streams.get(stream_id) == sid and stream_id & 3 in (0, 3)
        if ok:
            try:
                self.quic.send_stream_data(stream_id, data, end)
            except (ValueError, AssertionError):
                ok = False  # the client reset it or stopped it meanwhile
        if ok:
            self.queue(st, n, stream_id)
        elif n:
            self.refund(st, n)
        if end or not ok:
            self.wt_streams.pop(stream_id, None)

    def refund(self, st: H3Stream, n: int) -> None:
        """``n`` bytes of credit ``st``'s worker paid for what never reached aioquic."""
        st.granted -= n
        self.outstanding -= n
        self.give(st, st.wants)

    def wt_open_uni(self, sid: int, ref: Any) -> None:
        """A new server-to-client stream for the session on ``sid``; its id goes back to the
        session (None: the session is over)."""
        st = self.session(sid)
        stream_id = None
        if st is not None:
            stream_id = self.h3.create_webtransport_stream(sid, is_unidirectional=True)
            self.wt_streams[stream_id] = sid
        owner = self.streams.get(sid)
        if owner is not None and owner.alive:
            supervisors.send(owner.pid, (webtransport.OPENED, ref, stream_id))  # type: ignore[arg-type]

    def wt_stream_gone(self, stream_id: int) -> None:
        """The client reset or stopped a WebTransport stream: its unsent data's credit back."""
        sid = self.wt_streams.pop(stream_id, None)
        st = self.streams.get(sid) if sid is not None else None
        if st is None or not st.queued or not st.alive or st.closed:
            return  # no credit out, or release() takes all of it back
        kept = [entry for entry in st.queued if entry[0] != stream_id]
        lost = sum(entry[2] for entry in st.queued) - sum(entry[2] for entry in kept)
        st.queued = collections.deque(kept)
        if lost:
            self.refund(st, lost)

    def wt_datagram(self, sid: int, data: bytes) -> None:
        if self.session(sid) is not None:
            self.h3.send_datagram(sid, data)

    def on_data(self, event: DataReceived) -> None:
        st = self.streams.get(event.stream_id)
        if st is None or not st.alive or st.ended_remote:
            return  # a refused, reset or finished stream: aioquic already counted the bytes
        data = event.data
        if data:
            self.quic.delivered(st.sid, len(data))
            supervisors.send(st.pid, (sw.BODY, data))  # type: ignore[arg-type]
        if event.stream_ended:
            self.remote_end(st)

    def remote_end(self, st: H3Stream) -> None:
        if not st.ended_remote:
            st.ended_remote = True
            if st.alive:
                supervisors.send(st.pid, _BODY_END)  # type: ignore[arg-type]
        self.maybe_forget(st)

    def refuse(self, sid: int, code: int) -> None:
        """Reject a request stream before any worker: reset it and stop its input."""
        self.done.add(sid)
        self._reset_wire(sid, code, stop=True)

    def answer_inline(self, sid: int, status: int, ended: bool) -> None:
        """A bodiless answer from the conn itself (431, 501), no worker."""
        self.answering = True
        self.done.add(sid)
        self.h3.send_headers(sid, [(b":status", str(status).encode()), (b"content-length", b"0"),
                                   (b"date", http_date().encode())], end_stream=True)
        if not ended:
            self._stop(sid, ErrorCode.H3_NO_ERROR)

    # -- responses ------------------------------------------------------------------

    def send_head(self, st: H3Stream, status: int, fields: list[tuple[str, str]], length: int | None,
                  end: bool) -> None:
        block = [(b":status", str(status).encode()), *_wire(fields)]
        if length is not None:
            block.append((b"content-length", str(length).encode()))
        self.answering = True
        self.h3.send_headers(st.sid, block, end_stream=end)
        st.head_sent = True
        if end:
            self.local_end(st)

    def on_response(self, sid: int, status: int, fields: list[tuple[str, str]], length: int | None,
                    body: bytes) -> None:
        st = self.streams.get(sid)
        if st is None or st.closed:
            return
        self.send_head(st, status, fields, length, not body)
        if body:
            self.h3.send_data(sid, body, True)
            self.queue(st, len(body))
            self.local_end(st)

    def on_head(self, sid: int, status: int, fields: list[tuple[str, str]], length: int | None,
                end: bool) -> None:
        st = self.streams.get(sid)
        if st is not None and not st.closed:
            self.send_head(st, status, fields, length, end)

    def on_interim(self, sid: int, status: int, fields: list[tuple[str, str]]) -> None:
        """An informational head (103 Early Hints) before the final one: a HEADERS frame."""
        st = self.streams.get(sid)
        if st is not None and not st.closed and not st.head_sent:
            self.answering = True
            self.h3.send_headers(sid, [(b":status", str(status).encode()), *_wire(fields)])

    def on_worker_data(self, sid: int, data: bytes, end: bool) -> None:
        st = self.streams.get(sid)
        if st is None or st.closed:
            return  # reset meanwhile: the worker is told or being killed
        self.answering = True
        self.h3.send_data(sid, data, end)
        self.queue(st, len(data))
        if end:
            self.local_end(st)

    def on_trailers(self, sid: int, fields: list[tuple[str, str]]) -> None:
        st = self.streams.get(sid)
        if st is None or st.closed:
            return
        self.answering = True
        self.h3.send_headers(sid, _wire(fields), end_stream=True)
        self.local_end(st)

    def local_end(self, st: H3Stream) -> None:
        """Our side of the stream is complete."""
        st.ended_local = True
        st.closed = True
        if not st.ended_remote:
            # The response is complete before the request body: ask the peer to stop (RFC 9114 §4.1).
            self._stop(st.sid, ErrorCode.H3_NO_ERROR)
            st.ended_remote = True
        self.maybe_forget(st)

    # -- ends -----------------------------------------------------------------------

    def _stop(self, sid: int, code: int) -> None:
        try:
            self.quic.stop_stream(sid, code)
        except ValueError:
            pass  # aioquic already discarded the stream

    def _reset_wire(self, sid: int, code: int, stop: bool) -> None:
        self.quic.reset_stream(sid, code)
        if stop:
            self._stop(sid, code)

    def reset(self, st: H3Stream, code: int) -> None:
        """A stream error from our side: reset it and end its worker."""
        self._reset_wire(st.sid, code, stop=not st.ended_remote)
        st.ended_remote = True
        self.drop(st)

    def drop(self, st: H3Stream) -> None:
        """The stream is over on the wire (reset either way): tell its worker, kill it later."""
        st.closed = True
        st.ended_remote = True
        self.release(st)
        if st.alive and not st.dying:
            supervisors.send(st.pid, _CLOSED)  # type: ignore[arg-type]
            st.dying = time.monotonic() + sw.CLOSE_GRACE
        self.maybe_forget(st)

    def maybe_forget(self, st: H3Stream) -> None:
        if st.closed and st.ended_remote and not st.alive:
            self.release(st)  # its last bytes may still be in aioquic's buffer: bounded by its credit
            self.streams.pop(st.sid, None)
            self.done.add(st.sid)
            self.quic.forget(st.sid)

    def worker_down(self, sid: int, reason: Any) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        st.alive = False
        self.runtime.live_streams -= 1
        self.quic.forget(sid)  # its unread body will never be read
        if st.closed:
            self.maybe_forget(st)
            return
        if not st.head_sent:
            req = st.req
            if reason != "normal":
                _log.error("h3 stream worker died", stream_id=sid, reason=str(reason),
                           request_id=req.request_id, method=req.method, path=req.path)
            error = dispatch.INTERNAL_ERROR
            fields, _ = exchange.response_fields(error.headers)
            self.send_head(st, 500, fields, len(error.body), st.is_head)
            if not st.closed:
                self.h3.send_data(sid, error.body, True)
                self.local_end(st)
            return
        self.reset(st, ErrorCode.H3_INTERNAL_ERROR)

    # -- drain ----------------------------------------------------------------------

    def goaway(self) -> None:
        """RFC 9114 §5.2: requests on streams below the id sent are still served."""
        if self.goaway_sent:
            return
        self.goaway_sent = True
        control = self.h3._local_control_stream_id
        if control is not None:
            self.quic.send_stream_data(control, encode_frame(FrameType.GOAWAY, encode_uint_var(self.highest + 4)))
        for st in self.streams.values():
            if st.loop and st.alive:
                supervisors.send(st.pid, (resp.DRAIN, self.runtime.drain_deadline))  # type: ignore[arg-type]

    def close(self, code: int = ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        """CONNECTION_CLOSE; aioquic ends the connection (ConnectionTerminated) after its closing period."""
        if not self.closing:
            self.closing = True
            self.quic.close(error_code=code, reason_phrase=reason)

    # -- the loop -------------------------------------------------------------------

    def serve(self) -> None:
        adm = self.adm
        self.sock = self.runtime.udp_socks[0].dup()
        adm.route(adm.dcid, self.pid)
        adm.route(self.quic.host_cid, self.pid)
        self.receive_datagram(adm.first, adm.addr)
        adm.first = b""
        if not self.flush():
            # aioquic had nothing to say to it, not even an ACK: the Initial did not decrypt
            # (forged, or for another server). No state worth a slot: end now, silently.
            self.close_reason = "bad_initial"
            return
        handshake_deadline = time.monotonic() + self.config.tls_handshake_timeout
        receive = supervisors.receive
        mailbox_size = supervisors.mailbox_size
        runtime = self.runtime
        batched = 0
        yielded = False
        next_tick = time.monotonic() + TICK
        while not self.terminated:
            if runtime.draining and not self.goaway_sent:
                self.goaway()
                self.flush()
            if self.goaway_sent and not self.streams and not self.closing:
                self.close_reason = "drain" if self.close_reason == "normal" else self.close_reason
                self.close()
                self.flush()
            now = time.monotonic()
            wait = TICK if self.timer is None else max(0.0, min(TICK, self.timer - now))
            if handshake_deadline and now > handshake_deadline:
                if not self.quic._handshake_complete:
                    self.close_reason = "tls_handshake"  # a client that never finished its handshake
                    return
                handshake_deadline = 0.0
            try:
                msg = receive(timeout=wait)
            except supervisors.Timeout:
                now = time.monotonic()
                if self.timer is not None and now >= self.timer:
                    self.on_timer(now)
                self.overdue(now)
                self.flush()
                continue
            self.handle(msg)
            batched += 1
            if batched < BATCH and not mailbox_size() and not yielded:
                # Let the processes this batch woke (stream workers answering) run once before
                # sending: their responses then leave in the same datagrams, one encryption and
                # one sendto for several streams instead of one each.
                yielded = True
                gevent.sleep(0)
                if mailbox_size():
                    continue
            if batched >= BATCH or not mailbox_size():
                batched = 0
                yielded = False
                now = time.monotonic()
                if self.timer is not None and now >= self.timer:
                    self.on_timer(now)
                if now >= next_tick:  # a busy connection still looks at its clocks
                    next_tick = now + TICK
                    self.overdue(now)
                self.flush()

    def handle(self, msg: Any) -> None:
        tag = msg[0] if type(msg) is tuple and msg else None
        if tag == "h3.dgram":
            self.receive_datagram(msg[1], msg[2])
        elif tag == DATA:
            self.on_worker_data(msg[1], msg[2], msg[3])
        elif tag == RESPONSE:
            self.on_response(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif tag == "DOWN":
            sid = self.by_ref.pop(msg[1], None)
            if sid is not None:
                self.worker_down(sid, msg[3])
        elif tag == CREDIT:
            self.quic.credit(msg[1], msg[2])
        elif tag == HEAD:
            self.on_head(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif tag == TRAILERS:
            self.on_trailers(msg[1], msg[2])
        elif tag == INTERIM:
            self.on_interim(msg[1], msg[2], msg[3])
        elif tag == WANT:
            st = self.streams.get(msg[1])
            if st is not None and st.alive and not st.closed:
                self.give(st, True)
        elif tag == webtransport.DATAGRAM_OUT:
            self.wt_datagram(msg[1], msg[2])
        elif tag == webtransport.STREAM_OUT:
            self.wt_send(msg[1], msg[2], msg[3], msg[4])
        elif tag == webtransport.OPEN_UNI:
            self.wt_open_uni(msg[1], msg[2])
        elif tag == LOOP:
            st = self.streams.get(msg[1])
            if st is not None:
                st.loop = True
                if self.goaway_sent and st.alive:
                    supervisors.send(st.pid, (resp.DRAIN, self.runtime.drain_deadline))  # type: ignore[arg-type]

    def end_workers(self) -> list[supervisors.Pid]:
        """The connection is over: tell every live worker; the caller reaps them."""
        pids = []
        for st in self.streams.values():
            if st.alive:
                st.alive = False
                self.runtime.live_streams -= 1
                supervisors.demonitor(st.ref, flush=True)
                supervisors.send(st.pid, _CLOSED)  # type: ignore[arg-type]
                pids.append(st.pid)
        return pids  # type: ignore[return-value]


# Generic segmentation offload (Linux ≥ 4.18): one sendmsg hands the kernel a run of equal-size
# datagrams (the last may be shorter) with a UDP_SEGMENT control message, instead of one sendto each.
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_MAX_BYTES = 65000  # what one UDP send may carry
gso = {"enabled": sys.platform == "linux", "batches": 0}


def send_datagrams(sock: Any, datagrams: list[tuple[bytes, Any]]) -> None:
    """Send ``datagrams`` (what aioquic produced in one pass), batched by GSO where it can.

    A datagram lost here (a full socket buffer, an unreachable peer) is a datagram lost on the
    path: QUIC recovers, so errors are not raised. If the kernel refuses GSO, rr falls back to
    one ``sendto`` per datagram for the rest of the process's life.
    """
    i, n = 0, len(datagrams)
    while i < n:
        data, addr = datagrams[i]
        size = len(data)
        j, total = i + 1, size
        if gso["enabled"]:
            while (j < n and j - i < GSO_MAX_SEGMENTS and datagrams[j][1] == addr
                   and total + len(datagrams[j][0]) <= GSO_MAX_BYTES):
                following = len(datagrams[j][0])
                if following > size:
                    break
                total += following
                j += 1
                if following < size:
                    break  # a shorter datagram can only end a batch
        try:
            if j - i == 1:
                sock.sendto(data, addr)
            else:
                sock.sendmsg([d for d, _ in datagrams[i:j]],
                             [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr)
                gso["batches"] += 1
        except OSError as exc:
            if j - i > 1 and exc.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                gso["enabled"] = False  # no GSO here: send this run again, one datagram each
                _log.info("UDP GSO unavailable, sending datagrams one by one", error=str(exc))
                continue
        i = j


# The route MTU the kernel knows for a connected socket's peer (Linux <linux/in.h>, <linux/in6.h>).
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


def route_payload_limit(family: int, addr: Any) -> int:
    """The UDP payload the kernel's route to ``addr`` carries without fragmenting: its MTU
    (the interface's, or a smaller path MTU the kernel learnt) less the IP and UDP headers;
    1200 where the kernel does not say. A bound on the first hop only: a smaller link further
    on is what ``RrQuic.black_hole`` is for."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(addr)  # a route lookup: nothing is sent
            if family == socket.AF_INET6:
                return int(probe.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)) - 48
            return int(probe.getsockopt(socket.IPPROTO_IP, IP_MTU)) - 28
    except OSError:
        return SMALLEST_MAX_DATAGRAM_SIZE


def serve_h3(adm: QuicAdmission, peer: Any, runtime: ListenerRuntime) -> None:
    """The QUIC connection process's body (started by the listener's connection supervisor)."""
    started = time.monotonic()
    conn = Http3Conn(adm, peer, runtime)
    runtime.conns[conn.pid] = conn
    try:
        conn.serve()
    except supervisors.Exit as exc:
        if exc.reason == "shutdown" and conn.sock is not None:  # drain or eviction of an idle connection
            conn.close_reason = "drain"
            try:
                conn.close()
                conn.flush()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        raise
    finally:
        orphans = conn.end_workers()
        if orphans:
            supervisors.spawn(sw.reap, orphans, label="rr.h3.reaper")
        runtime.conns.pop(conn.pid, None)
        adm.close()
        if conn.sock is not None:
            conn.sock.close()
        if telemetry.enabled(_CONN_CLOSE):
            telemetry.execute(_CONN_CLOSE, {"duration": time.monotonic() - started, "requests": conn.requests},
                              {"listener": runtime.name, "peer": peer, "reason": conn.close_reason,
                               "protocol": "HTTP/3"})
