"""rr.contrib.compress without sockets: negotiation, every skip rule, headers, streaming shapes."""

from __future__ import annotations

import gzip
import time
import zlib

import brotli
import pytest
import zstandard

from rr import resp
from rr.contrib import compress
from tests.rr.contrib.edge import collect_stream, headers, request, run

TEXT = ("hello compressible world " * 200).encode()
JSON = [("content-type", "application/json")]


@pytest.fixture(autouse=True, params=["zlib-ng", "zlib"])
def zlib_backend(request, monkeypatch):
    """Every test runs on both gzip/deflate coders: zlib-ng (the speed extra) and the standard module."""
    if request.param == "zlib":
        monkeypatch.setattr(compress, "_zlib", zlib)
    else:
        assert compress.ZLIB == "zlib-ng"  # the test extra installs it: the fast path is what runs
    return request.param


def get(accept: str | None = "gzip", method: str = "GET", **options):
    hdrs = [("accept-encoding", accept)] if accept is not None else []
    return compress.middleware(**options), request(method, "/", hdrs)


# -- negotiation -------------------------------------------------------------------

ALL = ("br", "zstd", "gzip", "deflate")


@pytest.mark.parametrize("header, expected", [
    ("gzip", "gzip"),
    ("gzip, deflate, br, zstd", "br"),  # equal weights: server preference
    ("gzip;q=1, br;q=0.5", "gzip"),
    ("GZIP", "gzip"),
    ("x-gzip", "gzip"),
    ("deflate", "deflate"),
    ("zstd;q=0.9, gzip;q=0.8", "zstd"),
    ("*", "br"),
    ("*;q=0.5, br;q=0", "zstd"),
    ("br;q=0, gzip;q=0", None),
    ("identity", None),
    ("", None),
    ("gzip;q=0.5, identity;q=1", None),  # the client prefers the body as it is
    ("gzip;q=0.5, identity;q=0.5", "gzip"),  # a tie goes to coding
    ("compress, bzip2", None),
    ("gzip;q=abc, deflate", "deflate"),  # a malformed member is skipped
    ("gzip;q=2", None),
    ("gzip;level=1", None),
])
def test_negotiation_by_q_values(header, expected):
    assert compress.negotiate(header, ALL)[0] == expected


def test_identity_refused_is_reported_and_star_zero_refuses_identity_too():
    assert compress.negotiate("gzip, identity;q=0", ALL) == ("gzip", True)
    assert compress.negotiate("*;q=0", ALL) == (None, True)
    assert compress.negotiate(None, ALL) == (None, False)


def test_a_huge_accept_encoding_costs_bounded_work():
    header = "gzip;q=0, " + "x, " * 50_000 + "br"
    started = time.perf_counter()
    for _ in range(100):
        assert compress.negotiate(header, ALL)[0] is None  # "br" is past MAX_CODINGS members
    assert time.perf_counter() - started < 0.5
    one_token = "a" * 100_000
    assert compress.negotiate(one_token, ALL)[0] is None


# -- codings -------------------------------------------------------------------------


@pytest.mark.parametrize("coding, decode", [
    ("gzip", gzip.decompress),
    ("deflate", zlib.decompress),  # zlib-wrapped: RFC 9110 §8.4.1.2
    ("br", brotli.decompress),
    ("zstd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
])
def test_each_coding_round_trips_with_its_reference_decoder(coding, decode):
    mw, req = get(coding)
    out = run(mw, req, resp.text(200, TEXT, {"content-length": str(len(TEXT))}))
    h = headers(out)
    assert h["content-encoding"] == coding and h["vary"] == "accept-encoding"
    assert "content-length" not in h
    assert decode(out.body) == TEXT and len(out.body) < len(TEXT) // 5


def test_gzip_is_reproducible_mtime_zero():
    mw, req = get("gzip")
    a = run(mw, req, resp.text(200, TEXT)).body
    time.sleep(0)  # same second or not, the header carries no time
    assert a == run(mw, req, resp.text(200, TEXT)).body and a[4:8] == b"\0\0\0\0"


def test_levels_are_used():
    small = run(*get("gzip", gzip_level=9), resp.text(200, TEXT)).body
    fast = run(*get("gzip", gzip_level=1), resp.text(200, TEXT)).body
    assert gzip.decompress(small) == gzip.decompress(fast) == TEXT and small != fast
    best = run(*get("br", brotli_quality=11), resp.text(200, TEXT)).body
    quick = run(*get("br", brotli_quality=0), resp.text(200, TEXT)).body
    assert len(best) < len(quick)
    varied = b" ".join(b"%d" % (i * i * 7919 % 100_003) for i in range(5000))
    z1 = run(*get("zstd", zstd_level=1), resp.text(200, varied)).body
    z19 = run(*get("zstd", zstd_level=19), resp.text(200, varied)).body
    assert z1 != z19  # the level reached the coder (19 is not always smaller on noise)


def test_the_zlib_backend_is_zlib_ng_when_installed_else_the_standard_module():
    import sys

    assert compress._optional("zlib_ng.zlib_ng", "zlib").__name__ == "zlib_ng.zlib_ng"
    saved = sys.modules.get("zlib_ng.zlib_ng")
    sys.modules["zlib_ng.zlib_ng"] = None  # type: ignore[assignment]  # an import of it fails
    try:
        assert compress._optional("zlib_ng.zlib_ng", "zlib") is zlib
    finally:
        if saved is not None:
            sys.modules["zlib_ng.zlib_ng"] = saved
        else:
            del sys.modules["zlib_ng.zlib_ng"]


def test_missing_packages_fall_back_cleanly(monkeypatch):
    monkeypatch.setattr(compress, "_brotli", None)
    monkeypatch.setattr(compress, "_zstd", None)
    assert compress.available() == ("gzip", "deflate")
    mw, req = get("br, zstd, gzip;q=0.1")
    assert headers(run(mw, req, resp.text(200, TEXT)))["content-encoding"] == "gzip"
    mw, req = get("br")
    out = run(mw, req, resp.text(200, TEXT))
    assert out.body == TEXT and "content-encoding" not in headers(out)


def test_encodings_option_sets_preference_and_subset():
    mw, req = get("gzip, br", encodings=["gzip", "br"])
    assert headers(run(mw, req, resp.text(200, TEXT)))["content-encoding"] == "gzip"
    mw, req = get("br", encodings=["gzip"])
    assert "content-encoding" not in headers(run(mw, req, resp.text(200, TEXT)))


# -- when not to compress ------------------------------------------------------------


def test_below_min_size_is_sent_as_is_with_vary():
    # vary still: a client refusing identity gets even a small body coded
    mw, req = get("gzip", min_size=1000)
    out = run(mw, req, resp.text(200, b"x" * 999))
    assert out.body == b"x" * 999
    assert headers(out) == {"content-type": "text/plain; charset=utf-8", "vary": "accept-encoding"}
    assert headers(run(mw, req, resp.text(200, b"x" * 1000)))["content-encoding"] == "gzip"


def test_identity_refused_compresses_even_below_min_size():
    mw, req = get("gzip, identity;q=0")
    out = run(mw, req, resp.text(200, b"tiny"))
    assert gzip.decompress(out.body) == b"tiny"


@pytest.mark.parametrize("content_type, coded", [
    ("text/html; charset=utf-8", True),
    ("application/json", True),
    ("application/problem+json", True),
    ("application/atom+xml", True),
    ("image/svg+xml", True),
    ("TEXT/CSS", True),
    ("image/png", False),
    ("application/octet-stream", False),
    ("application/zip", False),
    (None, False),
])
def test_content_type_allowlist(content_type, coded):
    mw, req = get("gzip")
    hdrs = [("content-type", content_type)] if content_type else []
    out = run(mw, req, resp.Response(200, hdrs, TEXT))
    assert ("content-encoding" in headers(out)) is coded
    assert ("vary" in headers(out)) is coded


def test_content_types_option_replaces_the_list():
    mw, req = get("gzip", content_types=["image/*", "application/*+cbor"])
    assert "content-encoding" in headers(run(mw, req, resp.Response(200, [("content-type", "image/bmp")], TEXT)))
    assert "content-encoding" in headers(run(mw, req, resp.Response(200, [("content-type", "application/x+cbor")], TEXT)))
    assert "content-encoding" not in headers(run(mw, req, resp.text(200, TEXT)))


@pytest.mark.parametrize("result", [
    resp.Response(204, [("content-type", "text/plain")], b""),
    resp.Response(206, [("content-type", "text/plain"), ("content-range", "bytes 0-4999/9999")], TEXT),
    resp.Response(200, [("content-type", "text/plain"), ("content-range", "bytes 0-4999/9999")], TEXT),
    resp.Response(200, [("content-type", "text/plain"), ("content-encoding", "gzip")], TEXT),
    resp.Response(200, [("content-type", "text/plain"), ("cache-control", "public, no-transform")], TEXT),
    resp.Sendfile(200, [("content-type", "text/plain")], "/etc/hostname"),
    resp.WebSocket(handler=object()),
], ids=["204", "206", "content-range", "already-encoded", "no-transform", "sendfile", "websocket"])
def test_never_touched(result):
    mw, req = get("gzip")
    assert run(mw, req, result) is result


def test_304_gets_the_vary_its_200_would_have():
    mw, req = get("gzip")
    out = run(mw, req, resp.Response(304, [("etag", 'W/"x"'), ("vary", "origin")], b""))
    assert out.status == 304 and headers(out) == {"etag": 'W/"x"', "vary": "origin, accept-encoding"}
    png = resp.Response(304, [("content-type", "image/png")], b"")
    assert run(mw, req, png) is png


def test_head_is_not_coded_but_varies_like_get():
    mw, req = get("gzip", method="HEAD")
    out = run(mw, req, resp.text(200, TEXT))
    assert out.body == TEXT and headers(out)["vary"] == "accept-encoding" and "content-encoding" not in headers(out)


def test_no_accept_encoding_is_identity_with_vary():
    mw, req = get(None)
    out = run(mw, req, resp.text(200, TEXT))
    assert out.body == TEXT and headers(out)["vary"] == "accept-encoding"


# -- header edits --------------------------------------------------------------------


@pytest.mark.parametrize("vary, expected", [
    ("origin", "origin, accept-encoding"),
    ("Accept-Encoding", "Accept-Encoding"),
    ("*", "*"),
    ("cookie, accept-encoding", "cookie, accept-encoding"),
])
def test_vary_is_merged_never_replaced(vary, expected):
    mw, req = get("gzip")
    out = run(mw, req, resp.text(200, TEXT, {"vary": vary}))
    assert [v for k, v in out.headers if k == "vary"] == [expected]


def test_strong_etag_is_weakened_weak_kept():
    mw, req = get("gzip")
    assert headers(run(mw, req, resp.text(200, TEXT, {"etag": '"abc"'})))["etag"] == 'W/"abc"'
    assert headers(run(mw, req, resp.text(200, TEXT, {"etag": 'W/"abc"'})))["etag"] == 'W/"abc"'
    # identity answers keep the strong tag
    mw, req = get("identity")
    assert headers(run(mw, req, resp.text(200, TEXT, {"etag": '"abc"'})))["etag"] == '"abc"'


# -- streaming shapes ----------------------------------------------------------------


def test_stream_chunks_are_each_flushed_and_decodable_on_arrival():
    def produce(send):
        send(b"event one\n\n")
        send(b"event two\n\n")
        send(b"", fin=True, trailers=[("x-done", "1")])

    mw, req = get("gzip", min_size=0)
    out = run(mw, req, resp.Stream(200, [("content-type", "text/event-stream"), ("content-length", "22")], produce))
    assert headers(out)["content-encoding"] == "gzip" and "content-length" not in headers(out)
    sent = collect_stream(out)
    assert [fin for _, fin, _ in sent] == [False, False, True] and sent[-1][2] == [("x-done", "1")]
    decoder = zlib.decompressobj(31)
    # each chunk decodes completely as soon as it arrives: nothing waits for the next send
    assert decoder.decompress(sent[0][0]) == b"event one\n\n"
    assert decoder.decompress(sent[1][0]) == b"event two\n\n"
    decoder.decompress(sent[2][0])
    assert decoder.eof


@pytest.mark.parametrize("coding", ["br", "zstd", "deflate"])
def test_stream_flush_per_chunk_for_every_coding(coding):
    def produce(send):
        send(b"a" * 100)
        send(b"b" * 100)

    mw, req = get(coding)
    sent = collect_stream(run(mw, req, resp.Stream(200, [("content-type", "text/plain")], produce)))
    assert sent[-1][1] is True  # the middleware ended the coded stream for the handler
    if coding == "br":
        dec = brotli.Decompressor()
        assert dec.process(sent[0][0]) == b"a" * 100 and dec.process(sent[1][0]) == b"b" * 100
    elif coding == "zstd":
        dec = zstandard.ZstdDecompressor().decompressobj()
        assert dec.decompress(sent[0][0]) == b"a" * 100 and dec.decompress(sent[1][0]) == b"b" * 100
    else:
        dec = zlib.decompressobj()
        assert dec.decompress(sent[0][0]) == b"a" * 100 and dec.decompress(sent[1][0]) == b"b" * 100


def test_stream_with_small_declared_length_is_not_coded():
    mw, req = get("gzip")
    result = resp.Stream(200, [("content-type", "text/plain"), ("content-length", "10")], lambda send: send(b"x" * 10))
    assert run(mw, req, result) is result


def test_loop_pushes_are_coded_and_the_stream_ends_on_stop():
    def on_info(msg, push, state):
        push(msg.encode())
        return resp.STOP if msg == "last" else state + 1

    mw, req = get("gzip")
    out = run(mw, req, resp.Loop(200, [("content-type", "text/plain")], 0, on_info))
    assert headers(out)["content-encoding"] == "gzip"
    pushed: list[bytes] = []
    state = out.state
    for msg in ("first", "second", "last"):
        state = out.on_info(msg, pushed.append, state)
    assert state is resp.STOP
    decoder = zlib.decompressobj(31)
    assert [decoder.decompress(p) for p in pushed[:2]] == [b"first", b"second"]
    assert decoder.decompress(b"".join(pushed[2:])) == b"last" and decoder.eof


def test_loop_closed_by_the_client_sends_no_trailer():
    def on_info(msg, push, state):
        return resp.STOP

    mw, req = get("gzip")
    out = run(mw, req, resp.Loop(200, [("content-type", "text/plain")], None, on_info))
    pushed: list[bytes] = []
    assert out.on_info((resp.CLOSED,), pushed.append, out.state) is resp.STOP
    assert pushed == []


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize("options, option", [
    ({"encodings": ["gzip", "lzma"]}, "encodings"),
    ({"encodings": "gzip"}, "encodings"),
    ({"encodings": ["gz\r\nip"]}, "encodings"),
    ({"min_size": -1}, "min_size"),
    ({"min_size": "1k"}, "min_size"),
    ({"content_types": "text/*"}, "content_types"),
    ({"content_types": ["text"]}, "content_types"),
    ({"content_types": ["text/html\r\nx-evil: 1"]}, "content_types"),
    ({"content_types": ["*/html"]}, "content_types"),
    ({"gzip_level": 0}, "gzip_level"),
    ({"gzip_level": 10}, "gzip_level"),
    ({"deflate_level": True}, "deflate_level"),
    ({"brotli_quality": 12}, "brotli_quality"),
    ({"zstd_level": 23}, "zstd_level"),
])
def test_bad_options_fail_at_construction_naming_the_option(options, option):
    with pytest.raises(ValueError, match=repr(option)):
        compress.middleware(**options)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError):
        compress.middleware(level=5)
