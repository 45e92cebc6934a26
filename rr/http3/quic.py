"""rr's use of aioquic, in one place: configuration, the connection subclass, flow control.

What it is: everything rr needs from aioquic's sans-IO ``QuicConnection``
beyond its public methods. aioquic raises a connection's receive windows
(MAX_DATA, MAX_STREAM_DATA) as soon as half of them has *arrived*, whatever
the application did with the bytes: a client could then make rr hold any
amount of request body for a handler that reads slowly. ``RrQuic`` instead
moves a request stream's window only as rr reports body bytes consumed
(``credit``, driven by the stream worker's ``CREDIT`` messages, as h2's
WINDOW_UPDATEs are), and the connection's by the same rule.
It also sets the number of request streams a client may open at once
(``max_concurrent_streams``), which aioquic fixes at 128, and sizes
datagrams by path MTU discovery (DPLPMTUD, RFC 8899, as RFC 9000 §14.3
allows): aioquic sends 1200-byte datagrams for the connection's life and
ignores the peer's ``max_udp_payload_size``. ``RrQuic`` keeps 1200 through
the handshake, then probes (``start_pmtud``): one 1-RTT packet at a time,
PING + PADDING to exactly a candidate size, the largest first — the smallest
of the ``max_datagram_size`` option, the peer's ``max_udp_payload_size`` and
the route's MTU (told by the conn) — then the plateaus below it
(``PMTU_PLATEAUS``), at most ``1 + len(PMTU_PLATEAUS)`` probes per
connection. The connection's datagrams grow only when a probe is
acknowledged, to that probe's size, and the search ends. A probe goes only
when the congestion window has room for all of it (while the window is
larger than the probe but too full, each pass's data leaves the probe's
size free until acknowledgements make that room); it counts as in flight,
but its loss is no congestion signal (RFC 9000 §14.4: the congestion
controller only forgets its bytes) and does not trigger the black-hole
fallback (probes are sent only while datagrams are still 1200 bytes). A size in use that later meets probe timeouts
(``black_hole``) falls back to 1200 for the connection's life.

The private attributes this touches are named here and nowhere else:
``_streams``, ``_local_max_data``, ``_handshake_complete`` (read by the
conn), ``_local_max_streams_bidi``, a stream's ``sender``/``receiver``
offsets, the two ``_write_*_limits`` hooks, ``_parse_transport_parameters``,
the 1-RTT space's ``ack_at``; the datagram size held by the connection, its
pacer and its congestion control (``_max_datagram_size``, ``_loss._pacer``,
``_loss._cc``, ``_loss._pto_count``); and for building and registering a
probe ``_state``, ``_close_pending``, ``_cryptos``, ``_network_paths``,
``_peer_cid``, ``_packet_number``, ``_spin_bit``, ``_version``,
``_quic_logger``, ``_flush_builder`` and the recovery's
``_loss._on_packets_lost`` (wrapped so a lost probe is no congestion event).
``tests/rr/http3/test_quic.py`` fails loudly if an aioquic release renames
them.

What it must never do: touch a socket or a process. The connection process
(``rr.http3.conn``) feeds datagrams in and sends what comes out.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.buffer import UINT_VAR_MAX_SIZE, Buffer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import Limit, QuicConnection, QuicConnectionState
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder

_MAX_STREAM_DATA_CAPACITY = 1 + 2 * UINT_VAR_MAX_SIZE


def load_certificate(certfile: str, keyfile: str | None) -> QuicConfiguration:
    """A server configuration holding the certificate chain and key (raises on a bad pair)."""
    configuration = QuicConfiguration(is_client=False, alpn_protocols=list(H3_ALPN))
    configuration.load_cert_chain(certfile, keyfile)
    return configuration


# The largest UDP payload QUIC allows (RFC 9000 §18.2, max_udp_payload_size), and what is
# assumed of a peer that does not say.
MAX_UDP_PAYLOAD = 65527
# Probe timeouts in a row after which larger datagrams are given up (the path seems to drop them).
BLACK_HOLE_PTOS = 2
# UDP payloads probed, largest first, when a probe at the ceiling is lost: Ethernet's 1500-byte
# MTU less the IPv4 and the IPv6 + UDP headers, and a WireGuard tunnel's 1420 under IPv4.
PMTU_PLATEAUS = (1472, 1452, 1392)

# The largest QUIC DATAGRAM frame rr accepts (HTTP datagrams for WebTransport): one datagram's worth.
MAX_DATAGRAM_FRAME = 65536


def server_configuration(certfile: str, keyfile: str | None, *, conn_window: int, stream_window: int,
                         idle_timeout: float, datagrams: bool = False) -> QuicConfiguration:
    configuration = load_certificate(certfile, keyfile)
    configuration.max_data = conn_window
    configuration.max_stream_data = stream_window
    configuration.idle_timeout = idle_timeout
    if datagrams:
        configuration.max_datagram_frame_size = MAX_DATAGRAM_FRAME
    return configuration


class _CappedLimit(Limit):
    """The connection's MAX_DATA: aioquic may double it, never past ``cap`` (moved by rr)."""

    def __init__(self, base: Limit, cap: int) -> None:
        super().__init__(base.frame_type, base.name, base.value)
        self.sent = base.sent
        self.used = base.used
        self.cap = cap

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "value" and hasattr(self, "cap"):
            value = min(value, max(self.cap, self.__dict__.get("value", 0)))
        object.__setattr__(self, name, value)


class RrQuic(QuicConnection):
    """A server ``QuicConnection`` whose receive windows follow what the application consumed.

    A request stream's window ends at: the bytes received on it, less the body
    bytes handed to its worker and not yet consumed, plus ``stream_window``
    (so frame headers and HEADERS frames are given back at once, the body only
    as it is read), moved once less than half of it is left. The connection's
    MAX_DATA follows the same rule with ``conn_window``. Unidirectional streams (control, QPACK) keep aioquic's own
    rule.
    """

    def __init__(self, *, configuration: QuicConfiguration, max_streams: int, stream_window: int,
                 conn_window: int, max_datagram_size: int = SMALLEST_MAX_DATAGRAM_SIZE,
                 **kwargs: Any) -> None:
        super().__init__(configuration=configuration, **kwargs)
        self.rr_max_datagram_size = max_datagram_size
        self.rr_peer_max_udp_payload = MAX_UDP_PAYLOAD
        # Path MTU discovery: sizes still to probe (largest first), the outstanding probe's
        # packet number, probes sent, and the recovery's own loss step (wrapped once probing).
        self.rr_probe_sizes: list[int] = []
        self.rr_probe_pn: int | None = None
        self.rr_probes_sent = 0
        self.rr_lost_packets: Any = None
        self.rr_stream_window = stream_window
        self.rr_conn_window = conn_window
        self.rr_unconsumed_total = 0
        self.rr_unconsumed: dict[int, int] = {}
        # Client unidirectional streams whose data goes to a handler (WebTransport): their
        # windows follow consumption too.
        self.rr_controlled: set[int] = set()
        streams = self._local_max_streams_bidi
        streams.value = streams.sent = max_streams
        self._local_max_data = _CappedLimit(self._local_max_data, conn_window)

    def delivered(self, stream_id: int, n: int) -> None:
        """``n`` body bytes of ``stream_id`` were handed to its worker (not consumed yet)."""
        self.rr_unconsumed[stream_id] = self.rr_unconsumed.get(stream_id, 0) + n
        self.rr_unconsumed_total += n

    def credit(self, stream_id: int, n: int) -> None:
        """The worker consumed ``n`` body bytes of ``stream_id``: reopen that much."""
        held = self.rr_unconsumed.get(stream_id, 0)
        n = min(n, held)
        if n <= 0:
            return
        self.rr_unconsumed[stream_id] = held - n
        self.rr_unconsumed_total -= n
        self.reopen(stream_id)

    def forget(self, stream_id: int) -> None:
        """The stream's worker is gone: what it held unconsumed is given back."""
        self.rr_controlled.discard(stream_id)
        held = self.rr_unconsumed.pop(stream_id, 0)
        self.rr_unconsumed_total -= held
        self.reopen(None)

    def reopen(self, stream_id: int | None) -> None:
        """Move the windows' ends to what the rule above allows now — once less than half of a
        window is left to the peer, so a MAX_* frame goes out (with the next datagrams) per half
        window rather than per request for the few bytes of its frame headers."""
        limit = self._local_max_data
        cap = limit.cap = limit.used - self.rr_unconsumed_total + self.rr_conn_window  # type: ignore[attr-defined]
        if limit.value < cap and limit.value - limit.used < self.rr_conn_window // 2:
            limit.value = cap
        if stream_id is None:
            return
        stream = self._streams.get(stream_id)
        if stream is not None and stream.max_stream_data_local:
            end = stream.max_stream_data_local
            received = stream.receiver.highest_offset
            if end - received < self.rr_stream_window // 2:
                target = received - self.rr_unconsumed.get(stream_id, 0) + self.rr_stream_window
                if target > end:
                    stream.max_stream_data_local = target

    # -- acknowledgements -----------------------------------------------------------------

    def ack_now(self, now: float) -> None:
        """An acknowledgement aioquic holds back (it delays one by ``_ack_delay``, 1 ms, and
        adds it to a packet only once due) goes in the next packet: called when rr has stream
        bytes for aioquic to send, so the ACK rides on them instead of following alone a
        millisecond later — which a client waiting for its request to be acknowledged
        (libcurl with ngtcp2 before it starts the next request) waits for."""
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None and space.ack_at > now:
            space.ack_at = now

    # -- datagram size ------------------------------------------------------------------

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        if not from_session_ticket:  # aioquic checked them: they parse, the size is >= 1200
            size = pull_quic_transport_parameters(Buffer(data=data)).max_udp_payload_size
            if size is not None:
                self.rr_peer_max_udp_payload = size

    @property
    def datagram_size(self) -> int:
        """The largest datagram this connection sends now."""
        return self._max_datagram_size

    def set_datagram_size(self, size: int) -> None:
        self._max_datagram_size = size
        loss = self._loss
        loss._pacer._max_datagram_size = size
        if hasattr(loss._cc, "_max_datagram_size"):
            loss._cc._max_datagram_size = size

    def start_pmtud(self, route_limit: int) -> list[int]:
        """The handshake is complete: search for the largest datagram the path carries, up to
        ``max_datagram_size``, no larger than the peer takes (its ``max_udp_payload_size``) nor
        than ``route_limit`` (the UDP payload the route to the peer carries without
        fragmenting). Returns the sizes to probe, largest first (none: stay at 1200)."""
        ceiling = min(self.rr_max_datagram_size, self.rr_peer_max_udp_payload, route_limit)
        sizes = [ceiling, *(size for size in PMTU_PLATEAUS if size < ceiling)]
        self.rr_probe_sizes = [size for size in sizes if size > self._max_datagram_size]
        if self.rr_probe_sizes and self.rr_lost_packets is None:
            loss = self._loss
            self.rr_lost_packets = loss._on_packets_lost
            loss._on_packets_lost = self._packets_lost  # type: ignore[method-assign]
        return list(self.rr_probe_sizes)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if not self.rr_probe_sizes or self.rr_probe_pn is not None or not self._may_probe():
            return super().datagrams_to_send(now)
        cc = self._loss._cc
        size = self.rr_probe_sizes[0]
        if cc.congestion_window - cc.bytes_in_flight >= size:
            # The probe goes ahead of the pass's other packets, which would fill the window.
            return self._pmtu_probe(size, now) + super().datagrams_to_send(now)
        if cc.congestion_window <= size:
            return super().datagrams_to_send(now)  # the window is to grow first (slow start)
        # No room yet: the pass's data leaves the probe's size free, so the window's room grows
        # as acknowledgements come, for the probe rather than for more data.
        cc.bytes_in_flight += size
        try:
            return super().datagrams_to_send(now)
        finally:
            cc.bytes_in_flight -= size

    def _may_probe(self) -> bool:
        """Established, not closing, the path validated, 1-RTT keys ready."""
        return (self._state is QuicConnectionState.CONNECTED and not self._close_pending
                and self._handshake_complete and self._network_paths[0].is_validated
                and self._cryptos[tls.Epoch.ONE_RTT].send.is_valid())

    def _pmtu_probe(self, size: int, now: float) -> list[tuple[bytes, Any]]:
        """One 1-RTT packet of exactly ``size`` bytes, PING and PADDING (in flight, so counted
        against the congestion window, which the caller checked has room for it)."""
        version = self._version
        assert version is not None  # negotiated before the handshake completed
        builder = QuicPacketBuilder(host_cid=self.host_cid, peer_cid=self._peer_cid.cid, version=version,
                                    is_client=False, max_datagram_size=size, packet_number=self._packet_number,
                                    quic_logger=self._quic_logger, spin_bit=self._spin_bit)
        builder.start_packet(QuicPacketType.ONE_RTT, self._cryptos[tls.Epoch.ONE_RTT])
        buf = builder.start_frame(QuicFrameType.PING, handler=self._probe_delivered, handler_args=(size,))
        buf.push_bytes(bytes(builder.remaining_buffer_space))  # PADDING frames up to the size
        self.rr_probe_pn = builder.packet_number
        self.rr_probes_sent += 1
        return self._flush_builder(builder=builder, network_path=self._network_paths[0],
                                   peer_cid=self._peer_cid.cid, now=now)

    def _probe_delivered(self, delivery: QuicDeliveryState, size: int) -> None:
        """The probe of ``size`` was acknowledged (the path carries it: use it, the search is
        over) or declared lost (try the next size down)."""
        self.rr_probe_pn = None
        if delivery == QuicDeliveryState.ACKED:
            self.rr_probe_sizes = []
            if self._max_datagram_size < size <= self.rr_max_datagram_size:  # not since black-holed
                self.set_datagram_size(size)
        else:
            self.rr_probe_sizes = [s for s in self.rr_probe_sizes if s < size]

    def _packets_lost(self, *, packets: Any, congestion_event: bool = True, **kwargs: Any) -> None:
        """The recovery's loss step, with the probe (if among ``packets``) forgotten by the
        congestion controller rather than counted as congestion (RFC 9000 §14.4)."""
        lost = self.rr_lost_packets
        assert lost is not None
        pn = self.rr_probe_pn
        if congestion_event and pn is not None:
            packets = list(packets)
            probe = [p for p in packets if p.packet_number == pn]
            if probe:
                lost(packets=probe, congestion_event=False, now=kwargs["now"], space=kwargs["space"])
                packets = [p for p in packets if p.packet_number != pn]
                if not packets:
                    return
        lost(packets=packets, congestion_event=congestion_event, **kwargs)

    def black_hole(self) -> bool:
        """After a timer: larger datagrams met ``BLACK_HOLE_PTOS`` probe timeouts in a row (a
        link on the path may drop them): back to 1200 bytes for the connection's life (what was
        in flight is declared lost and sent again in smaller packets). True when it fell back."""
        if self._max_datagram_size > SMALLEST_MAX_DATAGRAM_SIZE and self._loss._pto_count >= BLACK_HOLE_PTOS:
            self.rr_max_datagram_size = SMALLEST_MAX_DATAGRAM_SIZE
            self.rr_probe_sizes = []
            self.set_datagram_size(SMALLEST_MAX_DATAGRAM_SIZE)
            return True
        return False

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if stream.stream_id & 2 and stream.stream_id not in self.rr_controlled:
            # unidirectional (control, QPACK): aioquic's own rule
            super()._write_stream_limits(builder, space, stream)
            return
        # A request stream: aioquic would double the window once half of it has arrived,
        # read or not; rr moves it in reopen().
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA, capacity=_MAX_STREAM_DATA_CAPACITY,
                                      handler=self._on_max_stream_data_delivery, handler_args=(stream,))
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    # -- what the connection process reads --------------------------------------------

    def sent_offset(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` handed to the network so far (frame headers included)."""
        stream = self._streams.get(stream_id)
        return stream.sender.highest_offset if stream is not None else -1

    def buffered_end(self, stream_id: int) -> int:
        """The stream offset just past the last byte rr gave aioquic to send."""
        stream = self._streams.get(stream_id)
        return stream.sender._buffer_stop if stream is not None else 0

    def send_window(self, stream_id: int) -> int:
        """What the peer's flow control lets ``stream_id`` send now (stream and connection)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        own = stream.max_stream_data_remote - stream.sender._buffer_stop
        shared = self._remote_max_data - self._remote_max_data_used
        return max(0, min(own, shared))
