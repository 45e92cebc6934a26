"""rr.contrib.otel over real sockets (httpx, HTTP/1.1 and h2c): one SERVER span per request
with the HTTP semantic-convention attributes, the client's ``traceparent`` as its parent,
ended when the response ends (a Stream's span is still open while it streams)."""

from __future__ import annotations

from typing import Any

import gevent.event
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import supervisors
from rr import resp, telemetry
from rr.contrib import otel
from tests.rr.conftest import in_thread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = otel.install(provider)
    done = gevent.event.Event()
    stopped: list[str] = []

    def on_stop(event: Any, meas: Any, meta: Any, cfg: Any) -> None:  # after otel's own stop handler
        stopped.append(meta["path"])
        done.set()

    telemetry.attach("t-otel-stops", ("rr", "request", "stop"), on_stop)

    def wait(n: int) -> list[Any]:
        while len(stopped) < n:
            done.clear()
            assert done.wait(10), f"{len(stopped)} of {n} requests stopped"
        return list(exporter.get_finished_spans())

    yield provider, exporter, wait
    telemetry.detach("t-otel-stops")
    tracing.uninstall()
    provider.shutdown()


def _get(url: str, http2: bool, paths: list[str], headers: dict[str, str]) -> list[int]:
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        return [client.get(url + path, headers=headers).status_code for path in paths]


def _server(serve, provider, seen_during_stream: list[int], exporter) -> Any:
    inner = provider.get_tracer("app")

    def user(req):
        with inner.start_as_current_span("load user"):  # nests under the request's span
            return resp.text(200, "user " + req.bindings["id"])

    def stream(req):
        def fn(send):
            send(b"first ")
            seen_during_stream.append(len([s for s in exporter.get_finished_spans()
                                           if s.attributes.get("url.path") == "/stream"]))
            send(b"last", fin=True)
        return resp.Stream(200, [("content-type", "text/plain")], fn)

    def boom(req):
        raise RuntimeError("boom")

    return serve([("/users/:id", user), ("/stream", stream), ("/boom", boom)], protocols=["http1", "http2"])


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2c"])
def test_a_span_per_request_child_of_the_clients_traceparent(serve, traced, http2):
    provider, exporter, wait = traced
    during: list[int] = []
    srv = _server(serve, provider, during, exporter)
    codes = in_thread(_get, srv.url, http2, ["/users/7?full=1", "/stream", "/boom", "/nope"],
                      {"traceparent": TRACEPARENT, "user-agent": "otel-test/1"})
    assert codes == [200, 200, 500, 404]
    spans = wait(4)
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert [s.name for s in server] == ["GET /users/:id", "GET /stream", "GET /boom", "GET"]
    for s in server:
        assert s.context.trace_id == int(TRACE_ID, 16)
        assert s.parent is not None and s.parent.span_id == int(PARENT_ID, 16) and s.parent.is_remote
    user, streamed, crashed, missing = server
    a = user.attributes
    assert a["http.request.method"] == "GET" and a["url.path"] == "/users/7" and a["url.query"] == "full=1"
    assert a["url.scheme"] == "http" and a["http.route"] == "/users/:id" and a["http.response.status_code"] == 200
    assert a["network.protocol.version"] == ("2" if http2 else "1.1")
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == srv.port
    assert a["client.address"] == "127.0.0.1" and isinstance(a["client.port"], int)
    assert a["user_agent.original"] == "otel-test/1"
    assert user.status.status_code == StatusCode.UNSET
    # The handler's own span is the request span's child.
    (load,) = [s for s in spans if s.name == "load user"]
    assert load.parent is not None and load.parent.span_id == user.context.span_id
    # The Stream's span was open while it streamed, and ended after.
    assert during == [0]
    assert streamed.end_time >= streamed.start_time
    assert crashed.status.status_code == StatusCode.ERROR
    assert crashed.attributes["error.type"] == "RuntimeError"
    assert [e.name for e in crashed.events] == ["exception"]
    assert "http.route" not in missing.attributes and missing.attributes["http.response.status_code"] == 404


def test_without_traceparent_each_request_starts_its_own_trace(serve, traced):
    provider, exporter, wait = traced
    srv = _server(serve, provider, [], exporter)
    assert in_thread(_get, srv.url, False, ["/users/1", "/users/2"], {}) == [200, 200]
    server = [s for s in wait(2) if s.kind == SpanKind.SERVER]
    assert len(server) == 2 and all(s.parent is None for s in server)
    assert server[0].context.trace_id != server[1].context.trace_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached in the test's greenlet


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2c"])
def test_a_loops_span_ends_when_the_loop_does(serve, traced, http2):
    provider, exporter, wait = traced
    open_while_looping: list[int] = []

    def on_info(msg, push, state):
        push(msg.encode())
        if msg == "two":
            open_while_looping.append(len(exporter.get_finished_spans()))
            return resp.STOP
        return state

    def loop(req):
        me = supervisors.self()
        supervisors.send(me, "one")
        supervisors.send(me, "two")
        return resp.Loop(200, [("content-type", "text/plain")], None, on_info)

    srv = serve([("/loop", loop)], protocols=["http1", "http2"])
    assert in_thread(_get, srv.url, http2, ["/loop"], {"traceparent": TRACEPARENT}) == [200]
    (span,) = wait(1)
    assert open_while_looping == [0]  # not ended before the loop's last push
    assert span.name == "GET /loop" and span.attributes["http.response.status_code"] == 200
    assert span.context.trace_id == int(TRACE_ID, 16)
