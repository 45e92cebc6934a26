"""Every example runs: each is loaded from examples/ and driven by an independent client."""

from __future__ import annotations

import importlib.util
import json
import subprocess as std_subprocess
from pathlib import Path
from types import ModuleType

import gevent
import gevent.queue
import pytest
from gevent import subprocess

import rr
import supervisors
from tests.rr.conftest import in_thread

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def curl(*args: str) -> std_subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", *args], capture_output=True, timeout=30, check=False)


needs_curl = pytest.mark.peers("curl")


@needs_curl
def test_rest_example_create_show_delete_and_405(serve):
    rest = load("rest")
    srv = serve(rest.ROUTES)
    created = curl("-i", "-X", "POST", "-d", '{"title": "write tests"}', f"{srv.url}/todos")
    head, _, body = created.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201") and b"location: /todos/" in head
    todo = json.loads(body)
    assert todo["title"] == "write tests"
    assert json.loads(curl(f"{srv.url}/todos/{todo['id']}").stdout) == todo
    assert json.loads(curl(f"{srv.url}/todos").stdout) == [todo]
    wrong = curl("-i", "-X", "PATCH", f"{srv.url}/todos/{todo['id']}").stdout
    assert wrong.startswith(b"HTTP/1.1 405") and b"allow: DELETE, GET, HEAD" in wrong
    assert curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", f"{srv.url}/todos/{todo['id']}").stdout == b"204"
    assert curl("-o", "/dev/null", "-w", "%{http_code}", f"{srv.url}/todos/{todo['id']}").stdout == b"404"
    bad = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", "nope", f"{srv.url}/todos")
    assert bad.stdout == b"400"


@needs_curl
def test_upload_example_parses_fields_and_spools_big_files(tmp_path):
    upload = load("upload")
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello upload")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00\x01" * (1024 * 1024))  # 2 MiB: past the 1 MiB spool threshold
    name = "upload-test"
    rr.start_listener(name, {"port": 0, "ip": "127.0.0.1", **upload.OPTIONS})
    try:
        url = f"http://127.0.0.1:{rr.listener_port(name)}/upload"
        out = curl("-F", "title=holiday", "-F", f"photo=@{small}", "-F", f"photo=@{big}", url)
        result = json.loads(out.stdout)
        assert result["fields"] == {"title": ["holiday"]}
        files = {f["filename"]: f for f in result["files"]}
        assert files["small.txt"]["size"] == 12 and not files["small.txt"]["spooled"]
        assert files["big.bin"]["size"] == 2 * 1024 * 1024 and files["big.bin"]["spooled"]
        import hashlib

        assert files["big.bin"]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
        page = curl(f"http://127.0.0.1:{rr.listener_port(name)}/").stdout
        assert b"multipart/form-data" in page
    finally:
        rr.stop_listener(name)


@needs_curl
def test_static_example_serves_the_site_with_validators_and_gzip(serve):
    static_example = load("static")
    srv = serve(static_example.ROUTES)
    page = curl("-i", f"{srv.url}/").stdout
    assert page.startswith(b"HTTP/1.1 200") and b"Served by rr" in page and b"etag: " in page
    css = curl("-i", "-H", "Accept-Encoding: gzip", f"{srv.url}/css/site.css").stdout
    assert b"content-encoding: gzip" in css and b"vary: accept-encoding" in css
    assert curl("--compressed", f"{srv.url}/css/site.css").stdout.startswith(b"body {")
    etag = [line for line in page.split(b"\r\n") if line.startswith(b"etag: ")][0][6:].decode()
    assert curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}", f"{srv.url}/").stdout == b"304"


def test_sse_chat_example_delivers_messages_to_subscribers_and_says_bye_on_drain():
    import httpx

    chat = load("sse_chat")
    sup = chat.start(0)
    port = rr.listener_port("chat")
    received: list[str] = []
    subscribed = gevent.event.Event()
    delivered = gevent.event.Event()
    # The subscriber runs in an OS thread; it wakes the hub's greenlets through the loop.
    loop = gevent.get_hub().loop

    def subscriber() -> None:
        with httpx.stream("GET", f"http://127.0.0.1:{port}/events", timeout=10) as r:
            assert r.headers["content-type"] == "text/event-stream"
            loop.run_callback_threadsafe(subscribed.set)  # the handler subscribed before the head
            for line in r.iter_lines():
                received.append(line)
                if line == "data: hello chat":
                    loop.run_callback_threadsafe(delivered.set)
                if line == "event: bye":
                    return

    try:
        reader = gevent.get_hub().threadpool.spawn(subscriber)
        assert subscribed.wait(10)
        reply = in_thread(lambda: httpx.post(f"http://127.0.0.1:{port}/say", content=b"hello chat", timeout=10))
        assert reply.json() == {"delivered_to": 1}
        assert delivered.wait(10)
        assert rr.drain("chat", 5) == {"drained": 1, "killed": 0}
        reader.get(timeout=10)
        assert "data: hello chat" in received and "event: bye" in received
    finally:
        supervisors.stop_supervisor(sup)
        rr._runtimes.pop("chat", None)


@pytest.mark.slow
def test_grpc_routeguide_example_every_rpc_kind_health_and_reflection(serve, tmp_path):
    import queue

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    example = load("grpc_routeguide")
    server, pb2, pb2_grpc = example.build(tmp_path)  # grpcio-tools generates the modules here
    opts = example.options(server)
    srv = serve(opts.pop("routes"), ip="127.0.0.1", **opts)
    Point = pb2.Point

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = pb2_grpc.RouteGuideStub(ch)
            out = {
                "feature": stub.GetFeature(Point(latitude=409146138, longitude=-746188906), timeout=10).name,
                "nothing": stub.GetFeature(Point(latitude=0, longitude=0), timeout=10).name,
                "listed": [f.name for f in stub.ListFeatures(
                    pb2.Rectangle(lo=Point(latitude=400000000, longitude=-750000000),
                                  hi=Point(latitude=420000000, longitude=-730000000)), timeout=10)],
                "summary": stub.RecordRoute(iter([Point(latitude=407838351, longitude=-746143763),
                                                  Point(latitude=408122808, longitude=-743999179),
                                                  Point(latitude=1, longitude=1)]), timeout=10),
            }
            notes: queue.Queue = queue.Queue()
            chat = stub.RouteChat(iter(notes.get, None), timeout=10)
            here = Point(latitude=1, longitude=2)
            notes.put(pb2.RouteNote(location=here, message="first"))
            notes.put(pb2.RouteNote(location=here, message="second"))
            out["echoed"] = next(chat).message  # the first note, sent back when the second arrives
            notes.put(None)
            out["chat_rest"] = [n.message for n in chat]
            bad = stub.RouteChat(iter([pb2.RouteNote(location=here)]), timeout=10)
            try:
                list(bad)
            except grpc.RpcError as exc:
                out["bad"] = exc.code()
            out["health"] = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="routeguide.RouteGuide"), timeout=10).status
            out["services"] = sorted(ProtoReflectionDescriptorDatabase(ch).get_services())
            return out

    out = in_thread(client)
    assert out["feature"] == "Berkshire Valley Management Area Trail, Jefferson, NJ, USA"
    assert out["nothing"] == ""
    assert len(out["listed"]) == 5
    summary = out["summary"]
    assert (summary.point_count, summary.feature_count) == (3, 2) and 15_000 < summary.distance < 10_000_000
    assert out["echoed"] == "first" and out["chat_rest"] == []
    assert out["bad"] == grpc.StatusCode.INVALID_ARGUMENT
    assert out["health"] == health_pb2.HealthCheckResponse.SERVING
    assert out["services"] == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                               "routeguide.RouteGuide"]


def test_ws_chat_example_broadcasts_in_a_room_and_closes_1001_on_drain():
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    chat = load("ws_chat")
    sup = chat.start(0)
    url = f"ws://127.0.0.1:{rr.listener_port('ws_chat')}/ws/lobby"
    loop = gevent.get_hub().loop
    joined = {"ann": gevent.event.Event(), "bob": gevent.event.Event()}
    heard = {"ann": gevent.event.Event(), "bob": gevent.event.Event()}

    def member(nick: str, say: str | None) -> tuple[list[str], int | None]:
        lines: list[str] = []
        with connect(f"{url}?nick={nick}", proxy=None) as ws:
            try:
                while True:
                    line = ws.recv(timeout=10)
                    lines.append(line)
                    if line.startswith(f"* {nick} joined"):
                        loop.run_callback_threadsafe(joined[nick].set)
                        if say:
                            ws.send(say)
                    if line == "<bob> hi all":
                        loop.run_callback_threadsafe(heard[nick].set)
            except ConnectionClosed as exc:
                return lines, exc.rcvd.code if exc.rcvd else None

    pool = gevent.get_hub().threadpool
    try:
        ann = pool.spawn(member, "ann", None)
        assert joined["ann"].wait(10)
        bob = pool.spawn(member, "bob", "hi all")
        assert heard["ann"].wait(10) and heard["bob"].wait(10)
        assert rr.drain("ws_chat", 5) == {"drained": 2, "killed": 0}
        ann_lines, ann_code = ann.get(timeout=10)
        bob_lines, bob_code = bob.get(timeout=10)
        assert ann_code == bob_code == 1001
        assert ann_lines[:3] == ["* ann joined #lobby (1 here)", "* bob joined #lobby (2 here)", "<bob> hi all"]
        assert bob_lines[:2] == ["* bob joined #lobby (2 here)", "<bob> hi all"]
    finally:
        supervisors.stop_supervisor(sup)
        rr._runtimes.pop("ws_chat", None)


@needs_curl
def test_observability_example_traces_from_traceparent_and_counts_by_route(serve):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client.parser import text_string_to_metric_families

    example = load("observability")
    exporter = InMemorySpanExporter()
    metrics, tracing = example.instrument(exporter)
    stopped = gevent.queue.Queue()  # attached after otel's handler: its span has ended by then
    rr.telemetry.attach("t-example-stops", ("rr", "request", "stop"), lambda e, m, meta, c: stopped.put(meta))
    try:
        srv = serve(example.ROUTES, request_id_header="x-request-id")
        traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        for user_id in ("7", "8"):
            got = curl("-H", f"traceparent: {traceparent}", f"{srv.url}/users/{user_id}")
            assert json.loads(got.stdout) == {"id": user_id}
            assert stopped.get(timeout=10)["route"] == "/users/:id"
        spans = exporter.get_finished_spans()
        server = [s for s in spans if s.name == "GET /users/:id"]
        assert len(server) == 2 and all(s.context.trace_id == 0x4bf92f3577b34da6a3ce929d0e0e4736 for s in server)
        assert {s.parent.span_id for s in spans if s.name == "load user"} == {s.context.span_id for s in server}
        text = curl(f"{srv.url}/metrics").stdout.decode()
        (requests,) = [f for f in text_string_to_metric_families(text) if f.name == "rr_requests"]
        counted = [s for s in requests.samples if s.labels["listener"] == srv.name]
        assert [(s.labels["route"], s.value) for s in counted] == [("/users/:id", 2.0)]
    finally:
        rr.telemetry.detach("t-example-stops")
        tracing.uninstall()
        metrics.uninstall()
