"""The cross-protocol behaviour matrix: one row per response behaviour, one column per protocol.

Every row (a test function) runs against every column in ``COLUMNS`` through
pytest parametrisation: ``h1`` (plain TCP, ``protocols: ["http1"]``), ``h2c``
(prior knowledge, ``["http2"]``), ``h2tls`` (TLS with ALPN h2,
``["http2", "http1"]``) and ``h3`` (QUIC, ``["http3", "http2", "http1"]``,
through aioquic's client: ``tests/rr/h3wire.py``). A row that expects
different wire behaviour per column says why in its docstring (only framing
differs: a broken h1 body is a close without the last chunk, a broken h2 or
h3 body is a reset of that stream, each with its protocol's error code).

Clients are ones rr did not write where they can observe the behaviour:
httpx (h11 / h2) for the plain shapes, h11 over a raw socket for h1 framing
(header case as sent, chunked trailers, bytes after a HEAD or 204) and raw
frames (``tests/rr/http2/frames.py``) for h2 (RST_STREAM codes, trailing
HEADERS, GOAWAY), both wrapped with one interface in ``tests/rr/wire.py``.

The rules pinned here are issue 10's "one exchange below the protocols":

1. every shape (Response, Stream with trailers, Loop, Sendfile with ranges,
   WebSocket on a plain request → 426); 2. HEAD; 3. 204/304; 4. the status rule; 5. header
   names; 6. header injection; 7. trailers; 8. Sendfile ranges; 9. crashes
   before and after the head; 10. ``rr.ClientGone``; 11. manual body;
   12. 413; 13. drain mid-response; 14. access log; 15. telemetry;
   16. the wrong protocol on a port; 17. failed TLS handshakes; and issue
   15's 18. Early Hints (103) and 19. the outbound header cap.

Synchronisation is by events (``gevent.event``, telemetry, monitors), never by
sleeping; the request/connection bookkeeping rows wait for the connection's
``("rr", "conn", "close")`` event, which every protocol emits after its last
request finished.
"""

from __future__ import annotations

import json
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import httpx
import pytest
import structlog
from gevent import socket as gsocket

import rr
import supervisors
from rr import resp, telemetry
from rr.exchange import MAX_EARLY_HINTS
from tests.rr.certs import make_cert
from tests.rr.conftest import Served, in_thread, read_until_close
from tests.rr.h3wire import H3_INTERNAL_ERROR, H3Wire
from tests.rr.http2 import frames
from tests.rr.wire import H1Wire, H2Wire, Reply, client_context, tls_socket

# -- the columns ---------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    id: str
    protocols: tuple[str, ...]
    tls: bool
    version: str  # the request's protocol version as httpx and the access log name it
    streams: bool  # multiplexed: a broken response resets one stream, the connection goes on
    internal_error: int | None = None  # the stream reset code of a handler crash after the head


COLUMNS = [
    Column("h1", ("http1",), tls=False, version="HTTP/1.1", streams=False),
    Column("h2c", ("http2",), tls=False, version="HTTP/2", streams=True, internal_error=frames.INTERNAL_ERROR),
    Column("h2tls", ("http2", "http1"), tls=True, version="HTTP/2", streams=True,
           internal_error=frames.INTERNAL_ERROR),
    Column("h3", ("http3", "http2", "http1"), tls=True, version="HTTP/3", streams=True,
           internal_error=H3_INTERNAL_ERROR),
]
MULTIPLEXED = [c for c in COLUMNS if c.streams]
_ids = [c.id for c in COLUMNS]


class Target:
    """A listener started for one column, and that column's clients."""

    def __init__(self, served: Served, col: Column, cafile: str) -> None:
        self.served = served
        self.col = col
        self.cafile = cafile
        self.name = served.name
        self.port = served.port
        self.url = f"{'https' if col.tls else 'http'}://127.0.0.1:{served.port}"

    def connect(self) -> Any:
        """A wire client (``H1Wire``, ``H2Wire`` or ``H3Wire``) on a new connection."""
        col = self.col
        if col.id == "h3":
            return H3Wire(self.port, self.cafile)
        sock = None
        if col.tls:
            sock = tls_socket(self.port, self.cafile, ["h2"] if col.streams else ["http/1.1"])
        if col.streams:
            return H2Wire(self.port, sock=sock, scheme="https" if col.tls else "http")
        return H1Wire(self.port, sock=sock)

    def fetch(self, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] | None = None,
              body: bytes = b"", **kw: Any) -> Reply:
        """One request on its own connection, read to its end (or its break)."""
        with self.connect() as c:
            handle = c.start(method, path, headers or [], body, **kw)
            return c.finish(handle)

    def httpx(self) -> httpx.Client:
        if self.col.tls:
            return httpx.Client(http2=True, verify=ssl.create_default_context(cafile=self.cafile), timeout=10)
        if self.col.streams:
            return httpx.Client(http1=False, http2=True, timeout=10)  # h2c prior knowledge
        return httpx.Client(timeout=10)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_cert(tmp_path_factory.mktemp("matrix-cert"))


@pytest.fixture(params=COLUMNS, ids=_ids)
def col(request: pytest.FixtureRequest) -> Column:
    return request.param


@pytest.fixture
def server(serve: Callable[..., Served], col: Column, cert: tuple[str, str]) -> Callable[..., Target]:
    def start(handler: Any, **opts: Any) -> Target:
        if col.tls:
            opts["tls"] = {"certfile": cert[0], "keyfile": cert[1]}
        return Target(serve(handler, protocols=list(col.protocols), **opts), col, cert[0])

    return start


class Events:
    """Telemetry events as they are emitted, with a bounded wait for one to appear."""

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
        self.changed = gevent.event.Event()

    def __call__(self, event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        self.items.append((tuple(event), dict(measurements), dict(metadata)))
        self.changed.set()

    def of(self, *event: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(m, meta) for ev, m, meta in self.items if ev == event]

    def wait(self, *event: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The metadata of the first ``count`` ``event``s, waiting for them (bounded)."""
        deadline = time.monotonic() + timeout
        while len(self.of(*event)) < count:
            left = deadline - time.monotonic()
            self.changed.clear()
            if left <= 0 or not self.changed.wait(left):
                raise AssertionError(f"{event} seen {len(self.of(*event))} times, expected {count}: "
                                     f"{[e for e, _, _ in self.items]}")
        return [meta for _, meta in self.of(*event)[:count]]


WATCHED = [("rr", "request", "start"), ("rr", "request", "stop"), ("rr", "request", "exception"),
           ("rr", "conn", "close"), ("rr", "drain", "start")]


@pytest.fixture
def events() -> Iterator[Events]:
    seen = Events()
    handler_id = f"matrix-{id(seen)}"
    telemetry.attach_many(handler_id, WATCHED, seen)
    yield seen
    telemetry.detach(handler_id)


def hello(req: rr.Request) -> resp.Shape:
    return resp.text(200, "hello matrix")


def follow_up_is_clean(c: Any) -> None:
    """A second request on the same connection gets a whole, well-framed 200.

    On h1 this is what proves no stray body bytes followed the previous response:
    h11 would read them as the next status line and refuse it.
    """
    after = c.finish(c.start("GET", "/follow-up"))
    assert after.status == 200 and after.complete, f"the next response on this connection: {after.describe()}"


# -- 1. every shape ------------------------------------------------------------------


def test_response_shape_through_httpx(server, col):
    def app(req):
        if req.path == "/echo":
            return resp.Response(200, [("content-type", "application/octet-stream")], req.read_body())
        return resp.text(200, "hello matrix")

    t = server(app)

    def client():
        with t.httpx() as c:
            return c.get(f"{t.url}/"), c.post(f"{t.url}/echo", content=b"abc" * 10_000)

    if col.id == "h3":  # httpx has no HTTP/3: aioquic's client, in this hub
        with t.connect() as c:
            got, echoed = c.finish(c.start("GET", "/")), c.finish(c.start("POST", "/echo", body=b"abc" * 10_000))
        assert got.status == 200 and got.body == b"hello matrix" and got.header("content-length") == "12"
        assert echoed.status == 200 and echoed.body == b"abc" * 10_000
        return
    got, echoed = in_thread(client)
    assert got.http_version == col.version
    assert got.status_code == 200 and got.text == "hello matrix" and got.headers["content-length"] == "12"
    assert echoed.status_code == 200 and echoed.content == b"abc" * 10_000


def test_response_shape_on_the_wire(server):
    t = server(lambda req: resp.Response(201, [("content-type", "text/plain"), ("x-shape", "response")], b"made"))
    r = t.fetch()
    assert r.status == 201 and r.body == b"made" and r.complete, r.describe()
    assert r.header("content-length") == "4" and r.header("x-shape") == "response" and r.header("date")


def test_stream_shape_sends_chunks_and_trailers(server, col):
    """On h1 the Stream is chunked and its trailers follow the last chunk; on h2 they are a trailing HEADERS."""
    def app(req):
        def fn(send):
            send(b"alpha,")
            send(b"beta,")
            send(b"gamma", fin=True, trailers=[("x-checksum", "c0ffee")])
        return resp.Stream(200, [("content-type", "text/plain")], fn)

    r = server(app).fetch(headers=[("te", "trailers")])
    assert r.status == 200 and r.body == b"alpha,beta,gamma" and r.complete, r.describe()
    assert r.trailers == [("x-checksum", "c0ffee")], r.describe()
    assert r.header("content-length") is None
    if not col.streams:
        assert r.header("transfer-encoding") == "chunked", r.describe()


def test_loop_shape_pushes_what_the_handler_process_receives(server):
    pids = gevent.event.AsyncResult()

    def app(req):
        pids.set(supervisors.self())

        def on_info(msg, push, state):
            if msg == "stop":
                return resp.STOP
            push(msg)
            return state + 1

        return resp.Loop(200, [("content-type", "text/plain")], 0, on_info)

    t = server(app)
    with t.connect() as c:
        h = c.start("GET", "/loop")
        head = c.read_head(h)
        assert head.status == 200, head.describe()
        pid = pids.get(timeout=5)
        for part in (b"one,", b"two,", b"three"):
            rr.send(pid, part)
        rr.send(pid, "stop")
        r = c.finish(h)
        assert r.body == b"one,two,three" and r.complete, r.describe()


DATA = bytes(range(256)) * 400  # 102_400 bytes


@pytest.fixture
def data_file(tmp_path) -> str:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    return str(path)


@pytest.mark.parametrize(("offset", "length"), [(0, None), (1000, 5000), (99_000, None), (0, len(DATA))],
                         ids=["whole", "offset_length", "offset_to_eof", "exact_length"])
def test_sendfile_shape_serves_the_range_with_its_length(server, data_file, offset, length):
    t = server(lambda req: resp.Sendfile(200, [("content-type", "application/octet-stream")],
                                         data_file, offset, length))
    expected = DATA[offset:] if length is None else DATA[offset:offset + length]
    r = t.fetch()
    assert r.status == 200 and r.complete, r.describe()
    assert r.header("content-length") == str(len(expected))
    assert r.body == expected


def test_websocket_shape_on_a_plain_request(server, col):
    """h1 and h2 serve WebSocket (the upgrade / RFC 8441's extended CONNECT: tests/rr/ws):
    a plain GET that is neither → 426 naming version 13 on both (h2 drops the
    connection-specific ``upgrade`` field of the answer, RFC 9113 §8.2.2)."""
    r = server(lambda req: resp.WebSocket(handler=object())).fetch()
    assert r.status == 426 and r.complete, r.describe()
    assert r.header("sec-websocket-version") == "13", r.describe()
    if col.streams:
        assert r.header("upgrade") is None, r.describe()


# -- 2. HEAD -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/text", "/file"])
def test_head_sends_no_body_and_the_get_length(server, data_file, path):
    def app(req):
        if req.path == "/file":
            return resp.Sendfile(200, [], data_file)
        return resp.text(200, "x" * 777)

    t = server(app)
    get = t.fetch("GET", path)
    with t.connect() as c:
        r = c.finish(c.start("HEAD", path))
        assert r.status == 200 and r.body == b"" and r.complete, r.describe()
        assert r.header("content-length") == str(len(get.body)), r.describe()
        follow_up_is_clean(c)


def test_head_handler_declaring_its_own_length_keeps_it(server):
    def app(req):
        if req.method == "HEAD":
            return resp.Response(200, [("content-type", "text/plain"), ("content-length", "1234")], b"")
        return resp.text(200, "follow-up")

    t = server(app)
    with t.connect() as c:
        r = c.finish(c.start("HEAD", "/"))
        assert r.status == 200 and r.body == b"" and r.header("content-length") == "1234", r.describe()
        follow_up_is_clean(c)


# -- 3. 204 and 304 ------------------------------------------------------------------


def _no_body_shape(status: int, shape: str) -> resp.Shape:
    if shape == "response":
        return resp.status(status)
    if shape == "response_with_body":
        return resp.Response(status, [("content-type", "text/plain")], b"not for the wire")
    return resp.Stream(status, [], lambda send: send(b"not for the wire", fin=True))


@pytest.mark.parametrize("shape", ["response", "response_with_body", "stream"])
@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_carry_no_body_and_no_framing_headers(server, status, shape):
    t = server(lambda req: hello(req) if req.path == "/follow-up" else _no_body_shape(status, shape))
    with t.connect() as c:
        r = c.finish(c.start("GET", "/"))
        assert r.status == status and r.body == b"" and r.complete, r.describe()
        names = [n.lower() for n in r.names()]
        assert "content-length" not in names and "transfer-encoding" not in names, r.describe()
        follow_up_is_clean(c)


# -- 4. the status rule --------------------------------------------------------------


def _status_app(status: int, shape: str) -> Callable[[rr.Request], resp.Shape]:
    def app(req):
        if req.path == "/follow-up":
            return hello(req)
        if shape == "stream":
            return resp.Stream(status, [], lambda send: send(b"body", fin=True))
        return resp.Response(status, [("content-type", "text/plain")], b"body")
    return app


@pytest.mark.parametrize("shape", ["response", "stream"])
@pytest.mark.parametrize("status", [100, 103, 199])
def test_interim_status_from_a_handler_is_500_logged_and_reported(server, events, status, shape):
    t = server(_status_app(status, shape))
    with structlog.testing.capture_logs() as logs:
        r = t.fetch()
    assert r.status == 500 and r.complete, r.describe()
    assert any(e.get("event") == "handler crashed" and e.get("log_level") == "error" for e in logs), logs
    assert events.of("rr", "request", "exception"), [e for e, _, _ in events.items]


@pytest.mark.parametrize("status", [-1, 0, 99, 600, 999, 1000])
def test_status_outside_100_to_599_is_500(server, status):
    r = server(_status_app(status, "response")).fetch()
    assert r.status == 500 and r.complete, r.describe()


@pytest.mark.parametrize("status", [200, 201, 299, 404, 418, 503, 599])
def test_status_200_to_599_is_served_as_is(server, status):
    r = server(_status_app(status, "response")).fetch()
    assert r.status == status and r.body == b"body" and r.complete, r.describe()


# -- 5. header names -----------------------------------------------------------------


def test_token_header_names_are_accepted_and_sent_lowercase(server):
    t = server(lambda req: resp.Response(200, [("X-Custom", "one"), ("X-Another-ONE", "two"),
                                               ("x-already-lower", "three")], b"ok"))
    r = t.fetch()
    assert r.status == 200 and r.body == b"ok", r.describe()
    assert ("x-custom", "one") in r.headers and ("x-another-one", "two") in r.headers, r.describe()
    assert ("x-already-lower", "three") in r.headers
    assert all(name == name.lower() for name in r.names()), r.describe()


@pytest.mark.parametrize("name", ["bad name", "x:y", "", "x(y)", "x\ty", "\u212aey"],
                         ids=["space", "colon", "empty", "parenthesis", "tab", "kelvin_sign_lowers_to_k"])
def test_a_header_name_that_is_not_a_token_is_500(server, name):
    r = server(lambda req: resp.Response(200, [(name, "v")], b"ok")).fetch()
    assert r.status == 500, r.describe()


# -- 6. header injection -------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "ok\r\nx-injected: 1", "a\0b"], ids=["cr", "lf", "crlf", "nul"])
def test_cr_lf_or_nul_in_a_value_is_500_and_the_connection_stays_usable(server, value):
    t = server(lambda req: hello(req) if req.path == "/follow-up" else resp.Response(200, [("x-v", value)], b"x"))
    with t.connect() as c:
        r = c.finish(c.start("GET", "/"))
        assert r.status == 500 and r.complete, r.describe()
        assert r.header("x-injected") is None and r.header("x-v") is None, r.describe()
        follow_up_is_clean(c)


def test_a_value_that_is_not_latin1_encodable_is_500(server):
    r = server(lambda req: resp.Response(200, [("x-snow", "snow \u2603")], b"x")).fetch()
    assert r.status == 500, r.describe()


# -- 7. trailers ---------------------------------------------------------------------


def test_trailers_after_an_empty_last_send_all_arrive_in_order(server):
    def app(req):
        def fn(send):
            send(b"payload")
            send(b"", fin=True, trailers=[("x-checksum", "abc123"), ("x-count", "1")])
        return resp.Stream(200, [("content-type", "text/plain")], fn)

    r = server(app).fetch(headers=[("te", "trailers")])
    assert r.status == 200 and r.body == b"payload" and r.complete, r.describe()
    assert r.trailers == [("x-checksum", "abc123"), ("x-count", "1")], r.describe()


# -- 8. Sendfile ranges --------------------------------------------------------------


@pytest.mark.parametrize(("offset", "length"), [(200_000, None), (0, 200_000), (100_000, 5000), (-1, 10), (0, -1)],
                         ids=["offset_past_end", "length_past_end", "range_past_end", "negative_offset",
                              "negative_length"])
def test_sendfile_range_outside_the_file_is_500(server, data_file, offset, length):
    r = server(lambda req: resp.Sendfile(200, [], data_file, offset, length)).fetch()
    assert r.status == 500 and r.complete, r.describe()


def test_sendfile_of_a_missing_file_is_500(server, tmp_path):
    r = server(lambda req: resp.Sendfile(200, [], str(tmp_path / "missing.bin"))).fetch()
    assert r.status == 500 and r.complete, r.describe()


# -- 9. crashes ----------------------------------------------------------------------


def _crash_before_head(where: str) -> Callable[[rr.Request], Any]:
    def app(req):
        if where == "handler":
            raise RuntimeError("crash before the head")
        if where == "not_a_response":
            return {"not": "a response"}

        def fn(send):
            raise RuntimeError("crash before the first send")
        return resp.Stream(200, [], fn)
    return app


@pytest.mark.parametrize("where", ["handler", "not_a_response", "stream_before_first_send"])
def test_crash_before_the_head_is_500_with_a_body(server, where):
    r = server(_crash_before_head(where)).fetch()
    assert r.status == 500 and r.body and r.complete, r.describe()
    assert r.header("content-length") == str(len(r.body))


@pytest.mark.parametrize("shape", ["stream", "loop"])
def test_crash_after_the_head_breaks_only_that_response(server, col, shape):
    """h1: the connection closes without the last chunk (the client sees an incomplete body);
    h2: RST_STREAM(INTERNAL_ERROR) on that stream only, a sibling stream completes."""
    pids = gevent.event.AsyncResult()
    crashing = gevent.event.Event()

    def app(req):
        if req.path == "/sibling":
            crashing.wait(5)
            return resp.text(200, "sibling done")
        if shape == "stream":
            def fn(send):
                send(b"partial")
                crashing.set()
                raise RuntimeError("crash after the head")
            return resp.Stream(200, [], fn)
        pids.set(supervisors.self())

        def on_info(msg, push, state):
            push(b"partial")
            crashing.set()
            raise RuntimeError("crash after the head")
        return resp.Loop(200, [], None, on_info)

    t = server(app)
    with t.connect() as c:
        sibling = c.start("GET", "/sibling") if col.streams else None
        h = c.start("GET", "/crash")
        if shape == "loop":
            c.read_head(h)
            rr.send(pids.get(timeout=5), "go")
        r = c.finish(h)
        # The head was handed over before the crash; on h2 the reset may overtake it and its data.
        assert r.status in (200, None) and b"partial".startswith(r.body), r.describe()
        assert not r.complete, f"the broken response looked whole: {r.describe()}"
        if col.streams:
            assert r.reset == col.internal_error, r.describe()
            other = c.finish(sibling)
            assert other.status == 200 and other.body == b"sibling done" and other.complete, other.describe()
            assert c.goaway is None, c.describe()


# -- 10. client gone -----------------------------------------------------------------


def _gone_app(shape: str, caught: gevent.event.AsyncResult, pids: gevent.event.AsyncResult) -> Any:
    """A handler that writes (bounded) until the client is gone, recording what it caught."""
    def write_until_gone(write):
        try:
            for _ in range(4096):
                write(b"x" * 65536)
        except rr.ClientGone as exc:
            caught.set(("ClientGone", type(exc).__name__))
            raise
        except BaseException as exc:
            caught.set(("other", repr(exc)))
            raise
        caught.set(("completed", "256 MiB went out: the client never looked gone"))

    def app(req):
        if shape == "stream":
            return resp.Stream(200, [], write_until_gone)
        pids.set(supervisors.self())

        def on_info(msg, push, state):
            try:
                write_until_gone(push)
            except rr.ClientGone:
                pass
            return resp.STOP
        return resp.Loop(200, [], None, on_info)
    return app


def _leave_mid_body(t: Target, shape: str, pids: gevent.event.AsyncResult, caught: gevent.event.AsyncResult,
                    how: str) -> tuple[str, str]:
    with t.connect() as c:
        h = c.start("GET", "/")
        c.read_head(h)
        if shape == "loop":
            rr.send(pids.get(timeout=5), "go")
        c.read_some(h, 65536)
        reader = None
        if how == "abort":
            c.abort(h)
            if t.col.streams:  # a client that resets one stream goes on reading its connection
                reader = gevent.spawn(_read_on, c)
        else:
            c.close()
        try:
            return caught.get(timeout=5)
        except gevent.Timeout:
            raise AssertionError("the handler never saw the client go (killed without an exception?)") from None
        finally:
            if reader is not None:
                reader.kill()


def _read_on(c: Any) -> None:
    while not c.closed:
        try:
            c.read_frame(1.0) if hasattr(c, "read_frame") else c.read_on(1.0)
        except TimeoutError:
            continue


@pytest.mark.parametrize("shape", ["stream", "loop"])
def test_client_gone_mid_body_raises_client_gone_in_the_handler(server, shape):
    """h1: the client closes the connection; h2: it resets the stream (the connection stays)."""
    caught, pids = gevent.event.AsyncResult(), gevent.event.AsyncResult()
    t = server(_gone_app(shape, caught, pids))
    got = _leave_mid_body(t, shape, pids, caught, "abort")
    assert got[0] == "ClientGone", f"the handler caught {got[1]}"


@pytest.mark.parametrize("shape", ["stream", "loop"])
@pytest.mark.parametrize("col", MULTIPLEXED, ids=[c.id for c in MULTIPLEXED])
def test_client_closing_the_whole_connection_raises_client_gone_in_the_handler(server, col, shape):
    """Multiplexed columns only: on h1 closing the connection is the one way to leave (the row above)."""
    caught, pids = gevent.event.AsyncResult(), gevent.event.AsyncResult()
    t = server(_gone_app(shape, caught, pids))
    got = _leave_mid_body(t, shape, pids, caught, "close")
    assert got[0] == "ClientGone", f"the handler caught {got[1]}"


# -- 11. manual body -----------------------------------------------------------------

MiB = 1 << 20
PIECE = 7919


@pytest.mark.parametrize("framing", ["declared", "undeclared"])
def test_manual_body_is_read_in_pieces_and_echoed_exactly(server, framing):
    body = random.Random(11).randbytes(MiB)

    def app(req):
        parts = []
        while piece := req.read_body(PIECE):
            parts.append(piece)
        return resp.Response(200, [("x-pieces", str(len(parts))), ("x-largest", str(max(map(len, parts))))],
                             b"".join(parts))

    t = server(app, body_buffering="manual")
    r = t.fetch("POST", "/", body=body, chunked=framing == "undeclared")
    assert r.status == 200 and r.complete, r.describe()
    assert len(r.body) == MiB and r.body == body
    assert int(r.header("x-pieces") or 0) >= MiB // PIECE and int(r.header("x-largest") or 0) <= PIECE


# -- 12. 413 -------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["declared", "undeclared"])
def test_body_over_max_content_length_is_413(server, framing):
    t = server(lambda req: resp.text(200, f"read {len(req.read_body())}"), max_content_length=1000)
    with t.connect() as c:
        if framing == "declared":
            h = c.start("POST", "/", body=b"y" * 5000)
        else:  # a body without a length that grows past the limit, 500 bytes at a time
            h = c.start("POST", "/", chunked=True, end=False)
            for i in range(10):
                c.send_body(h, b"y" * 500, end=i == 9)
        r = c.finish(h)
    assert r.status == 413, r.describe()


# -- 13. drain -----------------------------------------------------------------------


def test_drain_mid_response_completes_it_then_refuses_connections(server, events):
    drain_began = gevent.event.Event()

    def app(req):
        def fn(send):
            send(b"before-drain,")
            drain_began.wait(5)
            send(b"after-drain", fin=True, trailers=[("x-checksum", "d")])
        return resp.Stream(200, [], fn)

    t = server(app)
    with t.connect() as c:
        h = c.start("GET", "/", [("te", "trailers")])
        c.read_some(h, len(b"before-drain,"))
        drainer = gevent.spawn(rr.drain, t.name, 10)
        events.wait("rr", "drain", "start")
        wait_until_refused(t.port)  # drain has closed the door and now waits for this response
        drain_began.set()
        r = c.finish(h)
    assert r.status == 200 and r.body == b"before-drain,after-drain" and r.complete, r.describe()
    assert r.trailers == [("x-checksum", "d")], r.describe()
    assert drainer.get(timeout=15) == {"drained": 1, "killed": 0}
    with pytest.raises(ConnectionRefusedError):
        gsocket.create_connection(("127.0.0.1", t.port), timeout=2).close()


def wait_until_refused(port: int, timeout: float = 5.0) -> None:
    """Connect until the port refuses (bounded), yielding between attempts so the drain runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            gsocket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        except ConnectionRefusedError:
            return
        gevent.sleep(0)  # a yield, not a delay: the draining greenlet closes the socket
    raise AssertionError(f"port {port} still accepts connections {timeout}s into the drain")


# -- 14. access log ------------------------------------------------------------------


def _logger_name(logger: Any, method: str, event_dict: Any) -> Any:
    """Name the logger an event came from: its own ``logger`` key, or the wrapped logger's name."""
    event_dict.setdefault("logger", getattr(logger, "name", None))
    return event_dict


def test_access_log_is_one_event_per_request_with_the_usual_fields(server, col, events):
    """``access_log: True``: one structlog event ``"request"`` per request from logger ``rr.access``.

    The logger is recognised by a ``logger`` key in the event (``bind(logger="rr.access")`` or
    structlog's ``add_logger_name``) or by the wrapped logger's ``name``; ``bytes`` counts the
    response body, ``duration`` is float seconds, ``version`` names the protocol as httpx does.
    """
    ids: dict[str, str] = {}

    def app(req):
        ids[req.path] = req.request_id
        if req.path == "/created":
            return resp.Response(201, [], req.read_body()[:3])
        return resp.text(200, "hello")

    t = server(app, access_log=True)
    with structlog.testing.capture_logs(processors=[_logger_name]) as logs:
        with t.connect() as c:
            first = c.finish(c.start("GET", "/first", [("user-agent", "matrix/1.0")]))
            second = c.finish(c.start("POST", "/created", [("user-agent", "matrix/2.0")], b"abcdef"))
        events.wait("rr", "conn", "close")
    assert first.status == 200 and second.status == 201
    access = [e for e in logs if e.get("logger") == "rr.access"]
    assert len(access) == 2, f"expected two rr.access events, got: {logs}"
    for entry, (method, path, status, size, agent) in zip(
        access, [("GET", "/first", 200, 5, "matrix/1.0"), ("POST", "/created", 201, 3, "matrix/2.0")],
        strict=True,
    ):
        assert entry["event"] == "request", entry
        assert (entry["method"], entry["path"], entry["status"], entry["bytes"]) == (method, path, status, size), entry
        assert entry["version"] == col.version and entry["user_agent"] == agent, entry
        assert entry["request_id"] == ids[path], entry
        assert isinstance(entry["duration"], float) and 0 <= entry["duration"] < 10, entry
        assert "127.0.0.1" in str(entry["peer"]), entry


# -- 15. telemetry -------------------------------------------------------------------


def test_request_telemetry_start_stop_once_each_and_exception_on_a_crash(server, events):
    def app(req):
        if req.path == "/boom":
            raise RuntimeError("boom on purpose")
        return resp.text(200, "ok")

    t = server(app)
    with t.connect() as c:
        ok = c.finish(c.start("GET", "/ok"))
        boom = c.finish(c.start("GET", "/boom"))
    assert ok.status == 200 and boom.status == 500
    events.wait("rr", "conn", "close")
    kinds: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    statuses: dict[str, Any] = {}
    for event, _, meta in events.items:
        if event[:2] != ("rr", "request"):
            continue
        kinds.setdefault(meta["request_id"], []).append(event[2])
        paths[meta["request_id"]] = meta["path"]
        if event[2] == "stop":
            statuses[meta["request_id"]] = meta.get("status")
    by_path = {paths[rid]: rid for rid in kinds}
    assert sorted(by_path) == ["/boom", "/ok"], kinds
    assert kinds[by_path["/ok"]] == ["start", "stop"] and statuses[by_path["/ok"]] == 200, kinds
    assert kinds[by_path["/boom"]] == ["start", "exception", "stop"], kinds
    assert statuses[by_path["/boom"]] == 500


def test_trusted_forwarding_headers_set_peer_scheme_and_host_untrusted_ones_do_not(server):
    def app(req):
        return resp.json(200, {"peer": list(req.peer)[:2], "scheme": req.scheme, "host": req.host})

    headers = [("x-forwarded-for", "6.6.6.6, 203.0.113.9"), ("x-forwarded-proto", "https"),
               ("x-forwarded-host", "shop.example")]
    trusted = server(app, forwarded_allow_ips=["127.0.0.1"])
    assert json.loads(trusted.fetch(headers=headers).body) == {
        "peer": ["203.0.113.9", 0], "scheme": "https", "host": "shop.example"}
    untrusted = server(app, forwarded_allow_ips=["10.0.0.0/8"])
    got = json.loads(untrusted.fetch(headers=headers).body)
    assert got["peer"][0] == "127.0.0.1" and got["host"] != "shop.example"


# -- 16. the wrong protocol on a port (per protocol, not per column) ------------------


def test_http11_request_to_an_h2_only_plain_port_gets_goaway_protocol_error(serve):
    srv = serve(hello, protocols=["http2"])
    with frames.Peer(srv.port, preface=False) as p:
        p.send(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        p.expect_goaway(frames.PROTOCOL_ERROR)


def test_h2_preface_to_an_h1_only_port_gets_an_http11_error_and_close(serve):
    srv = serve(hello, protocols=["http1"])
    with srv.connect() as sock:
        sock.sendall(frames.PREFACE + frames.settings())
        data = read_until_close(sock)
    head = data.partition(b"\r\n\r\n")[0]
    assert re.match(rb"HTTP/1\.1 (400|505) ", head), data
    assert b"\r\nconnection: close" in head.lower(), data


# -- 17. failed TLS handshakes (TLS only) ---------------------------------------------


@pytest.mark.parametrize("client", ["plaintext_http", "connect_and_close", "untrusted_certificate"])
def test_failed_tls_handshake_logs_no_crash_and_reports_tls_handshake(serve, cert, caplog, client):
    closes = gevent.event.AsyncResult()

    def on_close(event, measurements, metadata, config):
        closes.set((dict(metadata), supervisors.self()))  # runs in the conn process

    caplog.set_level(logging.DEBUG)
    telemetry.attach("matrix-tls-close", ("rr", "conn", "close"), on_close)
    try:
        with structlog.testing.capture_logs() as logs:
            srv = serve(hello, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=["http2", "http1"])
            sock = gsocket.create_connection(("127.0.0.1", srv.port), timeout=10)
            if client == "plaintext_http":
                sock.sendall(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                read_until_close(sock)
            elif client == "untrusted_certificate":
                with pytest.raises(ssl.SSLError):
                    client_context().wrap_socket(sock, server_hostname="127.0.0.1")
            sock.close()
            got = closes.wait(5)
            if got is not None:
                ref = supervisors.monitor(got[1])
                supervisors.receive(lambda m: isinstance(m, tuple) and m[:2] == ("DOWN", ref), timeout=5)
    finally:
        telemetry.detach("matrix-tls-close")
    crashes = [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]
    crashes += [str(e) for e in logs if "crashed" in str(e.get("event"))]
    assert not crashes, crashes
    assert got is not None, "no ('rr', 'conn', 'close') event for the failed handshake"
    assert got[0]["reason"] == "tls_handshake", got[0]


# -- 18. Early Hints (103) ------------------------------------------------------------

PRELOAD = "</style.css>; rel=preload; as=style"


@pytest.mark.parametrize("shape", ["response", "stream", "loop"])
def test_early_hints_go_out_as_103_before_the_final_response(server, shape):
    """``req.early_hints``: h1 writes ``HTTP/1.1 103 Early Hints`` heads, h2 HEADERS without
    END_STREAM; names lowercased, no ``date`` or framing field in them, the final response
    and the next one on the connection intact."""
    def app(req):
        if req.path == "/follow-up":
            return hello(req)
        sent = [req.early_hints([("Link", PRELOAD)]),
                req.early_hints({"link": "</app.js>; rel=preload; as=script", "content-length": "9"})]
        headers = [("content-type", "text/plain"), ("x-hinted", str(sent))]
        if shape == "stream":
            return resp.Stream(200, headers, lambda send: send(b"final", fin=True))
        if shape == "loop":
            supervisors.send(supervisors.self(), "go")
            return resp.Loop(200, headers, None, lambda msg, push, state: (push(b"final"), resp.STOP)[1])
        return resp.Response(200, headers, b"final")

    t = server(app)
    with t.connect() as c:
        r = c.finish(c.start("GET", "/"))
        assert r.status == 200 and r.body == b"final" and r.complete, r.describe()
        assert r.header("x-hinted") == "[True, True]", r.describe()
        assert r.interim == [(103, [("link", PRELOAD)]), (103, [("link", "</app.js>; rel=preload; as=script")])], \
            r.interim
        follow_up_is_clean(c)


def test_early_hints_after_the_head_or_past_the_limit_raise_runtime_error(server):
    """After the head (a Stream that already sent) → RuntimeError, the response goes on; more
    than ``rr.exchange.MAX_EARLY_HINTS`` (4) per request → RuntimeError."""
    errors: dict[str, str] = {}

    def app(req):
        if req.path == "/limit":
            for _ in range(MAX_EARLY_HINTS):
                req.early_hints([("link", PRELOAD)])
            try:
                req.early_hints([("link", PRELOAD)])
            except RuntimeError as exc:
                errors["limit"] = str(exc)
            return resp.text(200, "limited")

        def fn(send):
            send(b"head out,")
            try:
                req.early_hints([("link", PRELOAD)])
            except RuntimeError as exc:
                errors["after"] = str(exc)
            send(b"still fine", fin=True)
        return resp.Stream(200, [], fn)

    t = server(app)
    with t.connect() as c:
        late = c.finish(c.start("GET", "/late"))
        limited = c.finish(c.start("GET", "/limit"))
    assert late.status == 200 and late.body == b"head out,still fine" and late.complete, late.describe()
    assert late.interim == [], late.interim
    assert "after the response head" in errors["after"], errors
    assert limited.status == 200 and len(limited.interim) == MAX_EARLY_HINTS, limited.describe()
    assert "at most" in errors["limit"], errors


@pytest.mark.parametrize("field", [("link", "</a.css>\r\nx-injected: 1"), ("bad name", "v"), ("link", "\u2603")],
                         ids=["crlf_value", "non_token_name", "non_latin1_value"])
def test_early_hints_with_an_invalid_field_raise_and_an_uncaught_one_is_500(server, field):
    """The 103's fields obey the exchange's header rules: ``ValueError`` in the handler, nothing
    sent; a handler that lets it go gets the usual 500."""
    def app(req):
        if req.path == "/follow-up":
            return hello(req)
        req.early_hints([field])
        return resp.text(200, "unreachable")

    t = server(app)
    with t.connect() as c:
        r = c.finish(c.start("GET", "/"))
        assert r.status == 500 and r.complete and r.interim == [], r.describe()
        assert r.header("x-injected") is None
        follow_up_is_clean(c)


# -- 19. the outbound header cap (max_response_header_size) ------------------------------

CAP = 4096


def _big_head_app(shape: str, value_size: int, count: int = 1) -> list[dict[str, Any]]:
    def app(req):
        headers = [(f"x-big-{i}", "v" * value_size) for i in range(count)]
        if shape == "stream":
            return resp.Stream(200, headers, lambda send: send(b"body", fin=True))
        if shape == "loop":
            return resp.Loop(200, headers, None, lambda msg, push, state: resp.STOP)
        if shape == "sendfile":
            return resp.Sendfile(200, headers, __file__, 0, 4)
        return resp.Response(200, headers, b"body")

    return [{"path": "/big", "handler": app, "name": "big_head"}, ("/follow-up", hello)]


@pytest.mark.parametrize("shape", ["response", "stream", "loop", "sendfile"])
@pytest.mark.parametrize("size", ["one_field", "many_fields"])
def test_a_head_over_max_response_header_size_is_500_logged_with_the_route(server, events, shape, size):
    """Fields sized as RFC 9113 §6.5.2 (name + value + 32 each) over the listener's cap → 500
    and a "handler crashed" line naming the route, the same on every protocol."""
    value, count = (CAP, 1) if size == "one_field" else (CAP // 16, 16)
    t = server(_big_head_app(shape, value, count), max_response_header_size=CAP)
    with structlog.testing.capture_logs() as logs, t.connect() as c:
        r = c.finish(c.start("GET", "/big"))
        assert r.status == 500 and r.complete and r.header("x-big-0") is None, r.describe()
        follow_up_is_clean(c)
    crashes = [e for e in logs if e.get("event") == "handler crashed"]
    assert len(crashes) == 1 and crashes[0]["route"] == "/big" and crashes[0]["route_name"] == "big_head", logs
    assert "max_response_header_size 4096" in str(crashes[0]["exc_info"]), crashes
    assert events.of("rr", "request", "exception")


def test_a_head_just_under_max_response_header_size_is_sent(server):
    # 200 bytes left for date (4 + 29 + 32) and the field's own 32 + name.
    t = server(_big_head_app("response", CAP - 200), max_response_header_size=CAP)
    r = t.fetch("GET", "/big")
    assert r.status == 200 and r.header("x-big-0") == "v" * (CAP - 200) and r.complete, r.describe()


def test_trailers_over_max_response_header_size_abort_the_response(server, col):
    """The head is out: h1 closes without the last chunk, h2 resets the stream (INTERNAL_ERROR)."""
    def app(req):
        return resp.Stream(200, [], lambda send: send(b"data", fin=True, trailers=[("x-sum", "s" * CAP)]))

    t = server(app, max_response_header_size=CAP)
    with structlog.testing.capture_logs() as logs:
        r = t.fetch(headers=[("te", "trailers")])
    assert r.status in (200, None) and not r.complete and r.trailers == [], r.describe()
    if col.streams:
        assert r.reset == col.internal_error, r.describe()
    assert any(e.get("event") == "handler crashed" for e in logs), logs


# -- beyond the rule list: the stop-during-Loop bug ------------------------------


def test_stop_listener_while_a_loop_response_is_open_logs_no_error(server, col, caplog):
    """Issue 10's second bug: ``rr.stop_listener`` during an h1 ``Loop`` logged ConcurrentObjectUseError."""
    pids = gevent.event.AsyncResult()

    def app(req):
        pids.set(supervisors.self())
        def on_info(msg, push, state):
            if isinstance(msg, bytes):  # rr's own (CLOSED,) arrives here too when the client goes
                push(msg)
            return state
        return resp.Loop(200, [], None, on_info)

    caplog.set_level(logging.DEBUG)
    t = server(app)
    with structlog.testing.capture_logs() as logs, t.connect() as c:
        h = c.start("GET", "/events")
        assert c.read_head(h).status == 200
        rr.send(pids.get(timeout=5), b"tick")
        c.read_some(h, 4)
        rr.stop_listener(t.name)  # returns once the listener's tree, this connection included, is down
        r = c.finish(h)
    assert not r.complete, r.describe()
    errors = [f"{r.levelname}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    errors += [str(e) for e in logs if e.get("log_level") in ("error", "critical")]
    assert not errors, errors
