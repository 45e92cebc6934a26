"""The HTTP/1.1 connection process: one per TCP (or TLS) connection.

What it owns: one socket, one read buffer, and the codec state for the
request in flight. It reads, parses, dispatches and writes *itself* — the h1
request path has no mailbox hop — and runs the handler for each request in
turn (keep-alive, pipelining: leftover bytes are carried into the next parse).

What it must never do: let a peer's bytes crash it, grow its buffers without
bound, or touch another connection. Every wait on the socket has a deadline;
every buffer has a cap from the listener's limits.

Timeouts (all from the listener config):

- the first request's head and body must arrive within ``request_timeout``
  (expiry → 408 + close, even when nothing at all arrived);
- a reused connection waits ``keep_alive_timeout`` for the next request: expiry
  with nothing received closes silently, expiry mid-request → 408;
- slowloris: from the first byte of a request, after a 1 s grace, the average
  rate over the time spent *waiting* for bytes must stay ≥
  ``min_bytes_per_second`` or the connection closes silently (time the handler
  spends computing between manual-mode reads does not count against the peer).

Mailbox protocol (messages this process accepts):

- ``(rr.resp.DRAIN, deadline)`` — only while a ``Loop`` response runs; passed to
  its ``on_info``. Otherwise drain is signalled through the listener's
  ``draining`` flag (checked before every response and every idle wait) and,
  for a connection idle between requests, by ``exit(pid, "shutdown")``.
- ``(rr.resp.CLOSED,)`` — sent by this connection's close watcher while a
  ``Loop`` runs: the client went away.
- any other message while a ``Loop`` runs goes to the loop's ``on_info``.

Response shapes on h1: ``Response`` (one ``sendall``), ``Stream`` (chunked,
trailers; plain body + close for HTTP/1.0), ``Loop`` (chunked, runs here),
``Sendfile`` (``os.sendfile`` on TCP, read+send on TLS). ``WebSocket`` → 501
until the WebSocket layer lands.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import gevent
from gevent.socket import wait_write

import supervisors
from rr import dispatch, telemetry
from rr import response as resp
from rr.http1 import codec
from rr.http2.codec import PREFACE as _H2_PREFACE
from rr.http2.conn import serve_h2
from rr.httpdate import date_line, http_date
from rr.log import get_logger
from rr.request import NO_BODY, Headers, Request

if TYPE_CHECKING:
    from rr.listener import ListenerRuntime

_log = get_logger("rr.http1")
_monotonic = time.monotonic

_REJECTED = ("rr", "request", "rejected")
_CONN_CLOSE = ("rr", "conn", "close")

RECV_SIZE = 65536
SENDFILE_CHUNK = 65536
# After an error response we read (and discard) at most this much, for at most
# LINGER_SECONDS, so the peer sees our response instead of a reset.
LINGER_BYTES = 65536
LINGER_SECONDS = 1.0
# Bytes of pipelined responses held back for one write.
HOLD_LIMIT = 65536
# Unread manual-mode body left by a handler: drained up to this many bytes to keep
# the connection, else the connection closes.
MAX_DRAIN_UNREAD = 65536

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = frozenset({204, 304})


class ClientGone(ConnectionError):
    """Raised by ``send``/``push`` when the client has closed the connection."""


class _Close(Exception):
    """Internal: end the connection now, silently (timeouts, EOF, slowloris)."""


class _SwitchH2(Exception):
    """Internal: hand the connection to HTTP/2 (h2c preface sniffed, or Upgrade: h2c answered 101)."""

    def __init__(self, initial: bytes, upgrade: Any = None) -> None:
        self.initial = initial
        self.upgrade = upgrade


_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
# Request fields that belong to the h1 Upgrade dance, not to the request served over h2.
_UPGRADE_FIELDS = frozenset({"connection", "upgrade", "http2-settings", "keep-alive", "proxy-connection",
                             "transfer-encoding", "te"})


class _Reject(Exception):
    """Internal: answer ``status`` and close (framing is in doubt)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


# Framing headers rr computes itself; a handler's own values are dropped
# (``connection: close`` from a handler is honoured as a request to close).
_OWNED = frozenset({"content-length", "transfer-encoding", "connection", "date"})


# -- the connection ---------------------------------------------------------


class Http1Conn:
    def __init__(self, sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str) -> None:
        self.sock = sock
        self.peer = peer
        self.runtime = runtime
        self.config = runtime.config
        self.scheme = scheme
        self.is_tls = scheme == "https"
        # The non-blocking OS socket under gevent's wrapper, for the first send attempt.
        raw = getattr(sock, "_sock", None)
        self.raw_send = raw.send if raw is not None and not self.is_tls else None
        self.buf = b""
        # Responses held back while more pipelined requests are already buffered: written
        # with the next write, before any read, or at 64 KiB (one write for a whole batch).
        self.held: list[bytes] = []
        self.held_len = 0
        self.idle = True
        self.requests = 0
        self.pid = supervisors.self()
        self.in_loop = False
        self.close_reason = "normal"
        # slowloris accounting for the request in flight
        self.rate_bytes = 0
        self.rate_waited = 0.0
        self.min_bps = self.config.min_bytes_per_second
        # h2c on a shared plain-TCP port: the preface is sniffed, Upgrade: h2c honoured.
        self.h2c = scheme == "http" and "http2" in self.config.protocols

    # -- socket reads with deadlines ----------------------------------------

    def recv(self, deadline: float) -> bytes:
        """One ``recv`` bounded by ``deadline`` and the slowloris rule.

        Raises ``_Close`` on EOF or slowloris, ``socket.timeout`` at the deadline.
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
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            if slow:
                self.close_reason = "slow_client"
                raise _Close() from None
            raise
        except OSError:
            self.close_reason = "peer_error"
            raise _Close() from None
        finally:
            self.rate_waited += _monotonic() - now
        if not data:
            self.close_reason = "peer_closed"
            raise _Close()
        self.rate_bytes += len(data)
        return data

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``: one non-blocking send first (almost always enough),
        then a cooperative ``sendall`` bounded by ``request_timeout`` for the rest."""
        if self.held:
            self.held.append(data)
            data = b"".join(self.held)
            self.held.clear()
            self.held_len = 0
        sent = 0
        try:
            if self.raw_send is not None:
                try:
                    sent = self.raw_send(data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
            self.sock.settimeout(self.config.request_timeout)
            self.sock.sendall(memoryview(data)[sent:] if sent else data)
        except OSError:
            self.close_reason = "peer_error"
            raise ClientGone() from None

    # -- the loop: receive, decode, dispatch, encode, send -------------------

    def serve(self) -> None:
        runtime = self.runtime
        limits = runtime.limits
        config = self.config
        while True:
            self.idle = not self.buf
            if runtime.draining and self.idle:
                self.close_reason = "drain"
                return
            self.rate_bytes = len(self.buf)
            self.rate_waited = 0.0
            timeout = config.request_timeout if self.requests == 0 else config.keep_alive_timeout
            deadline = _monotonic() + timeout
            head = self.read_head(limits, deadline)
            self.idle = False
            self.requests += 1
            runtime.requests_served += 1
            if not self.handle(head, deadline):
                if self.held:
                    self.sendall(b"")
                return
            if supervisors.mailbox_size() and not self.in_loop:
                self.flush_mailbox()
            # Let other connections run: a client that always has its next request ready
            # (fast keep-alive, pipelining) would otherwise never see this process block, and
            # the others would wait (measured: p99 150 ms → 5 ms at equal throughput).
            gevent.sleep(0)

    def read_head(self, limits: codec.Limits, deadline: float) -> codec.RequestHead:
        while True:
            if self.buf and self.h2c and self.requests == 0 and self.buf[:24] == _H2_PREFACE[:len(self.buf)]:
                if len(self.buf) >= len(_H2_PREFACE):
                    raise _SwitchH2(self.buf)
            elif self.buf:
                try:
                    parsed = codec.parse_head(self.buf, limits)
                except codec.ParseError as exc:
                    raise _Reject(exc.status, exc.reason) from None
                if parsed is not None:
                    head, used = parsed
                    self.buf = self.buf[used:]
                    return head
            try:
                data = self.recv(deadline)
            except TimeoutError:
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
        req = Request(
            head.method,
            head.target,
            head.path,
            head.query,
            head.version,
            Headers(head.headers),
            scheme=self.scheme,
            host=head.host,
            peer=self.peer,
            listener=runtime.name,
            source=body_reader or NO_BODY,
        )
        if body_reader is not None and config.body_buffering == "auto":
            req._body = body_reader.read_all()
        if self.h2c and head.upgrade is not None and self.requests == 1:
            self.maybe_upgrade(head, req, body_reader)
        keep_alive = (
            head.keep_alive
            and self.requests < config.max_keep_alive_requests
            and not runtime.draining
        )
        started = dispatch.begin(req)
        result = dispatch.call(runtime.app, req, started)
        if isinstance(result, resp.WebSocket):
            result = dispatch.NOT_IMPLEMENTED
        if runtime.draining:  # drain began while the handler ran: this is the last response
            keep_alive = False
        is_head = head.method == "HEAD"
        status = getattr(result, "status", 500)
        try:
            if isinstance(result, resp.Response):
                keep_alive = self.send_response(req, result, is_head, keep_alive, started)
            elif isinstance(result, resp.Stream):
                keep_alive = self.send_stream(req, result, is_head, keep_alive, started, head.version)
            elif isinstance(result, resp.Loop):
                keep_alive = self.send_loop(req, result, is_head, keep_alive, started, head.version)
            else:
                keep_alive = self.send_file(req, result, is_head, keep_alive, started)
        except ClientGone:
            dispatch.finish(req, status, started)
            return False
        dispatch.finish(req, status, started)
        if config.access_log:
            _log.info("request", method=req.method, path=req.target, status=status, peer=self.peer)
        if body_reader is not None:
            if body_reader.charged:
                supervisors.release(body_reader.charged)
            if keep_alive and not body_reader.finish_unread():
                keep_alive = False
        if not keep_alive and self.close_reason == "normal":
            self.close_reason = "keep_alive_done"
        return keep_alive and not runtime.draining

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
            body = req._body if req._body is not None else body_reader.read_all()
            if body_reader.charged:
                supervisors.release(body_reader.charged)
                body_reader.charged = 0
        fields = [(k, v) for k, v in head.headers if k not in _UPGRADE_FIELDS]
        h2req = Request(head.method, head.target, head.path, head.query, "HTTP/2", Headers(fields),
                        scheme=self.scheme, host=head.host, peer=self.peer, listener=self.runtime.name)
        self.runtime.requests_served -= 1  # counted again as stream 1
        self.sendall(_SWITCHING)
        raise _SwitchH2(self.buf, (raw, h2req, body))

    # -- response encoding ---------------------------------------------------

    def head_bytes(
        self,
        status: int,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        length: int | None,
        chunked: bool = False,
    ) -> tuple[bytes, bool]:
        """Encode status line and headers, adding date, framing and connection.

        Returns the bytes and the (possibly lowered) keep-alive decision: a
        handler's own ``connection: close`` is honoured. Raises
        ``codec.HeaderInjection`` for invalid names or values.
        """
        parts = [codec.status_line(status)]
        date = None
        encode_field = codec.encode_field
        for name, value in headers:
            if name in _OWNED:
                if name == "connection":
                    if "close" in value.lower():
                        keep_alive = False
                elif name == "date":
                    date = encode_field(name, value)
                continue
            parts.append(encode_field(name, value))
        parts.append(date or date_line())
        if length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        elif chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        return b"".join(parts), keep_alive

    def safe_head(self, req: Request, started: float, status: int, headers: list[tuple[str, str]],
                  keep_alive: bool, length: int | None, chunked: bool = False) -> tuple[bytes, bool, int]:
        """``head_bytes``, falling back to a logged 500 when the handler's head is invalid."""
        if 100 <= status < 200:
            exc: BaseException = ValueError(f"a handler may not return the interim status {status}")
        else:
            try:
                data, keep_alive = self.head_bytes(status, headers, keep_alive, length, chunked)
                return data, keep_alive, status
            except (codec.HeaderInjection, ValueError) as err:
                exc = err
        error = dispatch.crashed(req, started, exc)
        data, keep_alive = self.head_bytes(500, error.headers, keep_alive, len(error.body))
        return data + error.body, keep_alive, -500

    def send_response(self, req: Request, result: resp.Response, is_head: bool,
                      keep_alive: bool, started: float) -> bool:
        status = result.status
        body = result.body
        if status in _NO_BODY_STATUS:
            data, keep_alive, code = self.safe_head(req, started, status, result.headers, keep_alive, None)
            body = b""
        else:
            length = len(body)
            if is_head and not body:
                declared = resp.get_header(result, "content-length")
                if declared is not None and declared.isdigit():
                    length = int(declared)
            data, keep_alive, code = self.safe_head(req, started, status, result.headers, keep_alive, length)
        if code < 0:
            self.sendall(data)
            return keep_alive
        out = data if is_head or not body else data + body
        if keep_alive and b"\r\n\r\n" in self.buf and self.held_len + len(out) < HOLD_LIMIT:
            # The next pipelined request is already here: answer it in the same write.
            self.held.append(out)
            self.held_len += len(out)
        else:
            self.sendall(out)
        return keep_alive

    def send_stream(self, req: Request, result: resp.Stream, is_head: bool, keep_alive: bool,
                    started: float, version: str) -> bool:
        no_body = is_head or result.status in _NO_BODY_STATUS
        # A Stream that declares its content-length is sent unframed and counted;
        # otherwise chunked on 1.1, and unframed-until-close on 1.0.
        declared = resp.get_header(result, "content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        chunked = version == "HTTP/1.1" and length is None
        if not chunked and length is None:
            keep_alive = False
        state: dict[str, Any] = {"head": False, "done": False, "keep_alive": keep_alive, "sent": 0}

        def write_head() -> None:
            if state["head"]:
                return
            state["head"] = True
            data, state["keep_alive"], code = self.safe_head(
                req, started, result.status, result.headers, state["keep_alive"],
                None if result.status in _NO_BODY_STATUS else length,
                chunked=chunked and not no_body,
            )
            self.sendall(data)
            if code < 0:
                raise ClientGone("response head was invalid")

        def send(data: bytes = b"", fin: bool = False, trailers: Any = None) -> None:
            if state["done"]:
                raise RuntimeError("send() after fin")
            write_head()
            if data and not no_body:
                if length is not None:
                    state["sent"] += len(data)
                    if state["sent"] > length:
                        self.close_reason = "stream_overran_content_length"
                        raise ClientGone("stream sent more than its content-length")
                self.sendall(codec.encode_chunk(data) if chunked else data)
            if fin:
                state["done"] = True
                if chunked and not no_body:
                    self.sendall(codec.encode_last_chunk(resp.header_list(trailers) or None))
                elif length is not None and not no_body and state["sent"] != length:
                    self.close_reason = "stream_short_of_content_length"
                    raise ClientGone("stream ended before its content-length")

        try:
            result.fn(send)
        except ClientGone:
            raise
        except Exception as exc:
            if not state["head"]:
                error = dispatch.crashed(req, started, exc)
                return self.send_response(req, error, is_head, keep_alive, started)
            dispatch.crashed(req, started, exc)
            self.close_reason = "handler_crashed"
            raise ClientGone() from None
        if not state["done"]:
            send(b"", fin=True)
        return bool(state["keep_alive"])

    def send_loop(self, req: Request, result: resp.Loop, is_head: bool, keep_alive: bool,
                  started: float, version: str) -> bool:
        chunked = version == "HTTP/1.1"
        if not chunked:
            keep_alive = False
        data, keep_alive, code = self.safe_head(
            req, started, result.status, result.headers, keep_alive, None, chunked=chunked
        )
        self.sendall(data)
        if code < 0:
            return keep_alive

        def push(chunk: bytes) -> None:
            if chunk and not is_head:
                self.sendall(codec.encode_chunk(chunk) if chunked else chunk)

        watcher = supervisors.spawn(watch_close, self.sock, self.pid, label="rr.conn.close_watch")
        self.in_loop = True
        self.runtime.loops.add(self.pid)
        try:
            try:
                outcome = dispatch.run_loop(req, started, result, push, (ClientGone,))
            except dispatch.LoopCrashed:
                self.close_reason = "handler_crashed"
                raise ClientGone() from None
            if outcome == "closed":
                self.close_reason = "peer_closed"
                raise ClientGone()
        finally:
            self.in_loop = False
            self.runtime.loops.discard(self.pid)
            supervisors.exit(watcher, "kill")
        if chunked and not is_head:
            self.sendall(codec.encode_last_chunk())
        return keep_alive

    def send_file(self, req: Request, result: resp.Sendfile, is_head: bool, keep_alive: bool,
                  started: float) -> bool:
        try:
            fd = os.open(result.path, os.O_RDONLY)
        except OSError as exc:
            error = dispatch.crashed(req, started, exc)
            return self.send_response(req, error, is_head, keep_alive, started)
        try:
            size = os.fstat(fd).st_size
            offset = result.offset
            length = result.length if result.length is not None else max(0, size - offset)
            if offset < 0 or length < 0 or offset + length > size:
                error = dispatch.crashed(req, started, ValueError("sendfile range outside the file"))
                return self.send_response(req, error, is_head, keep_alive, started)
            no_body = is_head or result.status in _NO_BODY_STATUS
            data, keep_alive, code = self.safe_head(
                req, started, result.status, result.headers, keep_alive,
                None if result.status in _NO_BODY_STATUS else length,
            )
            self.sendall(data)
            if code < 0 or no_body or not length:
                return keep_alive
            if self.is_tls:
                self.copy_file(fd, offset, length)
            else:
                self.sendfile(fd, offset, length)
            return keep_alive
        finally:
            os.close(fd)

    def sendfile(self, fd: int, offset: int, length: int) -> None:
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
                self.close_reason = "file_truncated"
                raise ClientGone()
            offset += sent

    def copy_file(self, fd: int, offset: int, length: int) -> None:
        while length > 0:
            chunk = os.pread(fd, min(SENDFILE_CHUNK, length), offset)
            if not chunk:
                self.close_reason = "file_truncated"
                raise ClientGone()
            self.sendall(chunk)
            offset += len(chunk)
            length -= len(chunk)

    # -- error answers -----------------------------------------------------

    def reject(self, status: int, reason: str) -> None:
        """Answer a request we could not parse (or timed out) and close lingering."""
        self.close_reason = reason
        if _REJECTED in telemetry._table:
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


class BodyReader:
    """The request body, read from the connection on demand (both buffering modes).

    ``Content-Length`` bodies are counted down; chunked bodies go through the
    codec's ``ChunkedDecoder`` (which enforces ``max_content_length`` from the
    declared chunk sizes). ``Expect: 100-continue`` is answered on the first read,
    so a handler that never reads the body never invites it.
    """

    def __init__(self, conn: Http1Conn, head: codec.RequestHead, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.expect_continue = head.expect_continue
        self.remaining = head.content_length or 0
        self.decoder = codec.ChunkedDecoder(conn.runtime.limits) if head.chunked else None
        self.pending: list[bytes] = []
        self.done = not head.chunked and not self.remaining
        self.charged = 0

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
            raise _Reject(408, "body_timeout") from None

    def read(self, max_bytes: int) -> bytes:
        if self.done and not self.pending:
            return b""
        if self.decoder is None:
            conn = self.conn
            if not conn.buf:
                conn.buf = self._fill()
            take = min(max_bytes, self.remaining, len(conn.buf))
            data, conn.buf = conn.buf[:take], conn.buf[take:]
            self.remaining -= take
            self.done = not self.remaining
            return data
        while not self.pending and not self.done:
            try:
                self.pending = [p for p in self.decoder.feed(self._fill()) if p]
            except codec.ParseError as exc:
                raise _Reject(exc.status, exc.reason) from None
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

    def read_all(self) -> bytes:
        """The whole body, charged to the process's heap budget as it is buffered
        (``handler_spawn.max_heap``: going over ends the connection process)."""
        parts = []
        while chunk := self.read(RECV_SIZE):
            supervisors.charge(len(chunk))
            self.charged += len(chunk)
            parts.append(chunk)
        return b"".join(parts)

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
        except (_Reject, _Close, ClientGone):
            return False
        return False


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


def serve_connection(sock: Any, peer: Any, runtime: ListenerRuntime) -> None:
    """The conn process's body: TLS handshake, then the h1 loop, then cleanup."""
    started = _monotonic()
    conn: Http1Conn | None = None
    requests, close_reason = 0, "tls_handshake"
    pid = supervisors.self()
    runtime.conns[pid] = None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        scheme = "http"
        if runtime.config.tls is not None:
            sock = runtime.tls_wrap(sock)
            if sock is None:
                return
            scheme = "https"
        protocols = runtime.config.protocols
        if scheme == "https":
            alpn = sock.selected_alpn_protocol()
            use_h2 = alpn == "h2" or (alpn is None and "http1" not in protocols)
        else:
            use_h2 = "http1" not in protocols  # h2c prior knowledge
        if use_h2:
            h2conn = serve_h2(sock, peer, runtime, scheme)
            requests, close_reason = h2conn.requests, h2conn.close_reason
            return
        conn = Http1Conn(sock, peer, runtime, scheme)
        runtime.conns[pid] = conn
        try:
            conn.serve()
        except _Reject as rej:
            conn.reject(rej.status, rej.reason)
        except (_Close, ClientGone):
            pass
        except supervisors.Exit as exc:
            # rr.drain ends an idle connection with exit "shutdown"; a request may have
            # arrived just then. Linger so the client sees a clean close (retryable),
            # not a reset caused by its unread bytes.
            if exc.reason == "shutdown":
                conn.close_reason = "drain"
                conn.linger()
            raise
        except _SwitchH2 as switch:
            conn = None
            h2conn = serve_h2(sock, peer, runtime, scheme, switch.initial, switch.upgrade)
            requests, close_reason = h2conn.requests, h2conn.close_reason
    finally:
        if conn is not None:
            requests, close_reason = conn.requests, conn.close_reason
        runtime.conns.pop(pid, None)
        runtime.active -= 1
        try:
            sock.close()
        except OSError:
            pass
        if _CONN_CLOSE in telemetry._table:
            telemetry.execute(
                _CONN_CLOSE,
                {"duration": _monotonic() - started, "requests": requests},
                {"listener": runtime.name, "peer": peer, "reason": close_reason},
            )
