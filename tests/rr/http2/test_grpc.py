"""grpcio (the reference gRPC client, C core) against rr over h2c.

gRPC is a demanding h2 peer: prior knowledge, ``te: trailers``, length-prefixed
messages in DATA, and the status in trailers. The handlers below speak the wire
format by hand (no protobuf: the messages are raw bytes).
"""

from __future__ import annotations

import struct

import grpc
import pytest

from rr import resp
from tests.rr.conftest import in_thread

GRPC = [("content-type", "application/grpc")]


def frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def messages(body: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(body):
        _, n = struct.unpack_from(">BI", body, i)
        out.append(body[i + 5:i + 5 + n])
        i += 5 + n
    return out


def handler(req):
    assert req.method == "POST" and req.headers.get("te") == "trailers"
    incoming = messages(req.read_body())
    if req.path == "/rr.Test/Echo":
        def unary(send):
            send(frame(b"echo:" + incoming[0]), fin=True, trailers=[("grpc-status", "0")])
        return resp.Stream(200, GRPC, unary)
    if req.path == "/rr.Test/Count":
        def server_stream(send):
            for i in range(int(incoming[0])):
                send(frame(str(i).encode()))
            send(b"", fin=True, trailers=[("grpc-status", "0")])
        return resp.Stream(200, GRPC, server_stream)
    if req.path == "/rr.Test/Sum":
        def client_stream(send):
            send(frame(str(sum(len(m) for m in incoming)).encode()), fin=True,
                 trailers=[("grpc-status", "0")])
        return resp.Stream(200, GRPC, client_stream)
    # trailers-only error: the status rides in the response head
    return resp.Response(200, [*GRPC, ("grpc-status", "12"), ("grpc-message", "no such method")], b"")


def _raw(channel: grpc.Channel, kind: str, path: str):
    same = {"request_serializer": None, "response_deserializer": None}
    return getattr(channel, kind)(path, **same)


@pytest.mark.slow
def test_grpcio_unary_streaming_and_error_status_over_h2c(serve):
    srv = serve(handler, protocols=["http2"])

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            echo = _raw(channel, "unary_unary", "/rr.Test/Echo")(b"ping" * 1000, timeout=10)
            counted = list(_raw(channel, "unary_stream", "/rr.Test/Count")(b"50", timeout=10))
            summed = _raw(channel, "stream_unary", "/rr.Test/Sum")(iter([b"a" * 100_000] * 3), timeout=10)
            many = [_raw(channel, "unary_unary", "/rr.Test/Echo")(str(i).encode(), timeout=10) for i in range(50)]
            try:
                _raw(channel, "unary_unary", "/rr.Test/Missing")(b"", timeout=10)
                error = None
            except grpc.RpcError as exc:
                error = (exc.code(), exc.details())
        return echo, counted, summed, many, error

    echo, counted, summed, many, error = in_thread(client)
    assert echo == b"echo:" + b"ping" * 1000
    assert counted == [str(i).encode() for i in range(50)]
    assert summed == b"300000"
    assert many == [b"echo:" + str(i).encode() for i in range(50)]
    assert error == (grpc.StatusCode.UNIMPLEMENTED, "no such method")
