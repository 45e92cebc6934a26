"""The front door: an accepted socket becomes a protocol's connection.

What it is: the body of every connection process (``serve_connection``, started
by the listener's connection supervisor for each accepted socket). It sets
the socket up, reads the PROXY protocol header when the listener asks for
one (``proxy_protocol``: before TLS, bounded by its ``timeout``, from trusted
sources only; the header's client becomes the connection's peer), runs the
TLS handshake (bounded by ``tls_handshake_timeout``; the connection then
speaks through a ``rr.tlsio.TlsStream``: ``ssl.SSLObject`` over memory BIOs
on the raw non-blocking socket, in place of the socket), picks the protocol —
ALPN on TLS; on plain TCP the configured protocols, with the h2 preface
sniffed and ``Upgrade: h2c`` honoured on a port shared with HTTP/1.1 — and
runs that protocol's connection loop in this same process. An
HTTP/1.1 connection that switches to h2c hands back a ``SwitchProtocol`` value
and the front door continues it as h2: no protocol imports another.

What it owns: the connection's registration in the listener
(``runtime.conns``, what drain walks) and the ``("rr", "conn", "close")``
telemetry event with the close reason, once for every protocol. The
connection's slot (``runtime.active``) is counted by the acceptor and given
back by the connection supervisor when it sees the process end
(``rr.listener._conn_ended``): a process killed before it runs a line never
reaches its own ``finally``.

What it must never do: parse a request or write a response. A failed
handshake (a plaintext request to a TLS port, a client rejecting the
certificate, a load balancer's connect-and-close health check) is a normal
end: a debug log line and the close event with reason ``tls_handshake``,
never a crash report. So is a refused PROXY header (an untrusted source, a
malformed, oversized or truncated header, or none within the timeout): the
connection is closed without a byte written, close reason ``proxy_protocol``.

Drain: an idle HTTP/1.1 connection ended by drain (``exit(pid, "shutdown")``)
lingers (half-close, discard briefly) so a request that arrived just then sees
a clean close, not a reset; an h2 connection says ``GOAWAY`` first (in
``rr.http2.conn``).
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

import supervisors
from rr import proxy_protocol, telemetry
from rr.http1.conn import Http1Conn
from rr.http2.conn import serve_h2
from rr.log import get_logger
from rr.tlsio import TlsStream

if TYPE_CHECKING:
    from rr.config import ProxyProtocolOptions
    from rr.runtime import ListenerRuntime

_log = get_logger("rr.transport")
_monotonic = time.monotonic

_CONN_CLOSE = ("rr", "conn", "close")


class HandshakeFailed(Exception):
    """The TLS handshake did not complete (the peer's doing, not a crash)."""


def tls_handshake(raw: Any, runtime: ListenerRuntime) -> Any:
    """Server-side TLS over ``raw`` bounded by ``tls_handshake_timeout``; raises ``HandshakeFailed``."""
    config = runtime.config
    assert config.tls is not None, "the handshake runs only on a TLS listener"
    try:
        # ssl.SSLObject over memory BIOs on the raw socket (rr.tlsio), from any
        # ssl.SSLContext (the user's own context included).
        tls = TlsStream(raw, config.tls)
        tls.settimeout(config.tls_handshake_timeout)
        tls.do_handshake()
        return tls
    except (OSError, ValueError) as exc:
        raise HandshakeFailed(f"{type(exc).__name__}: {exc}") from None


class ProxyRefused(Exception):
    """No acceptable PROXY protocol header (the connection is closed silently)."""


def read_proxy_header(sock: Any, peer: Any, options: ProxyProtocolOptions) -> proxy_protocol.ProxyHeader:
    """Take exactly the PROXY header off ``sock`` (nothing after it), within ``options.timeout``.

    Peeks, so the bytes after the header (TLS records, the request) stay in the
    socket for whoever reads next. While the header is incomplete every byte
    peeked belongs to it, so those are taken and the next peek waits for more:
    no busy loop, no over-read. Raises ``ProxyRefused``.
    """
    if not peer or peer[0] not in options.trusted:
        raise ProxyRefused("source not trusted")
    deadline = _monotonic() + options.timeout
    buf = b""
    try:
        while True:
            left = deadline - _monotonic()
            if left <= 0:
                raise ProxyRefused("timeout")
            sock.settimeout(left)
            peeked = sock.recv(options.max_size - len(buf), socket.MSG_PEEK)
            if not peeked:
                raise ProxyRefused("closed before a complete header")
            got = proxy_protocol.parse(buf + peeked, options.max_size)
            take = len(peeked) if got is None else got[1] - len(buf)
            while take > 0:
                sock.settimeout(max(deadline - _monotonic(), 0.001))
                chunk = sock.recv(take)
                if not chunk:
                    raise ProxyRefused("closed before a complete header")
                buf += chunk
                take -= len(chunk)
            if got is not None:
                return got[0]
            if len(buf) >= options.max_size:
                raise ProxyRefused("header over max_size")
    except proxy_protocol.ProxyHeaderError as exc:
        raise ProxyRefused(str(exc)) from None
    except OSError as exc:  # socket.timeout is an OSError
        raise ProxyRefused(f"{type(exc).__name__}: {exc}") from None
    finally:
        try:
            sock.settimeout(None)
        except OSError:
            pass


def peer_certificate(tls: Any) -> dict[str, Any] | None:
    """The client's verified certificate on a listener that asks for one (else None)."""
    if tls.context.verify_mode == ssl.CERT_NONE:
        return None
    return tls.getpeercert() or None


def choose_protocol(sock: Any, runtime: ListenerRuntime, scheme: str) -> str:
    """``"http1"`` or ``"http2"`` for a fresh connection (before any byte is read)."""
    protocols = runtime.config.protocols
    if scheme == "https":
        alpn = sock.selected_alpn_protocol()
        return "http2" if alpn == "h2" or (alpn is None and "http1" not in protocols) else "http1"
    return "http1" if "http1" in protocols else "http2"  # h2-only: prior knowledge


def serve_connection(sock: Any, peer: Any, runtime: ListenerRuntime) -> None:
    """The connection process's body: handshake, protocol, then close accounting."""
    started = _monotonic()
    pid = supervisors.self()
    runtime.conns[pid] = None
    conn: Any = None
    config = runtime.config
    header = peer_cert = None
    close_reason = "proxy_protocol" if config.proxy_protocol is not None else "tls_handshake"
    protocol = None  # known once TLS (ALPN) or the first bytes chose it
    try:
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if config.proxy_protocol is not None:
            try:
                header = read_proxy_header(sock, peer, config.proxy_protocol)
            except ProxyRefused as exc:
                _log.debug("proxy protocol header refused", peer=peer, reason=str(exc))
                return
            peer = header.client or peer
        close_reason = "tls_handshake"
        scheme = "http"
        if config.tls is not None:
            try:
                sock = tls_handshake(sock, runtime)
            except HandshakeFailed as exc:
                _log.debug("tls handshake failed", peer=peer, reason=str(exc))
                return
            scheme = "https"
            peer_cert = peer_certificate(sock)
        close_reason = "normal"
        if choose_protocol(sock, runtime, scheme) == "http2":
            protocol = "HTTP/2"
            conn = serve_h2(sock, peer, runtime, scheme, proxy=header, peer_cert=peer_cert)
            return
        protocol = "HTTP/1.1"
        conn = h1 = Http1Conn(sock, peer, runtime, scheme, proxy=header, peer_cert=peer_cert)
        runtime.conns[pid] = h1
        try:
            switch = h1.serve()
        except supervisors.Exit as exc:
            # rr.drain ends an idle connection with exit "shutdown"; a request may have
            # arrived just then. Linger so the client sees a clean close (retryable),
            # not a reset caused by its unread bytes. A busy one (a Loop) just ends.
            if exc.reason == "shutdown" and h1.idle and not h1.in_loop:
                h1.close_reason = "drain"
                h1.linger()
            raise
        if switch is not None:
            runtime.conns[pid] = None
            protocol = "HTTP/2"
            conn = serve_h2(sock, peer, runtime, scheme, switch.initial, switch.upgrade, proxy=header)
    finally:
        if conn is not None:
            close_reason = conn.close_reason
        # The slot (runtime.active) is given back by the connection supervisor, which sees
        # this process end whatever happens to it (rr.listener._conn_ended).
        runtime.conns.pop(pid, None)
        try:
            sock.close()
        except OSError:
            pass
        if telemetry.enabled(_CONN_CLOSE):
            telemetry.execute(
                _CONN_CLOSE,
                {"duration": _monotonic() - started, "requests": conn.requests if conn is not None else 0},
                {"listener": runtime.name, "peer": peer, "reason": close_reason, "protocol": protocol},
            )
