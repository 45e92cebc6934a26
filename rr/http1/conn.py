"""The HTTP/1.1 connection process: one per TCP (or TLS) connection, after the front door.

What it owns: one socket, one read buffer, and the codec state for the
request in flight. It reads, parses and writes *itself* — the h1 request
path has no mailbox hop — and runs each request's exchange (``rr.exchange``)
in turn (keep-alive, pipelining: leftover bytes are carried into the next
parse). It is the exchange's sink for h1: status line and fields, content-length
or chunked framing (close-delimited for HTTP/1.0), trailers in the last chunk,
interim 1xx heads (103 Early Hints; none to an HTTP/1.0 client),
``os.sendfile`` on TCP, keep-alive decisions, and the 101 of a WebSocket
upgrade, after which this process runs the session (``rr.ws.session``) over
the socket (``SocketStream``) until it ends and the connection closes.

On plain TCP it meets the non-blocking OS socket under gevent's wrapper
directly: one ``recv``/``send`` attempt first and, only when that would block,
a wait on the wrapper's io watcher with one loop timer for that wait (the
deadline). The exception is the read of the next request after one with
nothing buffered: it waits for the loop's I/O poll first, so connections are
served in the order their requests arrived (fairness); that wait restarts the
connection's own keep-alive timer rather than making one. A buffered body of
4 KiB or more is written next to its head with one ``sendmsg`` (no copy).
A streamed body (``Stream``, ``Loop``) on plain TCP: its head, and every chunk
after the first written in the same loop turn, are held until this process
next blocks or yields, when a loop callback writes what is held with one
``send``, in the hub (``flush_held``; what the socket does not take, the
socket's write watcher sends). So events sent back to back leave in one write,
an event written alone after a wait goes out at once, and every event is on the
wire before the handler waits. Any write or read of this process takes held
bytes first, and at ``HOLD_LIMIT`` a send writes them itself and waits for the
socket (backpressure).
TLS goes through the front door's ``rr.tlsio.TlsStream`` (``ssl.SSLObject``
over memory BIOs on the same raw socket, the same one-attempt-then-watcher rule
inside): a read is ``recv_nowait`` first and, only when nothing whole is there,
``recv`` with a per-call timeout; a write is its ``sendall`` with a timeout. The
next request after one waits for the loop's poll first there too when the stream
holds nothing to decrypt (``TlsStream.drained``).

What it must never do: let a peer's bytes crash it, grow its buffers without
bound, or touch another connection. Every wait on the socket has a deadline;
every buffer has a cap from the listener's limits. It knows no other protocol:
on a port shared with h2c, a sniffed preface or an ``Upgrade: h2c`` request
ends ``serve`` with a ``SwitchProtocol`` value the front door
(``rr.transport``) acts on.

Timeouts (all from the listener config):

- a new connection's first byte must arrive within ``first_byte_timeout``
  (expiry → silent close: there is no request to answer);
- the first request's head and body must arrive within ``request_timeout``
  (expiry → 408 + close);
- a reused connection waits ``keep_alive_timeout`` for the next request: expiry
  with nothing received closes silently, expiry mid-request → 408;
- slowloris: from the first byte of a request, after a 1 s grace, the average
  rate over the time spent *waiting* for bytes must stay ≥
  ``min_bytes_per_second`` or the connection closes silently (time the handler
  spends computing between manual-mode reads does not count against the peer).

Mailbox protocol (messages this process accepts):

- ``(rr.resp.DRAIN, deadline)`` — only while a ``Loop`` response runs; passed to
  its ``on_info``. Otherwise drain is signalled through the listener's
  ``draining`` flag (checked before every response: the answer says
  ``connection: close``) and, for a connection still idle after the drain's
  grace, by ``exit(pid, "shutdown")``.
- ``(rr.resp.CLOSED,)`` — sent by this connection's close watcher while a
  ``Loop`` runs: the client went away.
- any other message while a ``Loop`` runs goes to the loop's ``on_info``.
- while a WebSocket session runs, the session's mailbox protocol applies
  (``rr.ws.session``): its reader's chunks, ``(DRAIN, deadline)`` (→ close
  1001), and any other message to the handler's ``handle_info``.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
import gevent.hub
from gevent.exceptions import ConcurrentObjectUseError
from gevent.hub import Waiter
from gevent.socket import wait_write

import supervisors
from rr import exchange, telemetry
from rr import response as resp
from rr.exchange import BodyError, ClientGone
from rr.http1 import codec
from rr.http2.codec import PREFACE as _H2_PREFACE
from rr.httpdate import http_date
from rr.log import current_request, get_logger
from rr.request import NO_BODY, Headers, Request, init_request, new_request
from rr.tlsio import TlsStream
from rr.ws import session as ws_session

if TYPE_CHECKING:
    from rr.runtime import ListenerRuntime

_log = get_logger("rr.http1")
_monotonic = time.monotonic

_REJECTED = ("rr", "request", "rejected")

RECV_SIZE = 65536
# After an error response we read (and discard) at most this much, for at most
# LINGER_SECONDS, so the peer sees our response instead of a reset.
LINGER_BYTES = 65536
LINGER_SECONDS = 1.0
# A buffered body at least this large goes out next to its head (``sendmsg``), not copied
# behind it: measured cheaper from 4 KiB (docs/bench_rr.md).
GATHER_MIN = 4096
# Bytes of pipelined responses held back for one write.
HOLD_LIMIT = 65536
# Requests one connection serves from its buffer before it lets the event loop poll I/O.
UNPOLLED_MAX = 16
_ONE_TURN = 1e-6  # a timer this short fires on the loop's next turn, after its I/O poll
# Unread manual-mode body left by a handler: drained up to this many bytes to keep
# the connection, else the connection closes.
MAX_DRAIN_UNREAD = 65536

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_END_KEEP = b"\r\n"
_END_CLOSE = b"connection: close\r\n\r\n"


class _Close(ClientGone):
    """Internal: end the connection now, silently (timeouts, EOF, slowloris)."""


@dataclass(frozen=True, slots=True)
class SwitchProtocol:
    """``serve``'s hand-off: the connection continues as ``protocol`` (``"http2"``).

    ``initial``: bytes already read (they start with the h2 preface).
    ``upgrade``: for ``Upgrade: h2c``, ``(HTTP2-Settings payload, request, body)``
    — the request becomes stream 1.
    """

    protocol: str
    initial: bytes
    upgrade: tuple[bytes, Request, bytes] | None = None


class _Switch(Exception):
    def __init__(self, to: SwitchProtocol) -> None:
        self.to = to


_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
# Request fields that belong to the h1 Upgrade dance, not to the request served over h2.
_UPGRADE_FIELDS = frozenset({"connection", "upgrade", "http2-settings", "keep-alive", "proxy-connection",
                             "transfer-encoding", "te"})


class _Reject(Exception):
    """Internal: answer ``status`` and close (framing is in doubt)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


# -- the connection ---------------------------------------------------------


class Http1Conn:
    def __init__(self, sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str, *,
                 proxy: Any = None, peer_cert: dict[str, Any] | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self.proxy = proxy
        self.peer_cert = peer_cert
        self.runtime = runtime
        self.config = runtime.config
        self.scheme = scheme
        self.is_tls = scheme == "https"
        # Plain TCP: the non-blocking OS socket under gevent's wrapper, met directly (one
        # attempt first, gevent's io watchers only when it would block); TLS is a TlsStream.
        raw = getattr(sock, "_sock", None) if not self.is_tls else None
        self.raw: Any = raw if raw is not None and hasattr(sock, "_read_event") else None
        self.tls: TlsStream | None = sock if isinstance(sock, TlsStream) else None
        self.buf = b""
        # Responses held back while more pipelined requests are already buffered: written
        # with the next write, before any read, or at 64 KiB (one write for a whole batch).
        self.held: list[bytes | memoryview] = []
        self.held_len = 0
        # A streamed body's bytes on plain TCP wait in ``held`` until the handler next blocks
        # (``hold``): a loop callback writes them then (``flush_held``), in the hub.
        self.flush_armed = False
        loop = sock.hub.loop if self.raw is not None else None
        # libev's loop counts its iterations (``data`` writes the first of a turn at once);
        # a loop that does not (libuv) writes every streamed chunk at once, as TLS does.
        self.loop = loop if hasattr(loop, "iteration") else None
        self.sent_turn = -1  # the loop iteration of this process's last streamed write
        self.flusher: Any = None  # the write watcher of a flush the socket took only part of
        self.flush_failed = False  # a flush in the hub failed: the peer is gone
        self.done = False  # serve ended: a late flush must not touch the socket
        self.idle = True
        self.requests = 0
        self.pid = supervisors.self()
        self.in_loop = False
        self.close_reason = "normal"
        # slowloris accounting for the request in flight
        self.rate_bytes = 0
        self.rate_waited = 0.0
        self.min_bps = self.config.min_bytes_per_second
        self.poll_first = False  # the next read waits for the poll first (serve_requests)
        # That wait's timer (keep_alive_timeout): made once, restarted for each wait.
        self.idle_timer: Any = None
        self.unpolled = 0  # requests served since this process last waited on its socket
        self.started = _monotonic()
        # h2c on a shared plain-TCP port: the preface is sniffed, Upgrade: h2c honoured.
        self.h2c = scheme == "http" and "http2" in self.config.protocols
        # the response in flight (this object is the exchange's sink)
        self.keep_alive = False
        self.version = "HTTP/1.1"
        self.chunked = False
        self.body_reader: BodyReader | None = None
        self.last_fields: list[tuple[str, str]] | None = None  # request_headers' memo
        self.last_headers: Headers | None = None
        self.linger_after = False
        self.watcher: supervisors.Pid | None = None

    # -- socket reads with deadlines ----------------------------------------

    def recv(self, deadline: float) -> bytes:
        """One ``recv`` bounded by ``deadline`` and the slowloris rule.

        Raises ``_Close`` on EOF or slowloris, ``socket.timeout`` at the deadline.
        On plain TCP the OS socket is tried first; only when it would block does the
        process wait on the socket's read watcher, with one timer for the wait.
        """
        if self.held:
            self.sendall(b"")  # never wait for the peer while its answers sit here
        now = _monotonic()
        wait = deadline - now
        slow = False
        if self.min_bps and self.rate_bytes:
            budget = max(1.0, self.rate_bytes / self.min_bps) - self.rate_waited
            if budget < wait:
                wait, slow = budget, True
        if wait <= 0:
            if slow:
                self.close_reason = "slow_client"
                raise _Close()
            raise TimeoutError()
        raw = self.raw
        if raw is None:
            if self.tls is not None:
                if self.poll_first:  # the next request, after one: through the poll
                    self.poll_first = False
                    if self.recv_polled(wait, self.tls.sock) is not None:
                        later = _monotonic()  # readable: the read below finds the bytes
                        wait, now = wait - (later - now), later
                return self.recv_tls(wait, slow, now)
            self.unpolled = 0  # another wrapped socket: it may have parked, the loop may have polled
            return self.recv_wrapped(wait, slow, now)
        if self.poll_first:  # the next request, after one: through the poll (serve_requests)
            self.poll_first = False
            data = self.recv_polled(wait)
            if data is None:  # woken without bytes (or the watcher was taken): the general wait
                later = _monotonic()
                data = self.recv_waiting(wait - (later - now), slow, later)
        else:
            try:
                data = raw.recv(RECV_SIZE)
            except BlockingIOError:
                data = None  # wait outside the handler: an idle wait must not hold the exception
            except OSError:
                self.close_reason = "peer_error"
                raise _Close() from None
        if data is None:
            data = self.recv_waiting(wait, slow, now)
        if not data:
            self.close_reason = "peer_closed"
            raise _Close()
        self.rate_bytes += len(data)
        return data

    def recv_polled(self, wait: float, tls_sock: Any = None) -> bytes | None:
        """A request served and nothing buffered: wait for the next one on the read watcher,
        through the loop's poll. The same wait as ``recv_waiting`` with the connection's own
        timer (``keep_alive_timeout``, which ``wait`` is, less the microseconds since the
        deadline was set), restarted rather than made per request. Plain TCP: the bytes, or
        None when woken without bytes or the watcher is taken (the caller waits as usual).
        TLS (``tls_sock``, the socket under the stream): ``b""`` once readable, without
        reading (the caller decrypts), None when the watcher is taken."""
        sock = self.sock if tls_sock is None else tls_sock
        watcher = sock._read_event
        timeout = self.config.keep_alive_timeout
        if watcher.callback is not None or not timeout - 1.0 < wait <= timeout:
            return None
        self.unpolled = 0
        hub = sock.hub
        timer = self.idle_timer
        if timer is None:
            timer = self.idle_timer = hub.loop.timer(timeout)
        waiter = Waiter(hub)
        switch = waiter.switch
        watcher.start(switch, True)
        timer.start(switch, False)
        try:
            readable = waiter.get()
        finally:
            watcher.stop()
            timer.stop()
            # Not counted in rate_waited: no byte of the next request has arrived yet, and
            # the slowloris rule measures a request from its first byte (an idle keep-alive
            # connection is keep_alive_timeout's business).
        if not readable:
            raise TimeoutError()
        if tls_sock is not None:
            return b""
        try:
            return self.raw.recv(RECV_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            self.close_reason = "peer_error"
            raise _Close() from None

    def recv_waiting(self, wait: float, slow: bool, now: float) -> bytes:
        """Plain TCP, nothing to read yet: wait (at most ``wait`` s) on the read watcher."""
        self.unpolled = 0  # only a wait lets the loop poll: a read that found bytes does not
        raw = self.raw
        end = now + wait
        try:
            while True:
                if wait <= 0 or not _wait_io(self.sock, self.sock._read_event, wait):
                    if slow:
                        self.close_reason = "slow_client"
                        raise _Close()
                    raise TimeoutError()
                try:
                    return raw.recv(RECV_SIZE)
                except BlockingIOError:  # woken without data: wait for what is left
                    wait = end - _monotonic()
                except OSError:
                    self.close_reason = "peer_error"
                    raise _Close() from None
        finally:
            if self.rate_bytes:  # the rule runs from the request's first byte (see recv_polled)
                self.rate_waited += _monotonic() - now

    def recv_tls(self, wait: float, slow: bool, now: float) -> bytes:
        """TLS: one read attempt first (``recv_nowait``: one ``recv_into``, then every whole
        record decrypted); only when nothing whole is there, ``recv`` with a timeout."""
        tls = self.tls
        assert tls is not None
        tls.timeout = wait  # bounds the send of TLS's own records (a key update's answer)
        try:
            data = tls.recv_nowait(RECV_SIZE)
        except OSError as exc:
            raise self._read_failed(exc, slow) from None
        if data is None:
            waits = tls.waits
            data = self.recv_wrapped(wait, slow, now)
            if tls.waits != waits:
                self.unpolled = 0  # it parked on the socket: the loop polled meanwhile
            return data
        return self._counted(data)

    def recv_wrapped(self, wait: float, slow: bool, now: float) -> bytes:
        """TLS (``rr.tlsio.TlsStream``, or any wrapped socket): ``recv`` with a per-call timeout."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError as exc:
            raise self._read_failed(exc, slow) from None
        finally:
            if self.rate_bytes:  # the rule runs from the request's first byte (see recv_polled)
                self.rate_waited += _monotonic() - now
        return self._counted(data)

    def _read_failed(self, exc: OSError, slow: bool) -> BaseException:
        """What a failed wrapped read raises: the ``TimeoutError`` itself (the caller's idle or
        request timeout), or a close naming why (a slow client, a socket error)."""
        if isinstance(exc, TimeoutError):
            if not slow:
                return exc
            self.close_reason = "slow_client"
        else:
            self.close_reason = "peer_error"
        return _Close()

    def _counted(self, data: bytes) -> bytes:
        """A wrapped read's bytes, counted for the rate check (none: the peer closed)."""
        if not data:
            self.close_reason = "peer_closed"
            raise _Close()
        self.rate_bytes += len(data)
        return data

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``: one non-blocking send first (almost always enough),
        then waits on the socket's write watcher, all bounded by ``request_timeout``."""
        if self.held:
            if self.flusher is not None:
                self.flusher.stop()  # the rest of a partial flush goes out here, in order
            self.held.append(data)
            data = b"".join(self.held)
            self.held.clear()
            self.held_len = 0
        if self.flush_failed:
            raise ClientGone()
        raw = self.raw
        try:
            if raw is None:  # TLS
                tls = self.tls
                if tls is not None:
                    tls.timeout = self.config.request_timeout  # TlsStream.settimeout, without the call
                    tls.sendall(data)
                    return
                self.sock.settimeout(self.config.request_timeout)
                self.sock.sendall(data)
                return
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            self.send_waiting(memoryview(data), sent)
        except OSError:
            self.close_reason = "peer_error"
            raise ClientGone() from None

    def send_parts(self, parts: list[bytes | memoryview]) -> None:
        """Plain TCP: write ``parts`` (held answers first) with one ``sendmsg``, without
        concatenating them; a partial write (send buffer full) goes on as ``sendall``'s does."""
        if self.held:
            if self.flusher is not None:
                self.flusher.stop()
            parts = [*self.held, *parts]
            self.held.clear()
            self.held_len = 0
        if self.flush_failed:
            raise ClientGone()
        try:
            try:
                sent = self.raw.sendmsg(parts)
            except BlockingIOError:
                sent = 0
            total = 0
            for part in parts:
                total += len(part)
            if sent < total:
                self.send_waiting(memoryview(b"".join(parts)), sent)
        except OSError:
            self.close_reason = "peer_error"
            raise ClientGone() from None

    def send_waiting(self, view: memoryview, sent: int) -> None:
        """Plain TCP, the send buffer is full: wait on the write watcher and send the rest."""
        raw = self.raw
        end = _monotonic() + self.config.request_timeout
        total = len(view)
        while sent < total:
            left = end - _monotonic()
            if left <= 0 or not _wait_io(self.sock, self.sock._write_event, left):
                raise TimeoutError()
            try:
                sent += raw.send(view[sent:])
            except BlockingIOError:
                continue

    def hold(self, data: bytes) -> None:
        """Plain TCP, a streamed body's bytes: kept in ``held`` until this process next
        blocks, when a loop callback writes them (``flush_held``), so bytes a handler sends
        without blocking in between go out in one write. Any write or read of this process
        takes them first; at ``HOLD_LIMIT`` they go out here, waiting for the socket
        (backpressure) as ``sendall`` does."""
        if self.flush_failed:
            raise ClientGone()
        if self.held_len + len(data) >= HOLD_LIMIT:
            self.sendall(data)  # what is held, then ``data``: a large chunk alone is not copied
            return
        self.held.append(data)
        self.held_len += len(data)
        if not self.flush_armed:
            self.flush_armed = True
            self.sock.hub.loop.run_callback(self.flush_held)

    def flush_held(self) -> None:
        """In the hub, once the process that held bytes blocked (or yielded): one
        non-blocking ``send`` of ``held``. What the socket does not take stays first in
        ``held`` and the socket's write watcher sends it when it can (or this process's
        next write takes it over); a failure marks the peer gone (``ClientGone`` at the
        next write)."""
        self.flush_armed = False
        held = self.held
        if not held or self.done:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            held.clear()
            self.held_len = 0
            self.flush_failed = True
            if self.close_reason == "normal":
                self.close_reason = "peer_error"
            if self.flusher is not None:
                self.flusher.stop()
            return
        if sent == len(data):
            held.clear()
            self.held_len = 0
            if self.flusher is not None:
                self.flusher.stop()
            return
        rest = memoryview(data)[sent:]  # not a copy: a watcher turn may take only a few KiB
        held[:] = [rest]
        self.held_len = len(rest)
        if self.flusher is None:
            self.flusher = self.sock.hub.loop.io(self.raw.fileno(), 2)
        if not self.flusher.active:
            self.flusher.start(self.flush_held)

    # -- the loop: receive, decode, dispatch, encode, send -------------------

    def serve(self) -> SwitchProtocol | None:
        """Serve requests until the connection ends; a ``SwitchProtocol`` hands it over."""
        try:
            self.serve_requests()
        except _Switch as switch:
            return switch.to
        except _Reject as rej:
            self.reject(rej.status, rej.reason)
        except ClientGone:
            pass
        finally:
            if self.held and self.raw is not None and not self.flush_failed:
                # Ended while bytes were held (killed mid-stream): one attempt, no wait.
                try:
                    self.raw.send(b"".join(self.held))
                except OSError:
                    pass
            self.done = True
            self.held.clear()
            if self.flusher is not None:
                self.flusher.close()
                self.flusher = None
            if self.idle_timer is not None:
                self.idle_timer.close()
                self.idle_timer = None
        return None

    def serve_requests(self) -> None:
        runtime = self.runtime
        limits = runtime.limits
        config = self.config
        while True:
            # No early return when a drain has begun: the client's next request may already
            # be on the wire. A connection idle when the drain starts is closed lingering by
            # the drain after its grace; one that answers a request during it says
            # ``connection: close`` and ends (``handle`` returns False).
            self.idle = not self.buf
            if self.requests:
                # The last request stays bound for logging until here (a crash report of its
                # process carries its id); an idle keep-alive connection must not keep it alive.
                current_request.set(None)
            self.rate_bytes = len(self.buf)
            self.rate_waited = 0.0
            timeout = config.request_timeout if self.requests == 0 else config.keep_alive_timeout
            deadline = _monotonic() + timeout
            head = self.read_head(limits, deadline)
            self.idle = False
            self.requests += 1
            self.unpolled += 1
            runtime.requests_served += 1
            if not self.handle(head, deadline):
                if self.held:
                    self.sendall(b"")
                if self.linger_after:
                    self.linger()
                return
            if supervisors.mailbox_size(self.pid) and not self.in_loop:
                self.flush_mailbox()
            # Let other connections run: a client that always has its next request ready
            # (fast keep-alive, pipelining) would otherwise never see this process block, and
            # the others would wait (measured: p99 150 ms → 5 ms at equal throughput).
            # Plain TCP with nothing buffered: the next request is awaited through the loop's
            # I/O poll (no read attempt first), so every connection is served in the order its
            # bytes arrived, one request per poll — as an epoll-driven server does. Reading
            # first let a connection whose client was quick serve request after request from
            # the callback queue (a read that found bytes reset ``unpolled``) while those that
            # had to wait sat until the queue ran dry (docs/bench_rr.md: p99 4-9x p50).
            # TLS the same when the stream holds nothing to decrypt (``TlsStream.drained``).
            if not self.buf and (self.raw is not None or (self.tls is not None and self.tls.drained())):
                self.poll_first = True
                continue
            # A pipelined request is already buffered (or TLS bytes are): sleep(0) lets ready processes
            # run but not the loop's I/O poll (gevent runs callbacks for up to its 5 ms switch
            # interval first), so after UNPOLLED_MAX requests served without waiting on the
            # socket, wait for one loop turn.
            if self.unpolled >= UNPOLLED_MAX:
                self.unpolled = 0
                gevent.sleep(_ONE_TURN)
            else:
                gevent.sleep(0)

    def read_head(self, limits: codec.Limits, deadline: float) -> codec.RequestHead:
        while True:
            if self.buf and self.h2c and self.requests == 0 and self.buf[:24] == _H2_PREFACE[:len(self.buf)]:
                if len(self.buf) >= len(_H2_PREFACE):
                    raise _Switch(SwitchProtocol("http2", self.buf))
            elif self.buf:
                try:
                    parsed = codec.parse_head(self.buf, limits)
                except codec.ParseError as exc:
                    raise _Reject(exc.status, exc.reason) from None
                if parsed is not None:
                    head, used = parsed
                    self.buf = self.buf[used:] if used < len(self.buf) else b""
                    return head
            first = self.requests == 0 and not self.buf
            try:
                data = self.recv(min(deadline, self.started + self.config.first_byte_timeout) if first
                                 else deadline)
            except TimeoutError:
                if first:  # nothing at all arrived: no request to answer
                    self.close_reason = "first_byte_timeout"
                    raise _Close() from None
                if self.requests == 0 or self.buf:
                    raise _Reject(408, "request_timeout") from None
                self.close_reason = "idle_timeout"
                raise _Close() from None
            self.idle = False
            self.buf = self.buf + data if self.buf else data

    def flush_mailbox(self) -> None:
        """Drop control messages that arrived outside a Loop (e.g. a late drain)."""
        while supervisors.mailbox_size():
            supervisors.receive(timeout=0)

    # -- one request ---------------------------------------------------------

    def handle(self, head: codec.RequestHead, deadline: float) -> bool:
        """Serve one request; returns whether the connection stays open."""
        runtime = self.runtime
        config = self.config
        body_reader = BodyReader(self, head, deadline) if head.content_length or head.chunked else None
        req = new_request(Request)  # Request(...) without the kwargs dict (see Request)
        init_request(
            req,
            head.method,
            head.target,
            head.path,
            head.query,
            head.version,
            self.request_headers(head.headers),
            scheme=self.scheme,
            host=head.host,
            peer=self.peer,
            listener=runtime.name,
            source=body_reader or NO_BODY,
            proxy=self.proxy,
            peer_cert=self.peer_cert,
        )
        if self.h2c and head.upgrade is not None and self.requests == 1:
            self.maybe_upgrade(head, req, body_reader)
        self.keep_alive = (
            head.keep_alive
            and self.requests < config.max_keep_alive_requests
            and not runtime.draining
        )
        self.version = head.version
        self.chunked = False
        self.body_reader = body_reader
        try:
            exchange.Exchange(req, self, config, runtime).run(runtime.app)
        except ClientGone:
            if self.close_reason == "normal":
                self.close_reason = "peer_error"
            return False
        except exchange.Aborted:
            if self.close_reason == "normal":
                self.close_reason = "response_aborted"
            return False
        finally:
            self.body_reader = None
        keep_alive = self.keep_alive
        if body_reader is not None:
            if body_reader.broken:  # framing in doubt: the peer may still be sending
                self.linger_after = True
                keep_alive = False
                if self.close_reason == "normal":
                    self.close_reason = body_reader.broken
            elif keep_alive and not body_reader.finish_unread():
                keep_alive = False
        if not keep_alive and self.close_reason == "normal":
            self.close_reason = "keep_alive_done"
        return keep_alive and not runtime.draining

    def request_headers(self, fields: list[tuple[str, str]]) -> Headers:
        """The request's ``Headers``: the previous request's when its head came from the same
        cached parse (``codec``'s head cache hands out one read-only list per distinct head).
        Headers has no mutators, so sharing it is safe, and its index is built once."""
        headers = self.last_headers
        if headers is None or fields is not self.last_fields:
            headers = self.last_headers = Headers(fields)
            self.last_fields = fields
        return headers

    def maybe_upgrade(self, head: codec.RequestHead, req: Request, body_reader: Any) -> None:
        """``Upgrade: h2c`` (RFC 7540 §3.2): answer 101 and hand over, the request as stream 1.

        Only on the first request of a plain-TCP connection, with exactly one
        well-formed ``HTTP2-Settings`` named in ``Connection``; otherwise the
        request is served over HTTP/1.1 as if Upgrade were absent.
        """
        if "h2c" not in {t.strip().lower() for t in (head.upgrade or "").split(",")}:
            return
        settings = [v for k, v in head.headers if k == "http2-settings"]
        if len(settings) != 1 or "http2-settings" not in head.connection_tokens:
            return
        value = settings[0].strip()
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, binascii.Error):
            return
        if len(raw) % 6:
            return
        body = b""
        if body_reader is not None:
            try:
                body = b"".join(iter(lambda: body_reader.read(RECV_SIZE), b""))
            except BodyError as exc:
                raise _Reject(exc.status, exc.reason) from None
        fields = [(k, v) for k, v in head.headers if k not in _UPGRADE_FIELDS]
        h2req = Request(head.method, head.target, head.path, head.query, "HTTP/2", Headers(fields),
                        scheme=self.scheme, host=head.host, peer=self.peer, listener=self.runtime.name,
                        proxy=self.proxy, peer_cert=self.peer_cert)
        self.runtime.requests_served -= 1  # counted again as stream 1
        self.sendall(_SWITCHING)
        raise _Switch(SwitchProtocol("http2", self.buf, (raw, h2req, body)))

    # -- the exchange's sink -----------------------------------------------------

    def _keep(self, close: bool) -> bool:
        keep = self.keep_alive and not close and not self.runtime.draining
        if keep and self.body_reader is not None and self.body_reader.broken:
            keep = False
        self.keep_alive = keep
        return keep

    def respond(self, status: int, fields: list[tuple[str, str]], length: int | None, body: bytes,
                close: bool) -> None:
        keep = self._keep(close)
        if len(body) >= GATHER_MIN and self.raw is not None:
            # A large body is not copied behind its head: both go to the kernel in one sendmsg.
            self.send_parts([b"".join((
                codec.STATUS_LINES[status], codec.field_lines(fields),
                b"" if length is None else b"content-length: %d\r\n" % length,
                _END_KEEP if keep else _END_CLOSE,
            )), body])
            return
        out = b"".join((
            codec.STATUS_LINES[status], codec.field_lines(fields),
            b"" if length is None else b"content-length: %d\r\n" % length,
            _END_KEEP if keep else _END_CLOSE, body,
        ))
        if keep and self.buf and self.buf.find(b"\r\n\r\n") >= 0 and self.held_len + len(out) < HOLD_LIMIT:
            # The next pipelined request is already here: answer it in the same write.
            self.held.append(out)
            self.held_len += len(out)
        else:
            self.sendall(out)

    def head(self, status: int, fields: list[tuple[str, str]], length: int | None, close: bool,
             end: bool) -> None:
        keep = self._keep(close)
        parts = _head_parts(status, fields, length)
        if length is None and not end:
            if self.version == "HTTP/1.1":
                self.chunked = True
                parts.append(_CHUNKED)
            else:  # HTTP/1.0: the body runs to the close
                keep = self.keep_alive = False
        parts.append(_END_KEEP if keep else _END_CLOSE)
        if end or self.raw is None:
            self.sendall(b"".join(parts))
        else:  # the body follows: the head goes out with its first bytes, or when this process blocks
            self.hold(b"".join(parts))

    def interim(self, status: int, fields: list[tuple[str, str]]) -> bool:
        """A 1xx head (103 Early Hints); an HTTP/1.0 client gets none (RFC 9110 §15.2)."""
        if self.version != "HTTP/1.1":
            return False
        self.sendall(b"".join((codec.status_line(status), codec.field_lines(fields), b"\r\n")))
        return True

    def data(self, data: bytes, end: bool) -> None:
        if self.chunked:
            if end:
                self.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data) if data else b"0\r\n\r\n")
                return
            if not data:
                return
            data = b"%x\r\n%s\r\n" % (len(data), data)
        elif end or not data:
            if data or self.held:
                self.sendall(data)
            return
        # A body still going on. Plain TCP: the first write since the loop last polled goes out
        # at once (as when nothing follows); a second one in the same turn is held (``hold``)
        # and leaves with the rest when this process blocks.
        loop = self.loop
        if loop is None:
            self.sendall(data)
        elif self.held or loop.iteration == self.sent_turn:
            self.hold(data)
        else:
            self.sent_turn = loop.iteration
            self.sendall(data)

    def trailers(self, fields: list[tuple[str, str]]) -> None:
        # Only a chunked body can carry trailers; otherwise they are dropped (RFC 9112 §7.1.2).
        if self.chunked:
            self.sendall(b"0\r\n" + codec.field_lines(fields) + b"\r\n")

    def sendfile(self, fd: int, offset: int, length: int) -> None:
        try:
            if self.is_tls:
                exchange.copy_file(fd, offset, length, self.data)
            else:
                self.send_file_zero_copy(fd, offset, length)
        except exchange.FileTruncated:
            self.close_reason = "file_truncated"
            self.abort()
            raise exchange.Aborted() from None

    def abort(self) -> None:
        """The response cannot be completed: close without its proper end."""
        self.keep_alive = False
        if self.close_reason == "normal":
            self.close_reason = "response_aborted"

    def loop_enter(self) -> None:
        self.watcher = supervisors.spawn(watch_close, self.sock, self.pid, label="rr.conn.close_watch")
        self.in_loop = True
        self.runtime.loops.add(self.pid)
        return None

    def loop_exit(self) -> None:
        self.in_loop = False
        self.runtime.loops.discard(self.pid)
        self.stop_watcher()

    def stop_watcher(self) -> None:
        """End the close watcher (it only peeks; nothing it holds needs waiting for)."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            supervisors.exit(watcher, "kill")

    def websocket(self, accepted: Any, shape: resp.WebSocket, req: Request) -> None:
        """Answer 101 and become the WebSocket session (``rr.ws.session``) until it ends.

        Bytes already read past the handshake (a first frame in the same read)
        are the stream's first bytes. The connection closes when the session ends.
        """
        self.keep_alive = False
        self.sendall(b"".join((codec.status_line(101), codec.field_lines(accepted.fields), b"\r\n")))
        self.close_reason = "websocket"
        runtime = self.runtime
        runtime.loops.add(self.pid)  # drain sends (DRAIN, deadline): the session closes 1001
        if runtime.draining:
            supervisors.send(self.pid, (resp.DRAIN, runtime.drain_deadline))
        try:
            ws_session.run(SocketStream(self), req, shape.handler, shape.state, self.config.ws,
                           accepted.extensions)
        finally:
            runtime.loops.discard(self.pid)

    def send_file_zero_copy(self, fd: int, offset: int, length: int) -> None:
        if self.held:
            self.sendall(b"")  # the head
        out = self.sock.fileno()
        end = offset + length
        while offset < end:
            try:
                sent = os.sendfile(out, fd, offset, end - offset)
            except BlockingIOError:
                try:
                    wait_write(out, timeout=self.config.request_timeout)
                except TimeoutError:
                    raise ClientGone() from None
                continue
            except OSError:
                raise ClientGone() from None
            if sent == 0:  # the file shrank under us: the promised length cannot be met
                raise exchange.FileTruncated()
            offset += sent

    # -- error answers -----------------------------------------------------

    def reject(self, status: int, reason: str) -> None:
        """Answer a request we could not parse (or timed out) and close lingering."""
        self.close_reason = reason
        if telemetry.enabled(_REJECTED):
            telemetry.execute(
                _REJECTED, {}, {"listener": self.runtime.name, "peer": self.peer,
                                "status": status, "reason": reason},
            )
        body = codec.status_line(status)[9:-2]  # the reason phrase as a tiny text body
        head = codec.encode_head(status, [
            ("date", http_date()),
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ])
        try:
            self.sendall(head + body)
        except ClientGone:
            return
        self.linger()

    def linger(self) -> None:
        """Half-close, then discard what the peer still sends (bounded), so our
        response is not destroyed by a reset from unread input."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = _monotonic() + LINGER_SECONDS
            seen = 0
            while seen < LINGER_BYTES:
                left = deadline - _monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    break
                seen += len(data)
        except OSError:
            pass


def _wait_io(sock: Any, watcher: Any, timeout: float) -> bool:
    """Park this process until ``watcher`` (a socket's read or write io watcher) fires or
    ``timeout`` s pass (one loop timer, only for this wait); False on timeout."""
    if watcher.callback is not None:
        # A Loop's close watcher, just told to exit (``stop_watcher``), lets go of the socket
        # when its exit is delivered, on the loop's next turn: give it that turn.
        gevent.sleep(0)
        if watcher.callback is not None:  # same rule as gevent's own socket waits
            raise ConcurrentObjectUseError("socket already waited on by another process")
    hub = sock.hub
    waiter = Waiter(hub)
    timer = hub.loop.timer(timeout)
    watcher.start(waiter.switch, True)
    timer.start(waiter.switch, False)
    try:
        return bool(waiter.get())
    finally:
        watcher.stop()
        timer.close()


def _head_parts(status: int, fields: list[tuple[str, str]], length: int | None) -> list[bytes]:
    """Status line, fields and (when known) content-length of a response head, unterminated."""
    parts = [codec.status_line(status), codec.field_lines(fields)]
    if length is not None:
        parts.append(b"content-length: %d\r\n" % length)
    return parts


class BodyReader:
    """The request body, read from the connection on demand (both buffering modes).

    ``Content-Length`` bodies are counted down; chunked bodies go through the
    codec's ``ChunkedDecoder`` (which enforces ``max_content_length`` from the
    declared chunk sizes). ``Expect: 100-continue`` is answered on the first read,
    so a handler that never reads the body never invites it. A body that cannot
    be read raises ``BodyError`` (408 stalled, 400/413 from the decoder) and
    marks the reader ``broken``: the connection's framing is in doubt.
    """

    def __init__(self, conn: Http1Conn, head: codec.RequestHead, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.expect_continue = head.expect_continue
        self.remaining = head.content_length or 0
        self.decoder = codec.ChunkedDecoder(conn.runtime.limits) if head.chunked else None
        self.pending: list[bytes] = []
        self.done = not head.chunked and not self.remaining
        self.broken = ""

    def _fill(self) -> bytes:
        conn = self.conn
        if self.expect_continue:
            self.expect_continue = False
            if not conn.buf:
                conn.sendall(_CONTINUE)
        if conn.buf:
            data, conn.buf = conn.buf, b""
            return data
        try:
            return conn.recv(self.deadline)
        except TimeoutError:
            self.broken = "body_timeout"
            raise BodyError(408, "body_timeout") from None

    def read(self, max_bytes: int) -> bytes:
        if self.broken:
            raise BodyError(400, self.broken)
        if self.done and not self.pending:
            return b""
        if self.decoder is None:
            conn = self.conn
            if not conn.buf:
                conn.buf = self._fill()
            buf = conn.buf
            take = min(max_bytes, self.remaining, len(buf))
            if take == len(buf):  # the whole buffer (the common case): no slicing
                data, conn.buf = buf, b""
            else:
                data, conn.buf = buf[:take], buf[take:]
            self.remaining -= take
            self.done = not self.remaining
            return data
        while not self.pending and not self.done:
            try:
                self.pending = [p for p in self.decoder.feed(self._fill()) if p]
            except codec.ParseError as exc:
                self.broken = exc.reason
                raise BodyError(exc.status, exc.reason) from None
            if self.decoder.done:
                self.done = True
                self.conn.buf = self.decoder.unused
        if not self.pending:
            return b""
        piece = self.pending[0]
        if len(piece) <= max_bytes:
            self.pending.pop(0)
            return piece
        self.pending[0] = piece[max_bytes:]
        return piece[:max_bytes]

    def finish_unread(self) -> bool:
        """Drain a little unread body so the connection can be reused; False → close."""
        if self.done and not self.pending:
            return True
        if self.expect_continue:  # never invited: the client has not sent it
            return False
        budget = MAX_DRAIN_UNREAD
        try:
            while budget > 0:
                chunk = self.read(budget)
                if not chunk:
                    return True
                budget -= len(chunk)
        except (BodyError, _Reject, ClientGone):
            return False
        return False


_READABLE = "rr.ws.readable"


class SocketStream:
    """The h1 socket after a 101, as the WebSocket session's ``MessageStream``.

    No reader process (an idle session is one process, not two): an io
    watcher on the socket posts ``(_READABLE, stream)`` to the session's
    process (this connection process) once bytes can be read, and the
    session's loop reads one chunk without blocking (``incoming``). The
    watcher is armed again only in ``consumed``, after the session processed
    the chunk, so a client that sends faster than the session works fills
    the kernel's buffers and TCP's window, not the server's memory. A TLS
    socket can hold decrypted bytes that no readiness reports (``pending``):
    those are read before the watcher is armed again. Writes are the
    session's own (the same process). Leftover bytes of the connection's
    buffer come first.
    """

    def __init__(self, conn: Http1Conn) -> None:
        self.conn = conn
        self.pending, conn.buf = conn.buf, b""
        self.owner = supervisors.self()
        sock = conn.sock
        raw = getattr(sock, "_sock", None)
        # The non-blocking OS socket under gevent's wrapper; TLS reads go through the TlsStream.
        self.raw_recv = raw.recv if raw is not None and not conn.is_tls else None
        self.watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        self.closed = False
        self.tls = conn.is_tls
        self.ready = (_READABLE, self)  # the one message the watcher posts, made once
        supervisors.send(self.owner, self.ready)  # the first chunk: leftover bytes or a read

    def _readable(self) -> None:
        """The watcher's callback (in the hub): one message, then quiet until ``consumed``."""
        self.watcher.stop()
        supervisors.send(self.owner, self.ready)

    def incoming(self, msg: Any) -> bytes | bool:
        if msg is not self.ready:
            return False
        if self.closed:
            return True
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        try:
            if self.raw_recv is not None:
                return self.raw_recv(ws_session.READ_SIZE)
            sock = self.conn.sock
            timeout = sock.timeout
            sock.settimeout(0.0)
            try:
                return sock.recv(ws_session.READ_SIZE)
            finally:
                sock.settimeout(timeout)
        except (BlockingIOError, ssl.SSLWantReadError):
            self.watcher.start(self._readable)
            return True
        except ssl.SSLWantWriteError:  # TLS wants to write before it can read: wait, then retry
            try:
                wait_write(self.conn.sock.fileno(), timeout=self.conn.config.request_timeout)
            except TimeoutError:
                return b""
            supervisors.send(self.owner, self.ready)
            return True
        except OSError:
            return b""

    def consumed(self, n: int) -> None:
        if self.closed:
            return
        if self.tls and self.conn.sock.pending():
            supervisors.send(self.owner, self.ready)
        else:
            self.watcher.start(self._readable)

    def read(self, max_bytes: int) -> bytes:
        """A blocking read (the ``ByteStream`` side; the session uses ``incoming``)."""
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        sock = self.conn.sock
        while True:
            try:
                return sock.recv(max_bytes)
            except TimeoutError:
                continue
            except OSError:
                return b""

    def write(self, data: bytes) -> None:
        self.conn.sendall(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.watcher.stop()
            self.watcher.close()
        self.conn.linger()


def watch_close(sock: Any, owner: supervisors.Pid) -> None:
    """Tell ``owner`` once when the peer closes ``sock`` (used while a Loop runs).

    Peeks without consuming: if the client sends bytes instead (a pipelined
    request), the watch ends and those bytes stay for the next request.
    """
    try:
        sock.settimeout(None)
        data = sock.recv(1, socket.MSG_PEEK)
    except OSError:
        data = b""
    except ValueError:  # TLS sockets refuse flags: fall back to waiting for readability only
        from gevent.socket import wait_read

        wait_read(sock.fileno())
        return
    if not data:
        supervisors.send(owner, (resp.CLOSED,))


