"""rr.contrib.wsgi: PEP 3333 apps behind rr, checked over real sockets (raw h1, httpx, h2).

Each test is a small WSGI app written against the PEP, served by a listener
on an ephemeral port; the client is a raw gevent socket (when the exact bytes
or the timing matter), httpx in a thread, or the h2 test client.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import h2.events
import httpx
import pytest
import structlog

import rr
from rr import resp
from rr.contrib import wsgi
from rr.request import Headers, Request
from tests.rr.conftest import in_thread, read_until_close
from tests.rr.http2.client import H2Client

WAIT = 10.0


def _echo_environ(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    keys = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
            "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST",
            "HTTP_X_CUSTOM", "HTTP_X_SPOOFED", "HTTP_COOKIE", "RAW_URI", "wsgi.url_scheme", "wsgi.version",
            "wsgi.multithread", "wsgi.input_terminated"]
    out = {k: environ.get(k) for k in keys}
    out["body"] = environ["wsgi.input"].read().decode("latin-1")
    out["is_rr_request"] = isinstance(environ["rr.request"], rr.Request)
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _head_and_body(raw: bytes) -> tuple[str, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def test_environ_follows_pep3333_with_script_name_latin1_path_and_real_peer(serve):
    srv = serve(wsgi.handler(_echo_environ, script_name="/app"))
    with srv.connect() as sock:
        sock.sendall(b"POST /app/caf%C3%A9/a%20b?q=%C3%A9&x=1 HTTP/1.1\r\nHost: example.test:8443\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 5\r\nX-Custom: one\r\nX-Custom: two\r\n"
                     b"X_Spoofed: evil\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\nhello")
        local_port = sock.getsockname()[1]
        head, body = _head_and_body(read_until_close(sock))
    assert head.startswith("HTTP/1.1 200")
    env = json.loads(body)
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/a b"  # the UTF-8 bytes, one latin-1 char each (PEP 3333)
    assert env["QUERY_STRING"] == "q=%C3%A9&x=1"
    assert env["RAW_URI"] == "/app/caf%C3%A9/a%20b?q=%C3%A9&x=1"
    assert (env["REQUEST_METHOD"], env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("POST", "text/plain", "5")
    assert env["body"] == "hello"
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["HTTP_HOST"]) == ("example.test", "8443", "example.test:8443")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["wsgi.url_scheme"] == "http"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == str(local_port)
    assert env["HTTP_X_CUSTOM"] == "one,two"
    assert env["HTTP_X_SPOOFED"] is None  # an underscore name could pose as a proxy's header: dropped
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["wsgi.version"] == [1, 0] and env["wsgi.multithread"] and env["wsgi.input_terminated"]
    assert env["is_rr_request"]
    outside = srv.exchange(b"GET /application HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert outside.startswith(b"HTTP/1.1 404")


def test_environ_over_h2_has_host_from_authority_and_http2_protocol(serve):
    srv = serve(wsgi.handler(_echo_environ), protocols=["http1", "http2"])
    client = H2Client(srv.port)
    try:
        sid = client.request("GET", "/p?x=1", headers=[("x-custom", "h2")])
        res = client.run([sid])[sid]
    finally:
        client.close()
    env = json.loads(res.body)
    assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert env["PATH_INFO"] == "/p" and env["QUERY_STRING"] == "x=1" and env["HTTP_X_CUSTOM"] == "h2"
    assert env["SERVER_PORT"] == str(srv.port) and env["REMOTE_ADDR"] == "127.0.0.1"


def test_options_are_checked_when_the_handler_is_built():
    with pytest.raises(ValueError, match="'app'"):
        wsgi.handler("not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'script_name'"):
        wsgi.handler(_echo_environ, script_name="app/")


def _responses(raw: bytes) -> list[bytes]:
    """The bodies of the content-length-framed responses in ``raw``, in order."""
    bodies = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        bodies.append(rest[:length])
        raw = rest[length:]
    return bodies


def test_an_app_mutating_its_environ_leaves_the_next_request_on_the_connection_untouched(serve):
    # The environ starts as a copy of a per-handler base: what one request does to its
    # environ must not reach the next, on the same connection or another.
    def app(environ, start_response):
        seen = {k: repr(v) for k, v in environ.items()
                if k not in ("wsgi.input", "wsgi.errors", "rr.request", "REMOTE_PORT", "HTTP_CONNECTION")}
        environ["HTTP_X_LEAKED"] = "from the request before"
        environ["SCRIPT_NAME"] = "/mutated"
        environ["wsgi.version"] = (9, 9)
        environ["REQUEST_METHOD"] = None
        del environ["wsgi.run_once"]
        data = json.dumps(seen, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    srv = serve(wsgi.handler(app))
    request = b"GET /same?q=1 HTTP/1.1\r\nHost: x:81\r\nX-One: 1\r\n\r\n"
    with srv.connect() as sock:
        sock.sendall(request * 2 + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        first, second, third = map(json.loads, _responses(read_until_close(sock)))
    fresh = json.loads(_responses(srv.exchange(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")))[0])
    assert first == second == third == fresh
    assert "HTTP_X_LEAKED" not in first and first["SCRIPT_NAME"] == "''" and first["wsgi.version"] == "(1, 0)"
    assert first["REQUEST_METHOD"] == "'GET'" and first["wsgi.run_once"] == "False" and first["HTTP_X_ONE"] == "'1'"


# -- wsgi.input --------------------------------------------------------------


def test_manual_mode_streams_wsgi_input_before_the_body_has_arrived(serve):
    first_part = gevent.event.Event()
    seen: dict[str, Any] = {}

    def app(environ, start_response):
        body = environ["wsgi.input"]
        seen["line"] = body.readline()
        seen["ten"] = body.read(10)
        first_part.set()
        seen["rest"] = body.read()
        seen["after"] = body.read(5)
        start_response("204 No Content", [])
        return []

    srv = serve(wsgi.handler(app), body_buffering="manual")
    with srv.connect() as sock:
        sock.sendall(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nConnection: close\r\n\r\n"
                     b"line one\n0123456789")
        assert first_part.wait(WAIT), "the app did not see the first part of the body before the rest was sent"
        sock.sendall(b"and the remaining 11".ljust(21, b"!"))
        head, _ = _head_and_body(read_until_close(sock))
    assert head.startswith("HTTP/1.1 204")
    assert seen == {"line": b"line one\n", "ten": b"0123456789", "rest": b"and the remaining 11!", "after": b""}


def _reader_app(environ, start_response):
    body = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    first = body.read(length // 2) if length else b""
    lines = list(body)
    data = json.dumps({"first": len(first), "lines": [len(x) for x in lines],
                       "total": len(first) + sum(map(len, lines))}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]


@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_read_n_returns_n_bytes_across_network_chunks_in_both_body_modes(serve, mode):
    srv = serve(wsgi.handler(_reader_app), body_buffering=mode)
    body = (b"x" * 99_999 + b"\n") * 3 + b"tail"

    def post():
        return httpx.post(srv.url + "/", content=body, timeout=WAIT).json()

    assert in_thread(post) == {"first": 150_002, "lines": [49_998, 100_000, 4], "total": len(body)}


@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_a_chunked_request_body_reads_to_its_end(serve, mode):
    srv = serve(wsgi.handler(_reader_app), body_buffering=mode)

    def post():
        return httpx.post(srv.url + "/", content=iter([b"ab\n", b"cd"]), timeout=WAIT).json()

    # No CONTENT_LENGTH in manual mode (wsgi.input_terminated says read to the end); auto mode knows it.
    assert in_thread(post) == ({"first": 0, "lines": [3, 2], "total": 5} if mode == "manual"
                               else {"first": 2, "lines": [1, 2], "total": 5})


@pytest.mark.parametrize("mode", ["auto", "manual"])
def test_a_request_without_a_body_reads_empty_and_the_next_one_with_a_body_reads_it(serve, mode):
    # A request without a body gets the one shared empty stream; it must never stand in for a
    # body, nor keep anything from one request to the next.
    def app(environ, start_response):
        body = environ["wsgi.input"]
        got = [body.read(3), body.readline(), body.readlines(), list(body), body.read()]
        data = repr(got).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
        return [data]

    srv = serve(wsgi.handler(app), body_buffering=mode, protocols=["http1", "http2"])
    client = H2Client(srv.port)
    try:  # h2: HEADERS with END_STREAM has no body; one with DATA after it has
        sids = [client.request("GET", "/"), client.request("POST", "/", body=b"abcd\nef\ngh\ni")]
        results = client.run(sids)
    finally:
        client.close()
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nabcd\nef\ngh\ni"
                     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        bodies = _responses(read_until_close(sock))
    empty = repr([b"", b"", [], [], b""]).encode()
    full = repr([b"abc", b"d\n", [b"ef\n", b"gh\n", b"i"], [], b""]).encode()
    assert bodies == [empty, empty, full, empty]
    assert [results[sid].body for sid in sids] == [empty, full]


def test_input_object_file_semantics():
    source = [b"ab", b"c\nde", b"f\n", b"gh"]
    stream = wsgi.Input(lambda n: source.pop(0) if source else b"")
    assert stream.readline(2) == b"ab"
    assert stream.readline() == b"c\n"
    assert stream.readlines() == [b"def\n", b"gh"]
    assert stream.read() == b"" and stream.read(3) == b""


# -- start_response, write(), exc_info --------------------------------------


def test_exc_info_replaces_the_status_while_nothing_is_sent(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("oops")
        except KeyError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "1")],
                           sys.exc_info())
        return [b"try later"]

    srv = serve(wsgi.handler(app))
    head, body = _head_and_body(srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert head.startswith("HTTP/1.1 503") and "retry-after: 1" in head and body == b"try later"


def test_start_response_twice_without_exc_info_is_a_500(serve):
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b"never"]

    srv = serve(wsgi.handler(app))
    assert srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 500")


def test_exc_info_after_the_head_went_out_reraises_and_cuts_the_stream(serve):
    closed = gevent.event.Event()

    class Body:
        def __init__(self, start_response):
            self.start_response = start_response

        def __iter__(self):
            yield b"partial "
            yield b"more"
            try:
                raise ValueError("mid-stream failure")
            except ValueError:
                self.start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"never sent"

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body(start_response)

    srv = serve(wsgi.handler(app))
    with structlog.testing.capture_logs() as logs:
        raw = srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = _head_and_body(raw)
    assert head.startswith("HTTP/1.1 200") and "transfer-encoding: chunked" in head
    assert b"partial " in body and b"more" in body and b"never sent" not in body
    assert not body.endswith(b"0\r\n\r\n")  # no last chunk: the client can tell the body is incomplete
    assert closed.wait(WAIT)
    assert any(e.get("exc_info") and "mid-stream failure" in repr(e["exc_info"]) for e in logs)


@pytest.mark.parametrize("body", [[b"three"], iter([b"thr", b"ee"])], ids=["list", "iterator"])
def test_write_callable_output_comes_before_the_iterable(serve, body):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one ")
        write(b"two ")
        return body

    srv = serve(wsgi.handler(app))
    raw = srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    if isinstance(body, list):
        head, data = _head_and_body(raw)
        assert "content-length: 13" in head and data == b"one two three"
    else:
        assert raw.endswith(b"b\r\none two thr\r\n2\r\nee\r\n0\r\n\r\n")  # held writes go out with the first chunk


def test_mixed_case_header_names_are_lowercased_for_every_protocol(serve):
    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Request-Thing", "A"),
                                       ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
        return [b"ok"]

    srv = serve(wsgi.handler(app), protocols=["http1", "http2"])
    client = H2Client(srv.port)
    try:
        sid = client.request("GET", "/")
        res = client.run([sid])[sid]
    finally:
        client.close()
    assert res.status == 201 and res.body == b"ok" and res.header("x-request-thing") == "A"
    assert [v for k, v in res.headers if k == "set-cookie"] == ["a=1", "b=2"]
    head, _ = _head_and_body(srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert "x-request-thing: A" in head and "set-cookie: a=1" in head and "set-cookie: b=2" in head


# -- the body: buffered or streamed, close() always --------------------------


def _request(path: str = "/", method: str = "GET", headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(method, path, path, "", "HTTP/1.1", Headers([("host", "x"), *(headers or [])]),
                   host="x", peer=("127.0.0.1", 5000), body=b"")


def test_one_element_list_or_a_met_content_length_is_a_buffered_response():
    def listed(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"whole"]

    def declared(environ, start_response):
        start_response("200 OK", [("Content-Length", "5")])
        return iter([b"whole", b"extra is cut"])

    def streamed(environ, start_response):
        start_response("200 OK", [])
        return iter([b"a", b"b"])

    assert wsgi.handler(listed)(_request()) == resp.Response(200, [("content-type", "text/plain")], b"whole")
    assert wsgi.handler(declared)(_request()) == resp.Response(200, [("content-length", "5")], b"whole")
    assert isinstance(wsgi.handler(streamed)(_request()), resp.Stream)


@pytest.mark.parametrize("body", [[b"whole"], (b"whole",), [bytearray(b"whole")], (memoryview(b"whole"),)],
                         ids=["list", "tuple", "bytearray", "memoryview"])
def test_a_one_item_sequence_is_the_body_itself_as_bytes(body):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    shape = wsgi.handler(app)(_request())
    assert shape == resp.Response(200, [("content-type", "text/plain")], b"whole") and type(shape.body) is bytes


def test_a_content_length_is_read_the_same_every_time_and_only_as_ascii_digits():
    def app(environ, start_response):
        length, body = environ["rr.request"].headers.get("x-case").split("|")
        start_response("200 OK", [("Content-Length", length)])
        return iter([body.encode(), b"more"])

    handler = wsgi.handler(app)
    for _ in range(2):  # the second round reads the remembered numbers
        # met: the rest of the iterator is cut; short: streamed as it comes; not ASCII digits
        # ("\u00b2" is a digit to str.isdigit, not to int): not a declared length at all.
        assert handler(_request(headers=[("x-case", "5|whole")])) == \
            resp.Response(200, [("content-length", "5")], b"whole")
        assert handler(_request(headers=[("x-case", " 5 |whole")])).body == b"whole"
        assert isinstance(handler(_request(headers=[("x-case", "9|whole")])), resp.Stream)
        for odd in ("\u00b2", "-5", "5x"):
            assert isinstance(handler(_request(headers=[("x-case", odd + "|whole")])), resp.Stream), odd


@pytest.mark.parametrize(("status", "headers", "error"), [
    ("20 OK", [], ValueError), ("OK 200", [], ValueError), (200, [], ValueError), ("099 Low", [], ValueError),
    ("200 OK", [("x-n", 1)], TypeError), ("200 OK", [["x", "y"]], TypeError), ("200 OK", [("x",)], TypeError),
    ("200 OK", [("x", ["unhashable"])], TypeError), ("200 OK", [(b"x", "y")], TypeError),
])
def test_a_bad_status_or_header_is_refused_every_time_even_after_good_ones_were_remembered(status, headers, error):
    def app(environ, start_response):
        given = environ["rr.request"].headers.get("x-bad")
        start_response(status if given else "200 OK",
                       headers if given else [("Content-Type", "text/plain"), ("X-N", "1")])
        return [b"ok"]

    handler = wsgi.handler(app)
    for _ in range(2):  # the good status and fields are remembered (a cache): the bad never are
        assert handler(_request()) == resp.Response(200, [("content-type", "text/plain"), ("x-n", "1")], b"ok")
        with pytest.raises(error):
            handler(_request(headers=[("x-bad", "1")]))


def test_path_info_is_the_path_as_is_unless_it_holds_an_escape(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode("latin-1")]

    srv = serve(wsgi.handler(app))
    for target, path in ((b"/plain/path.txt", b"/plain/path.txt"), (b"/a%2Fb%20c", b"/a/b c"),
                         (b"/caf%C3%A9", "/caf\u00c3\u00a9".encode("latin-1"))):
        head, body = _head_and_body(srv.exchange(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                                 b"Connection: close\r\n\r\n"))
        assert head.startswith("HTTP/1.1 200") and body == path, (target, body)


def test_a_streamed_body_goes_out_chunk_by_chunk_and_close_is_called(serve):
    release = gevent.event.Event()
    closed = gevent.event.Event()

    def chunks() -> Iterator[bytes]:
        yield b""  # an empty first chunk does not send the head yet (PEP 3333)
        yield b"first\n"
        release.wait(WAIT)
        yield b"second\n"

    class Body:
        def __iter__(self):
            return chunks()

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    srv = serve(wsgi.handler(app))
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(WAIT)
        got = b""
        while b"first\n" not in got:
            got += sock.recv(65536)
        assert b"second" not in got and not closed.is_set()
        release.set()
        got += read_until_close(sock)
    assert got.endswith(b"7\r\nsecond\n\r\n0\r\n\r\n")
    assert closed.wait(WAIT)


def _endless(closed: gevent.event.Event):
    class Body:
        def __iter__(self):
            while True:
                yield b"tick\n"
                gevent.sleep(0.01)  # paces the producer; the test waits on events, not on this

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    return app


def test_close_is_called_when_the_h1_client_goes_away_mid_stream(serve):
    closed = gevent.event.Event()
    srv = serve(wsgi.handler(_endless(closed)))
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(WAIT)
        assert b"tick" in sock.recv(65536)
    assert closed.wait(WAIT)


def test_close_is_called_when_the_h2_client_resets_the_stream(serve):
    closed = gevent.event.Event()
    srv = serve(wsgi.handler(_endless(closed)), protocols=["http1", "http2"])
    client = H2Client(srv.port)
    try:
        sid = client.request("GET", "/")
        client.sock.settimeout(WAIT)
        while not client.results[sid].body:
            for event in client.conn.receive_data(client.sock.recv(65536)):
                client.on_event(event)
                assert not isinstance(event, h2.events.StreamEnded)
        client.conn.reset_stream(sid)
        client.flush()
        assert closed.wait(WAIT)
    finally:
        client.close()


def test_close_is_called_when_the_app_iterator_raises_before_any_body(serve):
    closed = gevent.event.Event()

    class Body:
        def __iter__(self):
            raise RuntimeError("broken before the first chunk")
            yield b""  # pragma: no cover - makes this a generator

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    srv = serve(wsgi.handler(app))
    assert srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 500")
    assert closed.is_set()


def test_a_streamed_body_longer_than_its_content_length_is_cut(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "6")])
        return iter([b"abc", b"defghi", b"jkl"])

    srv = serve(wsgi.handler(app))
    raw = srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = _head_and_body(raw)
    assert "content-length: 6" in head and body == b"abcdef"


# -- wsgi.file_wrapper -------------------------------------------------------


def _file_app(opener):
    def app(environ, start_response):
        f = opener()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 4096)

    return app


def test_file_wrapper_over_a_real_file_becomes_sendfile_from_the_current_position(serve, tmp_path):
    data = bytes(range(256)) * 1000
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    opened: list[Any] = []

    def opener():
        f = open(path, "rb")  # noqa: SIM115 - the WSGI response owns it and closes it
        f.seek(1000)
        opened.append(f)
        return f

    handler = wsgi.handler(_file_app(opener))
    shape = handler(_request())
    assert shape == resp.Sendfile(200, [("content-type", "application/octet-stream")], str(path), 1000,
                                  len(data) - 1000)
    assert opened[0].closed  # close() was called; rr reopens the file by its path
    srv = serve(handler, protocols=["http1", "http2"])
    assert in_thread(lambda: httpx.get(srv.url + "/", timeout=WAIT).content) == data[1000:]
    client = H2Client(srv.port)
    try:
        sid = client.request("GET", "/")
        assert client.run([sid])[sid].body == data[1000:]
    finally:
        client.close()


def test_file_wrapper_without_a_descriptor_is_streamed_and_closed(serve):
    buffers: list[io.BytesIO] = []

    def opener():
        buffers.append(io.BytesIO(b"in memory " * 1000))
        return buffers[-1]

    handler = wsgi.handler(_file_app(opener))
    assert isinstance(handler(_request()), resp.Stream)
    srv = serve(handler)
    assert in_thread(lambda: httpx.get(srv.url + "/", timeout=WAIT).content) == b"in memory " * 1000
    assert len(buffers) == 2 and buffers[1].closed  # [0]: the shape above, never sent


# -- wsgi.errors -------------------------------------------------------------


def test_wsgi_errors_become_log_events_with_the_request_id(serve):
    ids: list[str] = []

    def app(environ, start_response):
        ids.append(environ["rr.request"].request_id)
        errors = environ["wsgi.errors"]
        print("first problem", file=errors)
        errors.write("a traceback\n  in one write\n")
        errors.write("no newline yet")
        start_response("200 OK", [])
        return [b"ok"]

    srv = serve(wsgi.handler(app))
    with structlog.testing.capture_logs() as logs:
        srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    events = [(e["event"], e["request_id"], e["log_level"]) for e in logs if e.get("source") == "wsgi.errors"]
    assert events == [("first problem", ids[0], "error"), ("a traceback\n  in one write", ids[0], "error"),
                      ("no newline yet", ids[0], "error")]


def test_wsgi_errors_written_before_the_app_raises_are_logged(serve):
    ids: list[str] = []

    def app(environ, start_response):
        ids.append(environ["rr.request"].request_id)
        environ["wsgi.errors"].write("about to fail")  # no newline: held until a flush
        raise RuntimeError("the app failed")

    srv = serve(wsgi.handler(app))
    with structlog.testing.capture_logs() as logs:
        raw = srv.exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 500")
    assert [(e["event"], e["request_id"]) for e in logs if e.get("source") == "wsgi.errors"] == \
        [("about to fail", ids[0])]
