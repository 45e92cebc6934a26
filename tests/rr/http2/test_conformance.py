"""HTTP/2 conformance of rr's h2c server, frame by frame (RFC 9113 §3–§8, RFC 7541).

In the spirit of h2spec: each test sends one protocol violation (or one
legitimate but unusual shape) on a raw connection (``tests.rr.http2.frames``)
and checks the frame the RFC demands. A connection error is a GOAWAY with
the required code followed by the server closing the socket; a stream error
is an RST_STREAM with the required code on that stream, with the connection
still serving a following request.

Where the RFC leaves the choice open (a frame-size or flow-control error on
a DATA frame may be a stream or a connection error), ``expect_stream_or_conn``
accepts either, with the required code.
"""

from __future__ import annotations

import struct

import gevent
import gevent.event
import pytest

from rr import resp
from tests.rr.http2 import frames as fr
from tests.rr.http2.frames import Peer

H2C = {"protocols": ["http2"]}


@pytest.fixture
def server(serve):
    """An h2c server: ``/echo`` returns the body, ``/hold`` waits for ``server.gate``."""
    gate = gevent.event.Event()

    def app(req):
        if req.path == "/hold":
            gate.wait(20)
        if req.path.startswith("/bytes/"):
            return resp.Response(200, [], b"x" * int(req.path[7:]))
        if req.path == "/echo":
            return resp.Response(200, [("content-type", "application/octet-stream")], req.read_body())
        return resp.text(200, "ok")

    srv = serve(app, **H2C)
    srv.gate = gate
    yield srv
    gate.set()


@pytest.fixture
def peer(server):
    with Peer(server.port) as p:
        p.handshake()
        yield p


def expect_stream_or_conn(p: Peer, sid: int, code: int) -> None:
    """Either RST_STREAM(code) on ``sid`` or GOAWAY(code) then close: the RFC allows both."""
    p.wait(lambda: p.goaway is not None or (sid in p.responses and p.responses[sid].reset is not None),
           what=f"{fr.name(code)} on stream {sid} or the connection")
    if p.goaway is not None:
        p.expect_goaway(code)
    else:
        p.expect_rst(sid, code)


def open_stream(p: Peer, sid: int, path: str = "/") -> None:
    """A request whose body has not ended: the stream stays open on both sides."""
    p.request(sid, path, "POST", end_stream=False)


# -- §3.4 connection preface ----------------------------------------------------------


def test_rfc9113_3_4_server_settings_is_the_first_frame(server):
    with Peer(server.port) as p:
        first = p.read_frame()
        assert isinstance(first, fr.SettingsFrame) and "ACK" not in first.flags, fr.show(first)
        assert first.settings.get(fr.MAX_CONCURRENT_STREAMS) == 100
        assert first.settings.get(fr.ENABLE_PUSH, 0) == 0
        p.handshake()
        assert p.expect_alive(1).body == b"ok"


def test_rfc9113_3_4_invalid_preface_is_a_connection_error(server):
    with Peer(server.port, preface=False) as p:
        p.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", fr.settings())
        p.expect_closed()  # the GOAWAY may be omitted here (§3.4); if sent, it says PROTOCOL_ERROR
        assert p.goaway is None or p.goaway.error_code == fr.PROTOCOL_ERROR, p.describe()
        assert not any(isinstance(f, fr.HeadersFrame) for f in p.frames)


def test_rfc9113_3_4_preface_not_followed_by_settings_is_protocol_error(server):
    with Peer(server.port, preface=False) as p:
        p.send(fr.PREFACE, fr.ping())
        p.expect_goaway(fr.PROTOCOL_ERROR)


# -- §4.1 frame format ------------------------------------------------------------------


def test_rfc9113_4_1_unknown_flags_are_ignored(peer):
    peer.send(fr.frame(fr.PING, 0xFE, 0, b"flagsABC"))  # every flag but ACK
    peer.expect_ping_ack(b"flagsABC")
    undefined = 0x02 | 0x10 | 0x40 | 0x80  # not defined for HEADERS
    peer.send(fr.frame(fr.HEADERS, fr.END_HEADERS | fr.END_STREAM | undefined, 1, good_block(peer)))
    assert peer.response(1).status == 200


def test_rfc9113_4_1_reserved_bit_of_the_stream_id_is_ignored(peer):
    block = peer.block(peer.request_fields())
    peer.send(fr.frame(fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, 0x80000001, block))
    res = peer.response(1)
    assert res.status == 200 and res.body == b"ok"


# -- §4.2 frame size --------------------------------------------------------------------


def test_rfc9113_4_2_data_over_max_frame_size_is_frame_size_error(peer):
    open_stream(peer, 1, "/echo")
    peer.send(fr.data(1, b"x" * 16385, end_stream=True))
    expect_stream_or_conn(peer, 1, fr.FRAME_SIZE_ERROR)


def test_rfc9113_4_2_headers_over_max_frame_size_is_connection_frame_size_error(peer):
    block = peer.block(peer.request_fields(extra=[("x-pad", "p" * 25000)]))
    assert len(block) > 16384
    peer.send(fr.frame(fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, 1, block))
    peer.expect_goaway(fr.FRAME_SIZE_ERROR)


# -- §4.3 and RFC 7541: field block decoding ---------------------------------------------


def send_block(p: Peer, block: bytes, sid: int = 1) -> None:
    p.send(fr.frame(fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, sid, block))


def good_block(p: Peer) -> bytes:
    return p.block(p.request_fields())


def test_rfc7541_2_3_3_index_beyond_both_tables_is_compression_error(peer):
    send_block(peer, good_block(peer) + b"\xc6")  # index 70: the dynamic table is empty
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_6_1_index_zero_is_compression_error(peer):
    send_block(peer, good_block(peer) + b"\x80")
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_5_2_huffman_string_with_eos_is_compression_error(peer):
    # literal without indexing, new name "x", value: Huffman, 4 octets of ones (30 of them are EOS)
    send_block(peer, good_block(peer) + b"\x00\x01x\x84\xff\xff\xff\xff")
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_5_2_huffman_padding_over_7_bits_is_compression_error(peer):
    # "a" is 00011; then 11 bits of ones as padding
    send_block(peer, good_block(peer) + b"\x00\x01x\x82\x1f\xff")
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_5_2_huffman_padding_not_eos_prefix_is_compression_error(peer):
    # "a" then three zero bits: padding must be the most significant bits of EOS (ones)
    send_block(peer, good_block(peer) + b"\x00\x01x\x81\x18")
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_5_2_string_longer_than_the_block_is_compression_error(peer):
    send_block(peer, good_block(peer) + b"\x00\x01x\x20abc")  # a 32-octet value, 3 present
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_6_3_table_size_update_over_the_limit_is_compression_error(peer):
    # 001xxxxx with 5-bit prefix: 31 + 4066 = 4097 > SETTINGS_HEADER_TABLE_SIZE (4096)
    send_block(peer, b"\x3f\xe2\x1f" + good_block(peer))
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_4_2_table_size_update_after_a_field_is_compression_error(peer):
    send_block(peer, good_block(peer) + b"\x20")
    peer.expect_goaway(fr.COMPRESSION_ERROR)


def test_rfc7541_4_2_table_size_update_at_the_block_start_is_accepted(peer):
    peer.encoder.header_table_size = 0  # the next block starts with an update to 0
    block = good_block(peer)
    assert block[:1] == b"\x20"
    send_block(peer, block)
    assert peer.response(1).status == 200
    assert peer.expect_alive(3).body == b"ok"


# -- §5.1 stream states ------------------------------------------------------------------


def test_rfc9113_5_1_data_on_an_idle_stream_is_protocol_error(peer):
    peer.send(fr.data(1, b"test", end_stream=True))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_5_1_rst_stream_on_an_idle_stream_is_protocol_error(peer):
    peer.send(fr.rst(1, fr.CANCEL))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_5_1_window_update_on_an_idle_stream_is_protocol_error(peer):
    peer.send(fr.window_update(1, 100))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_5_1_continuation_on_an_idle_stream_is_protocol_error(peer):
    peer.send(fr.frame(fr.CONTINUATION, fr.END_HEADERS, 1, good_block(peer)))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_5_1_priority_on_an_idle_stream_is_allowed(peer):
    peer.send(fr.priority(1, depends_on=0, weight=200))
    assert peer.expect_alive(1).body == b"ok"


def test_rfc9113_5_1_data_on_a_half_closed_remote_stream_is_stream_closed(peer):
    peer.request(1, "/hold")  # END_STREAM: half-closed (remote) while the handler waits
    peer.send(fr.data(1, b"late", end_stream=True))
    peer.expect_rst(1, fr.STREAM_CLOSED)
    peer.expect_alive(3)


def test_rfc9113_5_1_headers_on_a_half_closed_remote_stream_is_stream_closed(peer):
    peer.request(1, "/hold")
    peer.send(peer.headers(1, [("x-late", "1")], end_stream=True))
    peer.expect_rst(1, fr.STREAM_CLOSED)
    peer.expect_alive(3)


def test_rfc9113_6_1_data_after_the_client_reset_the_stream_is_stream_closed(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.rst(1, fr.CANCEL), fr.data(1, b"late", end_stream=True), fr.ping(b"barrier!"))
    # The PING is answered after the DATA was handled; then allow a little longer for the error.
    peer.expect_ping_ack(b"barrier!")
    peer.wait(lambda: peer.goaway is not None or peer.responses.get(1, fr.Response()).reset is not None,
              timeout=1.0, what="STREAM_CLOSED for DATA after RST_STREAM")
    expect_stream_or_conn(peer, 1, fr.STREAM_CLOSED)


def test_rfc9113_5_1_headers_after_the_client_reset_the_stream_is_stream_closed(peer):
    # RFC 7540 wanted a stream error here; RFC 9113 §5.1 also allows a connection error.
    open_stream(peer, 1, "/hold")
    peer.send(fr.rst(1, fr.CANCEL), peer.headers(1, [("x-late", "1")], end_stream=True))
    expect_stream_or_conn(peer, 1, fr.STREAM_CLOSED)


def test_rfc9113_5_1_data_on_a_closed_stream_is_stream_closed_connection_error(peer):
    assert peer.expect_alive(1).body == b"ok"  # both sides sent END_STREAM: closed
    peer.send(fr.data(1, b"late", end_stream=True))
    peer.expect_goaway(fr.STREAM_CLOSED)


def test_rfc9113_5_1_headers_on_a_closed_stream_is_stream_closed_connection_error(peer):
    assert peer.expect_alive(1).body == b"ok"
    peer.request(1)
    peer.expect_goaway(fr.STREAM_CLOSED)


# -- §5.1.1 stream identifiers ------------------------------------------------------------


def test_rfc9113_5_1_1_even_numbered_stream_id_is_protocol_error(peer):
    peer.request(2)
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_5_1_1_decreasing_stream_id_is_protocol_error(peer):
    assert peer.expect_alive(5).body == b"ok"
    peer.request(3)
    peer.expect_goaway(fr.PROTOCOL_ERROR)


# -- §5.3.1 stream dependencies ------------------------------------------------------------


def test_rfc9113_5_3_1_headers_depending_on_itself_is_stream_protocol_error(peer):
    peer.send(peer.headers(1, peer.request_fields(), prio=fr.priority_fields(1)))
    peer.expect_rst(1, fr.PROTOCOL_ERROR)
    peer.expect_alive(3)


def test_rfc9113_5_3_1_priority_depending_on_itself_is_stream_protocol_error(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.priority(1, depends_on=1))
    peer.expect_rst(1, fr.PROTOCOL_ERROR)
    peer.expect_alive(3)


# -- §5.5 extending HTTP/2 -----------------------------------------------------------------


def test_rfc9113_5_5_unknown_frame_types_are_ignored(peer):
    peer.send(fr.frame(0xFA, 0, 0, b"ignored"), fr.frame(0x20, 0xFF, 1, b"also ignored"))
    peer.send(fr.ping(b"afterFA0"))
    peer.expect_ping_ack(b"afterFA0")
    assert peer.expect_alive(1).body == b"ok"


def test_rfc9113_5_5_unknown_frame_inside_a_header_block_is_protocol_error(peer):
    block = good_block(peer)
    peer.send(peer.headers(1, block[:3], end_headers=False), fr.frame(0xFA, 0, 0, b"x"),
              fr.frame(fr.CONTINUATION, fr.END_HEADERS, 1, block[3:]))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


# -- §6.1 DATA -------------------------------------------------------------------------


def test_rfc9113_6_1_data_on_stream_zero_is_protocol_error(peer):
    peer.send(fr.data(0, b"test"))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_1_data_padding_as_long_as_the_payload_is_protocol_error(peer):
    open_stream(peer, 1, "/echo")
    peer.send(fr.frame(fr.DATA, fr.PADDED | fr.END_STREAM, 1, b"\x05" + b"abcd"))  # pad 5, 4 left
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_1_padded_request_headers_and_data_are_served(peer):
    peer.send(peer.headers(1, peer.request_fields("POST", "/echo"), end_stream=False, pad=17),
              fr.data(1, b"hello ", pad=3), fr.data(1, b"padded", pad=0),
              fr.data(1, b" world", end_stream=True, pad=200))
    res = peer.response(1)
    assert res.status == 200 and res.body == b"hello padded world"


# -- §6.2 HEADERS ------------------------------------------------------------------------


def test_rfc9113_6_2_headers_on_stream_zero_is_protocol_error(peer):
    peer.send(peer.headers(0, peer.request_fields()))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_2_headers_padding_longer_than_the_payload_is_protocol_error(peer):
    block = good_block(peer)
    payload = bytes([len(block) + 1]) + block  # the pad length covers more than what is left
    peer.send(fr.frame(fr.HEADERS, fr.PADDED | fr.END_HEADERS | fr.END_STREAM, 1, payload))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


# -- §6.3 PRIORITY -----------------------------------------------------------------------


def test_rfc9113_6_3_priority_on_stream_zero_is_protocol_error(peer):
    peer.send(fr.priority(0, depends_on=1))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_3_priority_with_wrong_length_is_stream_frame_size_error(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.frame(fr.PRIORITY, 0, 1, fr.priority_fields(0)[:4]))
    peer.expect_rst(1, fr.FRAME_SIZE_ERROR)
    peer.expect_alive(3)


# -- §6.4 RST_STREAM --------------------------------------------------------------------


def test_rfc9113_6_4_rst_stream_on_stream_zero_is_protocol_error(peer):
    peer.send(fr.rst(0, fr.CANCEL))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_4_rst_stream_with_wrong_length_is_frame_size_error(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.frame(fr.RST_STREAM, 0, 1, b"\x00\x00\x08"))
    peer.expect_goaway(fr.FRAME_SIZE_ERROR)


def test_rfc9113_6_4_rst_stream_ends_only_that_stream(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.rst(1, fr.CANCEL))
    assert peer.expect_alive(3).body == b"ok"
    assert peer.responses.get(1) is None or peer.responses[1].headers is None


# -- §6.5 SETTINGS ------------------------------------------------------------------------


def test_rfc9113_6_5_settings_are_acknowledged(server):
    with Peer(server.port, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, 100_000),
                                                      (fr.MAX_FRAME_SIZE, 32768))) as p:
        p.handshake()
        p.send(fr.settings((fr.HEADER_TABLE_SIZE, 8192)))
        p.wait(lambda: p.settings_acks >= 2, what="a second SETTINGS ACK")
        assert p.expect_alive(1).body == b"ok"


def test_rfc9113_6_5_settings_ack_with_payload_is_frame_size_error(peer):
    peer.send(fr.frame(fr.SETTINGS, fr.ACK, 0, struct.pack(">HI", fr.ENABLE_PUSH, 0)))
    peer.expect_goaway(fr.FRAME_SIZE_ERROR)


def test_rfc9113_6_5_settings_on_a_stream_is_protocol_error(peer):
    peer.send(fr.frame(fr.SETTINGS, 0, 1, struct.pack(">HI", fr.ENABLE_PUSH, 0)))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_5_settings_length_not_a_multiple_of_6_is_frame_size_error(peer):
    peer.send(fr.frame(fr.SETTINGS, 0, 0, struct.pack(">HI", fr.ENABLE_PUSH, 0) + b"\x00\x03"))
    peer.expect_goaway(fr.FRAME_SIZE_ERROR)


def test_rfc9113_6_5_2_enable_push_other_than_0_or_1_is_protocol_error(peer):
    peer.send(fr.settings((fr.ENABLE_PUSH, 2)))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_5_2_initial_window_size_over_the_maximum_is_flow_control_error(peer):
    peer.send(fr.settings((fr.INITIAL_WINDOW_SIZE, 2**31)))
    peer.expect_goaway(fr.FLOW_CONTROL_ERROR)


@pytest.mark.parametrize("size", [16383, 2**24])
def test_rfc9113_6_5_2_max_frame_size_out_of_range_is_protocol_error(peer, size):
    peer.send(fr.settings((fr.MAX_FRAME_SIZE, size)))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_5_2_unknown_settings_are_ignored(peer):
    peer.send(fr.settings((0xFF, 1), (0x4242, 2**32 - 1)))
    peer.wait(lambda: peer.settings_acks >= 2, what="the ACK of a SETTINGS with unknown ids")
    assert peer.expect_alive(1).body == b"ok"


def test_rfc9113_6_9_2_initial_window_size_change_overflowing_a_stream_is_flow_control_error(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.window_update(1, fr.WINDOW_MAX - 65535))  # stream 1's send window is now 2^31-1
    peer.send(fr.settings((fr.INITIAL_WINDOW_SIZE, 65536)))  # +1 for every stream
    peer.expect_goaway(fr.FLOW_CONTROL_ERROR)


# -- §6.7 PING ---------------------------------------------------------------------------


def test_rfc9113_6_7_ping_is_acknowledged_with_the_same_payload(peer):
    peer.send(fr.ping(b"\x00\x01\x02\x03\xfc\xfd\xfe\xff"))
    peer.expect_ping_ack(b"\x00\x01\x02\x03\xfc\xfd\xfe\xff")
    ack = next(f for f in peer.frames if isinstance(f, fr.PingFrame))
    assert ack.stream_id == 0 and "ACK" in ack.flags


def test_rfc9113_6_7_ping_ack_is_not_answered(peer):
    peer.send(fr.ping(b"ackFirst", ack=True), fr.ping(b"realPing"))
    peer.expect_ping_ack(b"realPing")
    assert peer.pings == [b"realPing"]


def test_rfc9113_6_7_ping_with_wrong_length_is_frame_size_error(peer):
    peer.send(fr.frame(fr.PING, 0, 0, b"123456789"))
    peer.expect_goaway(fr.FRAME_SIZE_ERROR)


def test_rfc9113_6_7_ping_on_a_stream_is_protocol_error(peer):
    peer.send(fr.ping(b"onStream", sid=1))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


# -- §6.8 GOAWAY ------------------------------------------------------------------------


def test_rfc9113_6_8_goaway_on_a_stream_is_protocol_error(peer):
    peer.send(fr.goaway(0, fr.NO_ERROR, sid=1))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


# -- §6.9 WINDOW_UPDATE and flow control --------------------------------------------------


def test_rfc9113_6_9_window_update_of_zero_on_the_connection_is_protocol_error(peer):
    peer.send(fr.window_update(0, 0))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_9_window_update_of_zero_on_a_stream_is_stream_protocol_error(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.window_update(1, 0))
    peer.expect_rst(1, fr.PROTOCOL_ERROR)
    peer.expect_alive(3)


def test_rfc9113_6_9_window_update_with_wrong_length_is_frame_size_error(peer):
    peer.send(fr.frame(fr.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    peer.expect_goaway(fr.FRAME_SIZE_ERROR)


def test_rfc9113_6_9_1_connection_window_over_2_31_minus_1_is_flow_control_error(peer):
    peer.send(fr.window_update(0, fr.WINDOW_MAX))  # 65535 + 2^31-1
    peer.expect_goaway(fr.FLOW_CONTROL_ERROR)


def test_rfc9113_6_9_1_stream_window_over_2_31_minus_1_is_stream_flow_control_error(peer):
    open_stream(peer, 1, "/hold")
    peer.send(fr.window_update(1, fr.WINDOW_MAX - 65535), fr.window_update(1, 1))
    peer.expect_rst(1, fr.FLOW_CONTROL_ERROR)
    peer.expect_alive(3)


def test_rfc9113_6_9_1_data_beyond_the_stream_window_is_flow_control_error(serve):
    gate = gevent.event.Event()

    def app(req):
        gate.wait(20)  # never reads the body: no window comes back
        return resp.text(200, "ok")

    srv = serve(app, body_buffering="manual",
                protocols=[("http2", {"stream_window": 16384, "window_refill_threshold": 1024})])
    try:
        with Peer(srv.port) as p:
            p.handshake()
            assert p.server_settings[fr.INITIAL_WINDOW_SIZE] == 16384
            open_stream(p, 1)
            p.send(fr.data(1, b"a" * 16384), fr.data(1, b"b"))
            expect_stream_or_conn(p, 1, fr.FLOW_CONTROL_ERROR)
    finally:
        gate.set()


def test_rfc9113_6_9_1_data_beyond_the_connection_window_is_flow_control_error(serve):
    gate = gevent.event.Event()

    def app(req):
        gate.wait(20)
        return resp.text(200, "ok")

    srv = serve(app, body_buffering="manual", protocols=[("http2", {
        "conn_window": 65535, "stream_window": 40000, "window_refill_threshold": 1024})])
    try:
        with Peer(srv.port) as p:
            p.handshake()
            open_stream(p, 1)
            open_stream(p, 3)
            # 40000 + 16384 + 9152 = 65536: each stream within its window, the connection one over
            p.send(fr.data(1, b"a" * 16384), fr.data(1, b"a" * 16384), fr.data(1, b"a" * 7232),
                   fr.data(3, b"b" * 16384), fr.data(3, b"b" * 9152))
            p.expect_goaway(fr.FLOW_CONTROL_ERROR)
    finally:
        gate.set()


def test_rfc9113_6_9_2_server_sends_within_the_clients_initial_window(server):
    with Peer(server.port, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, 10))) as p:
        p.handshake()
        p.request(1, "/bytes/1000")
        p.wait(lambda: p.responses.get(1, fr.Response()).body == b"x" * 10, what="the first 10 bytes")
        p.send(fr.ping(b"nothing?"))  # a round trip: nothing more may have been sent meanwhile
        p.expect_ping_ack(b"nothing?")
        assert p.responses[1].body == b"x" * 10 and not p.responses[1].done
        p.send(fr.window_update(1, 990))
        res = p.response(1)
        assert res.status == 200 and res.body == b"x" * 1000
        sizes = [len(f.data) for f in p.frames if isinstance(f, fr.DataFrame)]
        assert sum(sizes) == 1000 and sizes[0] == 10


# -- §6.10 CONTINUATION -------------------------------------------------------------------


def test_rfc9113_6_10_request_split_over_continuations_is_served(peer):
    block = peer.block(peer.request_fields(extra=[("x-long", "v" * 300)]))
    parts = [block[i:i + 40] for i in range(0, len(block), 40)]
    wire = [peer.headers(1, parts[0], end_headers=False)]
    for i, part in enumerate(parts[1:], 1):
        wire.append(fr.frame(fr.CONTINUATION, fr.END_HEADERS if i == len(parts) - 1 else 0, 1, part))
    peer.send(*wire)
    assert peer.response(1).status == 200


def test_rfc9113_6_10_continuation_after_end_headers_is_protocol_error(peer):
    block = good_block(peer)
    peer.send(peer.headers(1, block, end_stream=False),
              fr.frame(fr.CONTINUATION, fr.END_HEADERS, 1, peer.block([("x-more", "1")])))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_10_frame_interleaved_in_a_header_block_is_protocol_error(peer):
    block = good_block(peer)
    peer.send(peer.headers(1, block[:3], end_headers=False), fr.ping(b"between!"),
              fr.frame(fr.CONTINUATION, fr.END_HEADERS, 1, block[3:]))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


def test_rfc9113_6_10_continuation_on_another_stream_is_protocol_error(peer):
    block = good_block(peer)
    peer.send(peer.headers(1, block[:3], end_headers=False),
              fr.frame(fr.CONTINUATION, fr.END_HEADERS, 3, block[3:]))
    peer.expect_goaway(fr.PROTOCOL_ERROR)


# -- §8 HTTP message semantics ---------------------------------------------------------------


def send_request(p: Peer, sid: int, fields: list[tuple[str, str]], body: bytes | None = None) -> None:
    """A request with exactly ``fields`` (nothing added or checked), and an optional body."""
    p.send(p.headers(sid, fields, end_stream=body is None))
    if body is not None:
        p.send(fr.data(sid, body, end_stream=True))


def expect_malformed(p: Peer, sid: int) -> None:
    """§8.1.1: a malformed request is a stream error PROTOCOL_ERROR; the connection goes on."""
    p.expect_rst(sid, fr.PROTOCOL_ERROR)
    # a server MAY answer a malformed request (4xx) before resetting it, never with a success
    status = p.responses[sid].status
    assert status is None or 400 <= status < 500, f"the malformed request was answered {status}"
    p.expect_alive(sid + 2)


def base(p: Peer, method: str = "GET") -> list[tuple[str, str]]:
    return p.request_fields(method)


def test_rfc9113_8_2_uppercase_field_name_is_malformed(peer):
    send_request(peer, 1, [*base(peer), ("X-Upper", "1")])
    expect_malformed(peer, 1)


def test_rfc9113_8_2_1_field_name_with_a_space_is_malformed(peer):
    send_request(peer, 1, [*base(peer), ("x bad", "1")])
    expect_malformed(peer, 1)


@pytest.mark.parametrize("value", ["a\r\nb", "a\nb", "a\x00b"])
def test_rfc9113_8_2_1_field_value_with_cr_lf_or_nul_is_malformed(peer, value):
    send_request(peer, 1, [*base(peer), ("x-bad", value)])
    expect_malformed(peer, 1)


@pytest.mark.parametrize("value", ["a\r\nb", "a\nb", "a\x00b"])
@pytest.mark.parametrize("pseudo", [":authority", ":path", ":method"])
def test_rfc9113_8_2_1_pseudo_header_value_with_cr_lf_or_nul_is_malformed(peer, pseudo, value):
    """Found by the h2_hpack fuzz target: ``:authority`` with a NUL became the request's host."""
    value = "/" + value if pseudo == ":path" else value
    send_request(peer, 1, [(k, value if k == pseudo else v) for k, v in base(peer)])
    expect_malformed(peer, 1)


@pytest.mark.parametrize("value", ["user@example.com", "exa mple.com", "example.com:8o",
                                   "[::1", "ex/ample.com", "example.com\\x", "ex\u00e9mple.com",
                                   "ex<ample>.com", "exa\"mple.com"])
@pytest.mark.parametrize("field", [":authority", "host"])
def test_rfc9113_8_3_1_authority_outside_the_host_grammar_is_malformed(peer, field, value):
    """``:authority`` (and ``host`` standing in for it) is held to the Host rule h1 applies
    (RFC 3986 reg-name / IP-literal, port digits, no userinfo): a stream error, as for other
    malformed pseudo-headers."""
    fields = base(peer)
    if field == "host":
        fields = [(k, v) for k, v in fields if k != ":authority"] + [("host", value)]
    else:
        fields = [(k, value if k == ":authority" else v) for k, v in fields]
    send_request(peer, 1, fields)
    expect_malformed(peer, 1)


@pytest.mark.parametrize("value", ["example.com", "example.com:8443", "127.0.0.1:80", "[::1]:443",
                                   "xn--exmple-cua.com", "a-b_c~d!$&'()*+,;=%20"])
def test_rfc9113_8_3_1_authority_in_the_host_grammar_is_served(peer, value):
    send_request(peer, 1, [(k, value if k == ":authority" else v) for k, v in base(peer)])
    assert peer.response(1).status == 200


def test_rfc9110_9_1_method_that_is_not_a_token_is_malformed(peer):
    send_request(peer, 1, [(k, "G ET" if k == ":method" else v) for k, v in base(peer)])
    expect_malformed(peer, 1)


@pytest.mark.parametrize("field", [("connection", "keep-alive"), ("keep-alive", "5"),
                                   ("proxy-connection", "keep-alive"),
                                   ("transfer-encoding", "chunked"), ("upgrade", "h2c")])
def test_rfc9113_8_2_2_connection_specific_field_is_malformed(peer, field):
    send_request(peer, 1, [*base(peer), field])
    expect_malformed(peer, 1)


def test_rfc9113_8_2_2_te_other_than_trailers_is_malformed(peer):
    send_request(peer, 1, [*base(peer), ("te", "gzip")])
    expect_malformed(peer, 1)


def test_rfc9113_8_2_2_te_trailers_is_accepted(peer):
    send_request(peer, 1, [*base(peer), ("te", "trailers")])
    assert peer.response(1).status == 200


def test_rfc9113_8_3_pseudo_header_after_a_regular_field_is_malformed(peer):
    fields = base(peer)
    send_request(peer, 1, [*fields[:3], ("x-first", "1"), fields[3]])
    expect_malformed(peer, 1)


def test_rfc9113_8_3_unknown_pseudo_header_is_malformed(peer):
    send_request(peer, 1, [*base(peer), (":foo", "bar")])
    expect_malformed(peer, 1)


def test_rfc9113_8_3_response_pseudo_header_in_a_request_is_malformed(peer):
    send_request(peer, 1, [*base(peer), (":status", "200")])
    expect_malformed(peer, 1)


@pytest.mark.parametrize("dup", [":method", ":scheme", ":path"])
def test_rfc9113_8_3_1_duplicated_pseudo_header_is_malformed(peer, dup):
    fields = base(peer)
    send_request(peer, 1, [*fields, next(f for f in fields if f[0] == dup)])
    expect_malformed(peer, 1)


@pytest.mark.parametrize("missing", [":method", ":scheme", ":path"])
def test_rfc9113_8_3_1_missing_pseudo_header_is_malformed(peer, missing):
    send_request(peer, 1, [f for f in base(peer) if f[0] != missing])
    expect_malformed(peer, 1)


def test_rfc9113_8_3_1_empty_path_is_malformed(peer):
    send_request(peer, 1, [(k, "" if k == ":path" else v) for k, v in base(peer)])
    expect_malformed(peer, 1)


@pytest.mark.parametrize("declared", ["3", "5"])
def test_rfc9113_8_1_1_content_length_not_matching_data_is_malformed(peer, declared):
    send_request(peer, 1, [*base(peer, "POST"), ("content-length", declared)], body=b"four")
    expect_malformed(peer, 1)


def test_rfc9113_8_1_trailers_with_a_pseudo_header_are_malformed(peer):
    peer.send(peer.headers(1, base(peer, "POST"), end_stream=False), fr.data(1, b"body"),
              peer.headers(1, [(":path", "/again"), ("x-trailer", "1")], end_stream=True))
    expect_malformed(peer, 1)


def test_rfc9113_8_1_trailers_without_end_stream_are_malformed(peer):
    peer.send(peer.headers(1, base(peer, "POST"), end_stream=False), fr.data(1, b"body"),
              peer.headers(1, [("x-trailer", "1")], end_stream=False))
    expect_malformed(peer, 1)


def test_rfc9113_8_1_request_trailers_are_accepted(peer):
    peer.send(peer.headers(1, peer.request_fields("POST", "/echo"), end_stream=False),
              fr.data(1, b"body"), peer.headers(1, [("x-trailer", "1")], end_stream=True))
    res = peer.response(1)
    assert res.status == 200 and res.body == b"body"
