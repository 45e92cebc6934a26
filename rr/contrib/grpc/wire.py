"""The gRPC-over-HTTP/2 wire format, seen from the server: pure functions and a message reader.

What it owns: the rules of the gRPC HTTP/2 protocol document
(``doc/PROTOCOL-HTTP2.md`` in grpc/grpc, cited as "spec" below) that turn
header values and body bytes into Python values and back:

- ``Length-Prefixed-Message → Compressed-Flag Message-Length Message``: a
  1-byte flag (0 or 1) and a 4-byte big-endian length before each message
  (``frame``, ``MessageReader``);
- ``Timeout → "grpc-timeout" TimeoutValue TimeoutUnit``: at most 8 ASCII
  digits and one of ``H M S m u n`` (``parse_timeout``);
- ``Status-Message → "grpc-message" Percent-Encoded``: UTF-8, then every
  byte outside ``%x20-%x7E`` and ``%`` itself as ``%XX`` (``percent_encode``);
- ``Binary-Header → {Header-Name "-bin"} {base64 encoded value}``: emitted
  unpadded, accepted padded or not; several values of one ``-bin`` key may
  arrive comma-joined (``encode_metadata``, ``decode_metadata``);
- ``Message-Encoding``: ``identity``, ``gzip`` (RFC 1952) and ``deflate``
  (the zlib format, RFC 1950, as grpc's own implementations use it).

What it must never do: touch a socket, a greenlet or a ``Request``.
``MessageReader`` pulls bytes through the ``read(n)`` callable it is given
(``req.read_body`` in the server) and never holds more than one message plus
one read's worth of bytes: a length prefix over the limit is refused before
its payload is read, and a compressed payload is inflated with a bound.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

# grpc.StatusCode values, as the integers that go in grpc-status.
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNIMPLEMENTED = 12
UNAVAILABLE = 14

PREFIX = struct.Struct(">BI")
# Message encodings this server reads and writes, in the order it prefers them.
ENCODINGS = ("gzip", "deflate", "identity")
ACCEPT_ENCODING = "identity,deflate,gzip"
# Bytes asked of the body source per read: one HTTP/2 DATA frame's worth, and more.
READ_SIZE = 65536


class StatusError(Exception):
    """A failure the gRPC layer answers with a status (``code``, ``details``)."""

    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Metadatum(NamedTuple):
    """One metadata entry, shaped like grpcio's (``.key``/``.value``, or unpack as a pair)."""

    key: str
    value: str | bytes


def frame(payload: bytes, compressed: bool = False) -> bytes:
    return PREFIX.pack(1 if compressed else 0, len(payload)) + payload


# spec: TimeoutValue → {positive integer as ASCII string of at most 8 digits}
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIMEOUT = re.compile(r"[0-9]{1,8}[HMSmun]")


def parse_timeout(value: str) -> float:
    """Seconds from a ``grpc-timeout`` value; ``ValueError`` when it breaks the grammar."""
    if not _TIMEOUT.fullmatch(value):
        raise ValueError(f"malformed grpc-timeout {value!r}")
    return int(value[:-1]) * _UNITS[value[-1]]


def percent_encode(text: str) -> str:
    """``grpc-message`` encoding: UTF-8, then bytes outside 0x20-0x7E and ``%`` as ``%XX``."""
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw.decode("ascii")
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)


# spec: Header-Name → 1*( %x30-39 / %x61-7A / "_" / "-" / ".") ; 0-9 a-z _ - .
_KEY = re.compile(r"[0-9a-z_.\-]+")
# spec: ASCII-Value → 1*( %x20-%x7E ) ; space and printable ASCII
_ASCII_VALUE = re.compile(r"[\x20-\x7e]*")


def encode_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[tuple[str, str]]:
    """Header fields for application metadata; ``ValueError`` names the first bad entry.

    Keys are lowercase ``[0-9a-z_.-]``, not ``grpc-`` (reserved for the
    protocol); ``-bin`` values are bytes (a str is UTF-8 encoded) sent as
    unpadded base64; other values are printable ASCII.
    """
    out: list[tuple[str, str]] = []
    for item in metadata or ():
        key, value = item
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key.startswith("grpc-"):
            raise ValueError(f"metadata key {key!r} is not a lowercase [0-9a-z_.-] name outside grpc-*")
        if key.endswith("-bin"):
            raw = value.encode() if isinstance(value, str) else bytes(value)
            out.append((key, base64.b64encode(raw).rstrip(b"=").decode("ascii")))
        elif isinstance(value, str) and _ASCII_VALUE.fullmatch(value):
            out.append((key, value))
        else:
            raise ValueError(f"metadata value of {key!r} must be printable ASCII text (or use a -bin key)")
    return out


# Request fields that are the protocol's, not the application's metadata.
_NOT_METADATA = frozenset({
    "content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "host",
    "connection", "content-length", "accept-encoding",
})  # fmt: skip


def b64decode(value: str) -> bytes:
    """Base64 with or without padding (spec: implementations MUST accept both)."""
    value = value.strip()
    return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)


def decode_metadata(fields: Iterable[tuple[str, str]]) -> tuple[Metadatum, ...]:
    """The application's metadata from request fields; ``-bin`` values decoded to bytes.

    Raises ``StatusError(INTERNAL)`` for a ``-bin`` value that is not base64.
    """
    out: list[Metadatum] = []
    for key, value in fields:
        if key in _NOT_METADATA or key.startswith(":"):
            continue
        if key.endswith("-bin"):
            try:
                out.extend(Metadatum(key, b64decode(part)) for part in value.split(","))
            except (binascii.Error, ValueError):
                raise StatusError(INTERNAL, f"metadata {key!r} is not base64") from None
        else:
            out.append(Metadatum(key, value))
    return tuple(out)


def compress(payload: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return zlib.compress(payload, 6, 31)
    return zlib.compress(payload, 6)


def decompress(payload: bytes, encoding: str, limit: int) -> bytes:
    """Inflate one message, never past ``limit`` bytes (a zip bomb stops at the bound)."""
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(payload, limit + 1)
    except zlib.error:
        raise StatusError(INTERNAL, f"message is not valid {encoding} data") from None
    if len(out) > limit:
        raise StatusError(RESOURCE_EXHAUSTED,
                          f"decompressed message larger than max_receive_message_length ({limit})")
    if not inflater.eof:
        raise StatusError(INTERNAL, f"truncated {encoding} message")
    return out


class MessageReader:
    """Length-prefixed messages pulled from ``read(n)``, one at a time.

    ``encoding`` is the request's ``grpc-encoding`` (None or ``identity``:
    a compressed flag is an error). ``next()`` returns the next message's
    bytes, or None at a clean end of the body.
    """

    __slots__ = ("read", "limit", "encoding", "buf")

    def __init__(self, read: Callable[[int], bytes], limit: int, encoding: str | None) -> None:
        self.read = read
        self.limit = limit
        self.encoding = encoding if encoding != "identity" else None
        self.buf = bytearray()

    def _fill(self, n: int) -> bool:
        """Make ``buf`` hold at least n bytes; False when the body ended first."""
        buf = self.buf
        while len(buf) < n:
            chunk = self.read(max(n - len(buf), READ_SIZE))
            if not chunk:
                return False
            buf += chunk
        return True

    def next(self) -> bytes | None:
        if not self._fill(5):
            if self.buf:
                raise StatusError(INTERNAL, "request body ended inside a message prefix")
            return None
        flag, length = PREFIX.unpack_from(self.buf)
        if flag > 1:
            raise StatusError(INTERNAL, f"invalid compressed-flag {flag}")
        if length > self.limit:
            raise StatusError(RESOURCE_EXHAUSTED,
                              f"received message larger than max ({length} vs. {self.limit})")
        if not self._fill(5 + length):
            raise StatusError(INTERNAL, "request body ended inside a message")
        with memoryview(self.buf) as view:
            payload = bytes(view[5:5 + length])
        del self.buf[:5 + length]
        if flag:
            if self.encoding is None:
                raise StatusError(INTERNAL, "compressed message without a grpc-encoding")
            payload = decompress(payload, self.encoding, self.limit)
        return payload
