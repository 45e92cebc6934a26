"""rr.proxy_protocol: the PROXY v1/v2 grammar, byte by byte, and hostile headers.

Headers are built here by hand from the specification's layout (not by rr),
and the HAProxy-built ones are checked end to end in test_proxy_wire.py.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rr import proxy_protocol as pp
from rr.proxy_protocol import ProxyHeaderError, parse

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int = 1, fam: int = 0x11, body: bytes = b"", length: int | None = None) -> bytes:
    return SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body) if length is None else length) + body


def inet(src: str = "192.0.2.1", dst: str = "198.51.100.2", sport: int = 51000, dport: int = 443) -> bytes:
    return bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + struct.pack("!HH", sport, dport)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# -- version 1 ------------------------------------------------------------------------

def test_v1_tcp4_gives_source_and_destination_and_consumes_exactly_the_line():
    data = b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nGET / HTTP/1.1\r\n"
    header, used = parse(data)
    assert (header.version, header.family, header.command) == (1, "TCP4", "PROXY")
    assert header.source == ("192.0.2.1", 51000) and header.destination == ("198.51.100.2", 443)
    assert header.client == ("192.0.2.1", 51000)
    assert data[used:] == b"GET / HTTP/1.1\r\n"


def test_v1_tcp6_canonicalises_the_address():
    header, _ = parse(b"PROXY TCP6 2001:DB8:0:0::1 ::1 1 65535\r\n")
    assert header.source == ("2001:db8::1", 1) and header.destination == ("::1", 65535)


def test_v1_worst_case_line_of_107_bytes_is_accepted():
    line = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    assert len(line) == 104  # the specification's 107 leaves room; both fit
    assert parse(line)[1] == len(line)


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::2 1 2\r\n"])
def test_v1_unknown_has_no_client_and_ignores_the_rest_of_the_line(line):
    header, used = parse(line + b"rest")
    assert header.family == "UNKNOWN" and header.client is None and used == len(line)


def test_v1_every_proper_prefix_is_need_more():
    line = b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n"
    for end in range(len(line)):
        assert parse(line[:end]) is None, line[:end]


V1_HOSTILE = {
    "lowercase_keyword": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "tcp5": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "ipv6_as_tcp4": b"PROXY TCP4 ::1 ::1 1 2\r\n",
    "ipv4_as_tcp6": b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    "ipv4_leading_zero": b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "ipv4_out_of_range": b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "ipv6_scope_id": b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "port_over_65535": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "port_leading_zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
    "port_negative": b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "port_plus": b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "double_space": b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "tab_separator": b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
    "trailing_space": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "missing_port": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "bare_lf": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "bare_cr_inside": b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
    "nul_in_unknown": b"PROXY UNKNOWN \x00\r\n",
    "no_crlf_in_107_bytes": b"PROXY UNKNOWN " + b"x" * 93,
    "http_request": b"GET / HTTP/1.1\r\n",
    "tls_client_hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "h2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(V1_HOSTILE))
def test_v1_hostile_header_is_refused(name):
    with pytest.raises(ProxyHeaderError):
        parse(V1_HOSTILE[name])


def test_v1_refusal_comes_as_soon_as_the_bytes_prove_it():
    with pytest.raises(ProxyHeaderError):
        parse(b"PROXX")
    with pytest.raises(ProxyHeaderError):
        parse(b"G")


# -- version 2 ------------------------------------------------------------------------

def test_v2_proxy_inet_gives_the_client_and_consumes_exactly_the_header():
    data = v2(body=inet()) + b"\x16\x03\x01"
    header, used = parse(data)
    assert (header.version, header.command, header.family, header.transport) == (2, "PROXY", "INET", "STREAM")
    assert header.client == ("192.0.2.1", 51000) and header.destination == ("198.51.100.2", 443)
    assert data[used:] == b"\x16\x03\x01"


def test_v2_proxy_inet6():
    src = bytes(range(16))
    body = src + bytes(15) + b"\x01" + struct.pack("!HH", 1, 2)
    header, _ = parse(v2(fam=0x21, body=body))
    assert header.client == ("1:203:405:607:809:a0b:c0d:e0f", 1) and header.destination == ("::1", 2)


def test_v2_unix_gives_paths_and_no_client():
    body = b"/run/client.sock".ljust(108, b"\0") + b"/run/rr.sock".ljust(108, b"\0")
    header, _ = parse(v2(fam=0x31, body=body))
    assert header.family == "UNIX" and header.source == "/run/client.sock" and header.destination == "/run/rr.sock"
    assert header.client is None


def test_v2_local_discards_the_block_and_has_no_client():
    header, used = parse(v2(command=0, fam=0x11, body=inet() + tlv(pp.PP2_TYPE_AUTHORITY, b"x")))
    assert header.command == "LOCAL" and header.client is None and header.tlvs == ()
    assert used == 16 + 12 + 4


def test_v2_unspec_has_no_client_but_keeps_its_tlvs():
    header, _ = parse(v2(fam=0x00, body=tlv(pp.PP2_TYPE_AUTHORITY, b"example.com")))
    assert header.client is None and header.authority == "example.com"


def test_v2_tlvs_are_exposed_in_order_with_helpers():
    ssl_value = (bytes([pp.PP2_CLIENT_SSL | pp.PP2_CLIENT_CERT_CONN]) + struct.pack("!I", 0)
                 + tlv(pp.PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3") + tlv(pp.PP2_SUBTYPE_SSL_CN, b"client one")
                 + tlv(pp.PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_128_GCM_SHA256")
                 + tlv(pp.PP2_SUBTYPE_SSL_SIG_ALG, b"ECDSA-SHA256") + tlv(pp.PP2_SUBTYPE_SSL_KEY_ALG, b"EC256"))
    tlvs = (tlv(pp.PP2_TYPE_ALPN, b"h2") + tlv(pp.PP2_TYPE_AUTHORITY, b"api.example.com")
            + tlv(pp.PP2_TYPE_NOOP, b"") + tlv(pp.PP2_TYPE_UNIQUE_ID, b"id-1") + tlv(pp.PP2_TYPE_SSL, ssl_value)
            + tlv(pp.PP2_TYPE_NETNS, b"blue") + tlv(0xEA, b"vpce-123"))
    header, _ = parse(v2(body=inet() + tlvs))
    assert [kind for kind, _ in header.tlvs] == [0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xEA]
    assert header.alpn == b"h2" and header.authority == "api.example.com"
    assert header.unique_id == b"id-1" and header.netns == "blue" and header.tlv(0xEA) == b"vpce-123"
    ssl = header.ssl
    assert ssl is not None and ssl.tls and ssl.client_cert and ssl.verify == 0
    assert (ssl.version, ssl.cn, ssl.cipher, ssl.sig_alg, ssl.key_alg) == (
        "TLSv1.3", "client one", "TLS_AES_128_GCM_SHA256", "ECDSA-SHA256", "EC256")


def _with_crc(body_without_crc: bytes) -> bytes:
    body = body_without_crc + tlv(pp.PP2_TYPE_CRC32C, b"\0\0\0\0")
    header = v2(body=body)
    return header[:-4] + struct.pack("!I", pp.crc32c(header))


def test_crc32c_is_castagnoli():
    assert pp.crc32c(b"123456789") == 0xE3069283  # the standard check value


def test_v2_crc32c_is_verified():
    good = _with_crc(inet() + tlv(pp.PP2_TYPE_AUTHORITY, b"a"))
    assert parse(good)[0].tlv(pp.PP2_TYPE_CRC32C) == good[-4:]
    bad = bytearray(good)
    bad[20] ^= 1  # a flipped bit in the addresses
    with pytest.raises(ProxyHeaderError, match="CRC32C"):
        parse(bytes(bad))


def test_v2_every_proper_prefix_is_need_more():
    data = v2(body=inet() + tlv(pp.PP2_TYPE_AUTHORITY, b"example.com"))
    for end in range(len(data)):
        assert parse(data[:end]) is None, end


V2_HOSTILE = {
    "version_1_nibble": SIG + b"\x11\x11\x00\x0c" + inet(),
    "version_3_nibble": SIG + b"\x31\x11\x00\x0c" + inet(),
    "command_2": SIG + b"\x22\x11\x00\x0c" + inet(),
    "family_4": SIG + b"\x21\x41\x00\x0c" + inet(),
    "transport_3": SIG + b"\x21\x13\x00\x0c" + inet(),
    "inet_block_short": v2(body=inet()[:11]),
    "inet6_block_short": v2(fam=0x21, body=bytes(35)),
    "unix_block_short": v2(fam=0x31, body=bytes(215)),
    "tlv_header_truncated": v2(body=inet() + b"\x02\x00"),
    "tlv_value_past_end": v2(body=inet() + b"\x02\x00\x05abc"),
    "tlv_length_ffff": v2(body=inet() + b"\x02\xff\xffabc"),
    "ssl_tlv_too_short": v2(body=inet() + tlv(pp.PP2_TYPE_SSL, b"\x01\x00\x00")),
    "ssl_sub_tlv_past_end": v2(body=inet() + tlv(pp.PP2_TYPE_SSL, b"\x01" + bytes(4) + b"\x22\x00\x09cn")),
    "crc_tlv_of_3_bytes": v2(body=inet() + tlv(pp.PP2_TYPE_CRC32C, b"abc")),
    "crc_mismatch": v2(body=inet() + tlv(pp.PP2_TYPE_CRC32C, b"abcd")),
    "unique_id_of_129_bytes": v2(body=inet() + tlv(pp.PP2_TYPE_UNIQUE_ID, b"u" * 129)),
    "signature_off_by_one": b"\r\n\r\n\x00\r\nQUIT\r" + b"\x21\x11\x00\x0c" + inet(),
}


@pytest.mark.parametrize("name", sorted(V2_HOSTILE))
def test_v2_hostile_header_is_refused(name):
    with pytest.raises(ProxyHeaderError):
        parse(V2_HOSTILE[name])


def test_v2_over_max_size_is_refused_from_the_fixed_part_alone():
    fixed = v2(length=5000)  # 16 bytes claiming 5000 more: refused before any of it arrives
    with pytest.raises(ProxyHeaderError, match="limit"):
        parse(fixed, max_size=4096)
    assert parse(fixed, max_size=16 + 65535) is None


def test_v2_unknown_tlv_types_are_kept_raw():
    header, _ = parse(v2(body=inet() + tlv(0xE0, b"\x00\x01") + tlv(0xEE, b"azure")))
    assert header.tlvs == ((0xE0, b"\x00\x01"), (0xEE, b"azure"))


# -- a property: any header built from the layout parses back to what was put in ---------------

_ports = st.integers(0, 65535)
_v4 = st.ip_addresses(v=4).map(str)
_v6 = st.ip_addresses(v=6).map(str)
_tlvs = st.lists(st.tuples(st.sampled_from([0x01, 0x02, 0x04, 0x30, 0xE0, 0xEA, 0xEE]), st.binary(max_size=40)),
                 max_size=5)


@st.composite
def headers(draw):
    """(bytes of a header, what parse must say about it)."""
    version = draw(st.sampled_from([1, 2]))
    six = draw(st.booleans())
    src, dst = draw(_v6 if six else _v4), draw(_v6 if six else _v4)
    sport, dport = draw(_ports), draw(_ports)
    if version == 1:
        raw = f"PROXY TCP{6 if six else 4} {src} {dst} {sport} {dport}\r\n".encode()
        return raw, ((src, sport), (dst, dport), ())
    tlvs = draw(_tlvs)
    body = (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + struct.pack("!HH", sport, dport)
            + b"".join(tlv(kind, value) for kind, value in tlvs))
    return v2(fam=0x21 if six else 0x11, body=body), ((src, sport), (dst, dport), tuple(tlvs))


@given(headers(), st.binary(max_size=20))
def test_any_well_formed_header_parses_back_exactly_and_its_prefixes_need_more(built, after):
    raw, (source, destination, tlvs) = built
    header, used = parse(raw + after)
    assert used == len(raw)
    assert (header.source, header.destination, header.tlvs) == (source, destination, tlvs)
    assert all(parse(raw[:end]) is None for end in range(len(raw)))
