"""rr.contrib.static over a real listener: validators, ranges, encodings, traversal."""

from __future__ import annotations

import os

import pytest

from rr.contrib import static
from tests.rr.conftest import read_response, read_until_close


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "app.js").write_text("console.log(1)")
    (root / "data.bin").write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    (root / "style.css").write_text("body{}" * 100)
    (root / "style.css.gz").write_bytes(b"GZ-VERSION")
    (root / "style.css.br").write_bytes(b"BR-VERSION")
    sub = root / "docs"
    sub.mkdir()
    (sub / "index.html").write_text("docs")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    return root


@pytest.fixture
def srv(serve, site):
    return serve([("/*path", static.handler(str(site), cache_control="public, max-age=60"))])


def get(srv, path, *headers, method="GET"):
    extra = b"".join(h.encode() + b"\r\n" for h in headers)
    with srv.connect() as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n")
        if method == "HEAD":
            return _head_then_get(sock)
        head, body = read_response(sock)
    return _headers(head), body


def _head_then_get(sock):
    """After a HEAD, pipeline a GET and read to close: whatever sits between the HEAD's
    head and the GET's status line is the body the HEAD answer must not have."""
    sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_until_close(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    body, marker, after = rest.partition(b"HTTP/1.1 200 ")
    assert marker and after.endswith(b"<h1>home</h1>"), data  # the pipelined GET was answered
    return _headers(head), body


def _headers(head: bytes) -> dict:
    lines = head.decode().split("\r\n")
    out = {"status": int(lines[0].split()[1])}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        out[k] = v
    return out


def test_file_with_type_etag_last_modified_and_cache_control(srv):
    h, body = get(srv, "/app.js")
    assert h["status"] == 200 and body == b"console.log(1)"
    assert h["content-type"].startswith("text/javascript") or h["content-type"].startswith("application/javascript")
    assert h["etag"].startswith('"') and h["last-modified"].endswith("GMT")
    assert h["cache-control"] == "public, max-age=60" and h["accept-ranges"] == "bytes"


def test_index_file_for_the_root_and_directories(srv):
    assert get(srv, "/")[1] == b"<h1>home</h1>"
    assert get(srv, "/docs/")[1] == b"docs"


def test_if_none_match_gives_304_without_body(srv):
    h, _ = get(srv, "/app.js")
    h2, body = get(srv, "/app.js", f"If-None-Match: W/{h['etag']}, \"other\"")
    assert h2["status"] == 304 and body == b"" and h2["etag"] == h["etag"]


def test_if_modified_since_gives_304_only_without_if_none_match(srv):
    h, _ = get(srv, "/app.js")
    assert get(srv, "/app.js", f"If-Modified-Since: {h['last-modified']}")[0]["status"] == 304
    assert get(srv, "/app.js", f"If-Modified-Since: {h['last-modified']}", 'If-None-Match: "x"')[0]["status"] == 200


def test_single_range_is_206_with_content_range(srv):
    h, body = get(srv, "/data.bin", "Range: bytes=10-19")
    assert h["status"] == 206 and h["content-range"] == "bytes 10-19/10240"
    assert body == bytes(range(10, 20))
    h, body = get(srv, "/data.bin", "Range: bytes=-4")
    assert body == bytes(range(252, 256)) and h["content-range"] == "bytes 10236-10239/10240"


def test_multiple_ranges_are_multipart_byteranges(srv):
    h, body = get(srv, "/data.bin", "Range: bytes=0-1, 256-257")
    assert h["status"] == 206 and h["content-type"].startswith("multipart/byteranges; boundary=")
    boundary = h["content-type"].split("boundary=")[1].encode()
    assert body.count(b"--" + boundary) == 3 and body.endswith(b"--" + boundary + b"--\r\n")
    assert b"content-range: bytes 0-1/10240\r\n\r\n\x00\x01\r\n" in body
    assert b"content-range: bytes 256-257/10240\r\n\r\n\x00\x01\r\n" in body


def test_unsatisfiable_range_is_416(srv):
    h, _ = get(srv, "/data.bin", "Range: bytes=20000-30000")
    assert h["status"] == 416 and h["content-range"] == "bytes */10240"


def test_open_ended_range_past_the_end_is_416(srv):
    # RFC 9110 §14.1.1: ``bytes=N-`` is valid for any N (only a last-pos below first-pos
    # is invalid); past the end it is unsatisfiable, not ignored.
    h, _ = get(srv, "/data.bin", "Range: bytes=99999-")
    assert h["status"] == 416 and h["content-range"] == "bytes */10240"


def test_malformed_range_is_ignored_and_the_whole_file_sent(srv):
    h, body = get(srv, "/data.bin", "Range: bytes=abc")
    assert h["status"] == 200 and len(body) == 10240


def test_if_range_with_a_stale_etag_sends_the_whole_file(srv):
    h, body = get(srv, "/data.bin", "Range: bytes=0-1", 'If-Range: "stale"')
    assert h["status"] == 200 and len(body) == 10240


def test_head_has_the_headers_and_no_body(srv):
    h, body = get(srv, "/data.bin", method="HEAD")
    assert h["status"] == 200 and h["content-length"] == "10240"
    assert body == b""


@pytest.mark.parametrize(
    ("accept", "body", "encoding"),
    [("br;q=1, gzip;q=0.5", b"BR-VERSION", "br"), ("gzip", b"GZ-VERSION", "gzip"),
     ("identity", b"body{}" * 100, None), ("br;q=0, gzip", b"GZ-VERSION", "gzip")],
)
def test_precompressed_siblings_are_negotiated_with_vary(srv, accept, body, encoding):
    h, got = get(srv, "/style.css", f"Accept-Encoding: {accept}")
    assert got == body and h.get("content-encoding") == encoding and h["vary"] == "accept-encoding"


@pytest.mark.parametrize(
    "path",
    ["/../secret.txt", "/%2e%2e/secret.txt", "/docs/%2E%2E/%2e%2e/secret.txt", "/a%00b", "/escape.txt",
     "/%2fetc/passwd", "/docs/..%5c..%5csecret.txt", "/./app.js"],
)
def test_traversal_vectors_are_refused(srv, path):
    h, body = get(srv, path)
    assert h["status"] in (400, 403, 404) and b"secret" not in body


def test_missing_file_is_404_and_post_is_405(srv):
    assert get(srv, "/nope.txt")[0]["status"] == 404
    h, _ = get(srv, "/app.js", "Content-Length: 0", method="POST")
    assert h["status"] == 405 and h["allow"] == "GET, HEAD"
