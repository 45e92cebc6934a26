"""Hostile and broken client frames over a raw socket: each ends in the right close code.

The frames are built by hand (tests/rr/ws/wire.py) because no client library
would send them. After the server's close frame the server also ends the TCP
connection.
"""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import pytest
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

from rr import resp
from rr.config import WsOptions
from rr.ws.session import BoundedDeflate
from tests.rr.ws.wire import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    TEXT,
    Client,
    close_payload,
    frame,
    handshake_request,
)


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


def echo_app(req):
    return resp.WebSocket(Echo)


@pytest.fixture
def port(serve):
    return serve(echo_app, ws={"max_frame_size": 4096, "max_message_size": 10000}).port


def opened(port: int, **kw) -> Client:
    c = Client.open(port, **kw)
    assert c.status == 101, c.head
    return c


def test_the_echo_works_over_the_raw_client(port):
    c = opened(port)
    c.send(frame(TEXT, b"hi"))
    assert c.read_frame() == (TEXT, True, b"hi")
    c.send(frame(CLOSE, close_payload(1000)))
    assert c.read_close() == (1000, b"")
    assert c.closed_by_server()


def test_an_unmasked_client_frame_closes_1002(port):
    c = opened(port)
    c.send(frame(TEXT, b"hi", mask=False))
    assert c.read_close()[0] == 1002
    assert c.closed_by_server()


def test_a_64_bit_length_with_the_top_bit_set_closes_1002(port):
    c = opened(port)
    c.send(frame(BINARY, b"", length=2**63 + 5)[:10] + b"\0\0\0\0")
    assert c.read_close()[0] == 1002


def test_an_oversized_frame_closes_1009_from_its_header(port):
    c = opened(port)
    c.send(frame(BINARY, b"", length=4097)[:8])  # the header (with mask key) only: no payload sent
    assert c.read_close()[0] == 1009
    assert c.closed_by_server()


def test_a_frame_at_the_limit_is_served(port):
    c = opened(port)
    c.send(frame(BINARY, b"x" * 4096))
    assert c.read_frame() == (BINARY, True, b"x" * 4096)


def test_an_oversized_message_in_fragments_closes_1009(port):
    c = opened(port)
    c.send(frame(BINARY, b"a" * 4000, fin=False))
    c.send(frame(CONT, b"b" * 4000, fin=False))
    c.send(frame(CONT, b"c" * 4000, fin=True))
    assert c.read_close()[0] == 1009


def test_an_empty_continuation_flood_closes_1009(port):
    c = opened(port)
    c.send(frame(BINARY, b"x", fin=False) + frame(CONT, b"", fin=False) * 1000)
    assert c.read_close()[0] == 1009


def test_bad_utf8_split_across_fragments_closes_1007_before_the_message_ends(port):
    c = opened(port)
    # "κ" is CE BA: its first byte ends fragment 1; fragment 2 continues it and then
    # brings an invalid byte. The message is not finished: the check is incremental.
    c.send(frame(TEXT, b"hello \xce", fin=False))
    c.send(frame(CONT, b"\xba \xff", fin=False))
    assert c.read_close()[0] == 1007


def test_valid_utf8_split_across_fragments_is_one_message(port):
    c = opened(port)
    c.send(frame(TEXT, b"hello \xce", fin=False) + frame(CONT, b"\xba!", fin=True))
    assert c.read_frame() == (TEXT, True, "hello κ!".encode())


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_a_bad_close_code_closes_1002(port, code):
    c = opened(port)
    c.send(frame(CLOSE, close_payload(code)))
    assert c.read_close()[0] == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_a_valid_close_code_is_echoed(port, code):
    c = opened(port)
    c.send(frame(CLOSE, close_payload(code, b"bye")))
    assert c.read_close() == (code, b"bye")
    assert c.closed_by_server()


def test_control_frame_rules_close_1002(port):
    c = opened(port)
    c.send(frame(PING, b"x", fin=False))  # a fragmented control frame
    assert c.read_close()[0] == 1002
    c = opened(port)
    c.send(frame(PING, b"x" * 126))  # a control payload over 125 bytes
    assert c.read_close()[0] == 1002
    c = opened(port)
    c.send(frame(0x3, b""))  # a reserved opcode
    assert c.read_close()[0] == 1002


def test_a_ping_between_fragments_is_answered_and_the_message_completes(port):
    c = opened(port)
    c.send(frame(TEXT, b"ab", fin=False) + frame(PING, b"p") + frame(CONT, b"cd"))
    assert c.read_frame() == (0xA, True, b"p")
    assert c.read_frame() == (TEXT, True, b"abcd")


def _deflate(data: bytes) -> bytes:
    z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_an_inflate_bomb_closes_1009(port):
    c = opened(port, request=handshake_request(extra=["Sec-WebSocket-Extensions: permessage-deflate"]))
    assert b"permessage-deflate" in c.head.lower()
    bomb = _deflate(b"\0" * (50 * 1024 * 1024))  # 50 MiB of zeros in ~50 KB
    assert len(bomb) < 4096 * 16
    c.send(frame(BINARY, bomb[:4000], rsv1=True, fin=True))  # one frame under max_frame_size
    assert c.read_close()[0] == 1009


def test_a_compressed_message_round_trips(port):
    c = opened(port, request=handshake_request(extra=["Sec-WebSocket-Extensions: permessage-deflate"]))
    c.send(frame(TEXT, _deflate(b"squeeze me " * 100), rsv1=True))
    opcode, fin, payload = c.read_frame()
    assert opcode == TEXT and fin
    d = zlib.decompressobj(-15)
    assert d.decompress(payload + b"\x00\x00\xff\xff") == b"squeeze me " * 100


def test_compression_can_be_turned_off(serve):
    port = serve(echo_app, ws={"compress": False}).port
    c = opened(port, request=handshake_request(extra=["Sec-WebSocket-Extensions: permessage-deflate"]))
    assert b"sec-websocket-extensions" not in c.head.lower()
    c.send(frame(TEXT, b"plain", rsv1=True))  # RSV1 without the extension: a protocol error
    assert c.read_close()[0] == 1002


def test_bounded_deflate_never_inflates_past_the_budget():
    """wsproto's own PerMessageDeflate would return all 50 MiB from this one call."""
    ext = BoundedDeflate(WsOptions(max_message_size=100_000).max_message_size)
    ext.accept("permessage-deflate")
    server = SimpleNamespace(client=False)
    assert ext.frame_inbound_header(server, Opcode.BINARY, RsvBits(True, False, False), 60000) == \
        RsvBits(True, False, False)
    bomb = _deflate(b"\0" * (50 * 1024 * 1024))
    assert ext.frame_inbound_payload_data(server, bomb) is CloseReason.MESSAGE_TOO_BIG
    assert ext.inflated <= 100_001


def test_a_first_frame_in_the_handshake_read_is_served(port):
    c = Client.open(port, after=frame(TEXT, b"early"))
    assert c.status == 101
    assert c.read_frame() == (TEXT, True, b"early")


def test_a_client_that_never_reads_stalls_instead_of_growing_the_servers_buffers(serve):
    """The session writes with back-pressure and reads one chunk per go-ahead: when its
    echoes cannot be written, it stops reading, and the client's own sends stall."""
    import socket

    port = serve(echo_app, ws={"max_frame_size": 65536}).port
    c = opened(port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    message = frame(BINARY, b"x" * 60000)
    c.sock.settimeout(3)  # the stall is the signal: a send that cannot proceed for 3 s
    sent = 0
    with pytest.raises(TimeoutError):
        while sent < 256 * 1024 * 1024:
            c.sock.sendall(message)
            sent += len(message)
    assert sent < 64 * 1024 * 1024, sent  # kernel buffers on both sides, not the server's memory
    c.close()


def test_a_message_being_reassembled_is_charged_to_max_heap(serve):
    """Fragments are held until the message ends; with ``handler_spawn.max_heap`` below the
    message, the connection process ends (reason max_heap) before the message completes."""
    from tests.rr.conftest import wait_processes_gone

    port = serve(echo_app, handler_spawn={"max_heap": 256 * 1024},
                 ws={"max_frame_size": 65536, "max_message_size": 4 * 1024 * 1024}).port
    c = opened(port)
    c.send(frame(BINARY, b"small"))
    assert c.read_frame() == (BINARY, True, b"small")  # under the budget: served
    with pytest.raises((ConnectionError, OSError)):
        c.send(frame(BINARY, b"a" * 60000, fin=False))
        for _ in range(10):  # 660 KB in all, never finished
            c.send(frame(CONT, b"b" * 60000, fin=False))
        c.read_frame()
    wait_processes_gone("rr.ws.reader")


# -- sizes are counted as the bytes arrive, not once a frame is complete ------------------


def test_a_frame_whose_length_alone_overruns_the_message_budget_closes_1009_from_its_header(serve):
    """Under ``max_frame_size`` but over ``max_message_size``: the declared length already
    says the message is too big, so rr answers before any of the 1 MB payload arrives."""
    port = serve(echo_app, ws={"max_frame_size": 16 * 1024 * 1024, "max_message_size": 100_000}).port
    c = opened(port, timeout=5)
    c.send(frame(BINARY, b"", length=1_000_000)[:14])  # the header and mask key only
    assert c.read_close()[0] == 1009
    c = opened(port, timeout=5)  # the same in a continuation: 60 KB so far + 60 KB declared
    c.send(frame(BINARY, b"a" * 60_000, fin=False) + frame(CONT, b"", length=60_000)[:8])
    assert c.read_close()[0] == 1009


def test_a_message_of_exactly_max_message_size_is_served(serve):
    """A frame costs its payload but at least 64 bytes: the 64 are not added on top."""
    port = serve(echo_app, ws={"max_message_size": 1000}).port
    c = opened(port)
    c.send(frame(BINARY, b"m" * 1000))
    assert c.read_frame() == (BINARY, True, b"m" * 1000)
    c.send(frame(BINARY, b"m" * 900, fin=False) + frame(CONT, b"n" * 100))
    assert c.read_frame() == (BINARY, True, b"m" * 900 + b"n" * 100)
    c.send(frame(BINARY, b"m" * 1001))
    assert c.read_close()[0] == 1009


def test_a_compressed_message_over_the_limit_stops_while_its_one_frame_streams(serve):
    """A compressed frame's length says nothing of its inflated size, so the budget is
    counted chunk by chunk as it inflates: 1009 arrives while most of the frame is unsent."""
    import os

    port = serve(echo_app, ws={"max_frame_size": 16 * 1024 * 1024, "max_message_size": 100_000}).port
    c = opened(port, timeout=5,
               request=handshake_request(extra=["Sec-WebSocket-Extensions: permessage-deflate"]))
    assert b"permessage-deflate" in c.head.lower()
    payload = _deflate(os.urandom(2_000_000))  # incompressible: ~2 MB in, ~2 MB out
    whole = frame(BINARY, payload, rsv1=True)
    c.send(whole[: 14 + 150_000])  # the header and the first 150 KB: over the budget, far from done
    assert c.read_close()[0] == 1009


def test_one_frame_over_max_heap_ends_the_process_before_the_frame_completes(serve):
    """The part of a frame received so far is charged as it arrives: a 3 MB frame (under
    the size limits) ends the process once ~256 KiB of it are held, not at its end."""
    from tests.rr.conftest import wait_processes_gone

    port = serve(echo_app, handler_spawn={"max_heap": 256 * 1024},
                 ws={"max_frame_size": 4 * 1024 * 1024, "max_message_size": 4 * 1024 * 1024}).port
    c = opened(port, timeout=5)
    whole = frame(BINARY, b"z" * 3_000_000)
    with pytest.raises((ConnectionError, OSError)):
        c.send(whole[: 14 + 600_000])
        c.read_frame()  # the server ends the connection: EOF or a reset, never a timeout
    wait_processes_gone("rr.ws.reader")


def test_a_text_message_is_charged_what_its_parts_hold_not_their_length(serve):
    """480 KB of 4-byte characters are 120,000 characters but ~480 KB of str: over a
    256 KiB ``max_heap`` the process ends before the message completes."""
    from tests.rr.conftest import wait_processes_gone

    port = serve(echo_app, handler_spawn={"max_heap": 256 * 1024},
                 ws={"max_frame_size": 65536, "max_message_size": 4 * 1024 * 1024}).port
    c = opened(port, timeout=5)
    part = "\U0001f600".encode() * 15_000  # 60,000 bytes
    with pytest.raises((ConnectionError, OSError)):
        c.send(frame(TEXT, part, fin=False))
        for i in range(7):
            c.send(frame(CONT, part, fin=i == 6))
        c.read_frame()  # the 480 KB echo never comes: EOF or a reset
    wait_processes_gone("rr.ws.reader")
