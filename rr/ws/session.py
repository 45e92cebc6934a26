"""One WebSocket session: wsproto over an abstract byte stream, driving a handler.

What it owns: the life of one WebSocket after the handshake — frames in and
out through ``wsproto`` (``Connection(ConnectionType.SERVER)``; rr validates
the handshake itself in ``rr.ws.handshake``) behind a fast path for the
common case (below), message reassembly, the
handler's callbacks, automatic pong, the server's pings and idle timer, drain
(close 1001) and the closing handshake. It runs in the calling process (on
HTTP/1.1 the connection process *is* the session; on HTTP/2 the stream's
worker is). Incoming bytes reach its receive loop as messages, one chunk at a
time, in one of two ways:

- a ``MessageStream`` (h1's socket, ``rr.http1.conn.SocketStream``; h2's
  stream, ``rr.stream.WsStream``; h3's too): the transport delivers the
  bytes, or the news that some can be read, as messages to this process (h1:
  an io watcher's ``(_READABLE, stream)``; h2: the conn's ``BODY``), so there
  is no reader process: the loop offers each message to ``incoming`` and
  calls ``consumed`` after the chunk is processed (h1: the watcher is armed
  again; h2: the flow-control credit), so a fast client cannot queue more
  than one chunk ahead of the handler;
- a plain ``ByteStream`` (only blocking reads; no transport of rr's is one
  today, tests' seams are): a linked helper process reads it and posts each
  chunk; the next read waits for the session's go-ahead (``_MORE``).

What it must never do: know which protocol carries it. Everything it needs
from the transport is a ``ByteStream`` (``read``/``write``/``close``) or a
``MessageStream``: the h1 socket after the 101, an h2 stream's DATA after the
200 to an extended CONNECT (RFC 8441), an h3 stream's (RFC 9220).

Handler API (``resp.WebSocket(handler, state)``): ``handler`` is any object
(or module) with some of these callables; an absent one is skipped.

- ``init(req, state) -> state`` — once, right after the handshake.
- ``handle_frame(frame, state) -> (replies, state)`` — for each complete
  message: ``("text", str)`` or ``("binary", bytes)``. Pings and pongs are
  answered by rr; a handler with ``control_frames = True`` also receives
  ``("ping", bytes)`` and ``("pong", bytes)``.
- ``handle_info(msg, state) -> (replies, state)`` — any other message sent to
  the session process (``rr.send(pid, msg)``; ``supervisors.self()`` inside a
  callback is that pid), e.g. a chat room's broadcast.
- ``handle_drain(state) -> (replies, state)`` — the listener drains: a last
  word before rr closes with 1001 (a ``("close", ...)`` reply of its own wins).
- ``terminate(reason, state)`` — once, at the end; ``reason`` is
  ``(who, code, text)``: ``who`` is ``"remote"`` (the client closed),
  ``"local"`` (the handler, drain or the idle timer closed) or ``"error"``
  (protocol error, limit, a handler crash, or the transport gone: code 1006).
- ``subprotocols`` — a list, in the server's order of preference; the first
  one the client offers is answered in ``Sec-WebSocket-Protocol``.

Replies are an iterable (or None) of ``("text", str)``, ``("binary", bytes)``,
``("ping", bytes)`` and ``("close", code, reason)`` (``("close",)`` and
``("close", code)`` too). After a close nothing more is sent; the session
waits up to ``close_timeout`` for the client's close frame and ends.

Limits (the listener's ``ws`` option): ``max_frame_size`` is checked on each
frame's header, before its payload is read; ``max_message_size`` on the
message's (inflated) bytes as they arrive, chunk by chunk, never only once a
frame is complete, and already at the header of an uncompressed frame whose
declared length would overrun it (1009 either way); each data frame counts
its payload but at least ``FRAME_CHARGE`` bytes, so a flood of empty
continuations also ends in 1009 (the fast path takes only frames within
both limits). UTF-8 of text messages is checked incrementally by wsproto
(1007 as soon as a bad byte arrives, also across fragments; a whole frame on
the fast path is checked at once, and a bad one handed to wsproto). A message being reassembled is charged to the process's
``max_heap`` part by part as the parts arrive, by the memory each holds (a
str part of 4-byte characters costs 4 bytes a character). permessage-deflate
inflates at most the remaining message budget per call (``BoundedDeflate``):
a deflate bomb ends in 1009 without being inflated.

The fast path (``Session.fast``): with no extension negotiated and wsproto
holding no partial frame or message, the complete frames at the front of each
chunk that are plain -- FIN, no RSV bit, text or binary, masked, a minimal 7-
or 16-bit length within both limits, text that is valid UTF-8 -- are decoded
here (unmasked by ``websockets.speedups.apply_mask`` when importable, an int
XOR otherwise) and their replies encoded here, all of a chunk's replies in one
write. The first frame that is anything else (a control frame, a fragment, a
frame cut by the read, a limit, a protocol error, bad UTF-8) goes to wsproto
with every byte after it, and wsproto keeps the stream until it holds nothing
again, so every answer beyond the plain echo (pong, 1002, 1007, 1009, the
close handshake) is wsproto's own; a complete frame's UTF-8 checked at once
is the same verdict as wsproto's incremental check. A message over
``FAST_UNCHARGED`` (4 KiB) is charged to ``max_heap`` while its handler runs,
as on wsproto's path (a smaller one costs less than the read chunk it came in,
which no path charges).
(``tests/rr/ws/test_fast_path.py`` holds the edges.)

What wsproto checks (each tested in ``tests/rr/ws/test_hostile.py`` and by
Autobahn): client masking, reserved bits and opcodes, control frames
(unfragmented, ≤ 125 bytes), minimal length encodings and the 64-bit
length's top bit (1002), UTF-8 of text incrementally and of close reasons
(1007), close codes (1000–4999 minus the reserved and local-only ones →
1002). What it does not, and rr does here: any size limit, bounded
inflation, answering pings, the close handshake's timing, idle and ping
timers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, Protocol

from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

import supervisors
from rr import dispatch
from rr.config import WsOptions
from rr.log import get_logger
from rr.request import Request
from rr.response import DRAIN

_log = get_logger("rr.ws")
_monotonic = time.monotonic
_sizeof = sys.getsizeof

READ_SIZE = 65536
# What every data frame costs against max_message_size at least (continuation floods).
FRAME_CHARGE = 64
# The fast path charges a message to max_heap only above this many bytes: a smaller one
# (its bytes and str, ~5x at most) lives for one handler call, beside the uncharged read chunk.
FAST_UNCHARGED = 4096
_DATA = "rr.ws.data"
_MORE = "rr.ws.more"


class ByteStream(Protocol):
    """The transport under a session: bytes in order, both ways.

    ``read`` blocks until some bytes arrive and returns ``b""`` at the end of
    the stream (or when the transport failed); it runs in the session's
    reader process. ``write`` returns once the transport took all of
    ``data`` (back-pressure: it waits) and raises ``ConnectionError`` when
    the peer is gone. ``close`` ends the stream (h1: half-close, then a brief
    bounded linger so the peer reads the close frame instead of a reset).
    """

    def read(self, max_bytes: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class MessageStream(ByteStream, Protocol):
    """A byte stream whose bytes arrive as messages to the session's own process (h2/h3).

    No reader process then: the session's loop offers every message it receives to
    ``incoming``, which returns ``False`` (not the stream's: the handler's
    ``handle_info`` gets it), ``True`` (the stream's, nothing to deliver, e.g. an
    acknowledgement) or bytes (``b""``: the client ended the stream); it raises
    ``ConnectionError`` when the client is gone (reset). ``consumed(n)`` follows each
    delivered chunk once the session processed it (h1: the socket's watcher armed again;
    h2: the flow-control credit; the go-ahead a plain stream's reader gets as ``_MORE``).
    """

    def incoming(self, msg: Any) -> bytes | bool: ...

    def consumed(self, n: int) -> None: ...


class BoundedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate with inflation bounded by ``max_message_size``.

    wsproto inflates each frame's payload in one unbounded ``decompress``
    call, so 64 KiB of a deflate bomb would become ~64 MiB before any limit
    could look at it. Here each call inflates at most what is left of the
    message's budget (+1 byte to see the overflow); more → 1009.
    """

    def __init__(self, max_message_size: int) -> None:
        super().__init__()
        self.budget = max_message_size
        self.inflated = 0

    def frame_inbound_header(self, proto: Any, opcode: Opcode, rsv: RsvBits,
                             payload_length: int) -> CloseReason | RsvBits:
        if self._inbound_compressed is None:  # a new message
            self.inflated = 0
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        left = self.budget - self.inflated
        try:
            out = self._decompressor.decompress(data, left + 1)
        except Exception:  # zlib.error: not a deflate stream
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        if self.inflated > self.budget or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if not fin or not self._inbound_is_compressible or not self._inbound_compressed:
            return super().frame_inbound_complete(proto, fin)
        out = self._inflate(b"\x00\x00\xff\xff")
        if isinstance(out, CloseReason):
            return out
        if self.client_no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return out


class _Limits(Extension):
    """Not a negotiated extension: wsproto's per-frame hooks used to enforce the limits.

    ``size`` is the current message's cost so far, counted as its bytes arrive (each
    payload chunk, after inflation), never once a frame is complete: a data frame costs
    its payload but at least ``FRAME_CHARGE`` (paid at its header; ``prepaid`` is what is
    left of that). An uncompressed frame whose declared length would take the message
    over ``max_message`` is refused at its header.
    """

    name = "rr-limits"

    def __init__(self, options: WsOptions) -> None:
        self.max_frame = options.max_frame_size
        self.max_message = options.max_message_size
        self.size = 0
        self.prepaid = 0
        self.control = False
        self.compressed = False  # the current message's RSV1: its frames' lengths are not its size

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False

    def frame_inbound_header(self, proto: Any, opcode: Opcode, rsv: RsvBits,
                             payload_length: int) -> CloseReason | RsvBits:
        self.control = opcode.iscontrol()
        if payload_length > self.max_frame:
            return CloseReason.MESSAGE_TOO_BIG
        if not self.control:
            if opcode is not Opcode.CONTINUATION:
                self.size = 0
                self.compressed = rsv.rsv1
            self.size += FRAME_CHARGE
            self.prepaid = FRAME_CHARGE
            if self.size > self.max_message:
                return CloseReason.MESSAGE_TOO_BIG
            if not self.compressed and self.size + payload_length - FRAME_CHARGE > self.max_message:
                return CloseReason.MESSAGE_TOO_BIG
        return RsvBits(False, False, False)

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self.control:
            n = len(data)
            paid = min(self.prepaid, n)
            self.prepaid -= paid
            self.size += n - paid
            if self.size > self.max_message:
                return CloseReason.MESSAGE_TOO_BIG
        return data


def _reader(stream: ByteStream, owner: supervisors.Pid) -> None:
    """Read the stream, one chunk per go-ahead from the session (``_MORE``)."""
    while True:
        try:
            data = stream.read(READ_SIZE)
        except Exception:
            data = b""
        supervisors.send(owner, (_DATA, data))
        if not data:
            return
        supervisors.receive(lambda m: m == _MORE)


def stop_reader(reader: supervisors.Pid) -> None:
    """End the reader and wait until it is gone: an exit signal lands at the target's next
    switch, and until then it may still be waiting on the socket, which ``close`` reads."""
    supervisors.unlink(reader)
    ref = supervisors.monitor(reader)
    supervisors.exit(reader, "kill")
    try:
        supervisors.receive(lambda m: type(m) is tuple and len(m) == 4 and m[0] == "DOWN" and m[1] == ref,
                            timeout=5.0)
    except supervisors.Timeout:  # cannot happen short of a broken runtime; never hang the close on it
        supervisors.demonitor(ref, flush=True)


class _Done(Exception):
    def __init__(self, reason: tuple[str, int, str]) -> None:
        self.reason = reason


class Session:
    """One WebSocket session in the calling process (see the module docstring)."""

    def __init__(self, stream: ByteStream, req: Request, handler: Any, state: Any, options: WsOptions,
                 extensions: list[Any] | None = None) -> None:
        self.stream = stream
        self.req = req
        self.handler = handler
        self.state = state
        self.options = options
        self.ws = Connection(ConnectionType.SERVER, extensions=[*(extensions or []), _Limits(options)])
        # The fast path (``fast``) decodes and encodes plain frames itself; with an extension
        # negotiated (permessage-deflate) every frame goes through wsproto.
        self.fast_ok = not extensions
        self.fast_limit = (min(options.max_frame_size, options.max_message_size, 65535)
                           if options.max_message_size >= FRAME_CHARGE else -1)
        self.slow = False  # wsproto holds state (a partial frame or message): it gets every byte
        self.parts: list[Any] = []
        self.charged = 0
        self.closing_deadline: float | None = None
        self.close_sent: tuple[int, str] | None = None
        self.started = _monotonic()
        self.control_frames = bool(getattr(handler, "control_frames", False))

    # -- the loop -----------------------------------------------------------------

    def run(self) -> tuple[str, int, str]:
        """Serve until the session ends; returns the terminate reason."""
        reason: tuple[str, int, str] = ("error", 1006, "")
        reader = None
        try:
            init = getattr(self.handler, "init", None)
            if init is not None:
                self.state = init(self.req, self.state)
            if getattr(self.stream, "incoming", None) is None:
                # Linked as well as ended in ``finally``: however this process ends, the reader goes too.
                reader = supervisors.spawn(_reader, self.stream, supervisors.self(), label="rr.ws.reader",
                                           link=True)
            self.loop(reader)
        except _Done as done:
            reason = done.reason
        except ConnectionError:
            reason = ("error", 1006, "client gone")
        except Exception as exc:  # a handler crashed: 1011
            dispatch.crashed(self.req, self.started, exc)
            reason = ("error", 1011, "internal error")
            self.try_close(1011, "internal error")
        finally:
            if reader is not None:
                stop_reader(reader)
            if self.charged:
                supervisors.release(self.charged)
                self.charged = 0
            self.stream.close()
        terminate = getattr(self.handler, "terminate", None)
        if terminate is not None:
            try:
                terminate(reason, self.state)
            except Exception as exc:
                dispatch.crashed(self.req, self.started, exc)
        return reason

    def loop(self, reader: supervisors.Pid | None) -> None:
        options = self.options
        incoming = None if reader is not None else self.stream.incoming  # type: ignore[attr-defined]
        idle = options.idle_timeout
        ping = options.ping_interval
        now = _monotonic()
        last_in = now
        next_ping = now + ping if ping else None
        receive = supervisors.receive
        while True:
            if idle or ping or self.closing_deadline is not None:
                deadlines = [d for d in (self.closing_deadline, next_ping,
                                         last_in + idle if idle and self.closing_deadline is None else None)
                             if d is not None]
                timeout = max(0.0, min(deadlines) - _monotonic()) if deadlines else None
            else:
                timeout = None
            try:
                msg = receive(None, timeout)
            except supervisors.Timeout:
                now = _monotonic()
                if self.closing_deadline is not None and now >= self.closing_deadline:
                    raise _Done(("local", *self.close_sent) if self.close_sent else ("error", 1006, "")) from None
                if idle and self.closing_deadline is None and now >= last_in + idle:
                    self.close(1001, "idle timeout")
                if next_ping is not None and now >= next_ping:
                    next_ping = now + ping if ping else None
                    if self.closing_deadline is None:
                        self.stream.write(self.ws.send(Ping(b"rr")))
                continue
            got: bytes | bool = False
            if incoming is not None:
                got = incoming(msg)
                if got is True:
                    continue
            elif type(msg) is tuple and len(msg) == 2 and msg[0] == _DATA:
                got = msg[1]
            if got is not False:
                assert isinstance(got, bytes)
                if not got:
                    raise _Done(("local", *self.close_sent) if self.close_sent
                                else ("error", 1006, "connection lost"))
                if idle:
                    last_in = _monotonic()
                self.receive(got)
                if reader is not None:
                    supervisors.send(reader, _MORE)
                else:
                    self.stream.consumed(len(got))  # type: ignore[attr-defined]
            elif type(msg) is tuple and len(msg) == 2 and msg[0] == DRAIN:
                if self.closing_deadline is None:
                    handle_drain = getattr(self.handler, "handle_drain", None)
                    if handle_drain is not None:
                        replies, self.state = handle_drain(self.state)
                        self.reply(replies)
                    self.close(1001, "server shutting down")
                    self.closing_deadline = min(self.closing_deadline or msg[1], msg[1])
            elif self.closing_deadline is None:
                handle_info = getattr(self.handler, "handle_info", None)
                if handle_info is not None:
                    replies, self.state = handle_info(msg, self.state)
                    self.reply(replies)

    def receive(self, data: bytes) -> None:
        """One chunk from the transport: plain frames on the fast path, the rest to wsproto."""
        if self.fast_ok and not self.slow and self.closing_deadline is None:
            pos = self.fast(data)
            if pos == len(data):
                return
            if pos:
                data = data[pos:]
            self.slow = True
        self.ws.receive_data(data)
        self.on_events()
        if self.slow and self.fast_ok:
            # Back to the fast path once wsproto holds nothing: no partial frame or message.
            ws = self.ws
            proto = ws._proto
            decoder = proto._frame_decoder
            self.slow = not (ws.state is ConnectionState.OPEN and decoder.header is None
                             and not len(decoder.buffer) and proto._message_decoder.opcode is None)

    def fast(self, data: bytes) -> int:
        """Handle the complete, plain frames at the front of ``data``; return where wsproto takes over.

        Plain: FIN set, no RSV bit, text or binary, masked, a 7- or 16-bit minimal length
        within ``max_frame_size`` and ``max_message_size`` (and <= 65535), the whole frame in
        ``data``, and text that is valid UTF-8. Everything else -- a control frame, a fragment,
        a frame split across reads, a limit or a protocol error -- stops the loop at that
        frame's first byte and goes to wsproto, whose answer (1002, 1007, 1009, a pong, the
        close handshake) is then the same as if it had seen every frame. The replies to all
        the frames handled here leave in one write.
        """
        n = len(data)
        pos = 0
        limit = self.fast_limit
        handle_frame = getattr(self.handler, "handle_frame", None)
        out: list[bytes] = []
        view = None
        try:
            while n - pos >= 6:
                b0 = data[pos]
                if b0 != 0x81 and b0 != 0x82:
                    break
                length = data[pos + 1] ^ 0x80  # the mask bit set: the 7-bit length
                if length < 126:
                    start = pos + 6
                elif length == 126 and n - pos >= 8:
                    length = (data[pos + 2] << 8) | data[pos + 3]
                    if length < 126:  # not the minimal encoding: wsproto says 1002
                        break
                    start = pos + 8
                else:  # unmasked (>= 128), a 64-bit length, or a header not all here
                    break
                end = start + length
                if length > limit or end > n:
                    break
                if length:
                    if view is None:
                        view = memoryview(data)
                    payload = _unmask(view[start:end], data[start - 4:start])
                else:
                    payload = b""
                if b0 == 0x81:
                    try:
                        frame: tuple[str, Any] = ("text", payload.decode())
                    except UnicodeDecodeError:  # wsproto finds it again: 1007
                        break
                else:
                    frame = ("binary", payload)
                pos = end
                if handle_frame is not None:
                    if length > FAST_UNCHARGED:
                        size = _sizeof(frame[1])
                        supervisors.charge(size)
                        try:
                            replies, self.state = handle_frame(frame, self.state)
                        finally:
                            supervisors.release(size)
                    else:
                        replies, self.state = handle_frame(frame, self.state)
                    if replies:
                        self.reply(replies, out)
                        if self.closing_deadline is not None:  # the handler closed: wsproto reads on
                            break
        finally:
            if out:
                self.stream.write(b"".join(out) if len(out) > 1 else out[0])
        return pos

    def on_events(self) -> None:
        ws = self.ws
        for event in ws.events():
            if isinstance(event, Message):
                if self.closing_deadline is not None:
                    continue  # after our close frame, data is read and dropped
                self.parts.append(event.data)
                # What the part holds in memory: a text part's str can take up to 4 bytes
                # a character (one emoji makes the whole part 4 bytes wide), not len().
                size = _sizeof(event.data)
                supervisors.charge(size)
                self.charged += size
                if event.message_finished:
                    if isinstance(event, TextMessage):
                        frame: tuple[str, Any] = ("text", "".join(self.parts))
                    else:
                        frame = ("binary", b"".join(self.parts))
                    self.parts = []
                    try:
                        self.deliver(frame)
                    finally:
                        supervisors.release(self.charged)
                        self.charged = 0
            elif isinstance(event, Ping):
                if ws.state is ConnectionState.OPEN:
                    self.stream.write(ws.send(event.response()))
                if self.control_frames and self.closing_deadline is None:
                    self.deliver(("ping", bytes(event.payload)))
            elif isinstance(event, Pong):
                if self.control_frames and self.closing_deadline is None:
                    self.deliver(("pong", bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                code = int(event.code)
                if ws.state is ConnectionState.REMOTE_CLOSING:  # the client's close: answer it
                    self.stream.write(ws.send(event.response()))
                    raise _Done(("remote", code, event.reason or ""))
                if ws.state is ConnectionState.CLOSED:  # the answer to our close
                    raise _Done(("local", *self.close_sent) if self.close_sent else ("remote", code, ""))
                # wsproto found a protocol error (or a limit said no): fail the connection
                self.stream.write(ws.send(CloseConnection(code, _short(event.reason))))
                raise _Done(("error", code, event.reason or ""))

    def deliver(self, frame: tuple[str, Any]) -> None:
        handle_frame = getattr(self.handler, "handle_frame", None)
        if handle_frame is not None:
            replies, self.state = handle_frame(frame, self.state)
            self.reply(replies)

    def reply(self, replies: Iterable[Any] | None, out: list[bytes] | None = None) -> None:
        """Encode ``replies``; written at once, or appended to ``out`` for the caller to write."""
        if not replies:
            return
        ws = self.ws
        pending = [] if out is None else out
        plain = self.fast_ok
        for item in replies:
            if self.closing_deadline is not None:
                break
            kind = item[0]
            if kind == "text":
                if plain:
                    pending.append(_encode(0x81, str(item[1]).encode()))
                else:
                    pending.append(ws.send(TextMessage(data=str(item[1]))))
            elif kind == "binary":
                if plain:
                    pending.append(_encode(0x82, bytes(item[1])))
                else:
                    pending.append(ws.send(BytesMessage(data=bytes(item[1]))))
            elif kind == "ping":
                pending.append(ws.send(Ping(bytes(item[1]) if len(item) > 1 else b"")))
            elif kind == "pong":
                pending.append(ws.send(Pong(bytes(item[1]) if len(item) > 1 else b"")))
            elif kind == "close":
                code = item[1] if len(item) > 1 else 1000
                text = item[2] if len(item) > 2 else ""
                if pending:
                    self.stream.write(b"".join(pending))
                    pending.clear()
                self.close(code, text)
            else:
                raise ValueError(f"unknown WebSocket reply {item!r}")
        if pending and out is None:
            self.stream.write(b"".join(pending) if len(pending) > 1 else bytes(pending[0]))

    def close(self, code: int, reason: str) -> None:
        """Send our close frame (once) and wait for the client's up to ``close_timeout``."""
        if self.closing_deadline is not None or self.ws.state is not ConnectionState.OPEN:
            return
        self.closing_deadline = _monotonic() + self.options.close_timeout
        self.close_sent = (code, reason)
        self.stream.write(self.ws.send(CloseConnection(code, reason)))

    def try_close(self, code: int, reason: str) -> None:
        """A close frame on the way out, if the stream still takes one."""
        try:
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                self.stream.write(self.ws.send(CloseConnection(code, reason)))
        except Exception:  # the transport is gone or the state moved on: nothing to say
            pass


def _unmask_int(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """A client frame's payload unmasked (RFC 6455 5.3): one XOR of two big integers."""
    n = len(data)
    return (int.from_bytes(data, "little")
            ^ int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little")


try:  # the websockets package's C helper, where installed (rr's ``speed`` extra): ~15x faster
    from websockets.speedups import apply_mask as _unmask
except ImportError:  # pragma: no cover - the speed extra is part of the test extra
    _unmask = _unmask_int


def _encode(first: int, payload: bytes) -> bytes:
    """One unmasked server frame, FIN set, no extension (what wsproto sends for the same message)."""
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126, n >> 8, n & 0xFF)) + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def _short(reason: str | None) -> str:
    return (reason or "")[:100]


def run(stream: ByteStream, req: Request, handler: Any, state: Any, options: WsOptions,
        extensions: list[Any] | None = None) -> tuple[str, int, str]:
    """Run one session in the calling process; returns the terminate reason."""
    return Session(stream, req, handler, state, options, extensions).run()
