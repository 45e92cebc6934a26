"""gRPC bench servers: HttpArena's BenchmarkService on rr, grpcio's sync server and grpc.aio.

``tools/bench.py --servers rr,grpcio,grpc-aio --scenarios grpc`` starts these
``serve`` commands and drives them with h2load (rows ``grpc_unary`` and
``grpc_stream``); the commands below run them by hand.

    python tools/bench_apps/grpc_bench.py serve rr PORT          # rr.contrib.grpc, h2c prior knowledge
    python tools/bench_apps/grpc_bench.py serve grpcio PORT [W]  # grpc.server, a W-thread pool (default 8)
    python tools/bench_apps/grpc_bench.py serve aio PORT         # grpc.aio.server
    python tools/bench_apps/grpc_bench.py body > grpc-sum.bin    # HttpArena's 9-byte GetSum request
    python tools/bench_apps/grpc_bench.py stream PORT SECONDS [COUNT]   # StreamSum client, prints JSON

Unary rows (the same client for every server, as HttpArena's unary-grpc):

    taskset -c 1 h2load -t1 -c50 -m100 -D 5 -d grpc-sum.bin \\
        -H 'content-type: application/grpc' -H 'te: trailers' \\
        http://127.0.0.1:PORT/benchmark.BenchmarkService/GetSum

Server-streaming rows: ``stream`` runs StreamSum{a:1, b:2, count:COUNT} calls back to
back on one grpcio channel for SECONDS and prints the calls and messages per second
(HttpArena uses ghz, which Debian does not package). Pin the server to core 0 and the
client to core 1 (``taskset``). Generated modules go to a temporary directory.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

sys.path.insert(0, str(HERE))

import bench_common as c  # noqa: E402

from rr.contrib.grpc import codegen  # noqa: E402

PROTO = HERE / "protos" / "benchmark.proto"
GET_SUM_BODY = c.GRPC_SUM_REQUEST


def modules() -> tuple[Any, Any]:
    return codegen.generate(PROTO, tempfile.mkdtemp(prefix="rr-grpc-bench-"))


def servicer(pb2: Any, pb2_grpc: Any) -> Any:
    class Benchmark(pb2_grpc.BenchmarkServiceServicer):
        def GetSum(self, request, context):
            return pb2.SumReply(result=request.a + request.b)

        def StreamSum(self, request, context):
            base = request.a + request.b
            for i in range(max(1, request.count)):
                yield pb2.SumReply(result=base + i)

        def CollectSum(self, request_iterator, context):
            return pb2.SumReply(result=sum(r.a + r.b for r in request_iterator))

        def EchoSum(self, request_iterator, context):
            for r in request_iterator:
                yield pb2.SumReply(result=r.a + r.b)

    return Benchmark()


def aio_servicer(pb2: Any, pb2_grpc: Any) -> Any:
    class Benchmark(pb2_grpc.BenchmarkServiceServicer):
        async def GetSum(self, request, context):
            return pb2.SumReply(result=request.a + request.b)

        async def StreamSum(self, request, context):
            base = request.a + request.b
            for i in range(max(1, request.count)):
                yield pb2.SumReply(result=base + i)

        async def CollectSum(self, request_iterator, context):
            total = 0
            async for r in request_iterator:
                total += r.a + r.b
            return pb2.SumReply(result=total)

        async def EchoSum(self, request_iterator, context):
            async for r in request_iterator:
                yield pb2.SumReply(result=r.a + r.b)

    return Benchmark()


def serve_rr(port: int) -> None:
    import rr
    from rr.contrib import grpc as rr_grpc

    pb2, pb2_grpc = modules()
    server = rr_grpc.Server()
    pb2_grpc.add_BenchmarkServiceServicer_to_server(servicer(pb2, pb2_grpc), server)
    rr.start_listener("grpc", {"port": port, "ip": "127.0.0.1", "protocols": ["http2"], "body_buffering": "manual",
                               "max_content_length": 1 << 40, "max_clients": 10_000, "routes": server.routes(),
                               "not_found": server.not_found})
    print(f"rr grpc on 127.0.0.1:{rr.listener_port('grpc')}", flush=True)
    rr.wait()


def serve_grpcio(port: int, workers: int) -> None:
    from concurrent import futures

    import grpc

    pb2, pb2_grpc = modules()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb2_grpc.add_BenchmarkServiceServicer_to_server(servicer(pb2, pb2_grpc), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"grpcio (sync, {workers} threads) on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def serve_aio(port: int) -> None:
    import asyncio

    import grpc

    pb2, pb2_grpc = modules()

    async def main() -> None:
        server = grpc.aio.server()
        pb2_grpc.add_BenchmarkServiceServicer_to_server(aio_servicer(pb2, pb2_grpc), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"grpc.aio on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def stream_client(port: int, seconds: float, count: int) -> dict[str, float]:
    import grpc

    pb2, pb2_grpc = modules()
    calls = messages = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.BenchmarkServiceStub(channel)
        request = pb2.StreamRequest(a=1, b=2, count=count)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            for reply in stub.StreamSum(request, timeout=60):
                messages += 1
                assert reply.result >= 3
            calls += 1
    return {"seconds": elapsed, "calls_per_s": calls / elapsed, "messages_per_s": messages / elapsed}


def main(argv: list[str]) -> None:
    if argv[:1] == ["body"]:
        sys.stdout.buffer.write(GET_SUM_BODY)
    elif argv[:1] == ["serve"] and len(argv) >= 3:
        kind, port = argv[1], int(argv[2])
        if kind == "rr":
            serve_rr(port)
        elif kind == "grpcio":
            serve_grpcio(port, int(argv[3]) if len(argv) > 3 else 8)
        elif kind == "aio":
            serve_aio(port)
        else:
            raise SystemExit(f"unknown server {kind!r} (rr, grpcio, aio)")
    elif argv[:1] == ["stream"] and len(argv) >= 3:
        count = int(argv[3]) if len(argv) > 3 else 5000
        print(json.dumps(stream_client(int(argv[1]), float(argv[2]), count)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
