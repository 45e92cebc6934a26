"""The session's fast path in front of wsproto (``Session.fast``): its edges, chunk by chunk.

Complete, plain frames (FIN, no RSV bit, text or binary, masked, minimal 7/16-bit
length within the limits, valid UTF-8) are decoded by rr; everything else goes to
wsproto from that frame's first byte on, until wsproto holds no partial frame or
message again. These tests feed the session exact chunks through the in-memory
byte stream of ``test_seam`` (a socket would merge or split them as it likes) and
check that the answers are those of wsproto's path: echoes in order, pongs, 1002,
1007, 1009. One test runs over a real h1 socket.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import gevent.event
import pytest

import supervisors
from rr import resp
from rr.config import WsOptions
from rr.request import Headers, Request
from rr.ws import session
from tests.rr.ws.test_seam import Echo, MemoryStream
from tests.rr.ws.wire import BINARY, CLOSE, CONT, PING, PONG, TEXT, Client, close_payload, frame


def masked(opcode: int, payload: bytes, key: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame with a chosen masking key (``wire.frame`` picks a random one)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    head = struct.pack("!BB", first, 0x80 | n) if n < 126 else struct.pack("!BBH", first, 0x80 | 126, n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Run:
    """One session over a ``MemoryStream`` in its own process; ``frames()`` parses what it wrote."""

    def __init__(self, handler: Any = Echo, options: WsOptions | None = None) -> None:
        self.stream = MemoryStream()
        req = Request("GET", "/", "/", "", "HTTP/1.1", Headers([]))
        self.session = session.Session(self.stream, req, handler, None, options or WsOptions())
        self.result: gevent.event.AsyncResult[Any] = gevent.event.AsyncResult()
        supervisors.spawn(lambda: self.result.set(self.session.run()), label="test.fast_path")
        self.buf = b""
        self.writes = 0

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.stream.inbox.put(chunk)

    def frame(self) -> tuple[int, bytes]:
        """The next frame the session wrote: (opcode, payload)."""
        while True:
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                head = 2 if n < 126 else 4
                if n == 126 and len(self.buf) >= 4:
                    n = struct.unpack("!H", self.buf[2:4])[0]
                if len(self.buf) >= max(head, head + n):
                    opcode, payload = self.buf[0] & 0x0F, self.buf[head:head + n]
                    assert self.buf[0] & 0xF0 == 0x80  # FIN, no RSV
                    self.buf = self.buf[head + n:]
                    return opcode, payload
            self.buf += self.stream.out.get(timeout=5)
            self.writes += 1

    def close_code(self) -> int:
        opcode, payload = self.frame()
        assert opcode == CLOSE, (opcode, payload)
        return struct.unpack("!H", payload[:2])[0]

    def end(self) -> Any:
        self.feed(frame(CLOSE, close_payload(1000)))
        return self.result.get(timeout=5)


def test_frames_in_one_chunk_are_answered_in_order_with_one_write():
    run = Run()
    run.feed(b"".join(masked(TEXT if i % 2 else BINARY, b"m%d" % i, os.urandom(4)) for i in range(20)))
    for i in range(20):
        assert run.frame() == (TEXT if i % 2 else BINARY, b"m%d" % i)
    assert run.writes == 1
    assert not run.session.slow
    assert run.end() == ("remote", 1000, "")


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 125, 126, 1024, 65535])
def test_every_mask_offset_and_length_encoding(n):
    """Payload lengths of every residue mod 4, 7- and 16-bit lengths, the all-zero key."""
    run = Run()
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    for key in (os.urandom(4), b"\x00\x00\x00\x00", b"\xff\x01\x80\x7f"):
        run.feed(masked(BINARY, payload, key))
        assert run.frame() == (BINARY, payload)
    assert not run.session.slow
    run.end()


def test_the_pure_python_unmask_matches_the_one_in_use():
    for n in (*range(0, 20), 1000, 4097):
        data, key = os.urandom(n), os.urandom(4)
        want = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        assert session._unmask_int(memoryview(data), key) == want
        assert session._unmask(memoryview(data), key) == want


@pytest.mark.parametrize("n", [30, 300])  # a 7-bit and a 16-bit length: split in the header too
def test_a_frame_split_at_every_byte_goes_through_wsproto_and_back(n):
    text = ("é" * n)[:n // 2]
    data = masked(TEXT, text.encode(), os.urandom(4))
    after = masked(TEXT, b"after", os.urandom(4))
    run = Run()
    for cut in range(1, len(data)):
        run.feed(data[:cut], data[cut:] + after)
        assert run.frame() == (TEXT, text.encode())
        assert run.frame() == (TEXT, b"after")
        assert not run.session.slow  # wsproto holds nothing once the split frame completed
    run.end()


def test_fragments_and_control_frames_interleaved_keep_their_order():
    key = os.urandom(4)
    run = Run()
    run.feed(masked(TEXT, b"one", key)
             + masked(PING, b"p1", key)
             + masked(TEXT, b"fr", key, fin=False) + masked(PING, b"p2", key) + masked(CONT, b"ag", key)
             + masked(BINARY, b"two", key),
             masked(TEXT, b"three", key))
    assert [run.frame() for _ in range(6)] == [(TEXT, b"one"), (PONG, b"p1"), (PONG, b"p2"), (TEXT, b"frag"),
                                              (BINARY, b"two"), (TEXT, b"three")]
    assert not run.session.slow
    run.end()


def test_a_fragment_split_across_chunks_keeps_wsproto_until_the_message_ends():
    key = os.urandom(4)
    run = Run()
    run.feed(masked(TEXT, b"ab", key, fin=False))
    run.feed(masked(CONT, b"cd", key, fin=False) + masked(PING, b"sync", key))
    assert run.frame() == (PONG, b"sync")
    assert run.session.slow  # wsproto holds the message: the next chunk is all its
    run.feed(masked(CONT, b"ef", key) + masked(TEXT, b"next", key))
    assert run.frame() == (TEXT, b"abcdef")
    assert run.frame() == (TEXT, b"next")
    assert not run.session.slow
    run.end()


def test_bad_utf8_at_the_fast_path_is_1007_after_the_good_frames_before_it():
    key = os.urandom(4)
    run = Run()
    run.feed(masked(TEXT, b"fine", key) + masked(TEXT, b"bad \xc3\x28 byte", key) + masked(TEXT, b"never", key))
    assert run.frame() == (TEXT, b"fine")
    assert run.close_code() == 1007
    assert run.result.get(timeout=5)[:2] == ("error", 1007)


def test_a_truncated_utf8_sequence_at_the_end_of_a_whole_text_frame_is_1007():
    run = Run()
    run.feed(masked(TEXT, b"ends in \xe2\x82", os.urandom(4)))
    assert run.close_code() == 1007


@pytest.mark.parametrize("limits", [{"max_frame_size": 200}, {"max_message_size": 200}])
def test_over_a_limit_is_1009_from_wsproto(limits):
    run = Run(options=WsOptions(**limits))
    key = os.urandom(4)
    run.feed(masked(BINARY, b"x" * 200, key) + masked(BINARY, b"x" * 201, key))
    assert run.frame() == (BINARY, b"x" * 200)  # at the limit: still the fast path
    assert run.close_code() == 1009


@pytest.mark.parametrize("bad", [
    masked(TEXT, b"rsv1", b"abcd", rsv=0x40),                     # RSV1 without an extension
    masked(TEXT, b"rsv3", b"abcd", rsv=0x10),
    frame(TEXT, b"unmasked", mask=False),
    b"\x81\xfe\x00\x05abcd" + b"12345",                            # 16-bit length for 5 bytes
    masked(0x3, b"reserved opcode", b"abcd"),
])
def test_protocol_errors_leave_the_fast_path_and_are_1002(bad):
    run = Run()
    run.feed(masked(TEXT, b"ok", b"abcd") + bad)
    assert run.frame() == (TEXT, b"ok")
    assert run.close_code() == 1002


class CloseOnStop:
    seen: list[Any] = []

    @staticmethod
    def handle_frame(frame, state):
        CloseOnStop.seen.append(frame)
        if frame == ("text", "stop"):
            return [("text", "bye"), ("close", 4000, "stopped")], state
        return [frame], state


def test_a_close_reply_mid_chunk_ends_delivery_of_the_frames_after_it():
    CloseOnStop.seen = []
    run = Run(CloseOnStop)
    key = os.urandom(4)
    run.feed(masked(TEXT, b"a", key) + masked(TEXT, b"stop", key) + masked(TEXT, b"late", key))
    assert run.frame() == (TEXT, b"a")
    assert run.frame() == (TEXT, b"bye")
    assert run.close_code() == 4000
    run.feed(frame(CLOSE, close_payload(4000)))
    assert run.result.get(timeout=5) == ("local", 4000, "stopped")
    assert CloseOnStop.seen == [("text", "a"), ("text", "stop")]


def test_with_permessage_deflate_every_frame_goes_through_wsproto():
    from rr.ws.session import BoundedDeflate

    stream = MemoryStream()
    req = Request("GET", "/", "/", "", "HTTP/1.1", Headers([]))
    s = session.Session(stream, req, Echo, None, WsOptions(), [BoundedDeflate(1024)])
    assert not s.fast_ok


def test_many_frames_in_one_send_over_a_real_socket(serve):
    port = serve(lambda req: resp.WebSocket(Echo)).port
    client = Client.open(port)
    try:
        frames = [frame(TEXT, b"%d" % i * 50) for i in range(200)]
        frames.insert(100, frame(PING, b"mid"))
        client.send(b"".join(frames))
        got = [client.read_frame() for _ in range(201)]
        assert got[100] == (PONG, True, b"mid")
        del got[100]
        assert got == [(TEXT, True, b"%d" % i * 50) for i in range(200)]
        client.send(frame(CLOSE, close_payload(1000)))
        assert client.read_close() == (1000, b"")
    finally:
        client.close()


class Seen:
    sizes: list[int] = []

    @staticmethod
    def handle_frame(frame, state):
        Seen.sizes.append(len(frame[1]))
        return [], state


class TokenStream(MemoryStream):
    """A ``MessageStream`` shaped like h1's ``SocketStream``: a small token in the mailbox,
    the bytes pulled by ``incoming`` (so only the session's own charge can hit max_heap)."""

    def __init__(self) -> None:
        super().__init__()
        self.token = ("test.readable", self)
        self.chunks: list[bytes] = []

    def incoming(self, msg: Any) -> bytes | bool:
        if msg is not self.token:
            return False
        return self.chunks.pop(0)

    def consumed(self, n: int) -> None:
        pass


@pytest.mark.parametrize("n, dies", [(3000, False), (40_000, True)])
def test_a_message_over_4_kib_on_the_fast_path_is_charged_to_max_heap(n, dies):
    """A 40 KB single-frame message under a 32 KiB ``max_heap`` ends the process (as a
    message reassembled by wsproto does); a 3 KB one, under ``FAST_UNCHARGED``, does not."""
    Seen.sizes = []
    stream = TokenStream()
    req = Request("GET", "/", "/", "", "HTTP/1.1", Headers([]))
    s = session.Session(stream, req, Seen, None, WsOptions())
    pid, ref = supervisors.spawn(s.run, label="test.fast_path", monitor=True, max_heap=32 * 1024)
    stream.chunks.append(masked(BINARY, b"y" * n, os.urandom(4)) + masked(PING, b"sync", os.urandom(4)))
    supervisors.send(pid, stream.token)
    if dies:
        down = supervisors.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref), timeout=5)
        assert down[3] == "max_heap"
        assert Seen.sizes == []
    else:
        assert stream.out.get(timeout=5) == b"\x8a\x04sync"
        assert Seen.sizes == [n]
        stream.chunks.append(frame(CLOSE, close_payload(1000)))
        supervisors.send(pid, stream.token)
        supervisors.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref), timeout=5)
