"""Listener options: schema, defaults, validation into a frozen ``Config``.

What it owns: every option ``rr.start_listener`` accepts, its default, and
the one line of *why* behind each limit. ``load(opts)`` turns the user's dict
into a frozen ``Config`` or raises ``ValueError`` naming the option and what is
accepted. An unknown key is an error (a typo must not silently fall back to
a default).

What it must never do: open sockets or start processes. Validation is pure,
so ``rr.child_spec`` can fail early, before any supervisor is involved.

Addresses: each listener has exactly one of ``port`` (TCP, on ``ip`` or on
every address), ``unix`` (a Unix domain socket path; the file is created at
start and removed on stop) or ``socket`` (a listening socket someone else
bound, which rr dups and never closes: how ``rr.workers`` shares the
master's socket with its workers).

Protocols: ``protocols`` is a list of names or ``(name, {sub-options})``
pairs (on TLS, h2 is preferred by ALPN whenever it is listed). Known names are ``http1``, ``http2`` and
``http3``; each has its own nested options. ``http1`` and ``http2`` are
served over TLS via ALPN; on plain TCP as h2c prior knowledge when ``http2``
is the only protocol, or beside ``http1`` on one port (the h2 preface
sniffed, ``Upgrade: h2c`` honoured). ``http3`` is served over QUIC on a UDP
socket with the listener's port number; it requires ``tls`` (a dict with
``certfile``/``keyfile``, or ``certfile``/``keyfile`` in its own sub-options
when ``tls`` is an ``ssl.SSLContext``), and cannot be the only protocol: a
client finds it through the ``alt-svc`` header the TCP protocols send.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rr.forwarded import Trusted

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Http1Options:
    # An 8 KiB request line fits every sane URL; beyond it is abuse or a bug (→ 414).
    max_request_line: int = 8192
    # One header line: 8 KiB covers large cookies and JWTs (→ 431).
    max_header_line: int = 8192
    # The whole head is what a client can make us buffer before any handler runs (→ 431).
    max_header_block: int = 10240
    # Header count bounds per-request parsing work and dict sizes (→ 431).
    max_header_count: int = 100


@dataclass(frozen=True, slots=True)
class Http2Options:
    # Connection receive window: what all streams together may have in flight to us. Measured
    # (docs/http2_windows.md): 4 MiB lets 10 uploads reach the server's ceiling at 10-50 ms RTT.
    conn_window: int = 4 * 1024 * 1024
    # Per-stream receive window (SETTINGS_INITIAL_WINDOW_SIZE): bounds one stream's unread body;
    # one upload runs at about stream_window / RTT, and a quarter of conn_window leaves room for others.
    stream_window: int = 1024 * 1024
    # Consumed bytes returned to the peer in WINDOW_UPDATEs of at least this size.
    window_refill_threshold: int = 32 * 1024
    # Streams one connection may run at once (each is a process): beyond it → REFUSED_STREAM.
    max_concurrent_streams: int = 100
    # HPACK-encoded header block (HEADERS + CONTINUATION) a client may make us buffer.
    max_header_block: int = 16384
    # Decoded header list size (SETTINGS_MAX_HEADER_LIST_SIZE, RFC 9113 §6.5.2 sizing): over → 431.
    max_header_list_size: int = 32768
    # Flood guards: budgets per connection per ``flood_window`` seconds; over any → GOAWAY
    # ENHANCE_YOUR_CALM. Client RST_STREAMs, refused streams and resets rr sends for a client's
    # stream errors (Rapid Reset, CVE-2023-44487; MadeYouReset, CVE-2025-8671).
    max_resets: int = 200
    max_pings: int = 100
    max_settings: int = 100
    max_priority: int = 1000
    # WINDOW_UPDATE frames beyond two per DATA frame rr sent in the window (stream + connection).
    max_window_updates: int = 1000
    # DATA frames with no payload and no END_STREAM.
    max_empty_data: int = 100
    flood_window: float = 10.0
    # A stream whose response data has waited this long for flow-control window → RST_STREAM(CANCEL).
    stall_timeout: float = 30.0
    # Response bytes one connection's stream workers may have queued at it, not yet framed (all
    # streams together; each also keeps to its window + 16 KiB, at most 64 KiB). Past it workers
    # wait. 1 MiB keeps 16 streams at their full 64 KiB ahead of a reading peer (bytes within
    # the windows go to the socket at once: queueing more adds no speed) and bounds a peer that
    # opens no window to 1 MiB per connection (150 MiB at the default max_clients).
    send_budget: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Http3Options:
    # Decoded request field section (SETTINGS_MAX_FIELD_SECTION_SIZE, RFC 9114 §4.2.2 sizing:
    # name + value + 32 per field), advertised to the client: over → 431.
    max_field_section_size: int = 32768
    # Request streams one connection may have open at once (QUIC MAX_STREAMS for bidirectional
    # streams): each is a process, as on h2.
    max_concurrent_streams: int = 100
    # Connection and per-stream receive windows (QUIC MAX_DATA / MAX_STREAM_DATA). A stream's
    # window reopens only as its handler reads the body, as on h2.
    conn_window: int = 4 * 1024 * 1024
    stream_window: int = 1024 * 1024
    # Answer a new connection's first Initial with a Retry (RFC 9000 §8.1.2): the client proves
    # its address before rr holds any state for it, at one extra round trip.
    retry: int = 0
    # Datagrams a connection process may have waiting in its mailbox; beyond, they are dropped
    # (QUIC recovers from loss) rather than queued without bound.
    max_queued_datagrams: int = 256
    # UDP sockets bound on the port with SO_REUSEPORT, one endpoint process reading each; the
    # kernel spreads clients over them by address and port. One gevent hub is one thread, so more
    # add no parallelism here (docs/http3.md has the measurement); 1 binds without SO_REUSEPORT.
    listeners: int = 1
    # A stream whose response has waited this long on the peer's flow control → reset.
    stall_timeout: float = 30.0
    # Response bytes all streams of a connection together may have queued at it and unsent
    # (rr.stream's send credit), as http2.send_budget: what a client that reads nothing pins.
    send_budget: int = 1024 * 1024
    # Largest UDP payload sent: the ceiling of path MTU discovery once the handshake is complete
    # (never past the client's max_udp_payload_size nor the route's MTU; a size is used only once
    # a probe of it was acknowledged; back to 1200 if the path later seems to drop them).
    # 1200 turns probing off: aioquic's size, which fits every path.
    max_datagram_size: int = 16384
    # Serve WebTransport sessions (``resp.WebTransport``) and HTTP datagrams (RFC 9297): advertises
    # SETTINGS_H3_DATAGRAM and ENABLE_WEBTRANSPORT and QUIC's max_datagram_frame_size.
    webtransport: int = 0
    # Certificate and key for QUIC's TLS 1.3 when ``tls`` is an ``ssl.SSLContext`` (whose files
    # aioquic cannot read back); with a ``tls`` dict its certfile/keyfile are used.
    certfile: str | None = None
    keyfile: str | None = None


@dataclass(frozen=True, slots=True)
class WsOptions:
    """The listener's ``ws`` option: limits of every WebSocket session (``rr.ws``)."""

    # One frame's declared payload (wire bytes): over → close 1009 before its payload is read.
    max_frame_size: int = 1 * MiB
    # One message after reassembly and inflation (what a handler receives): over → close 1009.
    max_message_size: int = 16 * MiB
    # No byte from the client for this long → close 1001 (None: no idle limit).
    idle_timeout: float | None = None
    # The server pings this often (None: never); a pong, like any byte, is activity.
    ping_interval: float | None = None
    # permessage-deflate (RFC 7692) offered by the client is accepted unless False.
    compress: bool = True
    # After rr sends a close frame, how long it waits for the client's before closing.
    close_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ProxyProtocolOptions:
    """The listener's ``proxy_protocol`` option (``rr.proxy_protocol``, read by ``rr.transport``)."""

    # Who may send the header: a connection from anywhere else is closed unread.
    trusted: Trusted = field(default_factory=lambda: Trusted.parse(["127.0.0.1", "::1"]))
    # A proxy sends the header with its first segment: longer is a stalled or hostile peer.
    timeout: float = 3.0
    # A v2 header's bytes (16 + addresses + TLVs); HAProxy's with every TLV is a few hundred.
    max_size: int = 4096


@dataclass(frozen=True, slots=True)
class SpawnOptions:
    """Spawn options for processes that run handlers (the h1 conn process)."""

    max_heap: int | None = None
    mailbox_limit: int | None = None
    mailbox_overflow: str = "kill"

    def as_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.max_heap is not None:
            kw["max_heap"] = self.max_heap
        if self.mailbox_limit is not None:
            kw["mailbox_limit"] = self.mailbox_limit
            kw["mailbox_overflow"] = self.mailbox_overflow
        return kw


@dataclass(frozen=True, slots=True)
class Config:
    port: int
    ip: str | None
    unix: str | None
    socket: socket.socket | None
    handler: Callable[..., Any] | None
    routes: Any
    middlewares: tuple[Any, ...]
    not_found: Callable[..., Any] | None
    redirect_slashes: bool
    tls: ssl.SSLContext | None
    tls_handshake_timeout: float
    protocols: tuple[str, ...]
    http1: Http1Options
    http2: Http2Options
    http3: Http3Options | None
    num_acceptors: int
    socket_backlog: int
    max_clients: int
    max_concurrent_requests: int | None
    shed_concurrent_requests: int | None
    request_timeout: float
    keep_alive_timeout: float
    first_byte_timeout: float
    max_keep_alive_requests: int
    min_bytes_per_second: int
    max_content_length: int
    body_buffering: str
    handler_spawn: SpawnOptions
    graceful_drain: bool
    access_log: bool
    blocking_monitor: float | None
    request_id_header: str | None
    max_response_header_size: int
    alt_svc: str | None
    ws: WsOptions
    proxy_protocol: ProxyProtocolOptions | None
    forwarded_allow_ips: Trusted | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def alpn(self) -> list[str]:
        return alpn_protocols(self.protocols)


_ALPN = {"http1": "http/1.1", "http2": "h2"}
_KNOWN_PROTOCOLS = {"http1": Http1Options, "http2": Http2Options, "http3": Http3Options}


def alpn_protocols(protocols: tuple[str, ...]) -> list[str]:
    """ALPN ids for the TCP protocols (h3 is negotiated over QUIC).

    h2 is preferred whenever it is enabled, whatever the list's order: the
    server's ALPN order decides, and nginx, hypercorn and granian all prefer h2
    when both are on — a user listing ``["http1", "http2"]`` means "both", not
    "HTTP/1.1 for every browser".
    """
    return sorted((_ALPN[p] for p in protocols if p in _ALPN), key=lambda alpn: alpn != "h2")


def _request_id_header(opts: Mapping[str, Any]) -> str | None:
    value = opts.get("request_id_header")
    if value is None:
        return None
    if not isinstance(value, str) or not value or not set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789-"):
        raise _fail("request_id_header", value, "None or a lowercase header name such as 'x-request-id'")
    return value


def _fail(key: str, value: Any, accepted: str) -> ValueError:
    return ValueError(f"invalid listener option {key!r}: {value!r} (accepted: {accepted})")


def _int(opts: Mapping[str, Any], key: str, default: int, lo: int, hi: int = 2**31 - 1) -> int:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(key, value, f"an integer in {lo}..{hi}")
    return value


def _seconds(opts: Mapping[str, Any], key: str, default: float) -> float:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
        raise _fail(key, value, "seconds, a number in (0, 86400]")
    return float(value)


def _bool(opts: Mapping[str, Any], key: str, default: bool) -> bool:
    value = opts.get(key, default)
    if not isinstance(value, bool):
        raise _fail(key, value, "True or False")
    return value


_WINDOW_MAX = 2**31 - 1  # RFC 9113 §6.9.1
_INT_MAX = 2**31 - 1

# (lowest, highest) accepted value of each protocol sub-option.
_HTTP1_BOUNDS = {name: (1, _INT_MAX) for name in Http1Options.__dataclass_fields__}
_HTTP2_BOUNDS = {
    "conn_window": (65535, _WINDOW_MAX),
    "stream_window": (1024, _WINDOW_MAX),
    "window_refill_threshold": (1, _WINDOW_MAX),
    "max_concurrent_streams": (1, _INT_MAX),
    "max_header_block": (1024, 2**24),
    "max_header_list_size": (1024, _INT_MAX),
    "max_resets": (1, _INT_MAX),
    "max_pings": (1, _INT_MAX),
    "max_settings": (1, _INT_MAX),
    "max_priority": (1, _INT_MAX),
    "max_window_updates": (1, _INT_MAX),
    "max_empty_data": (1, _INT_MAX),
    "flood_window": (0, 3600),
    "stall_timeout": (0, 86400),
    "send_budget": (16384, _INT_MAX),  # one chunk (rr.stream.CHUNK) must fit
}
_HTTP3_BOUNDS = {
    "max_field_section_size": (1024, _INT_MAX),
    "max_concurrent_streams": (1, 2**20),
    "conn_window": (65536, 2**40),
    "stream_window": (1024, 2**40),
    "retry": (0, 1),
    "webtransport": (0, 1),
    "max_queued_datagrams": (16, 65536),
    "listeners": (1, 64),
    "send_budget": (65536, 2**31 - 1),
    "stall_timeout": (0, 86400),
    "max_datagram_size": (1200, 65527),
}
# Sub-options given in seconds (a number > lowest bound) rather than an integer.
_SECONDS = {"flood_window", "stall_timeout"}


def _sub_options(protocol: str, raw: Any, cls: type, bounds: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """Validate one protocol's nested options against ``cls``'s fields and ``bounds``."""
    if not isinstance(raw, Mapping):
        raise _fail("protocols", raw, f"{protocol} sub-options as a dict")
    _known_keys(f"protocols.{protocol}", raw, bounds)
    base = cls()
    values: dict[str, Any] = {}
    for key, (lo, hi) in bounds.items():
        name = f"protocols.{protocol}.{key}"
        value = raw.get(key, getattr(base, key))
        if key in _SECONDS:
            if isinstance(value, bool) or not isinstance(value, int | float) or not lo < value <= hi:
                raise _fail(name, value, f"seconds, a number in ({lo}, {hi}]")
            values[key] = float(value)
        else:
            values[key] = _int({name: value}, name, 0, lo, hi)
    return values


def _http1_options(raw: Any) -> Http1Options:
    return Http1Options(**_sub_options("http1", raw, Http1Options, _HTTP1_BOUNDS))


def _http2_options(raw: Any) -> Http2Options:
    values = _sub_options("http2", raw, Http2Options, _HTTP2_BOUNDS)
    threshold = values["window_refill_threshold"]
    if threshold > min(values["conn_window"], values["stream_window"]):
        raise _fail("protocols.http2.window_refill_threshold", threshold,
                    "at most the smaller of conn_window and stream_window")
    return Http2Options(**values)


def _http3_options(raw: Any) -> Http3Options:
    raw = dict(raw) if isinstance(raw, Mapping) else raw
    files: dict[str, Any] = {}
    if isinstance(raw, dict):
        for key in ("certfile", "keyfile"):
            if key in raw:
                value = raw.pop(key)
                if not isinstance(value, str) or not value:
                    raise _fail(f"protocols.http3.{key}", value, "a file path")
                files[key] = value
        for flag in ("retry", "webtransport"):
            if isinstance(raw.get(flag), bool):
                raw[flag] = int(raw[flag])
    values = _sub_options("http3", raw, Http3Options, _HTTP3_BOUNDS)
    return Http3Options(**values, **files)


def _protocols(raw: Any) -> tuple[tuple[str, ...], Http1Options, Http2Options, Http3Options | None]:
    accepted = '"http1", "http2", "http3" or (name, {sub-options}), in a non-empty list'
    if not isinstance(raw, list | tuple) or not raw:
        raise _fail("protocols", raw, accepted)
    names: list[str] = []
    http1 = Http1Options()
    http2 = Http2Options()
    http3: Http3Options | None = None
    for entry in raw:
        sub: Any = None
        if isinstance(entry, str):
            name = entry
        elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
            name, sub = entry
        else:
            raise _fail("protocols", entry, accepted)
        if name not in _KNOWN_PROTOCOLS:
            raise _fail("protocols", name, accepted)
        if name in names:
            raise _fail("protocols", raw, "each protocol at most once")
        if name == "http3":
            http3 = _http3_options(sub if sub is not None else {})
        if name == "http1" and sub is not None:
            http1 = _http1_options(sub)
        if name == "http2" and sub is not None:
            http2 = _http2_options(sub)
        names.append(name)
    if http3 is not None and names == ["http3"]:
        raise _fail("protocols", raw, "http3 beside http1 and/or http2 (clients discover h3 through "
                    "the alt-svc header of a TCP protocol)")
    return tuple(names), http1, http2, http3


def _tls(raw: Any, alpn: list[str]) -> ssl.SSLContext | None:
    if raw is None:
        return None
    if isinstance(raw, ssl.SSLContext):
        if alpn:
            raw.set_alpn_protocols(alpn)
        return raw
    if not isinstance(raw, Mapping):
        raise _fail("tls", raw, "an ssl.SSLContext or a dict with certfile and keyfile")
    allowed = {"certfile", "keyfile", "password", "cafile", "verify_client", "ciphers"}
    _known_keys("tls", raw, allowed)
    if "certfile" not in raw:
        raise _fail("tls", raw, "a dict with at least certfile (and keyfile unless the cert file holds it)")
    return server_context(
        raw["certfile"],
        raw.get("keyfile"),
        password=raw.get("password"),
        cafile=raw.get("cafile"),
        verify_client=_verify_client(raw),
        ciphers=raw.get("ciphers"),
        alpn=alpn,
    )


_VERIFY_MODES = {False: "none", "none": "none", True: "required", "required": "required", "optional": "optional"}


def _verify_client(raw: Mapping[str, Any]) -> str:
    value = raw.get("verify_client", False)
    mode = _VERIFY_MODES.get(value) if isinstance(value, str | bool) else None
    if mode is None:
        raise _fail("tls.verify_client", value, '"none", "optional", "required" (or False / True)')
    if mode != "none" and not raw.get("cafile"):
        raise _fail("tls.verify_client", value, "a client certificate check needs tls.cafile (the CAs to trust)")
    return mode


# TLS 1.2 suites with forward secrecy and an AEAD only; TLS 1.3 suites are all AEAD.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS:!RSA"


def server_context(
    certfile: str,
    keyfile: str | None = None,
    *,
    password: str | None = None,
    cafile: str | None = None,
    verify_client: bool | str = False,
    ciphers: str | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """rr's hardened default server context: TLS 1.2+, AEAD, no compression/renegotiation.

    ``verify_client``: ``"required"`` (or True) refuses a client without a
    certificate signed by ``cafile``'s CAs; ``"optional"`` asks for one and
    checks it if sent; ``"none"`` (or False) does not ask.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_ciphers(ciphers or _TLS12_CIPHERS)
    try:
        ctx.load_cert_chain(certfile, keyfile, password)
    except (OSError, ssl.SSLError) as exc:
        raise _fail("tls", certfile, f"a readable certificate/key pair ({exc})") from None
    if cafile:
        try:
            ctx.load_verify_locations(cafile)
        except (OSError, ssl.SSLError) as exc:
            raise _fail("tls.cafile", cafile, f"a readable PEM file of CA certificates ({exc})") from None
    mode = _VERIFY_MODES.get(verify_client, verify_client)
    if mode == "required":
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif mode == "optional":
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _http3_tls(http3: Http3Options, raw: Any) -> Http3Options:
    """HTTP/3 needs TLS 1.3 from QUIC: the certificate and key files, checked now."""
    if raw is None:
        raise _fail("protocols", "http3", "http3 only with the tls option (QUIC is always encrypted)")
    certfile, keyfile = http3.certfile, http3.keyfile
    if certfile is None and isinstance(raw, Mapping):
        certfile, keyfile = raw.get("certfile"), raw.get("keyfile")
    if certfile is None:
        raise _fail("protocols.http3.certfile", None,
                    "the certificate file for QUIC (tls is an SSLContext, whose files cannot be read back)")
    try:
        from rr.http3.quic import load_certificate

        load_certificate(certfile, keyfile)
    except ImportError:
        raise _fail("protocols", "http3", "http3 with aioquic installed (pip install 'rr[http3]')") from None
    except (OSError, ValueError) as exc:
        raise _fail("protocols.http3.certfile", certfile, f"a readable certificate/key pair ({exc})") from None
    return replace(http3, certfile=certfile, keyfile=keyfile)


def _alt_svc(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip() or any(c in raw for c in "\r\n\0"):
        raise _fail("alt_svc", raw, 'an Alt-Svc field value such as \'h3=":443"; ma=86400\' (no CR/LF)')
    return raw


def _known_keys(prefix: str, raw: Mapping[str, Any], allowed: Any) -> None:
    """A key of ``raw`` outside ``allowed`` fails, named as ``prefix.key``."""
    for key in raw:
        if key not in allowed:
            raise _fail(f"{prefix}.{key}", raw[key], ", ".join(sorted(allowed)))


def _ws_options(raw: Any) -> WsOptions:
    if raw is None:
        return WsOptions()
    if not isinstance(raw, Mapping):
        raise _fail("ws", raw, "a dict of WebSocket options")
    _known_keys("ws", raw, WsOptions.__dataclass_fields__)
    base = WsOptions()
    frame = _int({"ws.max_frame_size": raw.get("max_frame_size", base.max_frame_size)},
                 "ws.max_frame_size", 0, 125, 2**62)
    message = _int({"ws.max_message_size": raw.get("max_message_size", base.max_message_size)},
                   "ws.max_message_size", 0, 125, 2**62)
    optional: dict[str, float | None] = {}
    for key in ("idle_timeout", "ping_interval"):
        value = raw.get(key)
        optional[key] = None if value is None else _seconds({f"ws.{key}": value}, f"ws.{key}", 0)
    close_timeout = _seconds({"ws.close_timeout": raw.get("close_timeout", base.close_timeout)},
                             "ws.close_timeout", 0)
    compress = _bool({"ws.compress": raw.get("compress", base.compress)}, "ws.compress", True)
    return WsOptions(frame, message, optional["idle_timeout"], optional["ping_interval"], compress, close_timeout)


def _trusted(key: str, raw: Any) -> Trusted:
    try:
        return Trusted.parse(raw)
    except ValueError as exc:
        raise _fail(key, raw, f"IP addresses or CIDR networks such as '10.0.0.0/8', or '*' ({exc})") from None


def _proxy_protocol(raw: Any) -> ProxyProtocolOptions | None:
    if raw is None or raw is False:
        return None
    if raw is True:
        return ProxyProtocolOptions()
    if not isinstance(raw, Mapping):
        raise _fail("proxy_protocol", raw, "True or a dict with trusted, timeout, max_size")
    _known_keys("proxy_protocol", raw, ProxyProtocolOptions.__dataclass_fields__)
    base = ProxyProtocolOptions()
    trusted = base.trusted if "trusted" not in raw else _trusted("proxy_protocol.trusted", raw["trusted"])
    timeout = _seconds({"proxy_protocol.timeout": raw.get("timeout", base.timeout)}, "proxy_protocol.timeout", 0)
    # 232 = the fixed part and the largest address block (UNIX): every address fits.
    max_size = _int({"proxy_protocol.max_size": raw.get("max_size", base.max_size)},
                    "proxy_protocol.max_size", 0, 232, 16 + 65535)
    return ProxyProtocolOptions(trusted, timeout, max_size)


def _spawn_options(raw: Any) -> SpawnOptions:
    if raw is None:
        return SpawnOptions()
    if not isinstance(raw, Mapping):
        raise _fail("handler_spawn", raw, "a dict of spawn options")
    allowed = {"max_heap", "mailbox_limit", "mailbox_overflow"}
    for key in raw:
        if key in {"link", "monitor", "trap_exit"}:
            raise _fail(f"handler_spawn.{key}", raw[key], "not settable: rr owns links and monitors")
        if key not in allowed:
            raise _fail(f"handler_spawn.{key}", raw[key], ", ".join(sorted(allowed)))
    max_heap = raw.get("max_heap")
    if max_heap is not None:
        max_heap = _int({"handler_spawn.max_heap": max_heap}, "handler_spawn.max_heap", 0, 4096, 2**62)
    limit = raw.get("mailbox_limit")
    if limit is not None:
        limit = _int({"handler_spawn.mailbox_limit": limit}, "handler_spawn.mailbox_limit", 0, 1)
    overflow = raw.get("mailbox_overflow", "kill")
    if overflow not in ("kill", "drop"):
        raise _fail("handler_spawn.mailbox_overflow", overflow, '"kill" or "drop"')
    return SpawnOptions(max_heap, limit, overflow)


_KEYS = {
    "port", "ip", "unix", "socket", "routes", "middlewares", "tls", "tls_handshake_timeout", "protocols",
    "num_acceptors", "socket_backlog", "max_clients", "max_concurrent_requests", "shed_concurrent_requests", "request_timeout",
    "keep_alive_timeout", "first_byte_timeout", "max_keep_alive_requests", "min_bytes_per_second", "max_content_length", "body_buffering",
    "handler_spawn", "graceful_drain", "access_log", "blocking_monitor", "request_id_header", "not_found", "alt_svc", "ws",
    "max_response_header_size",
    "proxy_protocol", "forwarded_allow_ips",
    "redirect_slashes",
}  # fmt: skip


# sun_path is 108 bytes on Linux (104 on the BSDs), its terminating NUL included.
_UNIX_PATH_MAX = 107


def _address(opts: Mapping[str, Any]) -> tuple[int, str | None, str | None, socket.socket | None]:
    """(port, ip, unix path, inherited socket): exactly one of port, unix and socket says where."""
    given = [key for key in ("port", "unix", "socket") if key in opts]
    if not given:
        raise ValueError("listener option 'port' is required (0 picks a free port), "
                         "or 'unix' (a socket path), or 'socket' (a listening socket)")
    if len(given) > 1:
        raise _fail(given[1], opts[given[1]], f"one of port, unix and socket per listener, not with {given[0]!r}")
    if "ip" in opts and "port" not in opts:
        raise _fail("ip", opts["ip"], "an address for a TCP 'port'; a unix or socket listener has none")
    if "unix" in opts:
        path = opts["unix"]
        if not isinstance(path, str) or not path or "\0" in path or len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise _fail("unix", path, f"a filesystem path of 1..{_UNIX_PATH_MAX} bytes for a Unix domain socket")
        return 0, None, path, None
    if "socket" in opts:
        sock = opts["socket"]
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM or sock.fileno() < 0:
            raise _fail("socket", sock, "an open, bound and listening SOCK_STREAM socket.socket")
        name = sock.getsockname()
        return (name[1] if isinstance(name, tuple) else 0), None, None, sock
    port = _int(opts, "port", 0, 0, 65535)
    ip = opts.get("ip")
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except (ValueError, TypeError):
            raise _fail("ip", ip, 'an IPv4 or IPv6 address such as "127.0.0.1" or "::1"') from None
    return port, ip, None, None


def load(opts: Mapping[str, Any]) -> Config:
    """Validate ``opts`` into a frozen ``Config``; ``ValueError`` names the bad option."""
    if not isinstance(opts, Mapping):
        raise ValueError(f"listener options must be a dict, got {type(opts).__name__}")
    for key in opts:
        if key not in _KEYS:
            raise ValueError(f"unknown listener option {key!r} (known: {', '.join(sorted(_KEYS))})")
    port, ip, unix, sock = _address(opts)

    routes = opts.get("routes")
    handler: Callable[..., Any] | None = None
    if routes is None or callable(routes):
        handler = routes
    elif not isinstance(routes, list):
        raise _fail("routes", routes, "a handler callable or a list of routes")

    middlewares = opts.get("middlewares", [])
    if not isinstance(middlewares, list | tuple):
        raise _fail("middlewares", middlewares, "a list of middlewares")

    not_found = opts.get("not_found")
    if not_found is not None and not callable(not_found):
        raise _fail("not_found", not_found, "a handler callable")

    protocols, http1, http2, http3 = _protocols(opts.get("protocols", ["http1"]))
    tls = _tls(opts.get("tls"), alpn_protocols(protocols))
    if http3 is not None:
        http3 = _http3_tls(http3, opts.get("tls"))
        if "unix" in opts:
            raise _fail("protocols", "http3", "http3 on a TCP port (QUIC runs over UDP), not on a unix socket")

    body_buffering = opts.get("body_buffering", "auto")
    if body_buffering not in ("auto", "manual"):
        raise _fail("body_buffering", body_buffering, '"auto" or "manual"')

    return Config(
        port=port,
        ip=ip,
        unix=unix,
        socket=sock,
        handler=handler,
        routes=routes if isinstance(routes, list) else None,
        middlewares=tuple(middlewares),
        not_found=not_found,
        # /books/ → 308 → /books (and back) when only the other spelling has a route.
        redirect_slashes=_bool(opts, "redirect_slashes", False),
        tls=tls,
        # A TLS handshake that has not finished in 10 s is a stalled or hostile peer.
        tls_handshake_timeout=_seconds(opts, "tls_handshake_timeout", 10.0),
        protocols=protocols,
        http1=http1,
        http2=http2,
        http3=http3,
        # One acceptor drains the accept queue in a loop; more add resilience, not speed.
        num_acceptors=_int(opts, "num_acceptors", 2, 1, 1024),
        # The kernel clamps it to somaxconn; 1024 absorbs connection bursts.
        socket_backlog=_int(opts, "socket_backlog", 1024, 1),
        # Each connection holds a socket and a process; cap them so memory stays bounded.
        max_clients=_int(opts, "max_clients", 150, 1),
        # Listener-wide cap on live h2 stream workers (None: no cap) → REFUSED_STREAM + throttled.
        # Each stalled stream may queue min(64 KiB, its window + 16 KiB) of response at its conn
        # (and a conn http2.send_budget in all), so 4096 bounds that to 256 MiB at most (64 MiB
        # against zero-window peers).
        max_concurrent_requests=(4096 if "max_concurrent_requests" not in opts
                                 else None if opts["max_concurrent_requests"] is None
                                 else _int(opts, "max_concurrent_requests", 0, 1)),
        # Load shedding: a request that finds this many exchanges running on the listener (h1
        # and h2 alike) is answered 503 + retry-after: 1 without the application (None: off;
        # the right number depends on what a handler costs, so rr cannot pick one).
        shed_concurrent_requests=(None if opts.get("shed_concurrent_requests") is None
                                  else _int(opts, "shed_concurrent_requests", 0, 1)),
        # The first request's head and body must arrive within this (→ 408).
        request_timeout=_seconds(opts, "request_timeout", 30.0),
        # An idle keep-alive connection is closed silently after this.
        keep_alive_timeout=_seconds(opts, "keep_alive_timeout", 60.0),
        # A new connection that sends no byte for this long is closed silently: connections
        # that never speak must not hold a slot for request_timeout (nginx's
        # client_header_timeout, HAProxy's timeout http-request play this part).
        first_byte_timeout=_seconds(opts, "first_byte_timeout", 5.0),
        # Recycle connections now and then so one client cannot pin a process forever.
        max_keep_alive_requests=_int(opts, "max_keep_alive_requests", 1000, 1),
        # Slowloris guard: below this average after a 1 s grace, close silently (0 = off).
        min_bytes_per_second=_int(opts, "min_bytes_per_second", 100, 0),
        # Bodies are buffered in auto mode: cap what one request may make us hold (→ 413).
        max_content_length=_int(opts, "max_content_length", 10 * MiB, 0, 2**62),
        body_buffering=body_buffering,
        handler_spawn=_spawn_options(opts.get("handler_spawn")),
        # False makes drain a hard stop: connections are killed without waiting.
        graceful_drain=_bool(opts, "graceful_drain", True),
        access_log=_bool(opts, "access_log", False),
        # Seconds the event loop may be held by one greenlet before rr logs the request that
        # held it (gevent's monitor thread; None: off, as it traces every greenlet switch).
        blocking_monitor=(None if opts.get("blocking_monitor") is None
                          else _seconds(opts, "blocking_monitor", 0.1)),
        # A header carrying a trusted proxy's request id: reused as the request's id and echoed
        # on every response (None: rr makes its own ids and echoes nothing).
        request_id_header=_request_id_header(opts),
        # A response head (or trailer section) larger than this, sized as RFC 9113 §6.5.2
        # (name + value + 32 per field), is a handler bug: 500 + a log line naming the route,
        # rather than a head that proxies (nginx: 4-8 KiB buffers) and browsers would refuse.
        max_response_header_size=_int(opts, "max_response_header_size", 65536, 1024),
        # An Alt-Svc field value (RFC 7838) added to every response, e.g. 'h3=":443"; ma=86400'.
        alt_svc=_alt_svc(opts.get("alt_svc")),
        # WebSocket session limits (rr.ws): frame/message sizes, idle and ping timers, deflate.
        ws=_ws_options(opts.get("ws")),
        # PROXY protocol v1/v2 before TLS (rr.proxy_protocol): the real client from a trusted
        # load balancer (None: off; every connection is its own client).
        proxy_protocol=_proxy_protocol(opts.get("proxy_protocol")),
        # Peers whose Forwarded / X-Forwarded-* fields are believed (rr.forwarded; None: nobody's).
        forwarded_allow_ips=(None if opts.get("forwarded_allow_ips") is None
                             else _trusted("forwarded_allow_ips", opts["forwarded_allow_ips"])),
        raw=dict(opts),
    )
