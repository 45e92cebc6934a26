"""The PROXY protocol (v1 text and v2 binary): the header a load balancer puts
before a connection's first byte to say who the client really is.

What it is: a pure parser. ``parse(data)`` takes the bytes read so far from a
fresh connection and answers ``None`` (need more), a ``(ProxyHeader,
consumed)`` pair, or raises ``ProxyHeaderError``. It never over-reads: a
complete header says exactly how many bytes it took, and what follows (TLS
records, an HTTP request, the h2 preface) is the protocol's.

What it owns: the grammar of both versions (HAProxy's specification,
"The PROXY protocol", versions 1 and 2, which is the only standard there is),
the bound on a header's size, and the parsed TLVs. Reading the bytes off the
socket (with a deadline, before TLS) and the trusted-source check are
``rr.transport``'s; this module must never touch a socket, a clock or a
listener.

Why strict: only a trusted proxy may send the header, so anything malformed
is not a client's typo but a misconfiguration or an attack, and the caller
closes the connection without a word. Every rejection is a ``ProxyHeaderError``
naming the rule; nothing else escapes ``parse`` (the fuzz target
``proxy_header`` holds it to that).

Version 1 (one text line, at most 107 bytes with its CRLF)::

    "PROXY" SP ( "TCP4" | "TCP6" ) SP src-addr SP dst-addr SP src-port SP dst-port CRLF
    "PROXY" SP "UNKNOWN" [ SP anything-up-to-CRLF ] CRLF

Addresses in their canonical text (dotted quad for TCP4, RFC 4291 text for
TCP6, checked against the family), ports decimal 0-65535 without leading
zeros. ``UNKNOWN`` means "use the connection's own addresses".

Version 2 (16 fixed bytes, then ``length`` bytes)::

    signature(12) = \\r\\n\\r\\n\\0\\r\\nQUIT\\n
    ver_cmd(1)    = 0x2_ version, command 0 LOCAL | 1 PROXY
    fam(1)        = family 0 UNSPEC | 1 INET | 2 INET6 | 3 UNIX (high nibble),
                    transport 0 UNSPEC | 1 STREAM | 2 DGRAM (low nibble)
    length(2)     = big-endian size of what follows
    addresses     = INET 4+4+2+2 | INET6 16+16+2+2 | UNIX 108+108 bytes
    TLVs          = type(1) length(2) value, to the end of the block

``LOCAL`` (the proxy's own health check) and ``UNSPEC`` carry no client: the
connection's addresses stand; a ``LOCAL`` header's block is discarded whole,
TLVs included, as the specification says. TLVs are kept in order and exposed raw
(``tlvs``) with helpers for the registered types: ``PP2_TYPE_ALPN``,
``PP2_TYPE_AUTHORITY`` (the client's SNI), ``PP2_TYPE_UNIQUE_ID``,
``PP2_TYPE_NETNS`` and ``PP2_TYPE_SSL`` (client flags, verify result and the
version / CN / cipher / signature / key sub-TLVs). A ``PP2_TYPE_CRC32C`` is
verified (a mismatch is a rejection). A TLV running past the block, or a
malformed SSL TLV, is a rejection; unknown types (cloud vendors' 0xE0-0xEF)
are kept as they are.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# The v1 line's maximum, CRLF included (the specification's worst case: TCP6 with every field full).
V1_MAX = 107
V2_FIXED = 16

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30

PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

# The unique id is at most 128 bytes (specification, §2.2.5).
_UNIQUE_ID_MAX = 128
_ADDRESS_SIZES = {1: 12, 2: 36, 3: 216}
_FAMILIES = {0: "UNSPEC", 1: "INET", 2: "INET6", 3: "UNIX"}
_TRANSPORTS = {0: "UNSPEC", 1: "STREAM", 2: "DGRAM"}


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY protocol header rr accepts (the message says which rule)."""


@dataclass(frozen=True, slots=True)
class SslInfo:
    """The ``PP2_TYPE_SSL`` TLV: how the client reached the proxy over TLS."""

    client: int  # PP2_CLIENT_* bits
    verify: int  # 0: the client presented a certificate that verified
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None

    @property
    def tls(self) -> bool:
        """The client connected to the proxy over TLS (``PP2_CLIENT_SSL``)."""
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def client_cert(self) -> bool:
        """The client presented a certificate (on this connection or its TLS session)."""
        return bool(self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS))


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """One parsed PROXY header.

    ``source``/``destination`` are ``(ip, port)`` for TCP/INET families, the
    path string for UNIX, ``None`` when the header carries no address
    (v1 ``UNKNOWN``, v2 ``LOCAL`` or ``UNSPEC``). ``client`` is the address
    ``req.peer`` becomes, or ``None`` when the connection's own stands.
    """

    version: int
    command: str  # "PROXY" or "LOCAL" (v2 only)
    family: str  # v1: TCP4 / TCP6 / UNKNOWN; v2: INET / INET6 / UNIX / UNSPEC
    transport: str = "STREAM"
    source: tuple[str, int] | str | None = None
    destination: tuple[str, int] | str | None = None
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())
    ssl: SslInfo | None = None

    @property
    def client(self) -> tuple[str, int] | None:
        return self.source if isinstance(self.source, tuple) else None

    def tlv(self, kind: int) -> bytes | None:
        """The first TLV of type ``kind``'s value, or None."""
        for t, value in self.tlvs:
            if t == kind:
                return value
        return None

    @property
    def alpn(self) -> bytes | None:
        return self.tlv(PP2_TYPE_ALPN)

    @property
    def authority(self) -> str | None:
        value = self.tlv(PP2_TYPE_AUTHORITY)
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def unique_id(self) -> bytes | None:
        return self.tlv(PP2_TYPE_UNIQUE_ID)

    @property
    def netns(self) -> str | None:
        value = self.tlv(PP2_TYPE_NETNS)
        return None if value is None else value.decode("ascii", "replace")


def parse(data: bytes, max_size: int = 4096) -> tuple[ProxyHeader, int] | None:
    """Parse a PROXY header at the start of ``data``.

    Returns ``None`` while ``data`` is a proper prefix of a header that could
    still be valid, ``(header, consumed)`` once complete; raises
    ``ProxyHeaderError`` as soon as the bytes cannot be one, or a v2 header
    would exceed ``max_size`` bytes.
    """
    if data[:1] == b"P" or not data:
        if not V1_PREFIX.startswith(data[:6]):
            raise ProxyHeaderError("not a PROXY protocol header")
        return _parse_v1(data) if len(data) >= len(V1_PREFIX) else None
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyHeaderError("not a PROXY protocol header")
        return _parse_v2(data, max_size) if len(data) >= V2_FIXED else None
    raise ProxyHeaderError("not a PROXY protocol header")


# -- version 1 ---------------------------------------------------------------------

def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    head = data[:V1_MAX]
    end = head.find(b"\r\n")
    if end < 0:
        # Still a prefix only while short enough and with no line ending but a last lone CR.
        if len(data) >= V1_MAX or b"\n" in head or b"\r" in head[:-1]:
            raise ProxyHeaderError("v1 line not ended by CRLF within 107 bytes")
        return None
    line = data[len(V1_PREFIX):end]
    if b"\r" in line or b"\n" in line or b"\0" in line:
        raise ProxyHeaderError("v1 line holds CR, LF or NUL")
    consumed = end + 2
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        return ProxyHeader(1, "PROXY", "UNKNOWN"), consumed
    parts = line.split(b" ")
    if len(parts) != 5:
        raise ProxyHeaderError("v1 line needs protocol, two addresses and two ports, single-spaced")
    family, src, dst, sport, dport = parts
    if family not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("v1 protocol must be TCP4, TCP6 or UNKNOWN")
    version = 4 if family == b"TCP4" else 6
    source = (_v1_address(src, version), _v1_port(sport))
    destination = (_v1_address(dst, version), _v1_port(dport))
    return ProxyHeader(1, "PROXY", family.decode(), source=source, destination=destination), consumed


def _v1_address(raw: bytes, version: int) -> str:
    if b"%" in raw:  # a scope id names an interface of the proxy's host, not an address
        raise ProxyHeaderError("v1 address has a scope id")
    try:
        text = raw.decode("ascii")
        addr = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"v1 address is not an IPv{version} address") from None
    return str(addr)


def _v1_port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (raw[:1] == b"0" and raw != b"0") or int(raw) > 65535:
        raise ProxyHeaderError("v1 port must be 0-65535 in decimal without leading zeros")
    return int(raw)


# -- version 2 ---------------------------------------------------------------------

def _parse_v2(data: bytes, max_size: int) -> tuple[ProxyHeader, int] | None:
    ver_cmd, fam, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError("v2 version nibble must be 2")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyHeaderError("v2 command must be LOCAL or PROXY")
    family, transport = _FAMILIES.get(fam >> 4), _TRANSPORTS.get(fam & 0x0F)
    if family is None or transport is None:
        raise ProxyHeaderError("v2 family or transport unknown")
    total = V2_FIXED + length
    if total > max_size:
        raise ProxyHeaderError(f"v2 header of {total} bytes over the {max_size}-byte limit")
    if len(data) < total:
        return None
    block = data[V2_FIXED:total]
    address_size = _ADDRESS_SIZES.get(fam >> 4, 0)
    if command == 0:
        # LOCAL: the proxy speaking for itself (a health check). The specification says to
        # discard the whole block, family included: the connection's own addresses stand.
        return ProxyHeader(2, "LOCAL", family, transport), total
    if len(block) < address_size:
        raise ProxyHeaderError("v2 address block shorter than its family needs")
    source: tuple[str, int] | str | None
    destination: tuple[str, int] | str | None
    if family == "INET":
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", block)
        source = (str(ipaddress.IPv4Address(src)), sport)
        destination = (str(ipaddress.IPv4Address(dst)), dport)
    elif family == "INET6":
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", block)
        source = (str(ipaddress.IPv6Address(src)), sport)
        destination = (str(ipaddress.IPv6Address(dst)), dport)
    elif family == "UNIX":
        source = _unix_path(block[:108])
        destination = _unix_path(block[108:216])
    else:  # UNSPEC: no address given; the connection's own addresses stand
        source = destination = None
    tlvs = _tlvs(block[address_size:], V2_FIXED + address_size)
    _check_crc(data[:total], tlvs)
    pairs = tuple((kind, value) for kind, _, value in tlvs)
    return ProxyHeader(2, "PROXY", family, transport, source, destination, pairs, _ssl(pairs)), total


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _tlvs(raw: bytes, base: int = 0) -> list[tuple[int, int, bytes]]:
    """``(type, offset of the value in the header, value)`` for each TLV in ``raw`` (at ``base``)."""
    out = []
    at = 0
    while at < len(raw):
        if len(raw) - at < 3:
            raise ProxyHeaderError("v2 TLV header truncated")
        kind, size = raw[at], struct.unpack_from("!H", raw, at + 1)[0]
        value = raw[at + 3:at + 3 + size]
        if len(value) != size:
            raise ProxyHeaderError(f"v2 TLV 0x{kind:02x} runs past the header")
        if kind == PP2_TYPE_UNIQUE_ID and size > _UNIQUE_ID_MAX:
            raise ProxyHeaderError("v2 unique id over 128 bytes")
        if kind == PP2_TYPE_CRC32C and size != 4:
            raise ProxyHeaderError("v2 CRC32C TLV is not 4 bytes")
        out.append((kind, base + at + 3, bytes(value)))
        at += 3 + size
    return out


_SSL_SUBTYPES = {PP2_SUBTYPE_SSL_VERSION: "version", PP2_SUBTYPE_SSL_CN: "cn", PP2_SUBTYPE_SSL_CIPHER: "cipher",
                 PP2_SUBTYPE_SSL_SIG_ALG: "sig_alg", PP2_SUBTYPE_SSL_KEY_ALG: "key_alg"}


def _ssl(tlvs: tuple[tuple[int, bytes], ...]) -> SslInfo | None:
    value = next((v for t, v in tlvs if t == PP2_TYPE_SSL), None)
    if value is None:
        return None
    if len(value) < 5:
        raise ProxyHeaderError("v2 SSL TLV shorter than its client and verify fields")
    client, verify = value[0], struct.unpack_from("!I", value, 1)[0]
    fields: dict[str, str] = {}
    for kind, _, sub in _tlvs(value[5:]):
        name = _SSL_SUBTYPES.get(kind)
        if name is not None and name not in fields:
            fields[name] = sub.decode("utf-8", "replace")
    return SslInfo(client, verify, **fields)


def _check_crc(header: bytes, tlvs: list[tuple[int, int, bytes]]) -> None:
    """Verify a ``PP2_TYPE_CRC32C`` TLV: CRC-32C of the whole header with its value zeroed."""
    at = next((offset for kind, offset, _ in tlvs if kind == PP2_TYPE_CRC32C), None)
    if at is None:
        return
    zeroed = header[:at] + b"\0\0\0\0" + header[at + 4:]
    if struct.pack("!I", crc32c(zeroed)) != header[at:at + 4]:
        raise ProxyHeaderError("v2 CRC32C does not match the header")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as ``PP2_TYPE_CRC32C`` carries it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
