"""Raw HTTP/2 frames for tests: a peer with no protocol state machine of its own.

``Peer`` connects over h2c (prior knowledge) on a gevent socket (or takes one
already connected, such as TLS with ALPN h2), so a test can
send any byte sequence — invalid lengths, wrong stream ids, broken HPACK —
and then read what the server answered, frame by frame, with a deadline.

Frames are built by hand (``frame``) rather than through hyperframe's
serialisers, which refuse many of the invalid shapes the tests need; replies
are parsed with hyperframe. Every frame read goes through ``Peer.track``,
which decodes header blocks with one HPACK decoder (so the dynamic table
stays in step with the server's encoder), collects each stream's response,
and acknowledges the server's SETTINGS.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import hpack
from gevent import socket as gsocket
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 §7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB

# SETTINGS identifiers (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

WINDOW_MAX = 2**31 - 1

ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """One frame, byte for byte: ``length`` overrides the header's length field."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(payload: bytes = b"12345678", ack: bool = False, sid: int = 0) -> bytes:
    return frame(PING, ACK if ack else 0, sid, payload)


def rst(sid: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))


def priority(sid: int, depends_on: int = 0, weight: int = 16, exclusive: bool = False) -> bytes:
    return frame(PRIORITY, 0, sid, priority_fields(depends_on, weight, exclusive))


def priority_fields(depends_on: int, weight: int = 16, exclusive: bool = False) -> bytes:
    return struct.pack(">IB", depends_on | (0x80000000 if exclusive else 0), weight - 1)


def goaway(last_sid: int = 0, code: int = NO_ERROR, sid: int = 0) -> bytes:
    return frame(GOAWAY, 0, sid, struct.pack(">II", last_sid, code))


def data(sid: int, payload: bytes = b"", end_stream: bool = False, pad: int | None = None) -> bytes:
    flags = END_STREAM if end_stream else 0
    if pad is not None:
        return frame(DATA, flags | PADDED, sid, bytes([pad]) + payload + b"\0" * pad)
    return frame(DATA, flags, sid, payload)


class Response:
    """What one stream received: head, body, trailers, or a reset."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] = []
        self.interim: list[list[tuple[str, str]]] = []  # informational (1xx) heads, in order
        self.body = b""
        self.data_frames = 0
        self.ended = False
        self.reset: int | None = None

    @property
    def status(self) -> int | None:
        if self.headers is None:
            return None
        return int(dict(self.headers)[":status"])

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers or [] if k == name), None)


class Closed(Exception):
    """The server closed the connection while a test waited for something else."""


class Peer:
    """A raw h2c client connection; ``with Peer(port) as p:`` closes the socket."""

    def __init__(self, port: int, *, preface: bool = True, settings_frame: bytes | None = None,
                 timeout: float = 10.0, sock: Any = None, scheme: str = "http") -> None:
        # ``sock``: an already connected socket (a TLS one, say, with ALPN h2 negotiated).
        self.sock = sock if sock is not None else gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.port = port
        self.scheme = scheme
        self.timeout = timeout
        self.buf = bytearray()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder(max_header_list_size=2**31 - 1)
        self.decoder.max_allowed_table_size = 65536
        self.auto_ack = True
        self.closed = False
        self.frames: list[Frame] = []  # every frame read, in order
        self.server_settings: dict[int, int] | None = None
        self.settings_acks = 0
        self.pings: list[bytes] = []  # payloads of PING ACKs received
        self.goaway: GoAwayFrame | None = None
        self.responses: dict[int, Response] = {}
        self._block: list[Any] = []  # HEADERS + CONTINUATIONs of a header block in progress
        if preface:
            self.send(PREFACE, settings_frame if settings_frame is not None else settings())

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- sending -------------------------------------------------------------

    def send(self, *chunks: bytes) -> None:
        self.sock.sendall(b"".join(chunks))

    def try_send(self, *chunks: bytes) -> bool:
        """Send, tolerating a connection the server already closed; False if it had."""
        try:
            self.sock.sendall(b"".join(chunks))
            return True
        except OSError:
            return False

    def block(self, fields: Iterable[tuple[str, str]]) -> bytes:
        """HPACK-encode ``fields`` with this connection's encoder (its state advances)."""
        return self.encoder.encode([(k.encode(), v.encode()) for k, v in fields])

    def request_fields(self, method: str = "GET", path: str = "/",
                       extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        return [(":method", method), (":scheme", self.scheme), (":path", path),
                (":authority", f"127.0.0.1:{self.port}"), *extra]

    def headers(self, sid: int, fields: Iterable[tuple[str, str]] | bytes, *, end_stream: bool = True,
                end_headers: bool = True, pad: int | None = None, prio: bytes | None = None) -> bytes:
        """A HEADERS frame (``fields`` encoded, or a raw block as bytes)."""
        block = fields if isinstance(fields, bytes) else self.block(fields)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        payload = block
        if prio is not None:
            flags |= PRIORITY_FLAG
            payload = prio + payload
        if pad is not None:
            flags |= PADDED
            payload = bytes([pad]) + payload + b"\0" * pad
        return frame(HEADERS, flags, sid, payload)

    def request(self, sid: int, path: str = "/", method: str = "GET", *, end_stream: bool = True,
                extra: Iterable[tuple[str, str]] = ()) -> None:
        self.send(self.headers(sid, self.request_fields(method, path, extra), end_stream=end_stream))

    # -- reading -------------------------------------------------------------

    def read_frame(self, timeout: float | None = None) -> Frame | None:
        """The next frame (already tracked), or None once the server has closed.

        Raises ``TimeoutError`` if no whole frame arrives within ``timeout``.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    head = memoryview(bytes(self.buf[:9]))
                    body = memoryview(bytes(self.buf[9:9 + length]))
                    del self.buf[:9 + length]
                    f, _ = Frame.parse_frame_header(head)
                    f.parse_body(body)
                    self.track(f)
                    return f
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(262144)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                raise TimeoutError("no frame from the server in time") from None
            if not chunk:
                self.closed = True
            self.buf += chunk

    def track(self, f: Frame) -> None:
        self.frames.append(f)
        if self._block:
            self._block.append(f)
            if isinstance(f, ContinuationFrame) and "END_HEADERS" in f.flags:
                self._header_block(self._block)
                self._block = []
            return
        if isinstance(f, HeadersFrame):
            if "END_HEADERS" in f.flags:
                self._header_block([f])
            else:
                self._block = [f]
        elif isinstance(f, DataFrame):
            res = self.responses.setdefault(f.stream_id, Response())
            res.body += f.data
            res.data_frames += 1
            if "END_STREAM" in f.flags:
                res.ended = True
        elif isinstance(f, RstStreamFrame):
            self.responses.setdefault(f.stream_id, Response()).reset = f.error_code
        elif isinstance(f, SettingsFrame):
            if "ACK" in f.flags:
                self.settings_acks += 1
            else:
                if self.server_settings is None:
                    self.server_settings = {}
                self.server_settings.update(f.settings)
                if self.auto_ack and not self.closed:
                    self.try_send(settings(ack=True))
        elif isinstance(f, PingFrame) and "ACK" in f.flags:
            self.pings.append(bytes(f.opaque_data))
        elif isinstance(f, GoAwayFrame):
            self.goaway = f

    def _header_block(self, frames: list[Any]) -> None:
        first = frames[0]
        fields = self.decoder.decode(b"".join(bytes(x.data) for x in frames), raw=False)
        res = self.responses.setdefault(first.stream_id, Response())
        if res.headers is None or (res.status is not None and res.status < 200):
            if res.headers is not None:
                res.interim.append(res.headers)
            res.headers = list(fields)
        else:
            res.trailers = list(fields)
        if "END_STREAM" in first.flags:
            res.ended = True

    def wait(self, pred: Callable[[], bool], timeout: float | None = None, what: str = "condition") -> None:
        """Read frames until ``pred()`` holds; ``Closed`` if the server hangs up first."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {what}: {self.describe()}")
            try:
                f = self.read_frame(left)
            except TimeoutError:
                raise TimeoutError(f"waiting for {what}: {self.describe()}") from None
            if f is None and not pred():
                raise Closed(f"closed while waiting for {what}: {self.describe()}")

    def describe(self) -> str:
        return "frames seen: " + ", ".join(show(f) for f in self.frames[-12:])

    def handshake(self, timeout: float | None = None) -> None:
        """Wait for the server's SETTINGS and its ACK of ours."""
        self.wait(lambda: self.server_settings is not None and self.settings_acks >= 1, timeout,
                  "the SETTINGS exchange")

    def response(self, sid: int, timeout: float | None = None) -> Response:
        """Read until stream ``sid`` has ended or been reset."""
        self.wait(lambda: sid in self.responses and self.responses[sid].done, timeout, f"stream {sid}")
        return self.responses[sid]

    def expect_goaway(self, code: int, timeout: float | None = None) -> GoAwayFrame:
        """A GOAWAY with ``code`` arrives, and then the server closes the connection."""
        try:
            self.wait(lambda: self.goaway is not None, timeout, f"GOAWAY({ERROR_NAMES[code]})")
        except Closed:
            raise AssertionError(f"closed without GOAWAY({ERROR_NAMES[code]}): {self.describe()}") from None
        assert self.goaway is not None
        got = self.goaway.error_code
        assert got == code, f"GOAWAY({name(got)}), expected {ERROR_NAMES[code]}: {self.describe()}"
        self.expect_closed(timeout)
        return self.goaway

    def expect_closed(self, timeout: float | None = None) -> None:
        """The server closes the connection (frames before the EOF are tracked, not checked)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.closed:
            try:
                self.read_frame(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"the connection stayed open: {self.describe()}") from None

    def expect_rst(self, sid: int, code: int, timeout: float | None = None) -> None:
        """RST_STREAM(``code``) on ``sid`` arrives, with no GOAWAY before it."""
        def seen() -> bool:
            return self.goaway is not None or (sid in self.responses and self.responses[sid].reset is not None)
        try:
            self.wait(seen, timeout, f"RST_STREAM({ERROR_NAMES[code]}) on stream {sid}")
        except Closed:
            raise AssertionError(f"closed without RST_STREAM on {sid}: {self.describe()}") from None
        assert self.goaway is None, f"a connection error instead of a stream error: {self.describe()}"
        got = self.responses[sid].reset
        assert got == code, f"RST_STREAM({name(got)}) on {sid}, expected {ERROR_NAMES[code]}: {self.describe()}"

    def expect_ping_ack(self, payload: bytes, timeout: float | None = None) -> None:
        self.wait(lambda: payload in self.pings, timeout, f"PING ACK {payload!r}")

    def expect_alive(self, sid: int, path: str = "/", timeout: float | None = None) -> Response:
        """The connection still serves: a GET on the new stream ``sid`` is answered 200."""
        self.request(sid, path)
        res = self.response(sid, timeout)
        assert res.status == 200, f"stream {sid}: {res.status} reset={res.reset}: {self.describe()}"
        return res


def name(code: int | None) -> str:
    return "None" if code is None else ERROR_NAMES.get(code, hex(code))


def show(f: Frame) -> str:
    kind = type(f).__name__.replace("Frame", "").upper()
    extra = ""
    if isinstance(f, GoAwayFrame | RstStreamFrame):
        extra = f" {name(f.error_code)}"
    elif isinstance(f, WindowUpdateFrame):
        extra = f" +{f.window_increment}"
    flags = "|".join(sorted(f.flags))
    return f"{kind}[{f.stream_id}]{extra}{' ' + flags if flags else ''}"


def rss() -> int:
    """This process's resident set size in bytes (the server runs in this process)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def send_in_background(peer: Peer, payload: bytes) -> gevent.Greenlet:
    """Write ``payload`` from another greenlet so the test can read replies meanwhile.

    The greenlet's value is the time the last byte was handed to the kernel, or
    None if the server closed the connection first.
    """
    def run() -> float | None:
        if not peer.try_send(payload):
            return None
        return time.monotonic()
    return gevent.spawn(run)
