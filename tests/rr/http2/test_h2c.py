"""h2c on a shared plain-TCP port (``protocols: ["http1", "http2"]``): Upgrade and preface sniffing."""

from __future__ import annotations

import base64

import pytest
from gevent import subprocess

from rr import resp
from tests.rr.certs import make_cert
from tests.rr.conftest import read_response
from tests.rr.http2.client import H2Client

SHARED = {"protocols": ["http1", "http2"]}

pytestmark = pytest.mark.peers("curl", "nghttp")


def app(req):
    body = req.read_body()
    return resp.text(200, f"{req.version} {req.method} {req.path} {len(body)} {req.host}")


def curl(*args: str) -> tuple[str, str]:
    p = subprocess.run(["curl", "-sS", "-v", "--max-time", "10", *args], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode(), p.stderr.decode()


def test_curl_upgrade_get_is_answered_on_stream_1(serve):
    srv = serve(app, **SHARED)
    out, err = curl("--http2", f"{srv.url}/up")
    assert "< HTTP/1.1 101 Switching Protocols" in err and "< HTTP/2 200" in err
    assert out == f"HTTP/2 GET /up 0 127.0.0.1:{srv.port}"


def test_curl_upgrade_post_carries_its_body_into_stream_1(serve):
    srv = serve(app, **SHARED)
    out, err = curl("--http2", "--data-binary", "x" * 5000, f"{srv.url}/post")
    assert "101 Switching Protocols" in err
    assert out == f"HTTP/2 POST /post 5000 127.0.0.1:{srv.port}"


def test_nghttp_upgrade_trace(serve):
    srv = serve(app, **SHARED)
    p = subprocess.run(["nghttp", "-vu", f"{srv.url}/n"], capture_output=True, timeout=20)
    text = p.stdout.decode()
    assert "HTTP Upgrade response" in text and "HTTP Upgrade success" in text
    assert "(stream_id=1) :status: 200" in text and "HTTP/2 GET /n 0" in text


def test_prior_knowledge_is_sniffed_on_the_shared_port(serve):
    srv = serve(app, **SHARED)
    out, err = curl("--http2-prior-knowledge", f"{srv.url}/pk")
    assert "< HTTP/2 200" in err and out.startswith("HTTP/2 GET /pk 0")
    c = H2Client(srv.port)
    try:
        sids = [c.request("GET", f"/{i}") for i in range(5)]
        res = c.run()
    finally:
        c.close()
    assert [res[s].body for s in sids] == [f"HTTP/2 GET /{i} 0 127.0.0.1:{srv.port}".encode() for i in range(5)]


def test_plain_http1_still_served_on_the_shared_port(serve):
    srv = serve(app, **SHARED)
    out, err = curl("--http1.1", f"{srv.url}/one")
    assert "< HTTP/1.1 200 OK" in err and out.startswith("HTTP/1.1 GET /one 0")


def _upgrade_request(settings: str, extra: str = "") -> bytes:
    return (f"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            f"Upgrade: h2c\r\nHTTP2-Settings: {settings}\r\n{extra}\r\n").encode()


def test_invalid_or_missing_http2_settings_serves_http1(serve):
    srv = serve(app, **SHARED)
    for request in (_upgrade_request("!!!notbase64"), _upgrade_request("AAMAAABk" * 1 + "AA"),
                    b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"):
        with srv.connect() as sock:
            sock.sendall(request)
            head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK"), (request, head)
        assert body.startswith(b"HTTP/1.1 GET /u")


def test_upgrade_only_on_the_first_request(serve):
    srv = serve(app, **SHARED)
    settings = base64.urlsafe_b64encode(b"\x00\x03\x00\x00\x00\x64").decode().rstrip("=")
    with srv.connect() as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        sock.sendall(_upgrade_request(settings))
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and body.startswith(b"HTTP/1.1 GET /u")


def test_upgrade_is_ignored_over_tls(serve, tmp_path):
    certfile, keyfile = make_cert(tmp_path)
    srv = serve(app, tls={"certfile": certfile, "keyfile": keyfile}, protocols=["http1", "http2"])
    out, err = curl("-k", "--http1.1", "-H", "Connection: Upgrade, HTTP2-Settings", "-H", "Upgrade: h2c",
                    "-H", "HTTP2-Settings: AAMAAABk", f"https://127.0.0.1:{srv.port}/tls")
    # (the port may contain "101": look for a 101 status line, not the digits)
    assert "< HTTP/1.1 101" not in err and "< HTTP/1.1 200 OK" in err and out.startswith("HTTP/1.1 GET /tls")


@pytest.mark.peers("h2load")
def test_h2load_prior_knowledge_on_the_shared_port(serve):
    srv = serve(lambda req: resp.text(200, "ok"), **SHARED)
    p = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "10", f"{srv.url}/"],
                       capture_output=True, timeout=60)
    text = p.stdout.decode()
    assert "400 succeeded, 0 failed" in text and "h2c" in text, text


def test_alt_svc_option_is_added_on_h1_and_h2_unless_the_handler_set_one(serve):
    def handler(req):
        if req.path == "/own":
            return resp.text(200, "own", headers=[("alt-svc", "clear")])
        return resp.text(200, "ok")

    srv = serve(handler, alt_svc='h3=":4433"; ma=60', **SHARED)
    _, err = curl("--http1.1", f"{srv.url}/")
    assert '< alt-svc: h3=":4433"; ma=60' in err
    _, err = curl("--http2-prior-knowledge", f"{srv.url}/")
    assert '< alt-svc: h3=":4433"; ma=60' in err
    _, err = curl("--http2-prior-knowledge", f"{srv.url}/own")
    assert "< alt-svc: clear" in err and "4433" not in err
    with pytest.raises(ValueError, match="alt_svc"):
        serve(handler, alt_svc="h3\r\nx: y")
