"""Hostile HTTP/1.1 input over a real socket: exact status, then a closed connection.

Each row is sent on a fresh connection to a listener whose handler echoes the
body length; the server must answer with exactly the status in the row (or
nothing, for ``None``) and then close, because framing is in doubt. Sources:
roadrunner's corpus (llhttp invalid requests, PortSwigger smuggling research)
plus the leniencies it left open (duplicate Host, signed Content-Length, split
Transfer-Encoding lines).
"""

from __future__ import annotations

import pytest

import rr
from rr import resp
from tests.rr.conftest import wait_processes_gone

H = b"Host: x\r\n"


def _req(*lines: bytes, body: bytes = b"") -> bytes:
    return b"".join(lines) + b"\r\n" + body


VECTORS: list[tuple[str, bytes, int]] = [
    # -- framing: Content-Length / Transfer-Encoding (RFC 9112 §6) --
    ("cl_and_te_cl_first", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 400),
    ("cl_and_te_te_first", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", body=b"0\r\n\r\n"), 400),
    ("two_different_content_lengths", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: 5\r\n", b"Content-Length: 6\r\n", body=b"hello!"), 400),
    ("content_length_list", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: 1,2\r\n"), 400),
    ("content_length_plus_sign", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: +5\r\n", body=b"hello"), 400),
    ("content_length_minus_zero", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: -0\r\n"), 400),
    ("content_length_negative", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: -1\r\n"), 400),
    ("content_length_letters", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: abc\r\n"), 400),
    ("content_length_empty", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: \r\n"), 400),
    ("content_length_inner_space", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: 1 2\r\n"), 400),
    ("content_length_hex", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: 0x5\r\n"), 400),
    ("content_length_over_max", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: 2000\r\n"), 413),
    ("content_length_huge", _req(b"POST / HTTP/1.1\r\n", H, b"Content-Length: 99999999999999999999999\r\n"), 413),
    ("te_chunked_twice_one_line", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked, chunked\r\n", body=b"0\r\n\r\n"), 400),
    ("te_chunked_twice_two_lines", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 400),
    ("te_chunked_not_last", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked, gzip\r\n", body=b"0\r\n\r\n"), 400),
    ("te_chunked_then_other_line", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: x\r\n", body=b"0\r\n\r\n"), 400),
    ("te_gzip_only", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: gzip\r\n"), 501),
    ("te_gzip_then_chunked_lines", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: gzip\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 501),
    ("te_xchunked", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: xchunked\r\n"), 501),
    ("te_space_before_colon", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding : chunked\r\n", body=b"0\r\n\r\n"), 400),
    ("te_on_http10", _req(b"POST / HTTP/1.0\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 400),
    ("te_vertical_tab", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: \x0bchunked\r\n", body=b"0\r\n\r\n"), 400),
    # -- chunked body (RFC 9112 §7.1) --
    ("chunk_size_not_hex", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b"xy\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_leading_space", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_empty", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b"\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_only_extension", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b";ext\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_data_missing_crlf", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b"5\r\nhelloXX0\r\n\r\n"), 400),
    ("chunk_size_too_many_digits", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b"00000000000000000005\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk_size_over_max", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b"7fffffff\r\n"), 413),
    ("chunk_sizes_summing_over_max", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b"300\r\n" + b"a" * 0x300 + b"\r\n300\r\n"), 413),
    ("chunk_size_line_bare_lf", _req(b"POST / HTTP/1.1\r\n", H, b"Transfer-Encoding: chunked\r\n", body=b"5\nhello\r\n0\r\n\r\n"), 400),
    # -- header syntax (RFC 9112 §5, RFC 9110 §5) --
    ("obs_fold", _req(b"GET / HTTP/1.1\r\n", H, b"X-A: 1\r\n", b" folded\r\n"), 400),
    ("obs_fold_tab", _req(b"GET / HTTP/1.1\r\n", H, b"X-A: 1\r\n", b"\tfolded\r\n"), 400),
    ("leading_whitespace_first_header", _req(b"GET / HTTP/1.1\r\n", b" Host: x\r\n"), 400),
    ("space_before_colon", _req(b"GET / HTTP/1.1\r\n", b"Host : x\r\n"), 400),
    ("space_inside_name", _req(b"GET / HTTP/1.1\r\n", H, b"Ho st: x\r\n"), 400),
    ("paren_in_name", _req(b"GET / HTTP/1.1\r\n", H, b"X(A): 1\r\n"), 400),
    ("bracket_in_name", _req(b"GET / HTTP/1.1\r\n", H, b"X[A]: 1\r\n"), 400),
    ("at_in_name", _req(b"GET / HTTP/1.1\r\n", H, b"X@A: 1\r\n"), 400),
    ("empty_name", _req(b"GET / HTTP/1.1\r\n", H, b": value\r\n"), 400),
    ("missing_colon", _req(b"GET / HTTP/1.1\r\n", H, b"X-A value\r\n"), 400),
    ("control_char_in_name", _req(b"GET / HTTP/1.1\r\n", H, b"X-\x01A: 1\r\n"), 400),
    ("bare_cr_in_value", _req(b"GET / HTTP/1.1\r\n", H, b"Foo: 1\rBar: 2\r\n"), 400),
    ("nul_in_value", _req(b"GET / HTTP/1.1\r\n", H, b"Foo: a\x00b\r\n"), 400),
    ("bare_lf_between_headers", b"GET / HTTP/1.1\r\nHost: x\nFoo: 1\r\n\r\n", 400),
    ("control_char_in_value", _req(b"GET / HTTP/1.1\r\n", H, b"Foo: a\x07b\r\n"), 400),
    ("del_in_value", _req(b"GET / HTTP/1.1\r\n", H, b"Foo: a\x7fb\r\n"), 400),
    # -- Host (RFC 9112 §3.2) --
    ("http11_without_host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("duplicate_host", _req(b"GET / HTTP/1.1\r\n", H, b"Host: y\r\n"), 400),
    ("host_with_space", _req(b"GET / HTTP/1.1\r\n", b"Host: a b\r\n"), 400),
    ("host_with_userinfo", _req(b"GET / HTTP/1.1\r\n", b"Host: user@x\r\n"), 400),
    # -- request line (RFC 9112 §3) --
    ("bare_lf_request_line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("lf_only_request", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("two_leading_crlfs", b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("paren_in_method", b"GE(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("empty_method", b" / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("missing_target", b"GET HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("double_space", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("tab_separator", b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("nul_in_target", b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("control_in_query", b"GET /a?b=\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("target_not_origin_form", b"GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("asterisk_form_with_get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("authority_form_with_get", b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("version_ice", b"GET / ICE/1.0\r\nHost: x\r\n\r\n", 400),
    ("version_lowercase", b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
    ("version_no_dot", b"GET / HTTP/11\r\nHost: x\r\n\r\n", 400),
    ("version_rtsp", b"GET / RTSP/1.0\r\nHost: x\r\n\r\n", 400),
    ("version_http2", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("version_http09", b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
    ("version_http3", b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    # -- size limits (RFC 9112 §3, RFC 6585 §5) --
    ("request_line_too_long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header_line_too_long", _req(b"GET / HTTP/1.1\r\n", H, b"X-A: " + b"a" * 9000 + b"\r\n"), 431),
    ("header_block_too_long", _req(b"GET / HTTP/1.1\r\n", H, *[b"X-%d: %s\r\n" % (i, b"a" * 200) for i in range(50)]), 431),
    ("too_many_headers", _req(b"GET / HTTP/1.1\r\n", H, *[b"X-%d: 1\r\n" % i for i in range(101)]), 431),
]


def _body_length(req: rr.Request) -> resp.Response:
    return resp.text(200, str(len(req.read_body())))


def _status(data: bytes) -> int | None:
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])


@pytest.mark.parametrize(("raw", "status"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_hostile_request_gets_exact_status_and_a_closed_connection(serve, raw, status):
    srv = serve(_body_length, max_content_length=1024)
    data = srv.request(raw)  # reads until the server closes: a kept-open conn would time out
    assert _status(data) == status, data[:200]
    assert b"connection: close" in data.split(b"\r\n\r\n")[0]
    assert data.count(b"HTTP/1.1 ") == 1, "a smuggled second request was answered"


def test_corpus_has_at_least_sixty_vectors():
    assert len(VECTORS) >= 60


def test_every_hostile_connection_released_its_slot(serve):
    srv = serve(_body_length, max_content_length=1024)
    for _, raw, _ in VECTORS[:20]:
        srv.request(raw)
    wait_processes_gone("rr.conn")  # each conn process frees its slot before it exits
    assert srv.info()["active_clients"] == 0


# -- two rules at once: whole or one byte per write, the same status (issue 13) ----------------

SMALL_LIMITS = {"max_request_line": 64, "max_header_line": 64, "max_header_count": 5}
TWO_RULES: list[tuple[str, bytes, int]] = [
    ("bare_lf_then_request_line_too_long", b"\nGET /" + b"a" * 80 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("request_line_too_long_then_bare_lf", b"GET /" + b"a" * 80 + b"\n HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("bare_lf_in_a_field_then_header_line_too_long",
     b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-B: " + b"b" * 80 + b"\r\n\r\n", 400),
    ("too_many_headers_then_bare_cr", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: 1\r\n" * 6 + b"Y: \r1\r\n\r\n", 431),
    ("bare_cr_then_too_many_headers", b"GET / HTTP/1.1\r\nHost: x\r\nY: \r1\r\n" + b"X: 1\r\n" * 6 + b"\r\n", 400),
]


def _byte_by_byte(srv, raw: bytes) -> bytes:
    """One write per byte (TCP_NODELAY, a loop turn between writes), then read to the close."""
    import socket

    import gevent

    sock = srv.connect()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(len(raw)):
            try:
                sock.sendall(raw[i:i + 1])
            except OSError:  # answered and closed before the rest was sent
                break
            gevent.sleep(0)
        data = b""
        sock.settimeout(10)
        while chunk := sock.recv(65536):
            data += chunk
        return data
    finally:
        sock.close()


@pytest.mark.parametrize(("raw", "status"), [v[1:] for v in TWO_RULES], ids=[v[0] for v in TWO_RULES])
def test_a_request_breaking_two_rules_gets_the_same_status_whole_or_one_byte_per_write(serve, raw, status):
    srv = serve(_body_length, protocols=[("http1", SMALL_LIMITS)])
    assert _status(srv.request(raw)) == status
    assert _status(_byte_by_byte(srv, raw)) == status
