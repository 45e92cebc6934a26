"""TLS for one connection: ``ssl.SSLObject`` between two memory BIOs over the raw socket.

What it owns: the TLS state of one accepted connection (``TlsStream``): the
``SSLObject`` made by the listener's ``SSLContext`` (``wrap_bio``, server
side, so ALPN, SNI callbacks and client certificates are the context's), its
incoming and outgoing memory BIOs, and the encrypted bytes not yet taken by
the kernel. It meets the non-blocking OS socket under gevent's wrapper
directly: a read is one ``recv_into`` (a module buffer, copied straight into
the incoming BIO) and then every whole record decrypted in one go; a write
encrypts into the outgoing BIO and hands the records to the kernel in one
``send`` attempt. Only when the socket would block does the calling process
wait, on gevent's io watcher for the socket, with one loop timer for that
wait (the call's timeout) — no ``Timeout`` object, no wrapper layers. The
common case of each (nothing left to decrypt — ``more`` false —, nothing
unsent) runs inline in ``recv_nowait`` and ``sendall``, calling the C object
under the ``SSLObject`` directly (``ssl``: its ``read``/``write``/``pending``
without the Python method that only forwards each call).

It presents the subset of the socket/``SSLSocket`` interface the protocols
use (``recv`` with a timeout, ``sendall``, ``settimeout``/``timeout``,
``pending``, ``fileno``, ``shutdown``, ``close``, ``getpeercert``,
``selected_alpn_protocol``, ``context``, ``version``, ``cipher``), so h1, h2
and WebSocket run over it unchanged. ``recv`` with a ``MSG_PEEK`` flag raises
``ValueError`` as ``SSLSocket`` does; with a zero timeout a read that would
block raises ``ssl.SSLWantReadError`` (``ssl.SSLWantWriteError`` when records
of TLS's own — a renegotiation's answer — wait for the socket first).

Two processes may use one stream at once — h2's reader reads while the
connection process writes —: every ``SSLObject`` call is one C call that
never yields, and the records it leaves in the outgoing BIO are appended to
the one unsent buffer at once, so records go out in the order they were
made. One process at a time sends (``sending``): a reader's ``recv`` leaves
what it made to that sender, a writer waits for its turn (``turn``) before
it encrypts more.

Bounds: the incoming BIO holds at most one read (``RECV_SIZE``) plus a
partial record, because the socket is read only when nothing is left to
decrypt; a write encrypts at most ``WRITE_CHUNK`` bytes before what it made
has gone to the kernel, so a client that never reads holds the writer at
``WRITE_CHUNK`` plus one chunk's records until the write's timeout.

What it must never do: yield inside an ``SSLObject`` call's bookkeeping (a
record taken from the outgoing BIO is in ``out`` before any wait), block
without a deadline when the caller gave one, or read from the socket while
decrypted bytes are waiting. ``shutdown(SHUT_WR)`` and ``close`` say
``close_notify`` first (``close`` with one send attempt, never a wait). A
peer's close, with or without ``close_notify``, reads as ``b""``.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import gevent.event
import gevent.hub
from gevent.hub import Waiter

_monotonic = time.monotonic

RECV_SIZE = 65536
# Plaintext encrypted per step of a write before its records are handed to the kernel.
WRITE_CHUNK = 131072
# How long ``shutdown`` waits for close_notify to leave when the stream has no timeout.
SHUTDOWN_WAIT = 1.0

# One read buffer for every stream of this process: ``recv_into`` fills it and the
# incoming BIO copies it out in the same step, with no switch in between. (rr runs
# every connection on one thread's hub; ``recv_into`` releases the GIL, so streams
# served from a second OS thread would each need a buffer of their own.)
_BUF = bytearray(RECV_SIZE)
_VIEW = memoryview(_BUF)

_WantRead = ssl.SSLWantReadError
_Closed = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


class TlsStream:
    """One server-side TLS connection over a gevent socket (see the module text)."""

    __slots__ = ("sock", "raw", "context", "obj", "ssl", "incoming", "outgoing", "timeout", "out", "out_pos",
                 "sending", "turn", "eof", "more", "notified", "waits", "__weakref__")

    def __init__(self, sock: Any, context: ssl.SSLContext) -> None:
        self.sock = sock  # gevent's socket: its io watchers and hub
        self.raw = sock._sock  # the non-blocking OS socket under it
        self.context = context
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        # The C object under the SSLObject: its read, write and pending without the Python wrapper
        # method around each call (the wrapper only forwards them).
        self.ssl = getattr(self.obj, "_sslobj", self.obj)
        self.timeout: float | None = None
        self.out = b""  # encrypted bytes not yet taken by the kernel, from out_pos
        self.out_pos = 0
        self.sending = False  # a process is in _flush (others only append to out)
        self.turn: gevent.event.Event | None = None  # set when a _flush ends, made on demand
        self.eof = False  # the peer closed (TCP EOF or close_notify)
        # Whole records or decrypted bytes may wait in the stream (the last decrypt stopped at its
        # n, or the handshake's last read went past it): a read decrypts before it reads the socket.
        self.more = True
        self.notified = False  # our close_notify is made
        self.waits = 0  # times a call parked on the socket (HTTP/1.1's served-order rule asks)

    # -- the socket interface the protocols use ---------------------------------

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> int:
        """Bytes a ``recv`` may return without the socket (decrypted, or records in the BIO)."""
        return self.ssl.pending() + self.incoming.pending

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.obj.getpeercert(binary_form)

    def selected_alpn_protocol(self) -> str | None:
        return self.obj.selected_alpn_protocol()

    def version(self) -> str | None:
        return self.obj.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self.obj.cipher()

    def do_handshake(self) -> None:
        """The server side of the handshake, bounded by ``timeout`` in all (``TimeoutError``)."""
        deadline = None if self.timeout is None else _monotonic() + self.timeout
        obj = self.obj
        while True:
            try:
                obj.do_handshake()
                break
            except _WantRead:
                pass
            except ssl.SSLError:
                # the alert OpenSSL made (unknown CA, no shared cipher...) goes out, once
                self._take_out()
                try:
                    self._send_once()
                except OSError:
                    pass
                raise
            self._take_out()
            self._flush(deadline)
            if self.eof:
                raise ssl.SSLEOFError("EOF during the handshake")
            self._read_socket(deadline)
        self._take_out()
        self._flush(deadline)

    def recv(self, n: int = RECV_SIZE, flags: int = 0) -> bytes:
        """Up to ``n`` decrypted bytes; ``b""`` once the peer closed. Waits at most ``timeout``."""
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on a TLS stream")
        waits = self.timeout != 0.0
        data = self._receive(n, wait_write=waits, wait_read=waits)
        if data is None:
            raise _WantRead("the read would block")
        return data

    def drained(self) -> bool:
        """Nothing to decrypt and nothing to send: the next bytes can only come from the socket
        (at most part of a record waits in the incoming BIO), so a reader may wait for it to turn
        readable before reading (HTTP/1.1's served-order wait)."""
        return not self.more and not self.eof and self.out_pos >= len(self.out)

    def recv_nowait(self, n: int = RECV_SIZE) -> bytes | None:
        """Up to ``n`` decrypted bytes without waiting for the peer: ``b""`` once the peer
        closed, None when nothing whole is there yet (wait for the socket to be readable, then
        call again). A result of exactly ``n`` bytes may leave more decrypted data behind: call
        again before waiting on the socket, which may never turn readable for bytes already
        read. TLS's own records still go out within ``timeout``."""
        if self.more or self.eof or self.out_pos < len(self.out):
            return self._receive(n, wait_write=True, wait_read=False)
        # The common case, inline: nothing left to decrypt and nothing to send (at most part of a
        # record in the incoming BIO), so one read from the socket, then decrypt what it brought.
        try:
            k = self.raw.recv_into(_BUF)
        except (BlockingIOError, InterruptedError):
            return None
        if not k:
            self.eof = True
            self.incoming.write_eof()
            return self._receive(n, wait_write=True, wait_read=False)
        self.incoming.write(_VIEW[:k])
        data = self._decrypt(n)
        if data:
            return data
        # part of a record, TLS's own records (a key update) or close_notify
        return self._receive(n, wait_write=True, wait_read=False)

    def _receive(self, n: int, wait_write: bool, wait_read: bool) -> bytes | None:
        """The read loop of ``recv`` and ``recv_nowait``: TLS's own records (a renegotiation's or
        key update's answer) go out first — waiting within ``timeout`` if ``wait_write``, else
        ``SSLWantWriteError`` —, then every whole record available is decrypted; with nothing
        there, wait for the peer within ``timeout`` if ``wait_read``, else return None."""
        deadline = None
        while True:
            if self.out_pos < len(self.out) and not self.sending and not self._send_once():
                if not wait_write:
                    raise ssl.SSLWantWriteError("TLS records wait for the socket")
                if deadline is None:
                    deadline = self._deadline()
                self._flush(deadline)
            if self.incoming.pending or self.ssl.pending():
                data = self._decrypt(n)
                if data:
                    return data
                if self.out_pos < len(self.out) and not self.sending:
                    continue  # TLS's own answer first (above), then wait for the peer
            else:
                self.more = False
            if self.eof:
                return b""
            if not wait_read:
                if not self._fill():
                    return None
                continue
            if deadline is None:
                deadline = self._deadline()
            self._read_socket(deadline)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Encrypt and send all of ``data`` within ``timeout`` (``TimeoutError``); ``WRITE_CHUNK``
        bytes at a time, each chunk's records handed to the kernel before the next is made."""
        total = len(data)
        if total <= WRITE_CHUNK and not self.sending and self.out_pos >= len(self.out):
            # The common case, inline: nothing waits to be sent; encrypt, one send attempt.
            self.ssl.write(data)
            made = self.outgoing.read()
            try:
                k = self.raw.send(made)
            except (BlockingIOError, InterruptedError):
                k = 0
            if k >= len(made):
                return
            self.out, self.out_pos = made, k
            self._flush(self._deadline())
            return
        deadline = None
        obj = self.ssl
        if self.out_pos < len(self.out):
            deadline = self._deadline()
            self._flush(deadline)
        if total <= WRITE_CHUNK:
            obj.write(data)
            self._take_out()
            if not self.sending and self._send_once():
                return
            self._flush(deadline if deadline is not None else self._deadline())
            return
        view = memoryview(data)
        pos = 0
        if deadline is None:
            deadline = self._deadline()
        while pos < total:
            obj.write(view[pos:pos + WRITE_CHUNK])
            pos += WRITE_CHUNK
            self._take_out()
            self._flush(deadline)

    def shutdown(self, how: int) -> None:
        """``close_notify`` first when our side stops writing, then the socket's shutdown."""
        if how != socket.SHUT_RD:
            self._notify()
            try:
                self._flush(_monotonic() + (self.timeout or SHUTDOWN_WAIT))
            except OSError:
                pass
        self.raw.shutdown(how)

    def close(self) -> None:
        """``close_notify`` (one send attempt, no wait), then close the socket."""
        try:
            self._notify()
            if not self.sending:
                self._send_once()
        except OSError:
            pass
        self.sock.close()

    def unwrap(self) -> None:  # pragma: no cover - the protocols never hand the socket back
        raise NotImplementedError("a TLS stream is not unwrapped")

    # -- internals -----------------------------------------------------------

    def _deadline(self) -> float | None:
        return None if self.timeout is None else _monotonic() + self.timeout

    def _decrypt(self, n: int) -> bytes:
        """Every whole record available, decrypted (at most ``n`` bytes); b"" if none.

        A read that returns less than it asked for has emptied its record, so with the incoming
        BIO empty nothing is left; only a result of ``n`` bytes may leave more (``more``)."""
        read = self.ssl.read
        incoming = self.incoming
        first = b""
        parts: list[bytes] | None = None
        got = 0
        try:
            while got < n:
                chunk = read(n - got)
                if not chunk:  # close_notify
                    self.eof = True
                    break
                if parts is None:
                    if not first:
                        first = chunk
                    else:
                        parts = [first, chunk]
                else:
                    parts.append(chunk)
                got += len(chunk)
                if not incoming.pending:
                    break
        except _WantRead:
            pass
        except _Closed:
            self.eof = True
        finally:
            self.more = got >= n
            if self.outgoing.pending:  # TLS's own answer (renegotiation, key update, alert)
                self._take_out()
        return first if parts is None else b"".join(parts)

    def _fill(self) -> bool:
        """One non-blocking read from the socket into the incoming BIO; False if it would block."""
        try:
            k = self.raw.recv_into(_BUF)
        except (BlockingIOError, InterruptedError):
            return False
        if k:
            self.incoming.write(_VIEW[:k])
        else:
            self.eof = True
            self.incoming.write_eof()
        return True

    def _read_socket(self, deadline: float | None) -> None:
        """Read the socket once, waiting on its read watcher until ``deadline`` if need be."""
        while not self._fill():
            self._wait(self.sock._read_event, deadline)

    def _take_out(self) -> None:
        """Move the outgoing BIO's records to ``out`` (in order, without a switch)."""
        made = self.outgoing.read()
        if not made:
            return
        if self.out_pos >= len(self.out):
            self.out, self.out_pos = made, 0
        else:
            self.out, self.out_pos = self.out[self.out_pos:] + made, 0

    def _send_once(self) -> bool:
        """One send attempt of ``out``; True when all of it went."""
        out = self.out
        pos = self.out_pos
        try:
            k = self.raw.send(memoryview(out)[pos:] if pos else out)
        except (BlockingIOError, InterruptedError):
            k = 0
        pos += k
        if pos >= len(out):
            self.out, self.out_pos = b"", 0
            return True
        self.out_pos = pos
        return False

    def _flush(self, deadline: float | None) -> None:
        """Send ``out`` (and what other processes append meanwhile) until it is all gone."""
        while self.sending:  # another process is sending (rare: h2's reader answering TLS)
            if self.turn is None:
                self.turn = gevent.event.Event()
            self.turn.clear()
            self.turn.wait(None if deadline is None else max(deadline - _monotonic(), 0))
            if self.sending and deadline is not None and _monotonic() >= deadline:
                raise TimeoutError("timed out")
        self.sending = True
        try:
            while self.out_pos < len(self.out):
                if not self._send_once():
                    self._wait(self.sock._write_event, deadline)
        finally:
            self.sending = False
            if self.turn is not None:
                self.turn.set()

    def _notify(self) -> None:
        if self.notified:
            return
        self.notified = True
        try:
            self.obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # close_notify is made; the peer's is not awaited
        self._take_out()

    def _wait(self, watcher: Any, deadline: float | None) -> None:
        """Park until ``watcher`` fires; ``TimeoutError`` at ``deadline`` (one loop timer)."""
        if watcher.callback is not None:
            raise gevent.hub.ConcurrentObjectUseError("socket already waited on by another process")
        self.waits += 1
        hub = self.sock.hub
        waiter = Waiter(hub)
        if deadline is None:
            watcher.start(waiter.switch, True)
            try:
                waiter.get()
            finally:
                watcher.stop()
            return
        left = deadline - _monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        timer = hub.loop.timer(left)
        watcher.start(waiter.switch, True)
        timer.start(waiter.switch, False)
        try:
            ready = waiter.get()
        finally:
            watcher.stop()
            timer.close()
        if not ready:
            raise TimeoutError("timed out")
