"""HTTP/1.1 against clients we did not write: curl, httpx, wrk, h2load --h1, openssl."""

from __future__ import annotations

import json
import os
import re
import ssl

import gevent
import pytest
from gevent import subprocess

import rr
from rr import resp
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread


def app(req: rr.Request) -> resp.Shape:
    if req.path == "/echo":
        return resp.json(200, {"method": req.method, "len": len(req.read_body()),
                               "ctype": req.header("content-type")})
    if req.path == "/stream":
        return resp.Stream(200, [("content-type", "text/plain")],
                           lambda send: [send(b"part%d\n" % i) for i in range(3)])
    if req.path == "/crash":
        raise RuntimeError("boom")
    return resp.text(200, "hello")


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, timeout=timeout, check=False)


needs_curl = pytest.mark.peers("curl")


@needs_curl
def test_curl_get_keep_alive_reuses_one_connection(serve):
    srv = serve(app)
    out = run("curl", "-sv", f"{srv.url}/", f"{srv.url}/")
    assert out.returncode == 0
    assert out.stdout == b"hellohello"
    assert b"Re-using existing connection" in out.stderr or b"reusing" in out.stderr.lower()
    assert srv.info()["accepted"] == 1


@needs_curl
def test_curl_post_and_expect_100_continue(serve):
    srv = serve(app, body_buffering="manual")
    body = "x" * 2_000_000
    proc = subprocess.Popen(["curl", "-sv", "-H", "Expect: 100-continue", "-H",
                             "content-type: application/octet-stream", "--data-binary", "@-",
                             f"{srv.url}/echo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate(body.encode(), timeout=60)
    assert json.loads(stdout) == {"method": "POST", "len": 2_000_000, "ctype": "application/octet-stream"}
    assert b"100 Continue" in stderr


@needs_curl
def test_curl_chunked_upload_and_chunked_download(serve):
    srv = serve(app)
    proc = subprocess.Popen(["curl", "-s", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                             f"{srv.url}/echo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    stdout, _ = proc.communicate(b"y" * 100_000, timeout=60)
    assert json.loads(stdout)["len"] == 100_000
    out = run("curl", "-s", "--raw", f"{srv.url}/stream")
    assert out.stdout == b"6\r\npart0\n\r\n6\r\npart1\n\r\n6\r\npart2\n\r\n0\r\n\r\n"


@needs_curl
def test_curl_head_and_500(serve):
    srv = serve(app)
    out = run("curl", "-sI", f"{srv.url}/")
    assert out.stdout.startswith(b"HTTP/1.1 200 OK") and b"content-length: 5" in out.stdout
    out = run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{srv.url}/crash")
    assert out.stdout == b"500"


def test_httpx_client_get_post_and_stream(serve):
    import httpx

    srv = serve(app)

    def client_calls():
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            r1 = client.get("/")
            r2 = client.post("/echo", content=b"abc", headers={"content-type": "text/plain"})
            r3 = client.get("/stream")
            return r1, r2, r3

    r1, r2, r3 = in_thread(client_calls)
    assert r1.status_code == 200 and r1.text == "hello" and r1.http_version == "HTTP/1.1"
    assert r2.json() == {"method": "POST", "len": 3, "ctype": "text/plain"}
    assert r3.text == "part0\npart1\npart2\n"


def test_tls_listener_serves_httpx_with_alpn_http11(serve, tmp_path):
    import httpx

    certfile, keyfile = make_cert(tmp_path)
    srv = serve(app, tls={"certfile": certfile, "keyfile": keyfile})
    ctx = ssl.create_default_context(cafile=certfile)

    def call():
        with httpx.Client(verify=ctx, timeout=10) as client:
            return client.get(f"https://127.0.0.1:{srv.port}/")

    r = in_thread(call)
    assert r.status_code == 200 and r.text == "hello"


def old_tls_client_context() -> ssl.SSLContext:
    """A client that offers only TLS 1.0 and 1.1, with every cipher (OpenSSL security level 0).

    This machine's default client refuses TLS 1.1 by itself; this one does not, so a
    refusal below is the server's.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def old_tls_handshake(port: int) -> str:
    """In a thread: the negotiated version, or 'refused'."""
    ctx = old_tls_client_context()

    def handshake():
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            try:
                with ctx.wrap_socket(raw) as tls:
                    return tls.version()
            except (ssl.SSLError, OSError):
                return "refused"

    return in_thread(handshake)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_refuses_tls_1_1_from_a_client_that_can_speak_it(serve, tmp_path):
    certfile, keyfile = make_cert(tmp_path)
    # The control: the same client against a server context that allows TLS 1.0+ gets TLS 1.1.
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lax.minimum_version = ssl.TLSVersion.TLSv1
    lax.set_ciphers("ALL:@SECLEVEL=0")
    lax.load_cert_chain(certfile, keyfile)
    assert old_tls_handshake(serve(app, tls=lax).port) == "TLSv1.1"

    srv = serve(app, tls={"certfile": certfile, "keyfile": keyfile})
    assert old_tls_handshake(srv.port) == "refused"


def test_tls_default_context_is_tls12_plus_aead_without_compression_or_renegotiation(tmp_path):
    from rr.config import server_context

    certfile, keyfile = make_cert(tmp_path)
    ctx = server_context(certfile, keyfile)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12), tls12


def test_tls_times_out_stalled_handshakes(serve, tmp_path):
    from gevent import socket as gsocket

    certfile, keyfile = make_cert(tmp_path)
    srv = serve(app, tls={"certfile": certfile, "keyfile": keyfile}, tls_handshake_timeout=0.3)
    stalled = gsocket.create_connection(("127.0.0.1", srv.port), timeout=5)
    stalled.settimeout(5)
    assert stalled.recv(10) == b""  # the server gave up on the handshake
    stalled.close()


def test_sendfile_over_tls_uses_read_and_send(serve, tmp_path):
    import httpx

    certfile, keyfile = make_cert(tmp_path)
    path = tmp_path / "blob"
    payload = os.urandom(300_000)
    path.write_bytes(payload)
    srv = serve(lambda req: resp.Sendfile(200, [], str(path)), tls={"certfile": certfile, "keyfile": keyfile})
    ctx = ssl.create_default_context(cafile=certfile)
    r = in_thread(lambda: httpx.get(f"https://127.0.0.1:{srv.port}/", verify=ctx, timeout=10))
    assert r.content == payload


@pytest.mark.slow
@pytest.mark.peers("wrk")
def test_wrk_keep_alive_load_has_no_errors(serve):
    srv = serve(app, max_clients=200)
    out = run("wrk", "-t1", "-c20", "-d2s", f"{srv.url}/", timeout=60)
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr
    assert "Socket errors" not in text and "Non-2xx" not in text
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    assert requests > 100
    assert srv.info()["accepted"] < requests / 10  # keep-alive: connections were reused


@pytest.mark.slow
@pytest.mark.peers("h2load")
def test_h2load_h1_pipelining_has_no_errors(serve):
    srv = serve(app, max_clients=200)
    out = run("h2load", "--h1", "-n", "4000", "-c", "10", "-m", "10", f"{srv.url}/", timeout=60)
    text = out.stdout.decode()
    assert "4000 succeeded, 0 failed, 0 errored" in text, text
    assert "status codes: 4000 2xx" in text


def test_the_hello_example_serves_curl_as_in_the_readme(tmp_path):
    """tools/run's app in a subprocess (as a user runs it): curl -i gets the README's answer."""
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "examples/hello.py"], env={**os.environ, "RR_PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = [proc.stdout.readline()]  # rr's own start-up log line, then the example's
        while b"serving" not in lines[-1] and len(lines) < 3 and lines[-1]:
            lines.append(proc.stdout.readline())
        assert b"serving" in lines[-1], proc.stderr.read() if proc.poll() is not None else lines
        out = run("curl", "-si", f"http://127.0.0.1:{port}/?name=README")
        assert out.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
        assert out.stdout.endswith(b"\r\n\r\nHello, README!\n")
        for flag in ("--http2", "--http2-prior-knowledge"):  # the same port speaks h2c
            out = run("curl", "-si", flag, f"http://127.0.0.1:{port}/?name=h2")
            assert b"HTTP/2 200" in out.stdout and out.stdout.endswith(b"Hello, h2!\n"), out.stdout
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0  # SIGTERM drained and exited cleanly


def test_gevent_monkey_patched_app_works(tmp_path):
    """The common gevent app calls patch_all() first; rr must serve it the same."""
    import sys

    script = tmp_path / "patched.py"
    script.write_text(
        "from gevent import monkey; monkey.patch_all()\n"
        "import urllib.request, rr\n"
        "from rr import resp\n"
        "rr.start_listener('p', {'port': 0, 'ip': '127.0.0.1', 'routes': lambda r: resp.text(200, 'patched')})\n"
        "url = f\"http://127.0.0.1:{rr.listener_port('p')}/\"\n"
        "print(urllib.request.urlopen(url, timeout=10).read().decode())\n"
        "print(rr.drain('p', 5))\n"
    )
    out = run(sys.executable, str(script), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["patched", "{'drained': 0, 'killed': 0}"]
    gevent.sleep(0)
