"""The HTTP/1.1 codec: strict RFC 9112 parsing of requests, encoding of responses.

What it is: a pure, sans-IO codec. Bytes go in, a ``RequestHead`` / body
pieces / events come out; status codes and header lists go in, bytes come
out. ``rr/http1/conn.py`` owns the socket and drives this module.

What it owns: every rule about what a well-formed HTTP/1.1 request *is* —
request-line syntax, field syntax, message framing (Content-Length versus
Transfer-Encoding), chunked decoding, and the size limits that bound the bytes
a peer can make us buffer. Each rule cites the RFC 9112 / RFC 9110 section it
enforces, right beside the code.

What it must never do: touch a socket, a greenlet, a clock or a logger; keep
state between requests outside the objects it returns; raise anything but
``ParseError`` on input (any other exception on peer bytes is a bug — the
Hypothesis tests feed it random bytes). Encoders raise ``HeaderInjection`` /
``ValueError`` on bad *application* input.

Theory of operation. ``parse_head`` looks for the end of the head with one
``bytes.find(b"\\r\\n\\r\\n")``. Until it is found, it only checks what the
bytes present already prove (limits, a bare LF, a malformed request line), so
the caller can bound its buffer. Once found, one precompiled regex validates the
request line and every field line at once (``_HEAD_RE``); only when that fails
does a slower diagnosis run to name the exact reason. The head is decoded
from latin-1 once and split once. Framing headers are then judged. A request
that breaks several rules gets the error of its shortest bad prefix (found by
a binary search over prefixes, on the error path only), which is what it gets
fed byte by byte: the status never depends on how the bytes arrived. The
trailer section of a chunked body is judged the same way.

Decisions (each one has a test named after it; docs/http1_codec.md has the
table):

- Content-Length and Transfer-Encoding both present → 400
  ``conflicting_framing`` (RFC 9112 §6.3 ¶3 lets us reject; we must, since we
  would have to close anyway). Content-Length must be ``1*DIGIT``; repeated
  lines must be byte-identical (``5`` and ``05`` conflict → 400
  ``conflicting_content_length``); over ``max_content_length`` → 413.
- Transfer-Encoding lines are judged as their comma-joined value. ``chunked``
  twice or not last → 400 ``bad_transfer_encoding`` (RFC 9112 §6.3); any other
  coding (``gzip``, ``gzip, chunked``, unknown) → 501
  ``unsupported_transfer_coding`` (RFC 9112 §6.1: we decode no codings); TE in
  an HTTP/1.0 request → 400 ``transfer_encoding_in_http10``.
- Host: missing on 1.1 → 400 ``missing_host``; repeated → 400
  ``duplicate_host``; not ``uri-host [":" port]`` → 400 ``bad_host`` (RFC 9112
  §3.2). An absolute-form target's authority wins over Host (§3.2.2), but Host
  is still required and validated on 1.1. An empty Host value is valid
  (RFC 9110 §7.2) and gives ``host == ""``.
- Methods are tokens and case-sensitive (RFC 9110 §9.1): ``get`` is accepted
  here and left to the router, which answers 405/501 (roadrunner says 400).
- ``HTTP/1.x`` with x > 1 is served as HTTP/1.1 (RFC 9110 §2.5: minor versions
  are compatible); another major (``HTTP/2.0``, ``HTTP/0.9``) → 505; anything
  not ``HTTP/DIGIT.DIGIT`` → 400 ``bad_version``.
- Strict line endings: a bare CR or LF anywhere in the head → 400
  ``bare_cr_or_lf``. One empty line before the request line is ignored
  (RFC 9112 §2.2), two → 400.
- Field values may carry obs-text (0x80-0xFF, RFC 9110 §5.5); they are decoded
  as latin-1. Other CTLs than HTAB (and DEL) → 400.
- The request-target may contain any VCHAR (like h11); its *form* is checked
  (RFC 9112 §3.2). ``#`` and other non-URI characters are left to the app.
- ``Expect: 100-continue`` (any case) sets ``expect_continue``; any other
  expectation → 417 ``unsupported_expectation`` (RFC 9110 §10.1.1 allows it).
  HTTP/1.0 requests' Expect is ignored (§10.1.1: MUST ignore 100-continue in
  1.0). ``Upgrade`` is reported only when Connection lists ``upgrade`` and the
  request is 1.1 (RFC 9110 §7.8: ignore Upgrade in 1.0).
- The header block limit counts the field lines with their CRLFs, not the
  request line (which has its own limit) nor the final empty line.
- Chunk size: 1 to 16 HEXDIG; extensions are syntax-checked and ignored; the
  size line is bounded at 4096 bytes; the running total of declared sizes is
  judged against ``max_content_length`` from the size line alone (413).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "ChunkedDecoder",
    "Data",
    "EndOfMessage",
    "HeaderInjection",
    "Limits",
    "ParseError",
    "Parser",
    "RequestHead",
    "STATUS_LINES",
    "encode_chunk",
    "field_lines",
    "encode_head",
    "encode_last_chunk",
    "parse_head",
    "status_line",
]


class ParseError(Exception):
    """The request is bad: answer ``status`` and close. ``reason`` is a token."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


class HeaderInjection(ValueError):
    """An application tried to send a field name or value that is not safe on the wire."""


@dataclass(frozen=True, slots=True)
class Limits:
    """DoS bounds for one request; each crossing has a test and a status."""

    max_request_line: int = 8192  # → 414, the common server default (nginx 8 KB buffers)
    max_header_line: int = 8192  # → 431, also per trailer line
    max_header_block: int = 10240  # → 431, field lines with CRLFs, request line excluded
    max_header_count: int = 100  # → 431, also trailers
    max_content_length: int = 10 * 1024 * 1024  # → 413, declared CL or summed chunk sizes


# -- grammar ------------------------------------------------------------------
#
# RFC 9110 §5.6.2:
#   token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = rb"[" + _TCHAR + rb"]+"
# RFC 9112 §3:    request-line = method SP request-target SP HTTP-version
# RFC 9110 §9.1:  method = token
# RFC 9112 §3.2:  request-target is URI syntax: visible ASCII only (VCHAR = %x21-7E)
# RFC 9112 §2.3:  HTTP-version = HTTP-name "/" DIGIT "." DIGIT ; HTTP-name = %s"HTTP"
_REQUEST_LINE = _TOKEN + rb" [\x21-\x7e]+ HTTP/[0-9]\.[0-9]"
# RFC 9112 §5:    field-line = field-name ":" OWS field-value OWS
# RFC 9110 §5.5:  field-value = *field-content ; field-vchar = VCHAR / obs-text
#                 obs-text = %x80-FF ; SP and HTAB allowed inside; no other CTL
# (the value class below is a superset of OWS field-value OWS: the exact split
# into OWS and value is done by strip(), the class only rejects CTLs and DEL)
_FIELD_LINE = _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n"
# The whole head up to and including the CRLF of its last line, in one match.
# (Possessive quantifiers: the classes are disjoint at each step, so no
# backtracking is ever needed; telling sre so saves its bookkeeping.)
_HEAD_RE = re.compile(
    _REQUEST_LINE + rb"\r\n(?:[" + _TCHAR + rb"]++:[\t\x20-\x7e\x80-\xff]*+\r\n)*+"
)
_FIELDS_RE = re.compile(rb"(?:" + _FIELD_LINE + rb")*")
_REQUEST_LINE_RE = re.compile(_REQUEST_LINE)
_TOKEN_RE = re.compile(_TOKEN)
_TOKEN_STR_RE = re.compile(_TOKEN.decode())
_FIELD_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_VERSION_RE = re.compile(rb"HTTP/([0-9])\.([0-9])")
# RFC 9110 §7.2:  Host = uri-host [ ":" port ]
# RFC 3986 §3.2.2: host = IP-literal / IPv4address / reg-name
#   IP-literal = "[" ( IPv6address / IPvFuture ) "]"
#   reg-name = *( unreserved / pct-encoded / sub-delims )   (IPv4 is a reg-name subset)
# RFC 3986 §3.2.3: port = *DIGIT
# No userinfo: RFC 9110 §4.2.4 says treat "@" in an http(s) authority as an error.
_HOST_RE = re.compile(r"(?:\[[0-9A-Za-z:.]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
# RFC 9112 §7.1:  chunk-size = 1*HEXDIG (we bound it to 16 digits: 2**64)
#   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-name = token ; chunk-ext-val = token / quoted-string
# RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
#   qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = (
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
)
_CHUNK_SIZE_LINE_RE = re.compile(rb"([0-9A-Fa-f]{1,16})(" + _CHUNK_EXT + rb")")
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_HEX_PREFIX_RE = re.compile(rb"[0-9A-Fa-f]*")

_MAX_CHUNK_SIZE_LINE = 4096  # chunk-size + extensions; nobody legitimate comes close

_KNOWN_VERSIONS = {"HTTP/1.1": "HTTP/1.1", "HTTP/1.0": "HTTP/1.0"}
_FRAMING_AND_CONTROL = frozenset(
    ("host", "content-length", "transfer-encoding", "connection", "expect", "upgrade")
)
_NO_TOKENS: frozenset[str] = frozenset()
# Memos of values already judged valid (bounded: a peer can only fill them once).
_CACHE_MAX = 1024
# Parsed heads by their exact bytes (bounded: ≤ 512 heads of ≤ 2 KiB each). A hit is
# only taken for the same Limits object; RequestHead and its lists are never mutated.
_HEAD_CACHE_MAX = 512
_HEAD_CACHE_BYTES = 2048
_head_cache: dict[bytes, tuple[Limits, RequestHead]] = {}
_valid_hosts: set[str] = set()
_connection_tokens: dict[str, frozenset[str]] = {}


class RequestHead:
    """One parsed request head. Plain ``__slots__`` class: built once per request."""

    __slots__ = (
        "method",
        "target",
        "path",
        "query",
        "version",
        "headers",
        "host",
        "keep_alive",
        "content_length",
        "chunked",
        "expect_continue",
        "upgrade",
        "connection_tokens",
    )

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: list[tuple[str, str]]
    host: str | None
    keep_alive: bool
    content_length: int | None
    chunked: bool
    expect_continue: bool
    upgrade: str | None
    connection_tokens: frozenset[str]

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        version: str,
        headers: list[tuple[str, str]],
        host: str | None,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        expect_continue: bool,
        upgrade: str | None,
        connection_tokens: frozenset[str],
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.connection_tokens = connection_tokens

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestHead):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable fields (headers list)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"RequestHead({inner})"


# -- the request head -----------------------------------------------------------


def valid_host(host: str) -> bool:
    """Whether ``host`` is a Host value: ``uri-host [":" port]`` (RFC 9110 §7.2, RFC 3986
    §3.2.2-3), no userinfo. h2's ``:authority`` is held to the same rule."""
    if host in _valid_hosts:
        return True
    if _HOST_RE.fullmatch(host) is None:
        return False
    if len(_valid_hosts) < _CACHE_MAX:
        _valid_hosts.add(host)
    return True


def parse_head(buf: bytes | bytearray, limits: Limits) -> tuple[RequestHead, int] | None:
    """Parse one request head at the start of ``buf``.

    Returns ``(head, bytes_consumed)``, or ``None`` when more bytes are needed.
    Raises ``ParseError`` as soon as the bytes present prove the request bad:
    the error of the shortest prefix of ``buf`` that is bad, so a request that
    breaks two rules gets the same status however its bytes arrive (fed byte
    by byte, the shortest bad prefix is the one that fails first).
    """
    if type(buf) is bytes:
        # The head cache first (see _parse_head), without the call and the try: a
        # keep-alive client's repeated head costs one find and one dict lookup.
        end = buf.find(b"\r\n\r\n")
        if 0 < end <= _HEAD_CACHE_BYTES:
            hit = _head_cache.get(buf[:end])
            if hit is not None and hit[0] is limits:
                return hit[1], end + 4
    try:
        return _parse_head(buf, limits)
    except ParseError as exc:
        raise _earliest(lambda n: _parse_head(buf[:n], limits), len(buf), exc) from None


def _earliest(check: Callable[[int], object], size: int, error: ParseError) -> ParseError:
    """The error ``check(n)`` raises for the smallest ``n`` ≤ ``size`` that fails (``error``
    is ``check(size)``'s). A prefix of a bad request is bad or needs more bytes, never good,
    so failing is monotone in ``n``: a binary search, ~15 checks for the largest head; only
    on the error path."""
    lo, hi = 1, size
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            check(mid)
        except ParseError:
            hi = mid
        else:
            lo = mid + 1
    if lo == size:
        return error
    try:
        check(lo)
    except ParseError as exc:
        return exc
    return error


def _parse_head(buf: bytes | bytearray, limits: Limits) -> tuple[RequestHead, int] | None:
    start = 0
    if buf[:2] == b"\r\n":
        # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the
        # request-line. We ignore exactly one; a stream of them is not a client.
        start = 2
        if buf[2:4] == b"\r\n":
            raise ParseError(400, "bad_request_line")
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        _check_partial_head(buf, start, limits)
        return None
    # The same head bytes parse to the same (read-only) RequestHead under the same
    # limits: clients repeat their heads (keep-alive, health checks, API clients).
    # parse_head asks first for bytes without a leading CRLF (the common case, inline);
    # this lookup serves the rest (a bytearray, a leading empty line). Doing the lookup
    # only here, in general form, cost more (tools/bench_instructions.sh, hello: 81.2k -> 83.4k).
    key = bytes(buf[start:end]) if end - start <= _HEAD_CACHE_BYTES else None
    if key is not None:
        hit = _head_cache.get(key)
        if hit is not None and hit[0] is limits:
            return hit[1], end + 4
    line_end = buf.find(b"\r\n", start)
    # RFC 9112 §3: a server that receives a request-target longer than it wishes
    # to parse MUST respond with 414 (we bound the whole request-line).
    if line_end - start > limits.max_request_line:
        raise ParseError(414, "request_line_too_long")
    # RFC 6585 §5 (431): limits on the field section, before any parsing.
    block_size = end - line_end
    if block_size > limits.max_header_block:
        raise ParseError(431, "header_block_too_long")
    if block_size > limits.max_header_line:
        _check_line_lengths(buf[line_end + 2 : end], limits.max_header_line)
    lines = buf[start:end].decode("latin-1").split("\r\n")
    if len(lines) > limits.max_header_count + 1:
        raise ParseError(431, "too_many_headers")
    if _HEAD_RE.fullmatch(buf, start, end + 2) is None:
        _diagnose_head(buf[start:end])

    method, target, version = lines[0].split(" ")
    if version not in _KNOWN_VERSIONS:
        version = _check_version(version)
    is_11 = version == "HTTP/1.1"

    headers: list[tuple[str, str]] = []
    append = headers.append
    special: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.lower()
        value = value.strip(" \t")
        append((name, value))
        if name in _FRAMING_AND_CONTROL:
            special.append((name, value))
    hosts: list[str] | None = None
    lengths: list[str] | None = None
    codings: list[str] | None = None
    connection: list[str] | None = None
    expect: list[str] | None = None
    upgrades: list[str] | None = None
    for name, value in special:
        if name == "host":
            hosts = [value] if hosts is None else [*hosts, value]
        elif name == "connection":
            connection = [value] if connection is None else [*connection, value]
        elif name == "content-length":
            lengths = [value] if lengths is None else [*lengths, value]
        elif name == "transfer-encoding":
            codings = [value] if codings is None else [*codings, value]
        elif name == "expect":
            expect = [value] if expect is None else [*expect, value]
        else:
            upgrades = [value] if upgrades is None else [*upgrades, value]

    if target[0] == "/" and method != "CONNECT":
        # RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ]
        path, _, query = target.partition("?")
        authority = None
    else:
        path, query, authority = _split_target(method, target)

    # RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request that lacks
    # Host, or has more than one Host line, or a Host with an invalid value.
    host: str | None = None
    if hosts is not None:
        if len(hosts) > 1:
            raise ParseError(400, "duplicate_host")
        host = hosts[0]
        if not valid_host(host):
            raise ParseError(400, "bad_host")
    elif is_11:
        raise ParseError(400, "missing_host")
    if authority is not None:
        # RFC 9112 §3.2.2: with absolute-form, the target's authority wins over Host.
        host = authority

    content_length: int | None = None
    chunked = False
    if codings is not None:
        if lengths is not None:
            # RFC 9112 §6.3 ¶3: CL with TE "ought to be handled as an error"; a
            # server MAY reject it, and must close after it anyway. We reject.
            raise ParseError(400, "conflicting_framing")
        if not is_11:
            # RFC 9112 §6.1: TE in a 1.0 request → framing faulty, MUST close; we reject.
            raise ParseError(400, "transfer_encoding_in_http10")
        chunked = _judge_transfer_coding(codings)
    elif lengths is not None:
        content_length = _judge_content_length(lengths, limits)

    tokens = _NO_TOKENS
    if connection is not None:
        # RFC 9110 §7.6.1: Connection = #connection-option, case-insensitive tokens.
        raw = connection[0] if len(connection) == 1 else ",".join(connection)
        cached = _connection_tokens.get(raw)
        if cached is None:
            cached = frozenset(_list_members(connection))
            if len(_connection_tokens) < _CACHE_MAX:
                _connection_tokens[raw] = cached
        tokens = cached
    if is_11:
        # RFC 9112 §9.3: HTTP/1.1 persists unless "close" is sent.
        keep_alive = "close" not in tokens
    else:
        # RFC 9112 §9.3 / Appendix C.2.2: 1.0 persists only with "keep-alive".
        keep_alive = "keep-alive" in tokens and "close" not in tokens

    expect_continue = False
    if expect is not None and is_11:
        # RFC 9110 §10.1.1: "100-continue" is the only expectation defined; a server
        # MAY answer 417 to any other. HTTP/1.0 expectations are ignored (§10.1.1).
        members = _list_members(expect)
        if members:
            if members != ["100-continue"]:
                raise ParseError(417, "unsupported_expectation")
            expect_continue = True

    upgrade: str | None = None
    if upgrades is not None and is_11 and "upgrade" in tokens:
        # RFC 9110 §7.8: Upgrade only counts when listed in Connection; a server
        # MUST ignore Upgrade in an HTTP/1.0 request.
        upgrade = ", ".join(upgrades).lower()

    head = RequestHead(
        method,
        target,
        path,
        query,
        version,
        headers,
        host,
        keep_alive,
        content_length,
        chunked,
        expect_continue,
        upgrade,
        tokens,
    )
    if key is not None:
        if len(_head_cache) >= _HEAD_CACHE_MAX:
            _head_cache.clear()
        _head_cache[key] = (limits, head)
    return head, end + 4


def _check_partial_head(buf: bytes | bytearray, start: int, limits: Limits) -> None:
    """Without the head's end: raise if the bytes present already prove it bad."""
    line_end = buf.find(b"\r\n", start)
    if line_end < 0:
        seen = len(buf) - start
        if buf[-1:] == b"\r":
            seen -= 1
        if seen > limits.max_request_line:
            raise ParseError(414, "request_line_too_long")  # RFC 9112 §3
        if b"\n" in buf[start:] or b"\r" in buf[start:-1]:
            raise ParseError(400, "bare_cr_or_lf")  # RFC 9112 §2.2: strict CRLF
        return
    if line_end - start > limits.max_request_line:
        raise ParseError(414, "request_line_too_long")
    if _REQUEST_LINE_RE.fullmatch(buf, start, line_end) is None:
        _diagnose_request_line(bytes(buf[start:line_end]))
    _check_version(buf[start:line_end].rsplit(b" ", 1)[1].decode("latin-1"))
    fields = buf[line_end + 2 :]
    if fields[-1:] == b"\r":
        fields = fields[:-1]  # may be the start of the final CRLF
    if len(fields) > limits.max_header_block:
        raise ParseError(431, "header_block_too_long")  # RFC 6585 §5
    if fields.count(b"\r\n") > limits.max_header_count:
        raise ParseError(431, "too_many_headers")
    _check_line_lengths(fields, limits.max_header_line)
    if fields.count(b"\n") != fields.count(b"\r\n") or fields.count(b"\r") != fields.count(b"\n"):
        raise ParseError(400, "bare_cr_or_lf")


def _check_partial_trailers(partial: bytes, limits: Limits) -> None:
    """A trailer section without its end: raise if the bytes present already prove it bad."""
    if partial[-1:] == b"\r":
        partial = partial[:-1]
    if partial.count(b"\n") != partial.count(b"\r\n") or partial.count(b"\r") != partial.count(b"\n"):
        raise ParseError(400, "bare_cr_or_lf")  # RFC 9112 §2.2
    if len(partial) > limits.max_header_block:
        raise ParseError(431, "header_block_too_long")
    if partial.count(b"\r\n") > limits.max_header_count:
        raise ParseError(431, "too_many_headers")
    _check_line_lengths(partial, limits.max_header_line)


def _check_line_lengths(block: bytes | bytearray, max_line: int) -> None:
    for line in block.split(b"\r\n"):
        if len(line) > max_line:
            raise ParseError(431, "header_line_too_long")  # RFC 6585 §5


def _check_version(version: str) -> str:
    """Map a version other than 1.0/1.1 to what we serve, or raise."""
    if version in _KNOWN_VERSIONS:
        return version
    match = _VERSION_RE.fullmatch(version.encode("latin-1"))
    if match is None:
        raise ParseError(400, "bad_version")  # RFC 9112 §2.3: HTTP-version syntax
    if match[1] != b"1":
        # RFC 9110 §15.6.6: 505 for a major version we do not support.
        raise ParseError(505, "unsupported_version")
    # RFC 9110 §2.5: a 1.x message (x > 1) is understood as the highest 1.x we
    # implement; we serve it as HTTP/1.1.
    return "HTTP/1.1"


def _diagnose_request_line(line: bytes) -> None:
    """Name the reason a request-line failed the fast regex (raises)."""
    if b"\r" in line or b"\n" in line:
        raise ParseError(400, "bare_cr_or_lf")  # RFC 9112 §2.2
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[1]:
        raise ParseError(400, "bad_request_line")  # RFC 9112 §3: exactly two SP
    method, target, version = parts
    if _TOKEN_RE.fullmatch(method) is None:
        raise ParseError(400, "bad_method")  # RFC 9110 §9.1: method = token
    if any(b <= 0x20 or b >= 0x7F for b in target):
        raise ParseError(400, "bad_target")  # RFC 9112 §3.2: no CTL, SP, non-ASCII
    _check_version(version.decode("latin-1"))
    raise ParseError(400, "bad_request_line")


def _diagnose_head(head: bytes | bytearray) -> None:
    """Name the reason a head failed the fast regex (raises)."""
    head = bytes(head)
    request_line, _, block = head.partition(b"\r\n")
    if _REQUEST_LINE_RE.fullmatch(request_line) is None:
        _diagnose_request_line(request_line)
    if block[:1] in (b" ", b"\t"):
        # RFC 9112 §2.2: whitespace between the start-line and the first field
        # line → MUST reject (or skip those lines); we reject.
        raise ParseError(400, "whitespace_after_start_line")
    _check_fields(block + b"\r\n" if block else b"")
    raise ParseError(400, "bad_header")


def _check_fields(block: bytes) -> None:
    """Raise the precise reason a field block (lines each ending CRLF) is bad."""
    if _FIELDS_RE.fullmatch(block) is not None:
        return
    lines = block.split(b"\r\n")[:-1]
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise ParseError(400, "bare_cr_or_lf")  # RFC 9112 §2.2
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            # RFC 9112 §5.2: obs-fold outside message/http → MUST reject (or replace)
            raise ParseError(400, "obs_fold")
        name, colon, value = line.partition(b":")
        if not colon:
            raise ParseError(400, "missing_colon")  # RFC 9112 §5
        if not name:
            raise ParseError(400, "empty_header_name")  # RFC 9110 §5.1: 1*tchar
        if name[-1:] in (b" ", b"\t"):
            # RFC 9112 §5.1: whitespace between field name and colon → MUST 400
            raise ParseError(400, "whitespace_before_colon")
        if _TOKEN_RE.fullmatch(name) is None:
            raise ParseError(400, "bad_header_name")  # RFC 9110 §5.1
        if _FIELD_VALUE_RE.fullmatch(value) is None:
            raise ParseError(400, "bad_header_value")  # RFC 9110 §5.5: no CTL but HTAB
    raise ParseError(400, "bad_header")


def _split_target(method: str, target: str) -> tuple[str, str, str | None]:
    """(path, query, authority-or-None) for the four request-target forms (RFC 9112 §3.2)."""
    if target[0] == "/":
        if method == "CONNECT":
            raise ParseError(400, "bad_target")  # RFC 9112 §3.2.3: CONNECT uses authority-form
        # RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ]
        path, _, query = target.partition("?")
        return path, query, None
    if method == "CONNECT":
        # RFC 9112 §3.2.3: authority-form = uri-host ":" port, only for CONNECT
        host, colon, port = target.rpartition(":")
        if not host or not colon or not port.isdigit() or _HOST_RE.fullmatch(target) is None:
            raise ParseError(400, "bad_target")
        return "", "", None
    if target == "*":
        # RFC 9112 §3.2.4: asterisk-form = "*", only for server-wide OPTIONS
        if method != "OPTIONS":
            raise ParseError(400, "bad_target")
        return "*", "", None
    # RFC 9112 §3.2.2: absolute-form = absolute-URI; as an origin server we take
    # http and https only (RFC 9110 §4.2).
    lowered = target[:8].lower()
    if lowered.startswith("http://"):
        rest = target[7:]
    elif lowered.startswith("https://"):
        rest = target[8:]
    else:
        raise ParseError(400, "bad_target")
    cut = len(rest)
    for sep in ("/", "?"):
        at = rest.find(sep)
        if 0 <= at < cut:
            cut = at
    authority, rest = rest[:cut], rest[cut:]
    # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid; §4.2.4: "@"
    # (userinfo) is an error. _HOST_RE admits neither "@" nor the empty host.
    if not authority or authority[0] == ":" or _HOST_RE.fullmatch(authority) is None:
        raise ParseError(400, "bad_target")
    path, _, query = rest.partition("?")
    return path or "/", query, authority


def _list_members(values: list[str]) -> list[str]:
    """RFC 9110 §5.6.1: the lowercased, non-empty members of a #list across lines."""
    out = []
    for value in values:
        for member in value.split(","):
            member = member.strip(" \t").lower()
            if member:
                out.append(member)
    return out


def _judge_content_length(lengths: list[str], limits: Limits) -> int:
    # RFC 9110 §8.6: Content-Length = 1*DIGIT. No sign, no list, no spaces.
    first = lengths[0]
    for value in lengths:
        if not (value.isascii() and value.isdigit()):
            raise ParseError(400, "bad_content_length")
        if value != first:
            # RFC 9112 §6.3 ¶5: differing Content-Length values → invalid framing.
            raise ParseError(400, "conflicting_content_length")
    digits = first.lstrip("0")
    # Bound int() on hostile lengths (and stay under Python's int-digit cap).
    if len(digits) > 19 or int(digits or "0") > limits.max_content_length:
        raise ParseError(413, "content_too_large")  # RFC 9110 §15.5.14
    return int(digits or "0")


def _judge_transfer_coding(values: list[str]) -> bool:
    """Return True for a lone final "chunked" coding, else raise (RFC 9112 §6.1, §6.3)."""
    # Several Transfer-Encoding lines form one comma-joined list (RFC 9110 §5.3).
    members = _list_members(values)
    names = []
    for member in members:
        name, semi, _ = member.partition(";")
        name = name.rstrip(" \t")
        # RFC 9112 §7: transfer-coding = token *( OWS ";" OWS transfer-parameter )
        if _TOKEN_STR_RE.fullmatch(name) is None or (name == "chunked" and semi):
            raise ParseError(400, "bad_transfer_encoding")
        names.append(name)
    if not names or names.count("chunked") > 1:
        # RFC 9112 §6.1: a sender MUST NOT apply chunked more than once.
        raise ParseError(400, "bad_transfer_encoding")
    if "chunked" in names and names[-1] != "chunked":
        # RFC 9112 §6.3 ¶4: chunked present but not final → MUST respond 400.
        raise ParseError(400, "bad_transfer_encoding")
    if names != ["chunked"]:
        # RFC 9112 §6.1: a server that receives a transfer coding it does not
        # understand SHOULD respond 501. We decode none but chunked.
        raise ParseError(501, "unsupported_transfer_coding")
    return True


def _parse_fields(block: bytes, limits: Limits) -> list[tuple[str, str]]:
    """Validate and split a field block (each line ending CRLF), e.g. trailers."""
    if len(block) > limits.max_header_block:
        raise ParseError(431, "header_block_too_long")
    if block.count(b"\r\n") > limits.max_header_count:
        raise ParseError(431, "too_many_headers")
    if len(block) > limits.max_header_line:
        _check_line_lengths(block, limits.max_header_line)
    _check_fields(block)
    out = []
    for line in block[:-2].decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        out.append((name.lower(), value.strip(" \t")))
    return out


# -- the chunked body ------------------------------------------------------------

_SIZE, _DATA, _DATA_CRLF, _TRAILERS, _DONE = range(5)


class ChunkedDecoder:
    """Incremental decoder of the chunked transfer coding (RFC 9112 §7.1).

    ``feed`` returns the body pieces decoded so far; ``done`` turns true after
    the last-chunk and the trailer section; ``unused`` then holds what followed.
    """

    __slots__ = ("limits", "declared", "done", "trailers", "unused", "_buf", "_state", "_left", "_error")

    def __init__(self, limits: Limits, already_received: int = 0) -> None:
        self.limits = limits
        self.declared = already_received
        self.done = False
        self.trailers: list[tuple[str, str]] = []
        self.unused = b""
        self._buf = b""
        self._state = _SIZE
        self._left = 0
        self._error: ParseError | None = None

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        if self._error is not None:
            raise self._error
        if self._state == _DONE:
            self.unused += data
            return []
        try:
            return self._feed(self._buf + data if self._buf else bytes(data))
        except ParseError as exc:
            self._error = exc
            self._buf = b""
            raise

    def _feed(self, buf: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        pos = 0
        size = len(buf)
        while pos < size:
            state = self._state
            if state == _DATA:
                take = min(self._left, size - pos)
                pieces.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = _DATA_CRLF
            elif state == _SIZE:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    self._check_partial_size_line(buf, pos)
                    break
                self._start_chunk(buf[pos:line_end])
                pos = line_end + 2
            elif state == _DATA_CRLF:
                # RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                if size - pos < 2:
                    if buf[pos : pos + 1] != b"\r":
                        raise ParseError(400, "bad_chunk")
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ParseError(400, "bad_chunk")
                pos += 2
                self._state = _SIZE
            else:  # _TRAILERS
                pos = self._trailers(buf, pos)
                if self._state != _DONE:
                    break
                self.unused = buf[pos:]
                self._buf = b""
                return pieces
        self._buf = buf[pos:]
        return pieces

    def _check_partial_size_line(self, buf: bytes, pos: int) -> None:
        partial = buf[pos:]
        if len(partial) > _MAX_CHUNK_SIZE_LINE:
            raise ParseError(400, "chunk_size_line_too_long")
        if partial[0] not in _HEXDIGITS:
            raise ParseError(400, "bad_chunk_size")  # RFC 9112 §7.1: 1*HEXDIG first
        if len(_HEX_PREFIX_RE.match(partial)[0]) > 16:  # type: ignore[index]
            raise ParseError(400, "bad_chunk_size")
        if b"\n" in partial or b"\r" in partial[:-1]:
            raise ParseError(400, "bare_cr_or_lf")

    def _start_chunk(self, line: bytes) -> None:
        if len(line) > _MAX_CHUNK_SIZE_LINE:
            raise ParseError(400, "chunk_size_line_too_long")
        match = _CHUNK_SIZE_LINE_RE.fullmatch(line)
        if match is None:
            if b"\n" in line or b"\r" in line:
                raise ParseError(400, "bare_cr_or_lf")  # RFC 9112 §2.2
            digits = len(_HEX_PREFIX_RE.match(line)[0])  # type: ignore[index]
            if not digits or digits > 16 or line[digits : digits + 1] not in (b" ", b"\t", b";"):
                raise ParseError(400, "bad_chunk_size")  # RFC 9112 §7.1: chunk-size = 1*HEXDIG
            raise ParseError(400, "bad_chunk_extension")  # RFC 9112 §7.1.1: chunk-ext syntax
        chunk_size = int(match[1], 16)
        self.declared += chunk_size
        if self.declared > self.limits.max_content_length:
            raise ParseError(413, "content_too_large")  # judged before any data arrives
        if chunk_size:
            self._left = chunk_size
            self._state = _DATA
        else:
            self._state = _TRAILERS

    def _trailers(self, buf: bytes, pos: int) -> int:
        # RFC 9112 §7.1: last-chunk trailer-section CRLF; §7.1.2: trailer-section =
        # *( field-line CRLF ), parsed like the header section and bounded the same.
        if buf[pos : pos + 2] == b"\r\n":
            self._state = _DONE
            self.done = True
            return pos + 2
        end = buf.find(b"\r\n\r\n", pos)
        limits = self.limits
        try:
            if end < 0:
                _check_partial_trailers(buf[pos:], limits)
                return pos
            self.trailers = _parse_fields(buf[pos : end + 2], limits)
        except ParseError as exc:
            # The error of the shortest bad prefix, as fed in pieces (see ``parse_head``).
            section = buf[pos : end + 4] if end >= 0 else buf[pos:]
            raise _earliest(lambda n: _check_partial_trailers(section[:n], limits),
                            len(section), exc) from None
        self._state = _DONE
        self.done = True
        return end + 4


# -- the event parser ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of request body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The request's body is complete; chunked trailers, if any."""

    trailers: list[tuple[str, str]] = field(default_factory=list)


Event = RequestHead | Data | EndOfMessage


class Parser:
    """Incremental, event-based request parser over a byte stream (pipelining included).

    Events: a ``RequestHead``, then zero or more ``Data``, then ``EndOfMessage``;
    then the next request. It does not switch protocols after Upgrade/CONNECT:
    the conn loop owns that. After a ``ParseError`` every ``feed`` raises it again.
    """

    __slots__ = ("limits", "_buf", "_left", "_decoder", "_in_body", "_error")

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buf = b""
        self._left = 0
        self._decoder: ChunkedDecoder | None = None
        self._in_body = False
        self._error: ParseError | None = None

    def feed(self, data: bytes | bytearray) -> list[Event]:
        if self._error is not None:
            raise self._error
        try:
            return self._feed(self._buf + data if self._buf else bytes(data))
        except ParseError as exc:
            self._error = exc
            self._buf = b""
            raise

    def _feed(self, buf: bytes) -> list[Event]:
        events: list[Event] = []
        while buf:
            if not self._in_body:
                parsed = parse_head(buf, self.limits)
                if parsed is None:
                    break
                head, used = parsed
                buf = buf[used:]
                events.append(head)
                if head.chunked:
                    self._decoder = ChunkedDecoder(self.limits)
                    self._in_body = True
                elif head.content_length:
                    self._left = head.content_length
                    self._in_body = True
                else:
                    events.append(EndOfMessage())
            elif self._decoder is not None:
                decoder = self._decoder
                events.extend(Data(piece) for piece in decoder.feed(buf))
                buf = b""
                if decoder.done:
                    events.append(EndOfMessage(decoder.trailers))
                    buf = decoder.unused
                    self._decoder = None
                    self._in_body = False
            else:
                take = min(self._left, len(buf))
                events.append(Data(buf[:take]))
                buf = buf[take:]
                self._left -= take
                if not self._left:
                    events.append(EndOfMessage())
                    self._in_body = False
        self._buf = buf
        return events


# -- the response side ----------------------------------------------------------------

# RFC 9110 §15 and the IANA HTTP Status Code Registry: code → reason phrase.
_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    418: "I'm a teapot",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ];
# we always send a phrase, "Unknown" for unregistered codes.
# Indexed by status code (0..599); entries below 100 are never sent.
STATUS_LINES = [
    b"HTTP/1.1 %d %s\r\n" % (code, _REASONS.get(code, "Unknown").encode("ascii"))
    for code in range(600)
]

_LOWER_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_checked_names: set[str] = set()
_CHECKED_NAMES_MAX = 1024


def status_line(status: int) -> bytes:
    """``b"HTTP/1.1 200 OK\\r\\n"``: pre-encoded for every code in 100..599."""
    if 100 <= status <= 599:
        return STATUS_LINES[status]
    raise ValueError(f"status {status!r} is outside 100..599")


def _encode_fields(headers: Iterable[tuple[str, str]]) -> bytes:
    """``name: value\\r\\n`` lines, after refusing anything that could split a field."""
    lines = []
    for name, value in headers:
        if name not in _checked_names:
            # RFC 9110 §5.1: field-name = token; we send lowercase names (h2/h3 must).
            if _LOWER_TOKEN_RE.fullmatch(name) is None:
                raise HeaderInjection(f"field name {name!r} is not a lowercase token")
            if len(_checked_names) < _CHECKED_NAMES_MAX:
                _checked_names.add(name)
        lines.append(f"{name}: {value}\r\n")
    text = "".join(lines)
    # RFC 9110 §5.5: CR, LF and NUL are invalid in field values and would let an
    # application's data split or terminate the head (response splitting). Names
    # are clean tokens, so each line owns exactly one CR and one LF when values do.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
        raise HeaderInjection("a field value contains CR, LF or NUL")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise HeaderInjection("a field value is not latin-1 encodable") from None


_field_lines: dict[tuple[str, str], bytes] = {}
_FIELD_LINES_MAX = 2048  # bounded: a handler echoing unique values cannot grow it


def encode_field(name: str, value: str) -> bytes:
    """One validated ``name: value\r\n`` line; short, common lines are cached."""
    line = _field_lines.get((name, value))
    if line is None:
        line = _encode_fields(((name, value),))
        if len(value) <= 128 and len(_field_lines) < _FIELD_LINES_MAX:
            _field_lines[(name, value)] = line
    return line


def field_lines(fields: Iterable[tuple[str, str]]) -> bytes:
    """``name: value\r\n`` lines for fields ``rr.exchange`` already validated
    (lowercase tokens, latin-1 values without CR, LF or NUL); lines are cached."""
    cache = _field_lines
    parts = []
    for pair in fields:
        line = cache.get(pair)
        if line is None:
            line = f"{pair[0]}: {pair[1]}\r\n".encode("latin-1")
            if len(pair[1]) <= 128:
                if len(cache) >= _FIELD_LINES_MAX:
                    cache.clear()
                cache[pair] = line
        parts.append(line)
    return b"".join(parts)


def encode_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """Status line, field lines and the empty line of a response head (RFC 9112 §4, §5)."""
    return status_line(status) + _encode_fields(headers) + b"\r\n"


def encode_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """One chunk (RFC 9112 §7.1); ``b""`` for empty data — never an accidental last-chunk."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def encode_last_chunk(trailers: Iterable[tuple[str, str]] | None = None) -> bytes:
    """``0 CRLF``, the trailer fields (validated like headers), and the final CRLF."""
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + _encode_fields(trailers) + b"\r\n"
