"""Payloads shared by every benchmark app, so all servers send the same bytes.

Each app (ASGI, WSGI, rr, the floor) imports this module from its own
directory; nothing here depends on a server. The harnesses (tools/bench.py,
tools/bench_h3.py) also take ``build_c`` from here: how both build their C
load clients.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

HELLO = b"Hello, World!"
LARGE = b"x" * 65536
FORM_PAIRS = 128
ROUTE_COUNT = 100
ROUTES = [f"/api/v1/items/{i:04d}" for i in range(1, ROUTE_COUNT + 1)]
SSE_EVENTS = 100
SSE_END = b": end\n\n"
DRAIN_CHUNK = 65536
WS_PATH = "/ws"

# A fixed object; handlers serialise it per request (json.dumps), as an app would.
JSON_OBJ = {
    "message": "Hello, World!",
    "id": 12345,
    "tags": ["alpha", "beta", "gamma"],
    "active": True,
    "score": 98.6,
    "owner": {"name": "roadrunner", "kind": "bird"},
}

# 180 records, ~16 KB of JSON: the gzip_response payload (compressed per request).
GZIP_SOURCE = json.dumps(
    [{"id": i, "name": f"item-{i:03d}", "price": i * 1.25, "stock": i % 17, "ok": i % 2 == 0} for i in range(180)]
).encode()
GZIP_LEVEL = 6
# cors_preflight: the page origin the benchmark's preflight (OPTIONS /cors) names.
CORS_ORIGIN = "https://app.example"
CORS_PREFLIGHT_HEADERS = [f"Origin: {CORS_ORIGIN}", "Access-Control-Request-Method: PUT",
                          "Access-Control-Request-Headers: content-type"]
CORS_METHODS = ["GET", "PUT"]
CORS_HEADERS = ["content-type"]
# The middleware rows' compressor settings, the same for every server that has the coding
# (rr.contrib.compress's defaults for brotli and zstd; Starlette's GZipMiddleware has gzip only).
BROTLI_QUALITY = 4
ZSTD_LEVEL = 3

# gRPC (benchmark.proto, HttpArena's unary-grpc and stream-grpc): length-prefixed protobuf
# messages, written out so the harness needs neither grpcio nor protobuf to send or check them.
GRPC_SUM_REQUEST = b"\x00\x00\x00\x00\x04\x08\x01\x10\x02"  # SumRequest{a: 1, b: 2}
GRPC_STREAM_COUNT = 100


def grpc_message(payload: bytes) -> bytes:
    """One gRPC message: uncompressed flag, 4-byte big-endian length, the protobuf bytes."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def grpc_stream_request(count: int = GRPC_STREAM_COUNT) -> bytes:
    """StreamRequest{a: 1, b: 2, count: count} (count < 2**14: a one- or two-byte varint)."""
    varint = bytes([count]) if count < 0x80 else bytes([0x80 | (count & 0x7F), count >> 7])
    return grpc_message(b"\x08\x01\x10\x02\x18" + varint)


def grpc_sum_reply(result: int) -> bytes:
    """SumReply{result: result} as one message (result < 2**14)."""
    varint = bytes([result]) if result < 0x80 else bytes([0x80 | (result & 0x7F), result >> 7])
    return grpc_message(b"\x08" + varint)


def gzip_body() -> bytes:
    """What a handler does for gzip_response: compress the payload now."""
    return gzip.compress(GZIP_SOURCE, compresslevel=GZIP_LEVEL, mtime=0)


def sse_events() -> list[bytes]:
    return [f"event: tick\ndata: {i}\n\n".encode() for i in range(SSE_EVENTS)] + [SSE_END]


def stream_chunks() -> list[bytes]:
    """streaming_response: 4 chunks of 4096 B, sent one by one."""
    return [b"s" * 4096] * 4


def form_request_body() -> bytes:
    """The post_4kb_form body: 128 pairs kNNN=abcdefghijklmnopqrstuvwxyz0 joined by & (4223 B)."""
    return "&".join(f"k{i:03d}=abcdefghijklmnopqrstuvwxyz0" for i in range(FORM_PAIRS)).encode()


def count_form(body: bytes) -> bytes:
    from urllib.parse import parse_qsl

    return str(len(parse_qsl(body.decode("latin-1"), keep_blank_values=True))).encode()


def build_c(src: Path, binary: Path, libs: tuple[str, ...] = ()) -> str | None:
    """Why the C load client ``src`` cannot run (None when it can): compiles it with ``cc -O2``
    (``$CC`` if set) into ``binary`` when that is missing or older than the source."""
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return "no C compiler (apt-get install -y gcc libc6-dev)"
    binary.parent.mkdir(exist_ok=True)
    tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    name = f"tools/{src.parent.name}/{src.name}"
    try:
        out = subprocess.run([cc, "-O2", "-o", str(tmp), str(src), *libs], capture_output=True, text=True,
                             timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cc} -O2 {name}: {exc}"
    if out.returncode:
        tmp.unlink(missing_ok=True)
        return f"{cc} -O2 {name} failed: " + ((out.stderr or out.stdout).strip().splitlines() or ["?"])[-1]
    tmp.replace(binary)  # atomic: a concurrent run never executes a half-written binary
    return None
