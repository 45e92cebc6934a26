"""The edge middlewares over real sockets: the same answers on HTTP/1.1 and h2c (prior knowledge).

One application (compress, cors, security_headers and etag listener-wide, a
rate limiter on one route) is served twice, on an ``http1`` and on an
``http2`` listener. httpx (h1, and h2 with prior knowledge) sends each
request to both; status, the edge headers and the decoded body must be the
same and as specified. curl checks that a compressed event stream arrives
event by event, and the hostile inputs (a 100 KB ``Accept-Encoding``, 10,000
peers) go over the wire too.
"""

from __future__ import annotations

import gzip
import shutil
import ssl
import time
import zlib
from typing import Any

import brotli
import gevent
import gevent.event
import gevent.pool
import httpx
import pytest
import zstandard
from gevent import socket as gsocket
from gevent import subprocess

import rr
import supervisors
from rr import resp
from rr.contrib import compress, cors, etag, rate_limit, security_headers, sse
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread, read_response, read_until_close

APP_ORIGIN = "https://app.example"
TEXT = ("compress me, compress me, " * 400).encode()
BIG_HEADERS = {"max_header_line": 200_000, "max_header_block": 200_000}
PROTOCOLS = {
    "h1": [("http1", BIG_HEADERS)],
    "h2": [("http2", {"max_header_block": 200_000, "max_header_list_size": 200_000})],
}
# The headers the edge middlewares own: compared between h1 and h2.
EDGE = ("content-encoding", "vary", "etag", "access-control-allow-origin", "access-control-allow-credentials",
        "access-control-allow-methods", "access-control-allow-headers", "access-control-max-age",
        "access-control-expose-headers", "x-content-type-options", "x-frame-options", "referrer-policy",
        "strict-transport-security", "content-security-policy", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
        "allow", "content-type")


def app_routes(limiter: Any) -> list[Any]:
    return [
        {"path": "/text", "handler": lambda req: resp.text(200, TEXT, {"cache-control": "max-age=60"}),
         "methods": ["GET"]},
        ("/small", lambda req: resp.text(200, "tiny")),
        ("/png", lambda req: resp.body(200, "image/png", TEXT)),
        ("/json", lambda req: resp.json(200, {"items": list(range(300))})),
        {"path": "/limited", "handler": lambda req: resp.text(200, "within budget"), "middlewares": [limiter]},
    ]


def edge_middlewares() -> list[Any]:
    return [
        cors.middleware(origins=[APP_ORIGIN], allow_methods=["GET", "PUT", "DELETE"],
                        allow_headers=["content-type", "x-token"], expose_headers=["ratelimit-remaining"],
                        allow_credentials=True, max_age=600),
        security_headers.middleware(csp="default-src 'self'"),
        compress.middleware(),
        etag.middleware(),
    ]


@pytest.fixture
def both(serve):
    """{"h1": base url, "h2": base url}: the same app on an HTTP/1.1 and an h2c listener."""
    urls = {}
    for proto, protocols in PROTOCOLS.items():
        limiter = rate_limit.middleware(rate=0.001, burst=2)
        srv = serve(app_routes(limiter), middlewares=edge_middlewares(), protocols=protocols)
        urls[proto] = srv.url
    return urls


def fetch(url: str, proto: str, method: str = "GET", headers: dict[str, str] | None = None) -> httpx.Response:
    def go() -> httpx.Response:
        with httpx.Client(http1=proto == "h1", http2=proto == "h2", timeout=10) as client:
            r = client.request(method, url, headers=headers or {})
            r.read()
            return r

    r = in_thread(go)
    assert r.http_version == ("HTTP/1.1" if proto == "h1" else "HTTP/2")
    return r


def on_both(both: dict[str, str], path: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """The answer (status, edge headers, decoded body), asserted identical on h1 and h2."""
    seen = {}
    hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
    for proto, base in both.items():
        r = fetch(base + path, proto, method, hdrs)
        seen[proto] = (r.status_code, {k: r.headers[k] for k in EDGE if k in r.headers}, r.content)
    assert seen["h1"] == seen["h2"]
    return seen["h1"]


# -- compress ----------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_each_coding_on_h1_and_h2(both, coding):
    status, h, body = on_both(both, "/text", accept_encoding=coding)
    assert status == 200 and h["content-encoding"] == coding and body == TEXT
    assert h["vary"] == "accept-encoding, origin" and h["etag"].startswith('W/"')


def test_raw_coded_bytes_decode_with_reference_decoders(both):
    decoders = {"gzip": gzip.decompress, "deflate": zlib.decompress, "br": brotli.decompress,
                "zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)}

    def raw(proto: str, url: str, coding: str) -> tuple[httpx.Response, bytes]:
        with httpx.Client(http1=proto == "h1", http2=proto == "h2", timeout=10) as c, \
                c.stream("GET", url, headers={"accept-encoding": coding}) as r:
            return r, b"".join(r.iter_raw())

    for proto, base in both.items():
        for coding, decode in decoders.items():
            r, data = in_thread(raw, proto, base + "/text", coding)
            assert r.headers["content-encoding"] == coding and decode(data) == TEXT
            assert len(data) < len(TEXT) // 10


def test_q_values_identity_and_star_on_the_wire(both):
    assert on_both(both, "/text", accept_encoding="gzip;q=0.5, br;q=0.9")[1]["content-encoding"] == "br"
    assert "content-encoding" not in on_both(both, "/text", accept_encoding="identity")[1]
    assert "content-encoding" not in on_both(both, "/text", accept_encoding="gzip;q=0, *;q=0")[1]
    assert on_both(both, "/text", accept_encoding="*")[1]["content-encoding"] == "br"
    # identity refused: even the tiny body is coded
    status, h, body = on_both(both, "/small", accept_encoding="gzip, identity;q=0")
    assert h["content-encoding"] == "gzip" and body == b"tiny"
    assert "content-encoding" not in on_both(both, "/small", accept_encoding="gzip")[1]


def test_not_compressed_png_head_and_304(both):
    assert "content-encoding" not in on_both(both, "/png", accept_encoding="gzip")[1]
    status, h, body = on_both(both, "/text", "HEAD", accept_encoding="gzip")
    assert status == 200 and "content-encoding" not in h and body == b""
    tag = on_both(both, "/text", accept_encoding="gzip")[1]["etag"]
    status, h, body = on_both(both, "/text", accept_encoding="gzip", if_none_match=tag)
    assert status == 304 and body == b"" and "content-encoding" not in h and h["etag"] == tag


def test_a_100kb_accept_encoding_is_answered_fast(both):
    header = "identity;q=0, " + ",".join(["x-junk;q=0.1"] * 8000) + ", gzip"
    assert len(header) > 100_000
    started = time.monotonic()
    status, h, body = on_both(both, "/text", accept_encoding=header)
    assert status == 200 and body == TEXT and "content-encoding" not in h  # gzip is past MAX_CODINGS
    assert time.monotonic() - started < 5


# -- etag --------------------------------------------------------------------------


def test_etag_and_if_none_match_on_both(both):
    status, h, _ = on_both(both, "/json")
    assert status == 200 and h["etag"].startswith('W/"')
    status, h304, body = on_both(both, "/json", if_none_match=h["etag"])
    assert status == 304 and body == b"" and h304["etag"] == h["etag"]
    assert on_both(both, "/json", if_match='"nope"')[0] == 412


# -- cors --------------------------------------------------------------------------


def test_cors_actual_request_and_credentials(both):
    status, h, _ = on_both(both, "/json", origin=APP_ORIGIN)
    assert status == 200 and h["access-control-allow-origin"] == APP_ORIGIN
    assert h["access-control-allow-credentials"] == "true"
    assert h["access-control-expose-headers"] == "ratelimit-remaining"
    assert "origin" in h["vary"]
    assert "access-control-allow-origin" not in on_both(both, "/json", origin="https://evil.example")[1]


def test_cors_preflight_and_rejection(both):
    status, h, body = on_both(both, "/text", "OPTIONS", origin=APP_ORIGIN, access_control_request_method="PUT",
                              access_control_request_headers="x-token")
    assert status == 204 and body == b""
    assert h["access-control-allow-origin"] == APP_ORIGIN and h["access-control-allow-methods"] == "GET, PUT, DELETE"
    assert h["access-control-allow-headers"] == "x-token" and h["access-control-max-age"] == "600"
    status, h, _ = on_both(both, "/text", "OPTIONS", origin=APP_ORIGIN, access_control_request_method="PATCH")
    assert status == 403 and "access-control-allow-origin" not in h


def test_cors_headers_on_404_and_405(both):
    status, h, _ = on_both(both, "/nowhere", origin=APP_ORIGIN)
    assert status == 404 and h["access-control-allow-origin"] == APP_ORIGIN
    status, h, _ = on_both(both, "/text", "POST", origin=APP_ORIGIN)
    assert status == 405 and h["access-control-allow-origin"] == APP_ORIGIN and h["allow"] == "GET, HEAD"


# -- security headers --------------------------------------------------------------


def test_security_headers_on_every_answer_and_no_hsts_on_plain_http(both):
    for path in ("/text", "/nowhere"):
        _, h, _ = on_both(both, path)
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["content-security-policy"] == "default-src 'self'"
        assert "strict-transport-security" not in h


def test_hsts_on_a_tls_listener_h1_and_h2(serve, tmp_path):
    certfile, keyfile = make_cert(tmp_path)
    srv = serve([("/", lambda req: resp.text(200, "ok"))], middlewares=[security_headers.middleware()],
                tls={"certfile": certfile, "keyfile": keyfile}, protocols=["http2", "http1"])
    ctx = ssl.create_default_context(cafile=certfile)

    def go(h2: bool) -> httpx.Response:
        with httpx.Client(http1=not h2, http2=h2, verify=ctx, timeout=10) as c:
            return c.get(f"https://127.0.0.1:{srv.port}/")

    for h2 in (False, True):
        r = in_thread(go, h2)
        assert r.http_version == ("HTTP/2" if h2 else "HTTP/1.1")
        assert r.headers["strict-transport-security"] == "max-age=31536000"


# -- rate limit --------------------------------------------------------------------


def test_rate_limit_on_one_route_identical_on_both(both):
    answers = [on_both(both, "/limited") for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert [a[1]["ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
    h = answers[2][1]
    assert int(h["retry-after"]) >= 1 and h["ratelimit-limit"] == "2"
    assert on_both(both, "/text")[0] == 200  # other routes are not limited


def test_429_is_sent_before_the_body_is_read(serve):
    """body_buffering manual + Expect: 100-continue: a refused client is never invited to send."""
    limiter = rate_limit.middleware(rate=0.001, burst=1)
    read = []

    def upload(req):
        read.append(req.read_body())
        return resp.text(200, "stored")

    srv = serve([{"path": "/up", "handler": upload, "methods": ["POST"], "middlewares": [limiter]}],
                body_buffering="manual")
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    with srv.connect() as sock:
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        assert b" 200 " in sock.recv(4096).split(b"\r\n")[0] + b" "
    with srv.connect() as sock:
        sock.sendall(head)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 429 ") and b"retry-after: " in answer
    assert read == [b"hello"]


def test_listener_wide_limiter_keeps_its_store_bounded_against_10000_peers(serve):
    """10,000 distinct client addresses (127.x.y.z sources) against the default peer key."""
    limiter = rate_limit.middleware(rate=0.001, burst=1, max_keys=500)
    srv = serve([("/a", lambda req: resp.text(200, "a")), ("/b", lambda req: resp.text(200, "b"))],
                middlewares=[limiter])
    statuses: list[bytes] = []

    def one(i: int) -> None:
        sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.bind((f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 0))
            sock.connect(("127.0.0.1", srv.port))
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            statuses.append(read_until_close(sock)[9:12])
            assert len(limiter.buckets) <= 500
        finally:
            sock.close()

    pool = gevent.pool.Pool(32)
    for i in range(10_000):
        pool.spawn(one, i)
    pool.join(raise_error=True)
    assert statuses == [b"200"] * 10_000
    assert len(limiter.buckets) == 500
    # the same object on both routes: one budget for a peer
    with srv.connect() as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0].startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0].startswith(b"HTTP/1.1 429")


# -- a compressed event stream still streams (curl, h1 and h2) ------------------------

CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is installed by tools/setup.sh")
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_gzip_sse_arrives_event_by_event(serve, proto):
    go_on = gevent.event.Event()

    def events(req):
        def produce(send):
            send(sse.event("first"))
            go_on.wait(10)  # released by the test once curl has shown the first event
            send(sse.event("second"))

        return resp.Stream(200, list(sse.HEADERS), produce)

    srv = serve([("/events", events)], middlewares=[compress.middleware()], protocols=PROTOCOLS[proto])
    flag = "--http1.1" if proto == "h1" else "--http2-prior-knowledge"
    proc = subprocess.Popen([CURL, "-sN", flag, "--compressed", "-H", "Accept-Encoding: gzip", "-D", "/dev/stderr",
                             "--max-time", "20", f"{srv.url}/events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with gevent.Timeout(10):
            assert proc.stdout.readline() == b"data: first\n"
        go_on.set()
        rest, head = proc.communicate(timeout=10)
    finally:
        go_on.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rest == b"\ndata: second\n\n"
    assert b"content-encoding: gzip" in head.lower()


@pytest.mark.skipif(CURL is None, reason="curl is installed by tools/setup.sh")
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_br_loop_pushes_arrive_one_by_one_and_end_on_stop(serve, proto):
    ready = gevent.event.Event()
    registry: dict[str, Any] = {}

    def feed(req):
        registry["pid"] = supervisors.self()
        ready.set()

        def on_info(msg, push, state):
            if msg == "stop":
                push(b"bye\n")
                return resp.STOP
            push(f"message {msg}\n".encode())
            return state

        return resp.Loop(200, [("content-type", "application/x-ndjson")], None, on_info)

    srv = serve([("/feed", feed)], middlewares=[compress.middleware()], protocols=PROTOCOLS[proto])
    flag = "--http1.1" if proto == "h1" else "--http2-prior-knowledge"
    proc = subprocess.Popen([CURL, "-sN", flag, "--compressed", "-H", "Accept-Encoding: br", "-D", "/dev/stderr",
                             "--max-time", "20", f"{srv.url}/feed"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert ready.wait(10)
        with gevent.Timeout(10):
            for n in (1, 2):
                rr.send(registry["pid"], n)
                assert proc.stdout.readline() == f"message {n}\n".encode()  # coded, flushed, decoded at once
        rr.send(registry["pid"], "stop")
        rest, head = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rest == b"bye\n" and proc.returncode == 0
    assert b"content-encoding: br" in head.lower()

    # The raw coded bytes form one complete brotli stream: its end went out on STOP.
    ready.clear()

    def feeder() -> None:
        ready.wait(10)
        for msg in (1, 2, "stop"):
            rr.send(registry["pid"], msg)

    def raw() -> bytes:
        with httpx.Client(http1=proto == "h1", http2=proto == "h2", timeout=10) as c, \
                c.stream("GET", f"{srv.url}/feed", headers={"accept-encoding": "br"}) as r:
            return b"".join(r.iter_raw())

    sender = gevent.spawn(feeder)
    data = in_thread(raw)
    sender.join(10)
    decoder = brotli.Decompressor()
    assert decoder.process(data) == b"message 1\nmessage 2\nbye\n" and decoder.is_finished()
