"""rr.http1.codec as a specification: hostile inputs, valid forms, encoders.

The corpus (``HOSTILE``) is one row per vector: an id that reads like the rule,
the bytes, and the exact status and reason the codec must raise. Sources: the
upstream roadrunner corpus (roadrunner_testing.md §2.3), its leniencies fixed
(§2.4), llhttp's invalid-request list and the request-smuggling classics.
"""

from __future__ import annotations

import pytest

from rr.http1 import codec
from rr.http1.codec import (
    ChunkedDecoder,
    Data,
    EndOfMessage,
    HeaderInjection,
    Limits,
    ParseError,
    Parser,
    RequestHead,
    encode_chunk,
    encode_head,
    encode_last_chunk,
    parse_head,
    status_line,
)

H = b"Host: x\r\n"
SMALL = Limits(max_content_length=1024)


def post(*fields: bytes, body: bytes = b"") -> bytes:
    return b"POST / HTTP/1.1\r\n" + H + b"".join(fields) + b"\r\n" + body


def get(*fields: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return line + b"\r\n" + b"".join(fields) + b"\r\n"


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body=body)


def rejection(raw: bytes, limits: Limits = SMALL) -> ParseError:
    """Feed the whole stream to a Parser and return the ParseError it must raise."""
    with pytest.raises(ParseError) as info:
        Parser(limits).feed(raw)
    return info.value


def events(raw: bytes, limits: Limits = SMALL) -> list[object]:
    return Parser(limits).feed(raw)


def only_head(raw: bytes) -> RequestHead:
    parsed = parse_head(raw, Limits())
    assert parsed is not None
    head, used = parsed
    assert used == len(raw)
    return head


HOSTILE: list[tuple[str, bytes, int, str]] = [
    # -- framing: Content-Length vs Transfer-Encoding (RFC 9112 §6.3) --
    ("cl_then_te_is_conflicting_framing", post(b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 400, "conflicting_framing"),
    ("te_then_cl_is_conflicting_framing", post(b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n", body=b"0\r\n\r\n"), 400, "conflicting_framing"),
    ("te_gzip_with_cl_is_conflicting_framing", post(b"Transfer-Encoding: gzip\r\n", b"Content-Length: 5\r\n"), 400, "conflicting_framing"),
    ("lowercase_names_cl_te_is_conflicting_framing", post(b"content-length: 5\r\n", b"transfer-encoding: chunked\r\n"), 400, "conflicting_framing"),
    ("two_content_lengths_5_and_6_conflict", post(b"Content-Length: 5\r\n", b"Content-Length: 6\r\n", body=b"hello!"), 400, "conflicting_content_length"),
    ("two_content_lengths_5_and_05_conflict", post(b"Content-Length: 5\r\n", b"Content-Length: 05\r\n", body=b"hello"), 400, "conflicting_content_length"),
    # -- Content-Length = 1*DIGIT (RFC 9110 §8.6) --
    ("content_length_plus_sign", post(b"Content-Length: +5\r\n", body=b"hello"), 400, "bad_content_length"),
    ("content_length_minus_zero", post(b"Content-Length: -0\r\n"), 400, "bad_content_length"),
    ("content_length_negative", post(b"Content-Length: -1\r\n"), 400, "bad_content_length"),
    ("content_length_list_1_2", post(b"Content-Length: 1,2\r\n"), 400, "bad_content_length"),
    ("content_length_list_same_values", post(b"Content-Length: 5, 5\r\n", body=b"hello"), 400, "bad_content_length"),
    ("content_length_letters", post(b"Content-Length: abc\r\n"), 400, "bad_content_length"),
    ("content_length_empty", post(b"Content-Length: \r\n"), 400, "bad_content_length"),
    ("content_length_inner_space", post(b"Content-Length: 1 2\r\n"), 400, "bad_content_length"),
    ("content_length_hex", post(b"Content-Length: 0x5\r\n"), 400, "bad_content_length"),
    ("content_length_superscript_two_is_not_a_digit", post(b"Content-Length: \xb2\r\n"), 400, "bad_content_length"),
    ("content_length_over_max_is_413", post(b"Content-Length: 1025\r\n"), 413, "content_too_large"),
    ("content_length_of_23_digits_is_413", post(b"Content-Length: 99999999999999999999999\r\n"), 413, "content_too_large"),
    # -- Transfer-Encoding (RFC 9112 §6.1, §6.3) --
    ("te_chunked_twice_in_one_line", chunked(b"0\r\n\r\n").replace(b"chunked", b"chunked, chunked"), 400, "bad_transfer_encoding"),
    ("te_chunked_twice_in_two_lines", post(b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 400, "bad_transfer_encoding"),
    ("te_chunked_not_final", post(b"Transfer-Encoding: chunked, gzip\r\n", body=b"0\r\n\r\n"), 400, "bad_transfer_encoding"),
    ("te_chunked_line_then_x_line", post(b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: x\r\n", body=b"0\r\n\r\n"), 400, "bad_transfer_encoding"),
    ("te_empty_value", post(b"Transfer-Encoding: \r\n"), 400, "bad_transfer_encoding"),
    ("te_only_commas", post(b"Transfer-Encoding: , ,\r\n"), 400, "bad_transfer_encoding"),
    ("te_chunked_with_parameter", post(b"Transfer-Encoding: chunked;q=1\r\n", body=b"0\r\n\r\n"), 400, "bad_transfer_encoding"),
    ("te_coding_not_a_token", post(b"Transfer-Encoding: chun ked\r\n"), 400, "bad_transfer_encoding"),
    ("te_gzip_is_501", post(b"Transfer-Encoding: gzip\r\n"), 501, "unsupported_transfer_coding"),
    ("te_deflate_is_501", post(b"Transfer-Encoding: deflate\r\n"), 501, "unsupported_transfer_coding"),
    ("te_gzip_chunked_one_line_is_501", post(b"Transfer-Encoding: gzip, chunked\r\n", body=b"0\r\n\r\n"), 501, "unsupported_transfer_coding"),
    ("te_gzip_line_then_chunked_line_is_501", post(b"Transfer-Encoding: gzip\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"), 501, "unsupported_transfer_coding"),
    ("te_xchunked_is_501", post(b"Transfer-Encoding: xchunked\r\n"), 501, "unsupported_transfer_coding"),
    ("te_chunkedx_is_501", post(b"Transfer-Encoding: chunkedx\r\n"), 501, "unsupported_transfer_coding"),
    ("te_identity_is_501", post(b"Transfer-Encoding: identity\r\n"), 501, "unsupported_transfer_coding"),
    ("te_space_before_colon", post(b"Transfer-Encoding : chunked\r\n", body=b"0\r\n\r\n"), 400, "whitespace_before_colon"),
    ("te_tab_before_colon", post(b"Transfer-Encoding\t: chunked\r\n", body=b"0\r\n\r\n"), 400, "whitespace_before_colon"),
    ("te_vertical_tab_in_value", post(b"Transfer-Encoding: \x0bchunked\r\n", body=b"0\r\n\r\n"), 400, "bad_header_value"),
    ("te_form_feed_in_value", post(b"Transfer-Encoding: chunked\x0c\r\n", body=b"0\r\n\r\n"), 400, "bad_header_value"),
    ("te_obs_folded_onto_next_line", post(b"Transfer-Encoding:\r\n", b" chunked\r\n", body=b"0\r\n\r\n"), 400, "obs_fold"),
    ("te_in_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "transfer_encoding_in_http10"),
    # -- field-line syntax (RFC 9112 §5, RFC 9110 §5) --
    ("obs_fold_with_space", get(H, b"X-A: 1\r\n", b" folded\r\n"), 400, "obs_fold"),
    ("obs_fold_with_tab", get(H, b"X-A: 1\r\n", b"\tfolded\r\n"), 400, "obs_fold"),
    ("whitespace_before_first_field_line", get(b" Host: x\r\n"), 400, "whitespace_after_start_line"),
    ("space_before_colon", get(b"Host : x\r\n"), 400, "whitespace_before_colon"),
    ("space_inside_name", get(H, b"Ho st: x\r\n"), 400, "bad_header_name"),
    ("paren_in_name", get(H, b"X(A): 1\r\n"), 400, "bad_header_name"),
    ("bracket_in_name", get(H, b"X[A]: 1\r\n"), 400, "bad_header_name"),
    ("at_sign_in_name", get(H, b"X@A: 1\r\n"), 400, "bad_header_name"),
    ("non_ascii_in_name", get(H, b"X-\xe9: 1\r\n"), 400, "bad_header_name"),
    ("control_char_in_name", get(H, b"X-\x01A: 1\r\n"), 400, "bad_header_name"),
    ("empty_name", get(H, b": value\r\n"), 400, "empty_header_name"),
    ("missing_colon", get(H, b"X-A value\r\n"), 400, "missing_colon"),
    ("bare_cr_inside_value", get(H, b"Foo: 1\rBar: 2\r\n"), 400, "bare_cr_or_lf"),
    ("bare_lf_between_field_lines", b"GET / HTTP/1.1\r\nHost: x\nFoo: 1\r\n\r\n", 400, "bare_cr_or_lf"),
    ("cr_cr_lf_line_ending", get(H, b"Foo: 1\r\r\n"), 400, "bare_cr_or_lf"),
    ("nul_in_value", get(H, b"Foo: a\x00b\r\n"), 400, "bad_header_value"),
    ("bell_in_value", get(H, b"Foo: a\x07b\r\n"), 400, "bad_header_value"),
    ("escape_in_value", get(H, b"Foo: \x1b[31m\r\n"), 400, "bad_header_value"),
    ("del_in_value", get(H, b"Foo: a\x7fb\r\n"), 400, "bad_header_value"),
    # -- Host (RFC 9112 §3.2, RFC 9110 §7.2) --
    ("http11_without_host", b"GET / HTTP/1.1\r\n\r\n", 400, "missing_host"),
    ("http11_absolute_form_without_host", b"GET http://a/ HTTP/1.1\r\n\r\n", 400, "missing_host"),
    ("two_host_lines_different", get(H, b"Host: y\r\n"), 400, "duplicate_host"),
    ("two_host_lines_identical", get(H, H), 400, "duplicate_host"),
    ("host_with_space", get(b"Host: a b\r\n"), 400, "bad_host"),
    ("host_with_userinfo", get(b"Host: user@x\r\n"), 400, "bad_host"),
    ("host_with_path", get(b"Host: x/y\r\n"), 400, "bad_host"),
    ("host_with_port_letters", get(b"Host: x:8o\r\n"), 400, "bad_host"),
    ("host_list_of_two", get(b"Host: a, b\r\n"), 400, "bad_host"),
    ("host_with_control_char", get(b"Host: a\x01b\r\n"), 400, "bad_header_value"),
    # -- request-line (RFC 9112 §3) --
    ("bare_lf_ending_request_line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400, "bare_cr_or_lf"),
    ("lf_only_request", b"GET / HTTP/1.1\nHost: x\n\n", 400, "bare_cr_or_lf"),
    ("bare_cr_ending_request_line", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400, "bare_cr_or_lf"),
    ("two_leading_empty_lines", b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request_line"),
    ("leading_bare_lf", b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bare_cr_or_lf"),
    ("paren_in_method", get(H, line=b"GE(T / HTTP/1.1"), 400, "bad_method"),
    ("empty_method", get(H, line=b" / HTTP/1.1"), 400, "bad_method"),
    ("missing_target", get(H, line=b"GET HTTP/1.1"), 400, "bad_request_line"),
    ("double_space_after_method", get(H, line=b"GET  / HTTP/1.1"), 400, "bad_request_line"),
    ("trailing_space_after_version", get(H, line=b"GET / HTTP/1.1 "), 400, "bad_request_line"),
    ("tab_as_separator", get(H, line=b"GET\t/ HTTP/1.1"), 400, "bad_request_line"),
    ("nul_in_target", get(H, line=b"GET /a\x00b HTTP/1.1"), 400, "bad_target"),
    ("control_char_in_query", get(H, line=b"GET /a?b=\x01 HTTP/1.1"), 400, "bad_target"),
    ("non_ascii_in_target", get(H, line=b"GET /caf\xe9 HTTP/1.1"), 400, "bad_target"),
    ("target_neither_origin_nor_absolute", get(H, line=b"GET a/b HTTP/1.1"), 400, "bad_target"),
    ("asterisk_form_with_get", get(H, line=b"GET * HTTP/1.1"), 400, "bad_target"),
    ("authority_form_with_get", get(H, line=b"GET example.com:80 HTTP/1.1"), 400, "bad_target"),
    ("connect_with_origin_form", get(H, line=b"CONNECT / HTTP/1.1"), 400, "bad_target"),
    ("connect_without_port", get(H, line=b"CONNECT example.com HTTP/1.1"), 400, "bad_target"),
    ("absolute_form_with_userinfo", get(H, line=b"GET http://u:p@a/ HTTP/1.1"), 400, "bad_target"),
    ("absolute_form_with_empty_host", get(H, line=b"GET http:///x HTTP/1.1"), 400, "bad_target"),
    ("absolute_form_ftp_scheme", get(H, line=b"GET ftp://a/ HTTP/1.1"), 400, "bad_target"),
    ("version_ice", get(H, line=b"GET / ICE/1.0"), 400, "bad_version"),
    ("version_ihttp", get(H, line=b"GET / IHTTP/1.0"), 400, "bad_version"),
    ("version_rtsp", get(H, line=b"GET / RTSP/1.0"), 400, "bad_version"),
    ("version_lowercase", get(H, line=b"GET / http/1.1"), 400, "bad_version"),
    ("version_without_dot", get(H, line=b"GET / HTTP/11"), 400, "bad_version"),
    ("version_two_digit_minor", get(H, line=b"GET / HTTP/1.10"), 400, "bad_version"),
    ("version_major_only", get(H, line=b"GET / HTTP/1"), 400, "bad_version"),
    ("version_http2_is_505", get(H, line=b"GET / HTTP/2.0"), 505, "unsupported_version"),
    ("version_http09_is_505", get(H, line=b"GET / HTTP/0.9"), 505, "unsupported_version"),
    ("version_http3_is_505", get(H, line=b"GET / HTTP/3.0"), 505, "unsupported_version"),
    ("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "bad_request_line"),
    # -- Expect (RFC 9110 §10.1.1) --
    ("expect_other_than_100_continue_is_417", get(H, b"Expect: something\r\n"), 417, "unsupported_expectation"),
    ("expect_100_continue_plus_other_is_417", get(H, b"Expect: 100-continue, x\r\n"), 417, "unsupported_expectation"),
    # -- size limits (RFC 9112 §3, RFC 6585 §5) --
    ("request_line_of_8193_bytes_is_414", get(H, line=b"GET /" + b"a" * (8193 - 14) + b" HTTP/1.1"), 414, "request_line_too_long"),
    ("target_of_9000_bytes_is_414", get(H, line=b"GET /" + b"a" * 9000 + b" HTTP/1.1"), 414, "request_line_too_long"),
    ("field_line_of_8193_bytes_is_431", get(H, b"X-A: " + b"a" * (8193 - 5) + b"\r\n"), 431, "header_line_too_long"),
    ("header_block_of_50_lines_of_210_bytes_is_431", get(H, *[b"X-%02d: %s\r\n" % (i, b"a" * 202) for i in range(50)]), 431, "header_block_too_long"),
    ("header_count_101_is_431", get(H, *[b"X-%d: 1\r\n" % i for i in range(100)]), 431, "too_many_headers"),
    ("header_count_150_is_431", get(H, *[b"X-%d: 1\r\n" % i for i in range(149)]), 431, "too_many_headers"),
    # -- chunked body (RFC 9112 §7.1) --
    ("chunk_size_not_hex", chunked(b"xy\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_leading_space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_leading_tab", chunked(b"\t5\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_only_extension", chunked(b";ext\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_with_0x_prefix", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_of_17_hex_digits", chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_size"),
    ("chunk_size_line_bare_lf", chunked(b"5\nhello\r\n0\r\n\r\n"), 400, "bare_cr_or_lf"),
    ("chunk_extension_without_name", chunked(b"5;=x\r\nhello\r\n0\r\n\r\n"), 400, "bad_chunk_extension"),
    ("chunk_extension_with_unclosed_quote", chunked(b'5;a="x\r\nhello\r\n0\r\n\r\n'), 400, "bad_chunk_extension"),
    ("chunk_size_line_over_4096_bytes", chunked(b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400, "chunk_size_line_too_long"),
    ("chunk_data_without_crlf", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, "bad_chunk"),
    ("chunk_data_followed_by_bare_lf", chunked(b"5\r\nhello\n0\r\n\r\n"), 400, "bad_chunk"),
    ("chunk_size_7fffffff_over_max_is_413", chunked(b"7fffffff\r\n"), 413, "content_too_large"),
    ("chunk_sizes_summing_over_max_is_413", chunked(b"300\r\n" + b"a" * 0x300 + b"\r\n300\r\n"), 413, "content_too_large"),
    ("trailer_obs_fold", chunked(b"0\r\nX-T: 1\r\n folded\r\n\r\n"), 400, "obs_fold"),
    ("trailer_space_before_colon", chunked(b"0\r\nX-T : 1\r\n\r\n"), 400, "whitespace_before_colon"),
    ("trailer_nul_in_value", chunked(b"0\r\nX-T: \x00\r\n\r\n"), 400, "bad_header_value"),
    ("trailer_bare_lf", chunked(b"0\r\nX-T: 1\nX-U: 2\r\n\r\n"), 400, "bare_cr_or_lf"),
    ("trailer_line_over_8192_bytes_is_431", chunked(b"0\r\nX-T: " + b"a" * 8200 + b"\r\n\r\n"), 431, "header_line_too_long"),
    ("trailer_count_101_is_431", chunked(b"0\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n"), 431, "too_many_headers"),
]


@pytest.mark.parametrize(("raw", "status", "reason"), [row[1:] for row in HOSTILE], ids=[row[0] for row in HOSTILE])
def test_hostile_request_is_rejected_with_exact_status_and_reason(raw, status, reason):
    error = rejection(raw)
    assert (error.status, error.reason) == (status, reason)


@pytest.mark.parametrize(("raw", "status", "reason"), [row[1:] for row in HOSTILE], ids=[row[0] for row in HOSTILE])
def test_hostile_request_fed_byte_by_byte_is_rejected_with_the_same_status(raw, status, reason):
    parser = Parser(SMALL)
    with pytest.raises(ParseError) as info:
        for i in range(len(raw)):
            parser.feed(raw[i : i + 1])
    assert info.value.status == status


def test_hostile_corpus_has_at_least_seventy_vectors_with_unique_ids():
    ids = [row[0] for row in HOSTILE]
    assert len(ids) >= 70
    assert len(set(ids)) == len(ids)


# -- rules by name ---------------------------------------------------------------


def test_request_with_both_content_length_and_chunked_is_rejected_400():
    error = rejection(post(b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", body=b"0\r\n\r\n"))
    assert (error.status, error.reason) == (400, "conflicting_framing")


def test_two_identical_content_length_lines_are_accepted_as_one():
    head = only_head(post(b"Content-Length: 5\r\n", b"Content-Length: 5\r\n"))
    assert head.content_length == 5


def test_content_length_with_leading_zeros_is_accepted():
    assert only_head(post(b"Content-Length: 05\r\n")).content_length == 5


def test_content_length_with_thousands_of_leading_zeros_is_accepted():
    assert only_head(post(b"Content-Length: " + b"0" * 5000 + b"5\r\n")).content_length == 5


def test_content_length_with_trailing_whitespace_is_ows_and_accepted():
    assert only_head(post(b"Content-Length: 5 \r\n")).content_length == 5
    assert only_head(post(b"Content-Length: 5 \r\n", b"Content-Length:5\r\n")).content_length == 5


def test_content_length_exactly_at_the_limit_is_accepted():
    head, _ = parse_head(post(b"Content-Length: 1024\r\n"), SMALL)  # type: ignore[misc]
    assert head.content_length == 1024


def test_transfer_encoding_is_case_insensitive():
    for value in (b"Chunked", b"CHUNKED", b"ChUnKeD"):
        assert only_head(post(b"Transfer-Encoding: " + value + b"\r\n")).chunked


def test_transfer_encoding_with_tab_ows_is_chunked():
    assert only_head(post(b"Transfer-Encoding:\tchunked\t\r\n")).chunked


def test_transfer_encoding_in_http10_is_rejected_400():
    error = rejection(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert (error.status, error.reason) == (400, "transfer_encoding_in_http10")


def test_transfer_codings_other_than_chunked_are_501():
    assert rejection(post(b"Transfer-Encoding: gzip, chunked\r\n")).status == 501


def test_multiple_transfer_encoding_lines_are_judged_as_one_list():
    assert rejection(post(b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: chunked\r\n")).reason == "bad_transfer_encoding"


def test_duplicate_host_is_rejected_400():
    assert rejection(get(b"Host: a\r\n", b"Host: a\r\n")).reason == "duplicate_host"


def test_http11_without_host_is_rejected_400():
    assert rejection(b"GET / HTTP/1.1\r\n\r\n").reason == "missing_host"


def test_http10_without_host_is_accepted():
    head = only_head(b"GET / HTTP/1.0\r\n\r\n")
    assert head.host is None
    assert head.version == "HTTP/1.0"


def test_empty_host_value_is_valid():
    assert only_head(get(b"Host:\r\n")).host == ""


def test_ipv6_host_with_port_is_valid():
    assert only_head(get(b"Host: [::1]:8080\r\n")).host == "[::1]:8080"


def test_obs_fold_is_rejected_400():
    assert rejection(get(H, b"X: a\r\n", b" b\r\n")).reason == "obs_fold"


def test_whitespace_before_colon_is_rejected_400():
    assert rejection(get(b"Host : x\r\n")).reason == "whitespace_before_colon"


def test_obs_text_in_values_is_accepted_and_decoded_as_latin1():
    head = only_head(get(H, b"X-Name: caf\xe9 \xff\r\n"))
    assert ("x-name", "caf\xe9 \xff") in head.headers


def test_lowercase_method_is_syntactically_valid_and_kept_case_sensitive():
    head = only_head(get(H, line=b"get / HTTP/1.1"))
    assert head.method == "get"


def test_unknown_uppercase_method_is_accepted():
    assert only_head(get(H, line=b"BREW /pot HTTP/1.1")).method == "BREW"


def test_http_1_minor_above_1_is_served_as_http11():
    head = only_head(get(H, line=b"GET / HTTP/1.9"))
    assert head.version == "HTTP/1.1"


def test_one_leading_empty_line_is_ignored():
    head = only_head(b"\r\n" + get(H))
    assert head.target == "/"


def test_two_leading_empty_lines_are_rejected_400():
    assert rejection(b"\r\n\r\n" + get(H)).reason == "bad_request_line"


def test_request_line_of_exactly_8192_bytes_is_accepted():
    line = b"GET /" + b"a" * (8192 - 14) + b" HTTP/1.1"
    assert len(line) == 8192
    assert len(only_head(get(H, line=line)).target) == 8192 - 13


def test_request_line_over_limit_is_414_before_its_end_arrives():
    with pytest.raises(ParseError) as info:
        parse_head(b"GET /" + b"a" * 8190, Limits())
    assert info.value.status == 414


def test_request_line_at_limit_without_crlf_yet_needs_more():
    assert parse_head(b"GET /" + b"a" * (8192 - 5) + b"\r", Limits()) is None


def test_header_field_line_of_exactly_8192_bytes_is_accepted():
    line = b"X-A: " + b"a" * (8192 - 5)
    assert len(only_head(get(H, line + b"\r\n")).headers[1][1]) == 8187


def test_header_line_over_limit_is_431_before_the_head_ends():
    with pytest.raises(ParseError) as info:
        parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 8200, Limits())
    assert (info.value.status, info.value.reason) == (431, "header_line_too_long")


def test_header_block_over_limit_is_431_before_the_head_ends():
    # 100 lines (within max_header_count) of 128 bytes: the block passes 10240 bytes first
    partial = b"GET / HTTP/1.1\r\n" + (b"X-A: " + b"a" * 121 + b"\r\n") * 100
    with pytest.raises(ParseError) as info:
        parse_head(partial, Limits())
    assert (info.value.status, info.value.reason) == (431, "header_block_too_long")


def test_exactly_100_headers_are_accepted():
    head = only_head(get(H, *[b"X-%d: 1\r\n" % i for i in range(99)]))
    assert len(head.headers) == 100


def test_bare_lf_request_is_rejected_before_the_head_would_end():
    with pytest.raises(ParseError) as info:
        parse_head(b"GET / HTTP/1.1\nHost: x\n", Limits())
    assert info.value.reason == "bare_cr_or_lf"


def test_unsupported_version_is_505_as_soon_as_the_request_line_is_complete():
    with pytest.raises(ParseError) as info:
        parse_head(b"GET / HTTP/2.0\r\nHost", Limits())
    assert info.value.status == 505


def test_every_strict_prefix_of_a_valid_request_needs_more():
    raw = b"\r\nPOST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
    for i in range(len(raw)):
        assert parse_head(raw[:i], Limits()) is None, raw[:i]


def test_expect_100_continue_is_case_insensitive():
    assert only_head(get(H, b"Expect: 100-Continue\r\n")).expect_continue


def test_expect_in_http10_is_ignored():
    head = only_head(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
    assert not head.expect_continue
    assert only_head(b"GET / HTTP/1.0\r\nExpect: other\r\n\r\n").expect_continue is False


def test_chunk_size_line_is_judged_413_before_any_data_arrives():
    decoder = ChunkedDecoder(SMALL)
    with pytest.raises(ParseError) as info:
        decoder.feed(b"401\r\n")
    assert info.value.status == 413


def test_chunked_decoder_counts_already_received_bytes_against_the_limit():
    decoder = ChunkedDecoder(SMALL, already_received=1000)
    with pytest.raises(ParseError) as info:
        decoder.feed(b"19\r\n")
    assert info.value.status == 413


def test_chunk_extensions_and_bws_are_accepted_and_ignored():
    decoder = ChunkedDecoder(Limits())
    body = b'5;a=b\r\nhello\r\n6 ;x ; y = "q\\"z"\r\n world\r\n0;last\r\n\r\n'
    assert b"".join(decoder.feed(body)) == b"hello world"
    assert decoder.done


def test_chunk_size_of_16_hex_digits_is_accepted_syntactically():
    decoder = ChunkedDecoder(Limits())
    assert decoder.feed(b"0000000000000005\r\nhello\r\n0\r\n\r\n") == [b"hello"]


def test_chunked_decoder_keeps_pipelined_bytes_in_unused():
    decoder = ChunkedDecoder(Limits())
    decoder.feed(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n")
    assert decoder.done
    assert decoder.trailers == [("x-t", "1")]
    assert decoder.unused == b"GET / HTTP/1.1\r\n"


def test_chunked_decoder_stays_dead_after_an_error():
    decoder = ChunkedDecoder(Limits())
    with pytest.raises(ParseError):
        decoder.feed(b"zz\r\n")
    with pytest.raises(ParseError):
        decoder.feed(b"0\r\n\r\n")


def test_parser_stays_dead_after_an_error():
    parser = Parser()
    with pytest.raises(ParseError) as first:
        parser.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ParseError) as again:
        parser.feed(get(H))
    assert again.value is first.value


def test_parse_error_carries_status_and_reason():
    error = ParseError(431, "too_many_headers")
    assert (error.status, error.reason) == (431, "too_many_headers")
    assert str(error) == "431 too_many_headers"


# -- valid forms -------------------------------------------------------------------


def test_origin_form_fields():
    head = only_head(get(b"Host: example.com\r\n", b"X-Trace:  abc  \r\n", line=b"GET /p/a%20th?q=1&r=%2F HTTP/1.1"))
    assert head.method == "GET"
    assert head.target == "/p/a%20th?q=1&r=%2F"
    assert (head.path, head.query) == ("/p/a%20th", "q=1&r=%2F")
    assert head.headers == [("host", "example.com"), ("x-trace", "abc")]
    assert head.host == "example.com"
    assert head.content_length is None and not head.chunked


def test_header_names_are_lowercased_and_wire_order_is_kept():
    head = only_head(get(b"X-B: 1\r\n", H, b"X-A: 2\r\n", b"X-B: 3\r\n"))
    assert head.headers == [("x-b", "1"), ("host", "x"), ("x-a", "2"), ("x-b", "3")]


def test_absolute_form_authority_wins_over_host():
    head = only_head(get(b"Host: other\r\n", line=b"GET http://example.com:8080/a/b?c=d HTTP/1.1"))
    assert head.host == "example.com:8080"
    assert (head.path, head.query) == ("/a/b", "c=d")
    assert head.target == "http://example.com:8080/a/b?c=d"


def test_absolute_form_without_path_has_path_slash():
    head = only_head(get(H, line=b"GET HTTPS://example.com?x HTTP/1.1"))
    assert (head.path, head.query, head.host) == ("/", "x", "example.com")


def test_asterisk_form_with_options():
    head = only_head(get(H, line=b"OPTIONS * HTTP/1.1"))
    assert (head.path, head.query) == ("*", "")


def test_authority_form_with_connect():
    head = only_head(get(b"Host: example.com:443\r\n", line=b"CONNECT example.com:443 HTTP/1.1"))
    assert head.target == "example.com:443"
    assert head.host == "example.com:443"


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"HTTP/1.1", None, True),
        (b"HTTP/1.1", b"keep-alive", True),
        (b"HTTP/1.1", b"close", False),
        (b"HTTP/1.1", b"Close", False),
        (b"HTTP/1.1", b"keep-alive, close", False),
        (b"HTTP/1.1", b"closed", True),
        (b"HTTP/1.1", b"x-close-me", True),
        (b"HTTP/1.0", None, False),
        (b"HTTP/1.0", b"keep-alive", True),
        (b"HTTP/1.0", b"Keep-Alive", True),
        (b"HTTP/1.0", b"foo, keep-alive", True),
        (b"HTTP/1.0", b"keep-alive-ish", False),
        (b"HTTP/1.0", b"keep-alive, close", False),
    ],
)
def test_keep_alive_matrix(version, connection, keep_alive):
    fields = [H] + ([b"Connection: " + connection + b"\r\n"] if connection else [])
    assert only_head(get(*fields, line=b"GET / " + version)).keep_alive is keep_alive


def test_connection_tokens_are_collected_across_lines():
    head = only_head(get(H, b"Connection: Upgrade, keep-alive\r\n", b"Connection: X-Foo\r\n"))
    assert head.connection_tokens == frozenset({"upgrade", "keep-alive", "x-foo"})


def test_upgrade_is_reported_only_with_the_connection_upgrade_token():
    with_token = get(H, b"Connection: Upgrade\r\n", b"Upgrade: WebSocket\r\n")
    assert only_head(with_token).upgrade == "websocket"
    assert only_head(get(H, b"Upgrade: websocket\r\n")).upgrade is None


def test_upgrade_in_http10_is_ignored():
    raw = b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert only_head(raw).upgrade is None


def test_parse_head_reports_bytes_consumed_and_leaves_the_rest():
    raw = get(H) + b"GET /next"
    head, used = parse_head(raw, Limits())  # type: ignore[misc]
    assert raw[used:] == b"GET /next"
    assert head.path == "/"


def test_parse_head_accepts_bytearray():
    head, _ = parse_head(bytearray(get(H)), Limits())  # type: ignore[misc]
    assert head.host == "x"


def test_pipelined_requests_yield_events_in_order():
    stream = (
        post(b"Content-Length: 5\r\n", body=b"hello")
        + chunked(b"3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n")
        + get(H, line=b"GET /third HTTP/1.1")
    )
    evs = events(stream)
    kinds = [type(e).__name__ for e in evs]
    assert kinds == ["RequestHead", "Data", "EndOfMessage", "RequestHead", "Data", "EndOfMessage", "RequestHead", "EndOfMessage"]
    assert evs[1] == Data(b"hello")
    assert evs[5] == EndOfMessage([("x-sum", "1")])
    assert isinstance(evs[6], RequestHead) and evs[6].path == "/third"


def test_http10_request_with_body():
    evs = events(b"POST /f HTTP/1.0\r\nContent-Length: 2\r\n\r\nok")
    assert evs[1:] == [Data(b"ok"), EndOfMessage()]


def test_content_length_zero_ends_the_message_immediately():
    evs = events(post(b"Content-Length: 0\r\n") + get(H))
    assert [type(e) for e in evs] == [RequestHead, EndOfMessage, RequestHead, EndOfMessage]


# -- the response side ---------------------------------------------------------------


def test_status_line_for_registered_codes():
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(413) == b"HTTP/1.1 413 Content Too Large\r\n"
    assert status_line(431) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


def test_status_line_for_unregistered_code_has_a_reason_phrase():
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
    assert status_line(299) == b"HTTP/1.1 299 Unknown\r\n"


@pytest.mark.parametrize("status", [99, 600, 0, -1, 1000])
def test_status_line_outside_100_to_599_is_a_value_error(status):
    with pytest.raises(ValueError):
        status_line(status)


def test_encode_head_layout():
    assert encode_head(201, [("content-type", "text/plain"), ("content-length", "2")]) == (
        b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n"
    )
    assert encode_head(204, []) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_encode_head_accepts_any_iterable_and_latin1_values():
    assert encode_head(200, iter([("x-a", "caf\xe9")])).endswith(b"x-a: caf\xe9\r\n\r\n")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-a", "1\r\nset-cookie: evil=1"),
        ("x-a", "1\nx-b: 2"),
        ("x-a", "1\rx-b: 2"),
        ("x-a", "a\x00b"),
        ("X-A", "uppercase name"),
        ("x a", "space in name"),
        ("x-a:", "colon in name"),
        ("", "empty name"),
        ("x-a\r\nx-b", "crlf in name"),
        ("x-é", "non-token name"),
        ("x-a", "snowman \u2603 is not latin-1"),
    ],
)
def test_encode_head_refuses_header_injection(name, value):
    with pytest.raises(HeaderInjection):
        encode_head(200, [("content-length", "0"), (name, value)])


def test_header_injection_is_a_value_error():
    assert issubclass(HeaderInjection, ValueError)


def test_encode_chunk():
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"a" * 255) == b"ff\r\n" + b"a" * 255 + b"\r\n"
    assert encode_chunk(bytearray(b"xy")) == b"2\r\nxy\r\n"


def test_encode_chunk_of_empty_data_is_empty_never_a_last_chunk():
    assert encode_chunk(b"") == b""


def test_encode_last_chunk():
    assert encode_last_chunk() == b"0\r\n\r\n"
    assert encode_last_chunk([("x-checksum", "abc")]) == b"0\r\nx-checksum: abc\r\n\r\n"


def test_encode_last_chunk_validates_trailers_like_headers():
    with pytest.raises(HeaderInjection):
        encode_last_chunk([("x-a", "1\r\n\r\nGET / HTTP/1.1")])


def test_encoded_chunks_decode_back():
    wire = encode_chunk(b"hello ") + encode_chunk(b"") + encode_chunk(b"world") + encode_last_chunk([("x-t", "1")])
    decoder = ChunkedDecoder(Limits())
    assert b"".join(decoder.feed(wire)) == b"hello world"
    assert decoder.done and decoder.trailers == [("x-t", "1")]


def test_module_exports_the_documented_api():
    for name in ("ParseError", "Limits", "RequestHead", "parse_head", "ChunkedDecoder", "Parser",
                 "Data", "EndOfMessage", "status_line", "encode_head", "HeaderInjection",
                 "encode_chunk", "encode_last_chunk"):
        assert name in codec.__all__


def test_a_repeated_head_is_served_from_the_cache_only_under_the_same_limits():
    raw = b"GET /cached?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 900\r\nX-1: a\r\nX-2: b\r\n\r\n"
    generous = Limits()
    first, used = parse_head(raw, generous)
    again, used_again = parse_head(b"\r\n" + raw + b"GET /next", generous)
    assert again is first and used_again == used + 2
    assert first.content_length == 900 and first.path == "/cached" and first.query == "x=1"
    # other limits: judged afresh, never the cached verdict
    with pytest.raises(ParseError) as small:
        parse_head(raw, Limits(max_content_length=100))
    assert small.value.status == 413
    with pytest.raises(ParseError) as few:
        parse_head(raw, Limits(max_header_count=2))
    assert few.value.status == 431
    assert parse_head(raw, generous)[0] is first


# -- two rules broken at once: the status must not depend on segmentation (issue 13) ---------

TWO_RULES = [
    # (id, bytes, status): the shortest bad prefix decides, whole or in pieces
    ("bare_lf_then_request_line_too_long", b"\nGET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bare_cr_in_target_then_too_long", b"GET /a\rb" + b"c" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("request_line_too_long_then_bare_lf", b"GET /" + b"a" * 9000 + b"\n HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("bare_lf_in_a_field_then_header_line_too_long",
     b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-B: " + b"b" * 9000 + b"\r\n\r\n", 400),
    ("header_line_too_long_then_bare_lf",
     b"GET / HTTP/1.1\r\nHost: x\r\nX-B: " + b"b" * 9000 + b"\r\nX-A: 1\n\r\n\r\n", 431),
    ("too_many_headers_then_bare_cr",
     b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: 1\r\n" * 120 + b"Y: \r1\r\n\r\n", 431),
    ("bare_cr_then_too_many_headers",
     b"GET / HTTP/1.1\r\nHost: x\r\nY: \r1\r\n" + b"X: 1\r\n" * 120 + b"\r\n", 400),
    ("chunked_trailer_bare_cr_then_line_too_long",
     post(b"Transfer-Encoding: chunked\r\n", body=b"0\r\nX-T: 1\re" + b"e" * 9000 + b"\r\n\r\n"), 400),
    ("chunked_too_many_trailers_then_bare_cr",
     post(b"Transfer-Encoding: chunked\r\n", body=b"0\r\n" + b"X: 1\r\n" * 120 + b"Y: \r1\r\n\r\n"), 431),
]


def _status_fed(raw: bytes, pieces: list[bytes]) -> int:
    parser = Parser(Limits())
    with pytest.raises(ParseError) as info:
        for piece in pieces:
            parser.feed(piece)
    return info.value.status


@pytest.mark.parametrize(("raw", "status"), [row[1:] for row in TWO_RULES], ids=[row[0] for row in TWO_RULES])
def test_a_request_breaking_two_rules_gets_one_status_whole_byte_by_byte_or_in_pieces(raw, status):
    """Found by the h1_head and h1_chunked fuzz targets: fed whole the sizes were measured
    first (414/431), byte by byte a bare CR or LF was seen first (400)."""
    assert _status_fed(raw, [raw]) == status
    assert _status_fed(raw, [raw[i:i + 1] for i in range(len(raw))]) == status
    assert _status_fed(raw, [raw[i:i + 37] for i in range(0, len(raw), 37)]) == status
