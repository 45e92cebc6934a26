"""HTTP/2 framing (RFC 9113 §4, §6) and rr's header-block encoding: pure, no sockets.

What it is: the byte-level half of rr's HTTP/2. ``FrameReader`` cuts a byte
stream into frames (``(type, flags, stream_id, payload)``), checking only what
needs no connection state (the 9-octet header and the frame-size limit); the
connection process (``rr.http2.conn``) applies the state machine. The
``*_frame`` functions serialise frames. ``HeaderEncoder`` encodes response
header lists; ``validate_request`` applies RFC 9113 §8 to a decoded request
header list.

Decoding header blocks uses the ``hpack`` library (RFC 7541, with its dynamic
table); encoding does not need a dynamic table and is done here: every field is
an indexed static entry or a literal *without indexing* (RFC 7541 §6.2.2), so
an encoded field does not depend on connection state and is cached across
connections. The peer's ``SETTINGS_HEADER_TABLE_SIZE`` then never matters to
us (we never insert into its decoder's table).

What it must never do: raise anything but ``FrameError`` / ``Malformed`` for a
peer's bytes, or buffer more than one frame beyond the limit it was given.
"""

from __future__ import annotations

import struct
from typing import Any

from hpack.table import HeaderTable

from rr.http1.codec import valid_host

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
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

# SETTINGS identifiers (RFC 9113 §6.5.2, RFC 8441 §3).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6
ENABLE_CONNECT_PROTOCOL = 0x8

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1

_HEAD = struct.Struct(">HBBBL")  # length as 16+8 bits, type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")


class FrameError(Exception):
    """A connection error found while framing: ``code`` is the RFC 9113 error code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class FrameReader:
    """Cuts bytes into frames; ``max_size`` is our SETTINGS_MAX_FRAME_SIZE."""

    __slots__ = ("buf", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME) -> None:
        self.buf = b""
        self.max_size = max_size

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        buf = self.buf + data if self.buf else data
        frames = []
        pos = 0
        end = len(buf)
        unpack = _HEAD.unpack_from
        while end - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(buf, pos)
            length = (hi << 8) | lo
            if length > self.max_size:
                self.buf = b""
                raise FrameError(FRAME_SIZE_ERROR, f"frame of {length} bytes over {self.max_size}")
            if end - pos - 9 < length:
                break
            start = pos + 9
            pos = start + length
            frames.append((ftype, flags, sid & 0x7FFFFFFF, buf[start:pos]))
        self.buf = buf[pos:] if pos < end else b""
        return frames


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def frame_head(ftype: int, flags: int, sid: int, length: int) -> bytes:
    """The 9-octet header of a frame whose payload is written separately."""
    return _HEAD.pack(length >> 8, length & 0xFF, ftype, flags, sid)


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def window_update_frame(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, _U32.pack(increment))


def rst_frame(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, _U32.pack(code))


def goaway_frame(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_sid, code) + debug)


def u32(payload: bytes) -> int:
    return int(_U32.unpack_from(payload)[0])


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """SETTINGS payload → ``[(id, value)]``; the caller checked the length is a multiple of 6."""
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def check_setting(ident: int, value: int) -> None:
    """RFC 9113 §6.5.2 value checks; raises ``FrameError`` with the required code."""
    if ident == ENABLE_PUSH and value > 1:
        raise FrameError(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
    if ident == INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
        raise FrameError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
    if ident == MAX_FRAME_SIZE and not DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
        raise FrameError(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
    if ident == ENABLE_CONNECT_PROTOCOL and value > 1:
        raise FrameError(PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1")


def strip_padding(flags: int, payload: bytes) -> bytes:
    """The payload without the pad-length octet and padding (RFC 9113 §6.1, §6.2)."""
    if not flags & PADDED:
        return payload
    if not payload:
        raise FrameError(FRAME_SIZE_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise FrameError(PROTOCOL_ERROR, "padding as long as the payload")
    return payload[1:len(payload) - pad]


# -- header encoding -----------------------------------------------------------------

_STATIC = HeaderTable.STATIC_TABLE
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(_STATIC, 1):
    _STATIC_FULL.setdefault((_n, _v), _i)
    _STATIC_NAME.setdefault(_n, _i)


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1 integer with ``first`` holding the representation bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(data: bytes) -> bytes:
    return _integer(len(data), 7, 0) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field: an indexed static entry, else a literal without indexing (§6.2.2)."""
    index = _STATIC_FULL.get((name, value))
    if index is not None:
        return _integer(index, 7, 0x80)
    index = _STATIC_NAME.get(name)
    if index is not None:
        return _integer(index, 4, 0) + _literal(value)
    return b"\x00" + _literal(name) + _literal(value)


_CACHE_MAX = 4096
_field_cache: dict[tuple[str, str], bytes] = {}


def encode_headers(headers: list[tuple[str, str]]) -> bytes:
    """A header block for ``headers`` (str pairs, names already lowercase and validated)."""
    cache = _field_cache
    parts = []
    for pair in headers:
        enc = cache.get(pair)
        if enc is None:
            enc = encode_field(pair[0].encode("latin-1"), pair[1].encode("latin-1"))
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[pair] = enc
        parts.append(enc)
    return b"".join(parts)


_LENGTH_BLOCKS: dict[int, bytes] = {}


def encode_length(length: int) -> bytes:
    """The ``content-length`` field's block; common lengths are cached (bounded)."""
    block = _LENGTH_BLOCKS.get(length)
    if block is None:
        block = encode_field(b"content-length", b"%d" % length)
        if len(_LENGTH_BLOCKS) >= _CACHE_MAX:
            _LENGTH_BLOCKS.clear()
        _LENGTH_BLOCKS[length] = block
    return block


_STATUS_BLOCKS: dict[int, bytes] = {}


def encode_status(status: int) -> bytes:
    block = _STATUS_BLOCKS.get(status)
    if block is None:
        block = _STATUS_BLOCKS[status] = encode_field(b":status", str(status).encode())
    return block


# -- request header validation (RFC 9113 §8) -------------------------------------------


class Malformed(Exception):
    """A malformed request (RFC 9113 §8.1.1): a stream error of type PROTOCOL_ERROR."""


_REQUEST_PSEUDO = frozenset({":method", ":scheme", ":authority", ":path", ":protocol"})
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                  "upgrade"})
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_BAD_VALUE = ("\r", "\n", "\0")
_METHOD = TOKEN | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _skip_int(block: bytes, i: int, prefix_mask: int) -> tuple[int, int]:
    """RFC 7541 §5.1: (value, next position) of the integer whose first octet is at ``i``."""
    value = block[i] & prefix_mask
    i += 1
    if value < prefix_mask:
        return value, i
    shift = 0
    n = len(block)
    while i < n:
        b = block[i]
        i += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i
        if shift > 28:
            break
    return -1, n + 1  # truncated or absurd: not ours to judge, the decoder will


def table_neutral(block: bytes) -> bool:
    """True when no field of ``block`` changes the decoder's dynamic table.

    That is: only indexed fields (RFC 7541 §6.1) and literals without indexing
    or never indexed (§6.2.2, §6.2.3); no incremental indexing, no size update.
    Decoding such a block again under an unchanged table gives the same list,
    so its decoded (and validated) form can be cached until a block that may
    change the table arrives (clients such as nghttp2 send ``:path`` as a
    literal without indexing, so the common request is table-neutral).
    """
    i = 0
    n = len(block)
    while i < n:
        b = block[i]
        if b & 0x80:
            _, i = _skip_int(block, i, 0x7F)
            continue
        if b & 0xE0:  # 01xxxxxx incremental indexing, 001xxxxx table size update
            return False
        index, i = _skip_int(block, i, 0x0F)
        strings = 1 if index else 2
        for _ in range(strings):
            if i >= n:
                return False
            length, i = _skip_int(block, i, 0x7F)
            if length < 0:
                return False
            i += length
    return i == n


def field_list_size(fields: Any) -> int:
    """RFC 9113 §6.5.2: the sum of name + value lengths plus 32 per field."""
    return sum(len(n) + len(v) + 32 for n, v in fields)


def validate_request(decoded: list[Any], connect_protocol: bool = False
                     ) -> tuple[dict[str, str], list[tuple[str, str]], int | None]:
    """Split a decoded request header list into (pseudo, fields, content_length).

    ``decoded`` holds ``(bytes, bytes)`` pairs. Raises ``Malformed`` for anything
    §8.1.1/§8.2/§8.3 calls malformed. Cookie crumbs are joined with ``"; "``
    (§8.2.3); ``:authority`` becomes ``host`` when the client sent none.
    """
    pseudo: dict[str, str] = {}
    fields: list[tuple[str, str]] = []
    cookies: list[str] = []
    regular = False
    length: int | None = None
    for raw_name, raw_value in decoded:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name[:1] == ":":
            if regular:
                raise Malformed("pseudo-header after a regular field")
            if name not in _REQUEST_PSEUDO or name in pseudo:
                raise Malformed(f"unknown or repeated pseudo-header {name}")
            # §8.2.1: no field value, pseudo-headers included, may hold CR, LF or NUL
            # (:authority becomes the request's host; found by tools/fuzz, h2_hpack).
            if any(c in value for c in _BAD_VALUE):
                raise Malformed(f"invalid value of {name}")
            pseudo[name] = value
            continue
        regular = True
        if not name or not TOKEN.issuperset(name):
            raise Malformed(f"invalid field name {name!r}")
        if name in _CONNECTION_SPECIFIC:
            raise Malformed(f"connection-specific field {name}")
        if value and (value[0] in " \t" or value[-1] in " \t" or any(c in value for c in _BAD_VALUE)):
            raise Malformed(f"invalid value of {name}")
        if name == "te" and value != "trailers":
            raise Malformed("te other than trailers")
        if name == "cookie":
            cookies.append(value)
            continue
        if name == "content-length":
            if not value.isdigit() or not value.isascii():
                raise Malformed("invalid content-length")
            n = int(value)
            if length is not None and n != length:
                raise Malformed("conflicting content-length")
            length = n
        fields.append((name, value))
    method = pseudo.get(":method")
    if not method:
        raise Malformed("no :method")
    if not _METHOD.issuperset(method):
        raise Malformed("a :method that is not a token")  # RFC 9110 §9.1: method = token
    if ":protocol" in pseudo and (not connect_protocol or method != "CONNECT"):
        raise Malformed(":protocol outside an extended CONNECT")
    if method == "CONNECT" and ":protocol" not in pseudo:
        if ":scheme" in pseudo or ":path" in pseudo or not pseudo.get(":authority"):
            raise Malformed("CONNECT with :scheme/:path or without :authority")
    else:
        path = pseudo.get(":path")
        if not path or ":scheme" not in pseudo:
            raise Malformed("missing :path or :scheme")
        if path[0] != "/" and not (path == "*" and method == "OPTIONS"):
            raise Malformed("invalid :path")
    authority = pseudo.get(":authority")
    if authority is not None:
        # The request's host on every protocol: the Host grammar h1 holds Host to (RFC 9113
        # §8.3.1: no userinfo; RFC 3986 §3.2.2 reg-name / IP-literal, §3.2.3 port).
        if not valid_host(authority):
            raise Malformed("invalid :authority")
        host = next((v for n, v in fields if n == "host"), None)
        if host is None:
            fields.insert(0, ("host", authority))
        elif host != authority:
            raise Malformed("host differs from :authority")
    else:
        host = next((v for n, v in fields if n == "host"), None)
        if host is not None and not valid_host(host):
            raise Malformed("invalid host")  # without :authority, host is the request's host
    if cookies:
        fields.append(("cookie", "; ".join(cookies)))
    return pseudo, fields, length


def validate_trailers(decoded: list[Any]) -> list[tuple[str, str]]:
    """Request trailers: no pseudo-headers, the same name/value rules (§8.1)."""
    out = []
    for raw_name, raw_value in decoded:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if not name or not TOKEN.issuperset(name) or name in _CONNECTION_SPECIFIC:
            raise Malformed(f"invalid trailer {name!r}")
        if any(c in value for c in _BAD_VALUE):
            raise Malformed(f"invalid value of trailer {name}")
        out.append((name, value))
    return out
