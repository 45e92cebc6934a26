"""HTTP/2 end to end: httpx over TLS+ALPN, nghttp/h2load and a raw h2 client over h2c."""

from __future__ import annotations

import re
import socket
import ssl
import time

import gevent
import gevent.event
import httpx
import pytest
from gevent import subprocess

import rr
import supervisors
from rr import resp
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread, read_until_close, wait_processes_gone
from tests.rr.http2 import frames as fr
from tests.rr.http2.client import H2Client

H2C = {"protocols": ["http2"]}


def app(req: rr.Request) -> resp.Shape:
    if req.path == "/":
        return resp.text(200, "hello h2")
    if req.path == "/echo":
        body = req.read_body()
        return resp.Response(200, [("content-type", "application/octet-stream"),
                                   ("x-method", req.method), ("x-version", req.version),
                                   ("x-host", req.host or "")], body)
    if req.path == "/stream":
        def fn(send):
            send(b"one,")
            send(b"two,")
            send(b"three", fin=True, trailers=[("x-checksum", "abc")])
        return resp.Stream(200, [("content-type", "text/plain"), ("Connection", "keep-alive")], fn)
    if req.path == "/big":
        return resp.Response(200, [("content-type", "application/octet-stream")], b"x" * 300_000)
    if req.path == "/boom":
        raise RuntimeError("boom on purpose")
    if req.path == "/cookies":
        return resp.json(200, req.cookies())
    if req.path == "/query":
        return resp.json(200, {"path": req.path, "query": req.query()})
    return resp.not_found()


def tls_serve(serve, tmp_path, handler=app, **opts):
    certfile, keyfile = make_cert(tmp_path)
    opts.setdefault("protocols", ["http2", "http1"])
    srv = serve(handler, tls={"certfile": certfile, "keyfile": keyfile}, **opts)
    ctx = ssl.create_default_context(cafile=certfile)
    base = f"https://127.0.0.1:{srv.port}"
    return srv, ctx, base


# -- httpx over TLS (ALPN h2) -----------------------------------------------------


def test_httpx_over_tls_negotiates_h2_get_post_head_404(serve, tmp_path):
    srv, ctx, base = tls_serve(serve, tmp_path)

    def client():
        with httpx.Client(http2=True, verify=ctx, timeout=10) as c:
            got = c.get(f"{base}/")
            posted = c.post(f"{base}/echo", content=b"ping" * 5000)
            head = c.head(f"{base}/")
            missing = c.get(f"{base}/nope")
            query = c.get(f"{base}/query?a=1&a=2&b=x")
        return got, posted, head, missing, query

    got, posted, head, missing, query = in_thread(client)
    assert got.http_version == "HTTP/2"
    assert got.status_code == 200 and got.text == "hello h2"
    assert got.headers["content-length"] == "8"
    assert posted.http_version == "HTTP/2" and posted.status_code == 200
    assert posted.content == b"ping" * 5000
    assert posted.headers["x-method"] == "POST" and posted.headers["x-version"] == "HTTP/2"
    assert posted.headers["x-host"] == f"127.0.0.1:{srv.port}"
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "8"
    assert missing.status_code == 404
    assert query.json() == {"path": "/query", "query": {"a": ["1", "2"], "b": ["x"]}}


def test_httpx_over_tls_streams_and_large_bodies(serve, tmp_path):
    srv, ctx, base = tls_serve(serve, tmp_path)

    def client():
        with httpx.Client(http2=True, verify=ctx, timeout=10) as c:
            return c.get(f"{base}/stream"), c.get(f"{base}/big")

    streamed, big = in_thread(client)
    assert streamed.http_version == "HTTP/2"
    assert streamed.status_code == 200 and streamed.text == "one,two,three"
    assert "connection" not in streamed.headers  # connection-specific: stripped on h2
    assert big.content == b"x" * 300_000  # beyond the 64 KiB initial window: flow control resumed


def test_h2_over_tls_is_read_by_the_conn_itself_and_reads_on_while_records_are_decrypted(
        serve, tmp_path, monkeypatch):
    """Over TLS the conn reads with ``TlsStream.recv_nowait`` when the socket is readable (no
    reader process). A read that fills RECV_SIZE may leave whole records behind in the TLS
    stream that no readiness will announce: the conn reads on at once. RECV_SIZE is made
    small here so a 200 KB upload hits that case hundreds of times."""
    import rr.http2.conn as h2conn

    monkeypatch.setattr(h2conn, "RECV_SIZE", 700)
    srv, ctx, base = tls_serve(serve, tmp_path)
    body = bytes(range(256)) * 800

    def client():
        with httpx.Client(http2=True, verify=ctx, timeout=10) as c:
            posted = c.post(f"{base}/echo", content=body)
            readers = [p for p in _h2_processes() if p.label == "rr.h2.reader"]
            return posted, readers, c.get(f"{base}/")

    posted, readers, got = in_thread(client)
    assert posted.http_version == "HTTP/2" and posted.content == body
    assert got.text == "hello h2"
    assert readers == []


def test_http1_still_served_on_the_same_tls_listener(serve, tmp_path):
    srv, ctx, base = tls_serve(serve, tmp_path)

    def client():
        with httpx.Client(http2=False, verify=ctx, timeout=10) as c:
            return c.get(f"{base}/")

    r = in_thread(client)
    assert r.http_version == "HTTP/1.1" and r.text == "hello h2"


# -- raw h2c client ----------------------------------------------------------------


def test_h2c_stream_with_trailers_head_and_cookie_crumbs(serve):
    srv = serve(app, **H2C)
    c = H2Client(srv.port)
    try:
        s1 = c.request("GET", "/stream")
        s2 = c.request("HEAD", "/stream")
        s3 = c.request("GET", "/cookies", headers=[("cookie", "a=1"), ("cookie", "b=2")])
        res = c.run()
    finally:
        c.close()
    assert res[s1].status == 200 and res[s1].body == b"one,two,three"
    assert res[s1].trailers == [("x-checksum", "abc")]
    assert res[s2].status == 200 and res[s2].body == b"" and res[s2].trailers == []
    assert res[s3].status == 200 and res[s3].body == b'{"a":"1","b":"2"}'


def test_h2c_crash_isolation_one_of_twenty_streams_gets_500(serve):
    srv = serve(app, **H2C)
    c = H2Client(srv.port)
    try:
        sids = [c.request("GET", "/boom" if i == 7 else "/") for i in range(20)]
        res = c.run()
    finally:
        c.close()
    statuses = [res[s].status for s in sids]
    assert statuses[7] == 500
    assert statuses[:7] + statuses[8:] == [200] * 19
    assert all(res[s].body == b"hello h2" for i, s in enumerate(sids) if i != 7)


@pytest.mark.parametrize("failure", ["raise", "max_heap"])
def test_h2c_one_failing_stream_leaves_99_concurrent_siblings_answered(serve, failure):
    """100 streams open at once on one connection; one handler raises (or blows its
    max_heap buffering a body); the other 99 are held until all of them are running,
    then each answers its own body."""
    all_in = gevent.event.Event()
    running = []

    def handler(req):
        if req.path == "/fail":
            if failure == "raise":
                raise RuntimeError("this stream fails on purpose")
            return resp.text(200, str(len(req.read_body())))
        running.append(req.path)
        if len(running) == 99:
            all_in.set()
        assert all_in.wait(20)
        return resp.text(200, f"sibling {req.path}")

    opts = {"handler_spawn": {"max_heap": 512 * 1024}} if failure == "max_heap" else {}
    srv = serve(handler, **opts, **H2C)
    c = H2Client(srv.port)
    try:
        sids = [c.request("GET", f"/s{i}") for i in range(50)]
        bad = c.request("POST", "/fail", body=b"z" * (2 * 1024 * 1024) if failure == "max_heap" else b"")
        sids += [c.request("GET", f"/s{i}") for i in range(50, 99)]
        res = c.run(timeout=30)
    finally:
        c.close()
    assert res[bad].status == 500
    assert [res[s].status for s in sids] == [200] * 99
    assert [res[s].body for s in sids] == [f"sibling /s{i}".encode() for i in range(99)]
    assert c.goaway is None


def test_h2c_worker_over_max_heap_fails_alone(serve):
    def handler(req):
        if req.path == "/upload":
            return resp.text(200, f"{len(req.read_body())}")
        return resp.text(200, "fine")

    srv = serve(handler, handler_spawn={"max_heap": 256 * 1024}, **H2C)
    c = H2Client(srv.port)
    try:
        big = c.request("POST", "/upload", body=b"z" * (2 * 1024 * 1024))
        small = [c.request("GET", "/") for _ in range(10)]
        res = c.run(timeout=15)
        after = c.request("GET", "/")  # the connection itself is still fine
        res.update(c.run([after]))
    finally:
        c.close()
    assert res[big].status == 500  # nothing was sent when the worker died: the conn answers
    assert [res[s].status for s in small] == [200] * 10
    assert res[after].status == 200 and res[after].body == b"fine"


def test_h2c_a_crash_after_the_head_resets_only_that_stream(serve):
    def handler(req):
        if req.path == "/half":
            def fn(send):
                send(b"part")
                raise RuntimeError("mid-stream")
            return resp.Stream(200, [("content-type", "text/plain")], fn)
        return resp.text(200, "ok")

    srv = serve(handler, **H2C)
    c = H2Client(srv.port)
    try:
        half = c.request("GET", "/half")
        ok = c.request("GET", "/")
        res = c.run()
    finally:
        c.close()
    assert res[half].reset == 2  # INTERNAL_ERROR
    assert res[ok].status == 200


def test_h2c_body_over_max_content_length_is_413(serve):
    srv = serve(app, max_content_length=1000, **H2C)
    c = H2Client(srv.port)
    try:
        declared = c.request("POST", "/echo", body=b"a" * 2000, headers=[("content-length", "2000")])
        undeclared = c.request("POST", "/echo", body=b"a" * 2000)
        fits = c.request("POST", "/echo", body=b"a" * 500)
        res = c.run()
    finally:
        c.close()
    assert res[declared].status == 413
    assert res[undeclared].status == 413
    assert res[fits].status == 200 and res[fits].body == b"a" * 500


def test_h2c_manual_body_reading_in_chunks(serve):
    def handler(req):
        sizes = []
        while chunk := req.read_body(length=10_000):
            sizes.append(len(chunk))
        return resp.json(200, {"total": sum(sizes), "max": max(sizes)})

    srv = serve(handler, body_buffering="manual", **H2C)
    c = H2Client(srv.port)
    try:
        sid = c.request("POST", "/", body=b"q" * 500_000)
        res = c.run()
    finally:
        c.close()
    assert res[sid].body == b'{"total":500000,"max":10000}'


def test_h2c_manual_mode_grants_credit_only_as_the_handler_reads(serve):
    """A handler that stops reading stops the client after one stream window: the
    server never holds more than the window of an unread upload."""
    gate = gevent.event.Event()
    started = gevent.event.Event()

    def handler(req):
        total = len(req.read_body(length=1024))
        started.set()
        assert gate.wait(20)
        for chunk in req.iter_body():
            total += len(chunk)
        return resp.text(200, str(total))

    window = 65535
    srv = serve(handler, body_buffering="manual",
                protocols=[("http2", {"stream_window": window, "window_refill_threshold": 16384})])
    c = H2Client(srv.port)
    size = 4 * 1024 * 1024
    try:
        sid = c.request("POST", "/", body=b"u" * size)
        assert started.wait(10)
        with pytest.raises(TimeoutError):
            c.run(timeout=1)  # no progress is possible: the window is spent, 1 KiB credit is below the threshold
        assert len(c.bodies[sid]) == size - window
        gate.set()
        res = c.run(timeout=30)
    finally:
        c.close()
    assert res[sid].status == 200 and res[sid].body == str(size).encode()


def test_h2c_sendfile(serve, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 400)

    srv = serve(lambda req: resp.Sendfile(200, [("content-type", "application/octet-stream")], str(path),
                                          offset=10, length=50_000), **H2C)
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/")
        res = c.run()
    finally:
        c.close()
    assert res[sid].header("content-length") == "50000"
    assert res[sid].body == path.read_bytes()[10:50_010]


def test_h2c_websocket_shape_on_a_plain_get_is_426(serve):
    """The WebSocket itself is an extended CONNECT (tests/rr/ws/test_h2.py); a plain GET
    gets 426 naming version 13, as on h1."""
    srv = serve(lambda req: resp.WebSocket(object()), **H2C)
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/ws")
        res = c.run()
    finally:
        c.close()
    assert res[sid].status == 426 and res[sid].header("sec-websocket-version") == "13"


def _ticker(registry):
    """A Loop handler: registers its pid, pushes each ("tick", n) message, stops on "stop"."""

    def handler(req):
        registry["pid"] = supervisors.self()
        registry["ready"].set()

        def on_info(msg, push, state):
            if msg == "stop":
                push(b"bye")
                return resp.STOP
            if isinstance(msg, tuple) and msg[0] == "tick":
                push(f"tick {msg[1]};".encode())
                return state + 1
            registry.setdefault("other", []).append(msg)
            if isinstance(msg, tuple) and msg[:1] == (resp.CLOSED,):
                registry["closed"].set()
            if isinstance(msg, tuple) and msg[:1] == (resp.DRAIN,):
                push(b"draining")
                return resp.STOP
            return state

        return resp.Loop(200, [("content-type", "text/plain")], 0, on_info)

    return handler


def test_h2c_loop_pushes_messages_as_data_until_stop(serve):
    reg = {"ready": gevent.event.Event(), "closed": gevent.event.Event()}
    srv = serve(_ticker(reg), **H2C)
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/events")
        c.flush()
        gevent.spawn(lambda: (reg["ready"].wait(10), [rr.send(reg["pid"], ("tick", i)) for i in range(3)],
                              rr.send(reg["pid"], "stop")))
        res = c.run(timeout=10)
    finally:
        c.close()
    assert res[sid].status == 200 and res[sid].reset is None
    assert res[sid].body == b"tick 0;tick 1;tick 2;bye"


def test_h2c_loop_is_told_when_the_client_resets_its_stream(serve):
    reg = {"ready": gevent.event.Event(), "closed": gevent.event.Event()}
    srv = serve(_ticker(reg), **H2C)
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/events")
        other = c.request("GET", "/events2")
        assert reg["ready"].wait(10)
        c.conn.reset_stream(sid, 8)  # CANCEL
        c.flush()
        assert reg["closed"].wait(10), "the Loop was not told its stream was reset"
        rr.send(reg["pid"], "stop")  # the second Loop (last registered) still runs and ends normally
        res = c.run([other], timeout=10)
    finally:
        c.close()
    assert res[other].status == 200 and res[other].body.endswith(b"bye")


@pytest.mark.peers("nghttp")
def test_h2c_loop_gets_drain_and_finishes(serve):
    reg = {"ready": gevent.event.Event(), "closed": gevent.event.Event()}
    srv = serve(_ticker(reg), **H2C)
    # nghttp2 keeps reading streams below a GOAWAY's last_stream_id (the h2 client library
    # would close the whole connection on the GOAWAY that drain sends first).
    busy = subprocess.Popen(["nghttp", "-v", f"http://127.0.0.1:{srv.port}/events"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert reg["ready"].wait(10)
        result = rr.drain(srv.name, timeout=10)
        out, _ = busy.communicate(timeout=10)
    finally:
        if busy.returncode is None:
            busy.kill()
    text = out.decode()
    assert "recv GOAWAY frame" in text and ":status: 200" in text and "draining" in text
    assert result["killed"] == 0  # the connection may even have finished before drain counted it


@pytest.mark.peers("nghttp")
def test_h2c_drain_sends_goaway_and_finishes_the_open_stream(serve):
    release = gevent.event.Event()
    entered = gevent.event.Event()

    def slow(req):
        if req.path == "/slow":
            entered.set()
            release.wait(10)
        return resp.text(200, "finished")

    srv = serve(slow, **H2C)
    idle = H2Client(srv.port)
    idle.request("GET", "/")
    idle.run()
    # nghttp2 keeps serving streams below a GOAWAY's last_stream_id (the h2 library as a
    # client closes the whole connection on any GOAWAY), so it is the busy client here.
    busy = subprocess.Popen(["nghttp", "-v", f"http://127.0.0.1:{srv.port}/slow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert entered.wait(5)
        result: dict = {}
        drainer = gevent.spawn(lambda: result.update(rr.drain(srv.name, 10)))
        idle.sock.settimeout(5)
        tail = b""
        while chunk := idle.sock.recv(65536):  # the idle connection gets GOAWAY and is closed
            tail += chunk
        # GOAWAY(last_stream_id=1, NO_ERROR): stream 1 was served, nothing later was
        assert tail.endswith(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + b"\x00\x00\x00\x01" + b"\x00" * 4), tail
        release.set()
        out, _ = busy.communicate(timeout=10)
        text = out.decode()
        assert "recv GOAWAY frame" in text and "NO_ERROR" in text
        assert ":status: 200" in text and "finished" in text
        assert busy.returncode == 0
        drainer.join(10)
        assert result == {"drained": 2, "killed": 0}
    finally:
        idle.close()
        if busy.returncode is None:
            busy.kill()


def test_h2c_only_port_answers_an_http1_request_with_goaway_protocol_error(serve):
    """RFC 9113 §3.4: an invalid preface is a connection error of type PROTOCOL_ERROR."""
    srv = serve(app, **H2C)
    with fr.Peer(srv.port, preface=False, timeout=5) as peer:
        peer.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        peer.expect_goaway(fr.PROTOCOL_ERROR)  # then the server closes
        assert not any(isinstance(f, fr.HeadersFrame) for f in peer.frames)
        assert b"HTTP/1.1" not in bytes(peer.buf)
    wait_processes_gone("rr.conn", "rr.h2.reader", "rr.h2.stream")


# -- CLI clients (nghttp2) -----------------------------------------------------------


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, timeout=timeout, check=False)


@pytest.mark.peers("nghttp")
def test_nghttp_h2c_prior_knowledge_trace(serve):
    srv = serve(app, **H2C)
    proc = run("nghttp", "-nv", f"http://127.0.0.1:{srv.port}/")
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "recv SETTINGS frame" in out
    assert "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]" in out
    assert re.search(r"recv HEADERS frame <length=\d+, flags=0x04, stream_id=13>", out)
    assert ":status: 200" in out
    assert re.search(r"recv DATA frame <length=8, flags=0x01, stream_id=13>\s+; END_STREAM", out)


@pytest.mark.slow
@pytest.mark.peers("h2load")
@pytest.mark.parametrize("streams", [20, 100])
def test_h2load_2000_requests_10_connections_many_streams(serve, streams):
    srv = serve(app, **H2C)
    proc = run("h2load", "-n", "2000", "-c", "10", "-m", str(streams), f"http://127.0.0.1:{srv.port}/",
               timeout=120)
    out = proc.stdout.decode()
    assert "2000 succeeded, 0 failed" in out, out
    assert "status codes: 2000 2xx" in out, out


def test_h2c_streams_beyond_max_concurrent_streams_are_refused_not_the_connection(serve):
    release = gevent.event.Event()
    entered = []

    def slow(req):
        if req.path == "/slow":
            entered.append(req.request_id)
            release.wait(10)
        return resp.text(200, "done")

    srv = serve(slow, protocols=[("http2", {"max_concurrent_streams": 2})])
    c = H2Client(srv.port)
    try:
        sids = [c.request("GET", "/slow") for _ in range(4)]
        res = c.run(sids[2:])  # the two beyond the limit come back at once
        assert [res[s].reset for s in sids[2:]] == [7, 7]  # REFUSED_STREAM
        release.set()
        res = c.run(sids[:2])
        assert [res[s].status for s in sids[:2]] == [200, 200]
        again = c.request("GET", "/")  # the connection is still usable
        assert c.run([again])[again].status == 200
    finally:
        c.close()
    assert len(entered) == 2


def test_h2c_response_headers_lowercased_with_date(serve):
    srv = serve(lambda req: resp.text(200, "x", [("X-Custom", "v"), ("Keep-Alive", "5")]), **H2C)
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/")
        res = c.run()[sid]
    finally:
        c.close()
    names = [k for k, _ in res.headers]
    assert ("x-custom", "v") in res.headers and "keep-alive" not in names
    assert res.header("date") and res.header("content-length") == "1"


def test_h2c_uppercase_request_header_resets_only_that_stream(serve):
    srv = serve(app, **H2C)
    c = H2Client(srv.port)
    c.conn.config.validate_outbound_headers = False
    c.conn.config.normalize_outbound_headers = False
    try:
        bad = c.request("GET", "/", headers=[("X-Upper", "1")])
        good = c.request("GET", "/")
        res = c.run(timeout=5)
    finally:
        c.close()
    # RFC 9113 §8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
    assert res[bad].reset == 1 and res[bad].status is None
    assert res[good].status == 200 and c.goaway is None


def test_h2c_header_block_over_max_header_block_ends_the_connection(serve):
    import os

    srv = serve(app, protocols=[("http2", {"max_header_block": 4096, "max_header_list_size": 65536})])
    ok = H2Client(srv.port)
    try:
        sid = ok.request("GET", "/", headers=[("x-small", "a" * 1000)])
        assert ok.run()[sid].status == 200
    finally:
        ok.close()
    c = H2Client(srv.port)
    try:
        c.request("GET", "/", headers=[("x-big", os.urandom(6000).hex())])  # spans CONTINUATION frames
        with pytest.raises(ConnectionError):
            c.run(timeout=5)
        assert c.goaway is not None and c.goaway.error_code == 11  # ENHANCE_YOUR_CALM
    finally:
        c.close()


def _h2_processes() -> list:
    return [p for p in supervisors.processes() if p.label in ("rr.h2.reader", "rr.h2.stream")]


def test_h2c_client_going_away_ends_its_stream_workers(serve):
    entered = gevent.event.Event()
    never = gevent.event.Event()

    def stuck(req):
        entered.set()
        never.wait(30)
        return resp.text(200, "late")

    srv = serve(stuck, **H2C)
    c = H2Client(srv.port)
    c.request("GET", "/")
    c.request("GET", "/")
    assert entered.wait(5)
    assert len([p for p in _h2_processes() if p.label == "rr.h2.stream"]) == 2
    assert not [p for p in _h2_processes() if p.label == "rr.h2.reader"]  # h2c: the conn reads itself
    c.close()
    wait_processes_gone("rr.conn", "rr.h2.reader", "rr.h2.stream")
    assert srv.info()["active_clients"] == 0


@pytest.mark.peers("curl")
def test_curl_http2_prior_knowledge_and_tls_alpn(serve, tmp_path):
    h2c = serve(app, **H2C)
    proc = run("curl", "-s", "--http2-prior-knowledge", "-w", "%{http_version} %{http_code}",
               "--data-binary", "abc", f"http://127.0.0.1:{h2c.port}/echo")
    assert proc.stdout == b"abc2 200", proc.stderr
    srv, ctx, base = tls_serve(serve, tmp_path)
    certfile = str(tmp_path / "cert.pem")
    proc = run("curl", "-s", "--http2", "--cacert", certfile, "-w", " %{http_version}", f"{base}/")
    assert proc.stdout == b"hello h2 2", proc.stderr


@pytest.mark.peers("curl")
@pytest.mark.parametrize("protocols", [["http1", "http2"], ["http2", "http1"]])
def test_tls_prefers_h2_whatever_the_order_of_protocols(serve, tmp_path, protocols):
    """nginx, hypercorn and granian prefer h2 when both are on; a user listing
    ["http1", "http2"] means both, not HTTP/1.1 for every browser (issue 14)."""
    srv, ctx, base = tls_serve(serve, tmp_path, protocols=protocols)
    certfile = str(tmp_path / "cert.pem")
    proc = run("curl", "-s", "--cacert", certfile, "-w", " %{http_version}", f"{base}/")  # offers h2 + 1.1
    assert proc.stdout.endswith(b" 2"), proc.stdout
    proc = run("curl", "-s", "--http1.1", "--cacert", certfile, "-w", " %{http_version}", f"{base}/")
    assert proc.stdout.endswith(b" 1.1"), proc.stdout


def test_h2c_idle_connection_closes_after_keep_alive_timeout(serve):
    srv = serve(app, keep_alive_timeout=0.3, **H2C)
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/")
        assert c.run()[sid].status == 200
        started = time.monotonic()
        c.sock.settimeout(5)
        while data := c.sock.recv(65536):  # GOAWAY, then EOF
            for event in c.conn.receive_data(data):
                c.on_event(event)
        assert time.monotonic() - started < 3
        assert c.goaway is not None and c.goaway.error_code == 0
    finally:
        c.close()


def test_h2c_large_upload_and_echo_beyond_both_windows(serve):
    srv = serve(app, **H2C)
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB: > conn_window (1 MiB) and stream_window
    c = H2Client(srv.port)
    try:
        sid = c.request("POST", "/echo", body=payload)
        side = c.request("GET", "/")
        res = c.run(timeout=20)
    finally:
        c.close()
    assert res[sid].status == 200 and res[sid].body == payload
    assert res[side].body == b"hello h2"


def test_h2c_request_telemetry_start_and_stop(serve):
    from rr import telemetry

    seen: list = []
    all_seen = gevent.event.Event()

    def record(event, meas, meta, cfg):
        seen.append((event[-1], meta.get("status")))
        if len(seen) == 4:
            all_seen.set()

    telemetry.attach_many("t-h2", [("rr", "request", "start"), ("rr", "request", "stop")], record)
    try:
        srv = serve(app, **H2C)
        c = H2Client(srv.port)
        try:
            sids = [c.request("GET", "/"), c.request("GET", "/nope")]
            c.run(sids)
            assert all_seen.wait(5)  # stop is emitted by the worker after the last write
        finally:
            c.close()
    finally:
        telemetry.detach("t-h2")
    assert sorted(seen, key=str) == sorted([("start", None), ("start", None), ("stop", 200), ("stop", 404)], key=str)


def test_h2c_unread_bodies_do_not_leak_the_connection_window(serve):
    sent = gevent.event.Event()

    def handler(req):
        if req.path == "/ignore":
            assert sent.wait(5)  # the client has sent a stream window of body ...
            gevent.idle()  # ... and the conn has read it: queued unread in this worker
            return resp.text(200, "ignored")
        return resp.text(200, f"{len(req.read_body())}")

    srv = serve(handler, body_buffering="manual", **H2C)
    c = H2Client(srv.port)
    try:
        for _ in range(8):  # each round strands up to a stream window (256 KiB) of unread body
            sent.clear()
            sid = c.request("POST", "/ignore", body=b"z" * (1024 * 1024))
            sent.set()
            assert c.run([sid], timeout=10)[sid].status == 200
        ok = c.request("POST", "/", body=b"y" * 600_000)
        res = c.run([ok], timeout=10)
    finally:
        c.close()
    assert res[ok].status == 200 and res[ok].body == b"600000"


def test_h2c_random_bytes_after_the_preface_never_crash_the_conn(serve):
    import random

    rng = random.Random(1234)
    srv = serve(app, **H2C)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
    for _ in range(30):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        with srv.connect(5) as sock:
            sock.sendall(preface + junk)
            sock.shutdown(socket.SHUT_WR)  # a partial frame would otherwise wait for its rest
            read_until_close(sock, 5)
    # Valid headers then junk, too.
    for _ in range(10):
        c = H2Client(srv.port)
        c.request("POST", "/echo", body=b"")
        c.sock.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(9, 100))))
        c.sock.shutdown(socket.SHUT_WR)
        c.sock.settimeout(5)
        try:
            while c.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        c.close()
    wait_processes_gone("rr.conn", "rr.h2.reader", "rr.h2.stream")
    assert _h2_processes() == [] and srv.info()["active_clients"] == 0
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/")
        assert c.run()[sid].status == 200
    finally:
        c.close()
