"""rr.contrib.grpc against grpcio's client (the C-core reference implementation).

Every RPC kind over h2c prior knowledge and over TLS (ALPN h2), errors,
metadata both ways, deadlines, cancellation mid-stream, compression, the
health service and reflection. The servicer is an ordinary grpcio-style class
(tests/rr/contrib/grpc_service.py), registered with the function grpcio-tools
generated. The client runs in an OS thread (``in_thread``); the server in this
process's hub.
"""

from __future__ import annotations

import queue
from typing import Any

import gevent
import grpc
import pytest
import structlog

import rr
from rr.contrib import grpc as rr_grpc
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread
from tests.rr.contrib.grpc_service import Probe, modules, servicer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    return modules(tmp_path_factory.mktemp("rrtest_gen"))


@pytest.fixture
def probe() -> Probe:
    return Probe()


def start(serve, pb, probe, *, tls: dict | None = None, server: rr_grpc.Server | None = None,
          middlewares: list | None = None, listener_opts: dict | None = None, **server_opts: Any):
    pb2, pb2_grpc = pb
    server = server or rr_grpc.Server(**server_opts)
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    # The listener keeps body_buffering "auto": the gRPC routes carry "manual" themselves.
    opts: dict[str, Any] = {"protocols": ["http2"], "not_found": server.not_found}
    if tls:
        opts["tls"] = tls
    if middlewares:
        opts["middlewares"] = middlewares
    opts.update(listener_opts or {})
    return serve(server.routes(), **opts), server


def channel(srv, cert: str | None = None, **kw: Any) -> grpc.Channel:
    if cert is None:
        return grpc.insecure_channel(f"127.0.0.1:{srv.port}", **kw)
    with open(cert, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(f"localhost:{srv.port}", creds, **kw)


def every_kind(pb, srv, cert: str | None = None) -> dict[str, Any]:
    pb2, pb2_grpc = pb
    Msg = pb2.Msg

    def client() -> dict[str, Any]:
        with channel(srv, cert) as ch:
            stub = pb2_grpc.EchoStub(ch)
            out: dict[str, Any] = {}
            out["unary"] = stub.Unary(Msg(text="hi", number=7, blob=b"\x00" * 100_000), timeout=10)
            out["server_stream"] = [m.number for m in stub.ServerStream(Msg(text="s", number=200), timeout=10)]
            out["client_stream"] = stub.ClientStream(iter([Msg(text=str(i), number=i) for i in range(50)]),
                                                     timeout=10)
            # Ping-pong: each request is sent only after the previous reply came back, so the
            # server must answer while the request stream is still open.
            requests: queue.Queue = queue.Queue()
            replies = stub.Bidi(iter(requests.get, None), timeout=10)
            pongs = []
            for i in range(5):
                requests.put(Msg(text=f"p{i}", number=i))
                pongs.append(next(replies).text)
            requests.put(None)
            out["bidi"] = pongs
            out["bidi_rest"] = list(replies)
            out["many"] = [stub.Unary(Msg(text=str(i)), timeout=10).text for i in range(30)]
            return out

    return in_thread(client)


def check_every_kind(out: dict[str, Any]) -> None:
    assert out["unary"].text == "echo:hi" and out["unary"].number == 7 and out["unary"].blob == b"\x00" * 100_000
    assert out["server_stream"] == list(range(200))
    assert out["client_stream"].number == sum(range(50))
    assert out["client_stream"].text == ",".join(str(i) for i in range(50))
    assert out["bidi"] == [f"pong:p{i}" for i in range(5)] and out["bidi_rest"] == []
    assert out["many"] == [f"echo:{i}" for i in range(30)]


@pytest.mark.parametrize("protocols", [["http2"], ["http1", "http2"]], ids=["h2c-only", "shared-with-http1"])
def test_grpcio_calls_every_rpc_kind_over_h2c_prior_knowledge(serve, pb, probe, protocols):
    srv, _ = start(serve, pb, probe, listener_opts={"protocols": protocols})
    check_every_kind(every_kind(pb, srv))


def test_grpcio_calls_every_rpc_kind_over_tls_h2(serve, pb, probe, tmp_path):
    certfile, keyfile = make_cert(tmp_path)
    srv, _ = start(serve, pb, probe, tls={"certfile": certfile, "keyfile": keyfile})
    check_every_kind(every_kind(pb, srv, certfile))


def test_the_whole_server_as_a_listener_handler(serve, pb, probe):
    pb2, pb2_grpc = pb
    server = rr_grpc.Server()
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    srv = serve(server, protocols=["http2"], body_buffering="manual")

    def client():
        with channel(srv) as ch:
            stub = pb2_grpc.EchoStub(ch)
            missing = ch.unary_unary("/rrtest.Nope/Call", request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as err:
                missing(b"", timeout=10)
            return stub.Unary(pb2.Msg(text="whole"), timeout=10).text, err.value.code()

    assert in_thread(client) == ("echo:whole", grpc.StatusCode.UNIMPLEMENTED)


def _error(fn) -> tuple[grpc.StatusCode, str, tuple]:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details(), tuple(exc.trailing_metadata() or ())
    raise AssertionError("the call did not fail")


def test_errors_reach_the_client_with_code_details_and_trailers(serve, pb, probe):
    pb2, pb2_grpc = pb
    Msg = pb2.Msg
    srv, _ = start(serve, pb, probe)

    def client():
        with channel(srv) as ch:
            stub = pb2_grpc.EchoStub(ch)
            out = {
                "abort": _error(lambda: stub.Unary(Msg(text="abort"), timeout=10)),
                "status": _error(lambda: stub.Unary(Msg(text="abort-with-status"), timeout=10)),
                "set_code": _error(lambda: stub.Unary(Msg(text="not-found"), timeout=10)),
                "bidi": _error(lambda: list(stub.Bidi(iter([Msg(text="a"), Msg(text="stop")]), timeout=10))),
                "unknown_method": _error(lambda: ch.unary_unary("/rrtest.Echo/Nope")(b"", timeout=10)),
                "unknown_service": _error(lambda: ch.unary_unary("/other.Svc/Call")(b"", timeout=10)),
            }
            got = []
            try:
                for m in stub.ServerStream(Msg(text="fail-midway", number=5), timeout=10):
                    got.append(m.number)
            except grpc.RpcError as exc:
                out["midway"] = (got, exc.code(), exc.details())
            got = []
            try:
                for m in stub.ServerStream(Msg(text="server-cancel", number=5), timeout=10):
                    got.append(m.number)
            except grpc.RpcError as exc:
                out["server_cancel"] = (got, exc.code())
            return out

    out = in_thread(client)
    assert out["server_cancel"] == ([0, 1], grpc.StatusCode.CANCELLED)
    assert probe.wait("active_before_cancel") is True and probe.wait("active_after_cancel") is False
    assert out["abort"][:2] == (grpc.StatusCode.PERMISSION_DENIED, "nö: 100% denied")
    assert out["status"][:2] == (grpc.StatusCode.FAILED_PRECONDITION, "not yet")
    assert ("x-why-bin", b"\x00\xff") in out["status"][2]
    assert out["set_code"][:2] == (grpc.StatusCode.NOT_FOUND, "no such thing")
    assert out["bidi"][:2] == (grpc.StatusCode.ABORTED, "stopped")
    assert out["unknown_method"][0] == grpc.StatusCode.UNIMPLEMENTED
    assert out["unknown_service"][0] == grpc.StatusCode.UNIMPLEMENTED
    assert out["midway"] == ([0, 1], grpc.StatusCode.DATA_LOSS, "lost it")


def test_a_crashing_servicer_is_internal_and_logged_with_its_request_id(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe)

    def client():
        with channel(srv) as ch:
            return _error(lambda: pb2_grpc.EchoStub(ch).Unary(pb2.Msg(text="crash"), timeout=10))

    with structlog.testing.capture_logs(processors=[rr.log.add_request_id]) as logs:
        code, details, _ = in_thread(client)
    crashes = [e for e in logs if e.get("event") == "grpc handler crashed"]
    assert code == grpc.StatusCode.INTERNAL
    assert len(crashes) == 1 and crashes[0]["rpc"] == "/rrtest.Echo/Unary"
    assert details == f"handler crashed (request_id {crashes[0]['request_id']})"
    assert "kaput" not in details  # the exception text stays in the log


def test_metadata_both_ways_with_binary_values(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe)

    def client():
        with channel(srv) as ch:
            reply, call = pb2_grpc.EchoStub(ch).Unary.with_call(
                pb2.Msg(text="meta"), metadata=[("x-id", "42"), ("x-data-bin", b"\xff\x00\xfe")], timeout=10)
            return reply.text, tuple(call.initial_metadata()), tuple(call.trailing_metadata())

    user_agent, initial, trailing = in_thread(client)
    assert user_agent.startswith("grpc-python/")
    assert ("x-initial", "hello") in initial and ("x-initial-bin", b"\x00\x01\x02") in initial
    assert ("x-echo", "42") in trailing and ("x-echo-bin", b"\xff\x00\xfe") in trailing


def test_peer_names_the_client_address(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe)

    def client():
        with channel(srv) as ch:
            return pb2_grpc.EchoStub(ch).Unary(pb2.Msg(text="peer"), timeout=10).text

    assert in_thread(client).startswith("ipv4:127.0.0.1:")


def test_deadline_exceeded_reaches_client_and_servicer(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe)

    def client():
        with channel(srv) as ch:
            return _error(lambda: pb2_grpc.EchoStub(ch).Unary(pb2.Msg(text="sleep"), timeout=0.5))

    code, _, _ = in_thread(client)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0 < probe.wait("remaining") <= 0.51  # grpcio rounds its grpc-timeout up a little
    # Whichever comes first (rr's timer or the client's RST_STREAM at its own deadline),
    # the servicer learns it by an exception thrown where it waits.
    name, active, _ = probe.wait("sleep")
    assert name in ("DeadlineExceeded", "Exit") and not active


@pytest.mark.parametrize("mode", ["forever", "firehose"])
def test_client_cancel_mid_stream_reaches_the_servicer(serve, pb, probe, mode):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe)

    def client():
        with channel(srv) as ch:
            call = pb2_grpc.EchoStub(ch).ServerStream(pb2.Msg(text=mode, blob=b"x" * 1000), timeout=30)
            got = [next(call).number for _ in range(5)]
            call.cancel()
            return got, _error(lambda: list(call))[0]

    got, code = in_thread(client)
    assert got == list(range(5)) and code == grpc.StatusCode.CANCELLED
    # rr tells the stream's worker the client is gone: its next send raises rr.ClientGone
    # inside the servicer's generator (the worker would be killed only after CLOSE_GRACE).
    assert probe.wait("stream") == "ClientGone"
    assert probe.wait("callback") is False  # add_callback ran, and the call no longer counts as active


def test_client_cancel_while_the_servicer_waits_for_a_request(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe)

    def client():
        with channel(srv) as ch:
            requests: queue.Queue = queue.Queue()
            call = pb2_grpc.EchoStub(ch).Bidi(iter(requests.get, None), timeout=30)
            requests.put(pb2.Msg(text="one"))
            first = next(call).text
            call.cancel()
            requests.put(None)
            return first

    assert in_thread(client) == "pong:one"
    assert probe.wait("bidi") == "ClientGone"  # the pending body read raised it


def _wire_recorder(seen: list):
    """A listener middleware recording the response head and each DATA chunk's first byte."""

    def middleware(req, next_, state):
        result = next_(req)
        if isinstance(result, rr.resp.Stream):
            seen.append(("head", dict(result.headers)))
            inner = result.fn

            def fn(send):
                def recording(data=b"", fin=False, trailers=None):
                    if data:
                        seen.append(("flag", data[0]))
                    send(data, fin=fin, trailers=trailers)

                inner(recording)

            return rr.resp.Stream(result.status, result.headers, fn)
        return result

    return middleware


def test_gzip_both_ways_when_the_client_compresses_and_the_server_chooses_gzip(serve, pb, probe):
    pb2, pb2_grpc = pb
    seen: list = []
    srv, _ = start(serve, pb, probe, middlewares=[_wire_recorder(seen)], compression=grpc.Compression.Gzip)
    blob = b"compressible " * 50_000

    def client():
        with channel(srv, compression=grpc.Compression.Gzip) as ch:
            stub = pb2_grpc.EchoStub(ch)
            return stub.Unary(pb2.Msg(text="z", blob=blob), timeout=10), \
                [m.blob for m in stub.ServerStream(pb2.Msg(text="z", number=3, blob=blob), timeout=10)]

    unary, streamed = in_thread(client)
    assert unary.blob == blob and streamed == [blob] * 3
    heads = [v for k, v in seen if k == "head"]
    assert heads and all(h.get("grpc-encoding") == "gzip" for h in heads)
    assert [v for k, v in seen if k == "flag"] == [1] * 4  # every message went out compressed


def test_set_compression_per_call_and_plain_when_not_asked(serve, pb, probe):
    pb2, pb2_grpc = pb
    seen: list = []
    srv, _ = start(serve, pb, probe, middlewares=[_wire_recorder(seen)])

    def client():
        with channel(srv) as ch:
            stub = pb2_grpc.EchoStub(ch)
            return stub.Unary(pb2.Msg(text="plain"), timeout=10).text, stub.Unary(pb2.Msg(text="gzip"), timeout=10).text

    assert in_thread(client) == ("echo:plain", "echo:gzip")
    heads = [v for k, v in seen if k == "head"]
    assert "grpc-encoding" not in heads[0] and heads[1]["grpc-encoding"] == "gzip"
    assert [v for k, v in seen if k == "flag"] == [0, 1]


def test_message_over_max_receive_message_length_is_resource_exhausted(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe, max_receive_message_length=1024)

    def client():
        with channel(srv) as ch:
            stub = pb2_grpc.EchoStub(ch)
            small = stub.Unary(pb2.Msg(text="s", blob=b"x" * 900), timeout=10).text
            return small, _error(lambda: stub.Unary(pb2.Msg(text="l", blob=b"x" * 2000), timeout=10))

    small, (code, details, _) = in_thread(client)
    assert small == "echo:s"
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "1024" in details


def test_response_over_max_send_message_length_is_resource_exhausted(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe, max_send_message_length=1000)

    def client():
        with channel(srv) as ch:
            return _error(lambda: pb2_grpc.EchoStub(ch).Unary(pb2.Msg(text="big", number=5000), timeout=10))

    assert in_thread(client)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_service_check_and_watch(serve, pb, probe):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = rr_grpc.Server()
    pb2, pb2_grpc = pb
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    health = server.enable_health()
    srv = serve(server.routes(), protocols=["http2"], body_buffering="manual", not_found=server.not_found)
    SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    changed: queue.Queue = queue.Queue()

    def client():
        with channel(srv) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            out = {
                "overall": stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status,
                "echo": stub.Check(health_pb2.HealthCheckRequest(service="rrtest.Echo"), timeout=10).status,
                "unknown": _error(lambda: stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10))[0],
            }
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="rrtest.Echo"), timeout=30)
            out["watch_first"] = next(watch).status
            changed.put("watching")
            out["watch_next"] = next(watch).status
            watch.cancel()
            return out

    job = gevent.spawn(in_thread, client)
    assert in_thread(changed.get, True, 10) == "watching"
    health.set("rrtest.Echo", NOT_SERVING)
    out = job.get(timeout=20)
    assert out == {"overall": SERVING, "echo": SERVING, "unknown": grpc.StatusCode.NOT_FOUND,
                   "watch_first": SERVING, "watch_next": NOT_SERVING}


def test_reflection_lists_services_and_serves_their_descriptors(serve, pb, probe):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    server = rr_grpc.Server()
    pb2, pb2_grpc = pb
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    server.enable_health()
    server.enable_reflection()
    srv = serve(server.routes(), protocols=["http2"], body_buffering="manual", not_found=server.not_found)

    def client():
        with channel(srv) as ch:
            db = ProtoReflectionDescriptorDatabase(ch)
            pool = DescriptorPool(db)
            echo = pool.FindServiceByName("rrtest.Echo")
            return sorted(db.get_services()), [m.name for m in echo.methods]

    services, methods = in_thread(client)
    assert services == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "rrtest.Echo"]
    assert methods == ["Unary", "ServerStream", "ClientStream", "Bidi"]


def test_auto_body_mode_serves_unary_and_server_streaming(serve, pb, probe):
    # In rr's default body mode the whole request arrives before the handler runs:
    # fine for single-request calls (docs/guide.md says why bidi needs "manual").
    pb2, pb2_grpc = pb
    server = rr_grpc.Server()
    pb2_grpc.add_EchoServicer_to_server(servicer(pb2, pb2_grpc, probe), server)
    srv = serve(server.routes(), protocols=["http2"])

    def client():
        with channel(srv) as ch:
            stub = pb2_grpc.EchoStub(ch)
            return (stub.Unary(pb2.Msg(text="auto"), timeout=10).text,
                    [m.number for m in stub.ServerStream(pb2.Msg(number=3), timeout=10)],
                    stub.ClientStream(iter([pb2.Msg(number=1), pb2.Msg(number=2)]), timeout=10).number)

    assert in_thread(client) == ("echo:auto", [0, 1, 2], 3)


def test_request_stream_over_the_listeners_max_content_length_is_resource_exhausted(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe, listener_opts={"max_content_length": 5000})

    def client():
        with channel(srv) as ch:
            many = iter([pb2.Msg(blob=b"x" * 1000)] * 10)
            return _error(lambda: pb2_grpc.EchoStub(ch).ClientStream(many, timeout=10))

    code, details, _ = in_thread(client)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_content_length" in details


def test_request_stream_idle_past_request_timeout_is_unavailable(serve, pb, probe):
    pb2, pb2_grpc = pb
    srv, _ = start(serve, pb, probe, listener_opts={"request_timeout": 0.3})

    def client():
        with channel(srv) as ch:
            requests: queue.Queue = queue.Queue()
            replies = pb2_grpc.EchoStub(ch).Bidi(iter(requests.get, None), timeout=10)
            requests.put(pb2.Msg(text="once"))
            first = next(replies).text
            # Nothing more is sent: the server gives up after request_timeout.
            outcome = _error(lambda: next(replies))
            requests.put(None)
            return first, outcome

    first, (code, details, _) = in_thread(client)
    assert first == "pong:once"
    assert code == grpc.StatusCode.UNAVAILABLE and "request_timeout" in details
