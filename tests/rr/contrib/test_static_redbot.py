"""rr.contrib.static checked by REDbot: no BAD or WARN notes on a 200, a 304 and a 206.

REDbot (``pip install redbot``, which brings ``httplint``) runs in a
subprocess, since the listener lives in this process's unpatched gevent hub.
Plain files go through the ``redbot -o har`` CLI; requests that need headers
(If-None-Match, If-Modified-Since, Range, Accept-Encoding) go through REDbot's
own ``HttpResource`` API, which the CLI cannot reach. Besides the main
response's notes, the notes of REDbot's follow-up requests (its own
conditional 304s, its Range probe and its gzip negotiation) are checked too.

Cache-Control here is ``max-age=60`` rather than ``public, max-age=60``:
REDbot WARNs that ``public`` is unnecessary on a response to a request without
Authorization, which is the deployer's option, not the handler's doing.
"""

from __future__ import annotations

import gzip

import pytest

from rr.contrib import static
from tests.rr.conftest import read_response
from tests.rr.contrib import redbot

pytestmark = pytest.mark.peers("redbot")


CSS = "".join(f".c{i} {{ color: #{(i * 7919) % 0xFFFFFF:06x}; margin: {i % 17}px }}\n" for i in range(400))


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "public"
    root.mkdir()
    (root / "readme.txt").write_text("hello, REDbot\n" * 200)
    (root / "style.css").write_text(CSS)
    # A real gzip of the CSS: REDbot compares the decoded body with the identity one.
    # Kept well above REDbot's 97-byte Range probe, which otherwise asks for the whole
    # (tiny) file and WARNs RANGE_CL_FULL whatever the server does.
    (root / "style.css.gz").write_bytes(gzip.compress(CSS.encode(), mtime=0))
    (root / "data.bin").write_bytes(bytes(range(256)) * 64)  # 16384 bytes
    return root


@pytest.fixture
def srv(serve, site):
    return serve([("/*path", static.handler(str(site), cache_control="max-age=60"))])


def _head(srv, path, *headers):
    """Status and headers of a GET, over a raw gevent socket."""
    extra = "".join(f"{h}\r\n" for h in headers)
    with srv.connect() as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        head, _ = read_response(sock)
    lines = head.decode().split("\r\n")
    out = {"status": lines[0].split()[1]}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        out[k.strip().lower()] = v.strip()
    return out


def test_file_200_has_no_bad_or_warn_notes(srv):
    results = redbot.check_all([(path, redbot.cli_har, f"{srv.url}{path}")
                          for path in ("/readme.txt", "/style.css", "/data.bin")])
    redbot.assert_clean(results, 200)
    # REDbot's own follow-ups succeeded: both conditionals, the Range probe, gzip negotiation.
    assert {"INM_304", "IMS_304", "RANGE_CORRECT", "CONNEG_GZIP_GOOD"} <= redbot.ids(results)


def test_304_has_no_bad_or_warn_notes(srv):
    txt = _head(srv, "/readme.txt")
    css_gz = _head(srv, "/style.css", "Accept-Encoding: gzip")
    assert css_gz["content-encoding"] == "gzip"
    results = redbot.check_all([
        ("If-None-Match", redbot.api, f"{srv.url}/readme.txt", [("If-None-Match", txt["etag"])]),
        ("If-Modified-Since", redbot.api, f"{srv.url}/readme.txt", [("If-Modified-Since", txt["last-modified"])]),
        ("If-None-Match, gzip variant", redbot.api, f"{srv.url}/style.css",
         [("If-None-Match", css_gz["etag"]), ("Accept-Encoding", "gzip")]),
        # 200 with gzip, so REDbot's own conditional follow-ups yield 304s of the gzip variant.
        ("gzip variant (REDbot's 304s)", redbot.api, f"{srv.url}/style.css", [("Accept-Encoding", "gzip")]),
    ])
    redbot.assert_clean(results[:3], 304)
    redbot.assert_clean(results[3:], 200)
    assert {"INM_304", "IMS_304"} <= {n["id"] for n in results[3][1]["notes"] if n["where"] == "main"}


def test_206_has_no_bad_or_warn_notes(srv):
    single = [
        ("bytes=100-299", redbot.api, f"{srv.url}/data.bin", [("Range", "bytes=100-299")]),
        ("bytes=-100", redbot.api, f"{srv.url}/data.bin", [("Range", "bytes=-100")]),
        # From byte 0: httplint gunzips any gzip-coded body, a 206 slice included, so a slice
        # from mid-stream is BAD_GZIP to it although RFC 9110 §14.1.2 ranges are over the
        # coded bytes. From 0 the header is intact and only the (expected) tail is missing.
        ("bytes=0-199, gzip variant", redbot.api, f"{srv.url}/style.css",
         [("Range", "bytes=0-199"), ("Accept-Encoding", "gzip")]),
    ]
    multi = [("bytes=0-9,500-509", redbot.api, f"{srv.url}/data.bin", [("Range", "bytes=0-9,500-509")])]
    results = redbot.check_all(single + multi)
    redbot.assert_clean(results[:3], 206)
    # httplint's PARTIAL_WITHOUT_RANGE is a false positive for multipart/byteranges: RFC 9110
    # §15.3.7.2 puts Content-Range in each part, and the header section has none to give.
    redbot.assert_clean(results[3:], 206, allowed={"PARTIAL_WITHOUT_RANGE"})
    assert dict(results[3][1]["headers"])["content-type"].strip().startswith("multipart/byteranges")
