#!/usr/bin/env python3
"""rr's benchmark harness: rr against Python HTTP servers and a bare-gevent floor.

    .venv/bin/python tools/bench.py --quick                      # hello only, < 60 s
    .venv/bin/python tools/bench.py --servers rr,hypercorn,granian --scenarios h2    # every h2c row
    .venv/bin/python tools/bench.py --duration 5 --rounds 3 --out docs/bench_results.md
    .venv/bin/python tools/bench.py --servers rr,floor --scenarios hello,echo --profile
    .venv/bin/python tools/bench.py --memory --servers floor,pywsgi
    .venv/bin/python tools/bench.py --servers rr,grpcio,grpc-aio --scenarios grpc     # gRPC rows
    .venv/bin/python tools/bench.py --servers rr,granian,uvicorn,hypercorn --scenarios tls
    .venv/bin/python tools/bench.py --servers rr --scenarios hello,hello_h2 --flame docs/flame

Model (after roadrunner's scripts/bench.escript): every server is one OS
process with one worker, started here and stopped by pid (its process group);
the servers run side by side on their own ports, pinned to core 0, and the load
generator runs pinned to core 1. For each scenario: one warm-up run per server
(discarded), then ``--rounds`` interleaved rounds (A B C ... A B C ...); the
table shows the median req/s, the median p50/p99, the summed errors, the peak
RSS and the CPU% of the server's process tree during the measured runs.

Load generators: ``wrk -t1`` for HTTP/1.1 (Lua scripts in tools/bench_lua; a
``done()`` hook prints JSON), ``h2load -t1`` for HTTP/2 over cleartext with
prior knowledge (h2c; ``-c``/``-m`` per scenario, bodies with ``-d``, p50/p99
from its ``--log-file``), for WebSocket ``wsbench`` (``tools/bench_ws/wsbench.c``,
compiled here with ``cc -O2`` into ``tools/bench_ws/build/`` when the source is
newer than the binary) where a C compiler is present, else node's ``ws`` package
(``tools/bench_ws/client.js``; its ``node_modules`` is installed from the
lockfile with ``npm ci`` the first time a WebSocket row runs; ``--ws-client``
picks one), and this file's
own gevent client for SSE (``--client``). Load goes to 127.0.0.1 only. Every wait is bounded, and
every process started here is killed on exit, Ctrl-C included.

Scenarios run in phases, one per ``Scenario.proto``, each with its own server
processes: ``h1``; ``h2`` (h2c: rr serves it only on an h2-only listener,
``rr_app.py --h2``, granian only with ``--http 2``; hypercorn takes h2c on its
ordinary port, recognising the preface); ``tls`` (h1 from wrk over https and h2
by ALPN from h2load, on a certificate made for the run with ``openssl``);
``grpc`` (HttpArena's BenchmarkService from ``grpc_bench.py``: rr, grpcio's
thread-pool server, ``grpc.aio``); ``flask`` (the Flask hello app under rr's
CLI, gunicorn -k gevent and gevent.pywsgi; ``raw`` runs it on the WSGI floor,
tools/bench_apps/wsgi_floor.py). A group name in ``--scenarios``
(``h2``, ``tls``, ``grpc``, ``flask``) means every row of that phase. The
floors (``floor``: gevent's StreamServer; ``raw``: non-blocking sockets met
through gevent's io watchers directly) send bytes prepared at start-up.

Compression rows also time the compressor alone (a child process pinned to the
server CPU) so the report can show each server's CPU per request without it
(rr's gzip middleware codes with zlib-ng when the ``speed`` extra is installed,
the peers' with the standard ``zlib``: each server's own coder is taken out);
``--flame DIR`` adds one uncounted run per scenario with ``py-spy record``
sampling rr, written as ``DIR/rr-<scenario>.svg``. An h2 server counts as up once it answers the h2 preface with a
SETTINGS frame, and each h2 row's pre-flight is one full h2 request (the ``h2``
package, rr's own dependency) whose status and body are checked, so a server
that does not speak h2c shows up as ``✗`` rather than as a fast row.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import gzip
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tools" / "bench_apps"
LUA = ROOT / "tools" / "bench_lua"
BENCH_WS = ROOT / "tools" / "bench_ws"
WSBENCH_SRC = BENCH_WS / "wsbench.c"
WSBENCH_BIN = BENCH_WS / "build" / "wsbench"
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(_VENV_PY) if _VENV_PY.exists() else sys.executable
BIN = Path(PY).parent
SERVER_CPU = "0"
CLIENT_CPU = "1"
HOST = "127.0.0.1"

sys.path.insert(0, str(APPS))
import bench_common as common  # noqa: E402

# --------------------------------------------------------------------------- scenarios


def _status_len(status: int, length: int | None = None) -> Callable[[int, dict, bytes], str | None]:
    def check(st: int, headers: dict, body: bytes) -> str | None:
        if st != status:
            return f"status {st}, expected {status}"
        if length is not None and len(body) != length:
            return f"body {len(body)} B, expected {length} B"
        return None

    return check


def _check_body(status: int, expected: bytes) -> Callable[[int, dict, bytes], str | None]:
    def check(st: int, headers: dict, body: bytes) -> str | None:
        if st != status:
            return f"status {st}, expected {status}"
        if body != expected:
            return f"body {body[:40]!r}..., expected {expected[:40]!r}"
        return None

    return check


def _check_gzip(st: int, headers: dict, body: bytes) -> str | None:
    if st != 200:
        return f"status {st}, expected 200"
    if headers.get("content-encoding") != "gzip":
        return "no content-encoding: gzip"
    try:
        plain = gzip.decompress(body)
    except OSError as exc:
        return f"bad gzip body: {exc}"
    return None if plain == common.GZIP_SOURCE else "gzip body does not decode to the payload"


def _decoder(coding: str) -> Callable[[bytes], bytes]:
    if coding == "gzip":
        return gzip.decompress
    if coding == "br":
        import brotli

        return brotli.decompress
    import zstandard

    return lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)


def _check_coding(coding: str) -> Callable[[int, dict, bytes], str | None]:
    """The payload, coded as ``coding`` by the server's compression middleware."""

    def check(st: int, headers: dict, body: bytes) -> str | None:
        if st != 200:
            return f"status {st}, expected 200"
        if headers.get("content-encoding") != coding:
            return f"content-encoding {headers.get('content-encoding')!r}, expected {coding!r}"
        try:
            plain = _decoder(coding)(body)
        except ImportError as exc:
            return f"cannot check {coding}: {exc}"
        except Exception as exc:  # each decoder has its own error class
            return f"bad {coding} body: {exc!r}"
        return None if plain == common.GZIP_SOURCE else f"{coding} body does not decode to the payload"

    return check


def _check_cors(st: int, headers: dict, body: bytes) -> str | None:
    """A preflight let through: 200 or 204 with the origin and the requested method allowed."""
    if st not in (200, 204):
        return f"status {st}, expected 204 (or 200)"
    if headers.get("access-control-allow-origin") != common.CORS_ORIGIN:
        return f"access-control-allow-origin {headers.get('access-control-allow-origin')!r}"
    if "PUT" not in headers.get("access-control-allow-methods", ""):
        return f"access-control-allow-methods {headers.get('access-control-allow-methods')!r} lacks PUT"
    return None


def _check_grpc(expected: bytes) -> Callable[[int, dict, bytes], str | None]:
    """A gRPC call that succeeded: HTTP 200, ``grpc-status: 0`` (trailers included) and the reply messages.

    h2load counts HTTP statuses only, and a failed call is HTTP 200 too, so
    this pre-flight is what tells a working row from a fast stream of errors.
    """

    def check(st: int, headers: dict, body: bytes) -> str | None:
        if st != 200:
            return f"status {st}, expected 200"
        if headers.get("grpc-status") != "0":
            return f"grpc-status {headers.get('grpc-status')!r} ({headers.get('grpc-message', '')}), expected '0'"
        if body != expected:
            return f"reply {body[:40].hex()}..., expected {expected[:40].hex()}"
        return None

    return check


@dataclass
class Scenario:
    name: str
    path: str = "/"
    # The table it lands in and the set of server processes it needs (a phase): h1, h2 (h2c),
    # tls (h1 and h2 over TLS), grpc (gRPC over h2c), flask (the Flask app); h3 later.
    proto: str = "h1"
    client: str = "wrk"  # wrk | h2load | ws | sse
    lua: str = "report.lua"
    env: dict[str, str] = field(default_factory=dict)
    headers: list[str] = field(default_factory=list)
    method: str = "GET"
    body: bytes = b""
    port_key: str = "main"  # rr serves large_post_streaming on its manual-body listener
    check: Callable[[int, dict, bytes], str | None] | None = _status_len(200)
    matrix: bool = True  # part of the default run
    headline: bool = False  # drawn in the chart
    unit: str = "req/s"
    streams: int = 1  # h2load -m: concurrent streams per connection
    connections: int | None = None  # overrides --connections (h2load -c) for this scenario
    note: str = ""

    def load_text(self, connections: int) -> str:
        """The load, as the report's h2 section lists it."""
        conns = self.connections or connections
        what = f"{self.method} {self.path}" + (f", {len(self.body):,} B body (`-d`)" if self.body else "")
        if self.headers:
            what += f", {len(self.headers)} extra request header" + ("s" if len(self.headers) > 1 else "")
        return f"`h2load -t1 -c{conns} -m{self.streams}`: {what}" + (f"; {self.note}" if self.note else "")

    @property
    def scheme(self) -> str:
        return "https" if self.proto == "tls" else "http"

    @property
    def h2_proto(self) -> str:
        """What h2load must report as the application protocol: h2 over TLS (ALPN), h2c otherwise."""
        return "h2" if self.proto == "tls" else "h2c"


HEAVY = [f"x-bench-{i}: {'abcdefghijklmnop'[:i]}" for i in range(1, 17)]
STREAMED = b"".join(common.stream_chunks())
H2 = {"proto": "h2", "client": "h2load"}
TLS_H2 = {"proto": "tls", "client": "h2load"}
GRPC = {"proto": "grpc", "client": "h2load", "method": "POST",
        "headers": ["content-type: application/grpc", "te: trailers"]}
GRPC_STREAM_REPLY = b"".join(common.grpc_sum_reply(3 + i) for i in range(common.GRPC_STREAM_COUNT))

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("hello", check=_check_body(200, common.HELLO), headline=True),
        Scenario("json", "/json", headers=["Accept: application/json"], headline=True),
        Scenario("echo", "/echo", lua="post.lua", env={"BENCH_BODY_SIZE": "256"}, method="POST",
                 body=b"x" * 256, check=_check_body(200, b"x" * 256), headline=True),
        Scenario("headers_heavy", headers=HEAVY, check=_check_body(200, common.HELLO), headline=True),
        Scenario("large_response", "/large", check=_status_len(200, 65536), headline=True),
        Scenario("multi_request_body", "/echo", lua="post.lua", env={"BENCH_BODY_SIZE": "4096"},
                 method="POST", body=b"x" * 4096, check=_check_body(200, b"x" * 4096), headline=True),
        Scenario("varied_paths_router", "/api/v1/items/0001", lua="router.lua",
                 env={"BENCH_ROUTES": str(common.ROUTE_COUNT)}, check=_check_body(200, common.HELLO),
                 headline=True, note="100 routes, round-robin"),
        Scenario("post_4kb_form", "/form", lua="form.lua", method="POST", body=common.form_request_body(),
                 check=_check_body(200, b"128"), headline=True,
                 note="the handler parses the 128-pair urlencoded body and answers the pair count: rr with its "
                      "own parser (`req.read_form()`, rr.qs, ~32 µs a parse), the peers' raw ASGI/WSGI apps "
                      "with `urllib.parse.parse_qsl` (~76 µs), so the row is server plus parser, not server "
                      "overhead alone (docs/bench_rr.md)"),
        Scenario("large_post_streaming", "/drain", lua="post.lua", env={"BENCH_BODY_SIZE": str(1 << 20)},
                 method="POST", body=b"x" * (1 << 20), port_key="manual", check=_check_body(200, b"ok"),
                 note="1 MiB POST read in chunks"),
        Scenario("pipelined_h1", lua="pipeline.lua", env={"BENCH_PIPELINE": "4"},
                 check=_check_body(200, common.HELLO), headline=True, note="4 per write; latency per batch"),
        Scenario("gzip_response", "/gzip", headers=["Accept-Encoding: gzip"], check=_check_gzip,
                 headline=True, note="16 KB JSON gzipped per request"),
        Scenario("websocket_msg_throughput", common.WS_PATH, client="ws", check=None, unit="msg/s",
                 note="1 KiB text echo, one in flight per connection, wsbench or node `ws` client"),
        Scenario("server_sent_events", "/sse", client="sse", check=None, unit="events/s",
                 note="100 events per session, own gevent client; latency per session"),
        Scenario("connection_storm", headers=["Connection: close"], check=_check_body(200, common.HELLO),
                 note="new connection per request"),
        # Edge middleware (issue 15): the server's own middleware does the work, not the handler.
        Scenario("gzip_middleware", "/gzip_mw", headers=["Accept-Encoding: gzip"], check=_check_coding("gzip"),
                 note="gzip_response's payload, gzipped by a middleware (rr.contrib.compress, Starlette's "
                      "GZipMiddleware), level 6"),
        Scenario("brotli_middleware", "/br_mw", headers=["Accept-Encoding: br"], check=_check_coding("br"),
                 note=f"the same payload, brotli quality {common.BROTLI_QUALITY} by rr.contrib.compress"),
        Scenario("zstd_middleware", "/zstd_mw", headers=["Accept-Encoding: zstd"], check=_check_coding("zstd"),
                 note=f"the same payload, zstd level {common.ZSTD_LEVEL} by rr.contrib.compress"),
        Scenario("cors_preflight", "/cors", lua="method.lua", env={"BENCH_METHOD": "OPTIONS"}, method="OPTIONS",
                 headers=common.CORS_PREFLIGHT_HEADERS, check=_check_cors,
                 note="OPTIONS with Origin and Access-Control-Request-Method/-Headers, answered by the CORS "
                      "middleware"),
        # h2: h2c prior knowledge, h2load; same routes and bytes as the h1 rows.
        Scenario("hello_h2", streams=10, check=_check_body(200, common.HELLO), **H2),
        Scenario("json_h2", "/json", headers=["accept: application/json"], streams=10, **H2),
        Scenario("echo_h2", "/echo", method="POST", body=b"x" * 256, streams=10,
                 check=_check_body(200, b"x" * 256), **H2),
        Scenario("headers_heavy_h2", headers=[h.lower() for h in HEAVY], streams=10,
                 check=_check_body(200, common.HELLO), **H2),
        Scenario("multi_request_body_h2", "/echo", method="POST", body=b"x" * 4096, streams=10,
                 check=_check_body(200, b"x" * 4096), **H2),
        Scenario("multi_stream_h2", streams=100, connections=10, check=_check_body(200, common.HELLO),
                 note="few connections, many streams each", **H2),
        Scenario("streaming_response_h2", "/streaming", streams=10, check=_check_body(200, STREAMED),
                 note="4 x 4,096 B DATA, one handler send each", **H2),
        # TLS (issue 17): h1 with wrk over https, h2 with h2load negotiating h2 by ALPN; one server
        # process serves both where the server can (rr, granian, hypercorn).
        Scenario("hello_tls", check=_check_body(200, common.HELLO), proto="tls"),
        Scenario("large_response_tls", "/large", check=_status_len(200, 65536), proto="tls"),
        Scenario("hello_h2_tls", streams=10, check=_check_body(200, common.HELLO), **TLS_H2),
        Scenario("large_response_h2_tls", "/large", streams=10, check=_status_len(200, 65536), **TLS_H2),
        # gRPC over h2c (issue 16): HttpArena's unary-grpc and a server-streaming row, driven by h2load
        # with fixed length-prefixed request bodies; the pre-flight checks grpc-status and the replies.
        Scenario("grpc_unary", "/benchmark.BenchmarkService/GetSum", body=common.GRPC_SUM_REQUEST, streams=10,
                 check=_check_grpc(common.grpc_sum_reply(3)), unit="calls/s", note="GetSum{a: 1, b: 2}", **GRPC),
        Scenario("grpc_stream", "/benchmark.BenchmarkService/StreamSum", body=common.grpc_stream_request(),
                 streams=10, check=_check_grpc(GRPC_STREAM_REPLY), unit="calls/s",
                 note=f"StreamSum{{a: 1, b: 2, count: {common.GRPC_STREAM_COUNT}}}: "
                      f"{common.GRPC_STREAM_COUNT} reply messages per call", **GRPC),
        # The Flask hello app (issue 14) under rr's CLI (rr.contrib.wsgi), gunicorn -k gevent and pywsgi.
        Scenario("flask_hello", "/hello", proto="flask", check=_check_body(200, common.HELLO)),
        # Not a benchmark: every response is a 500, so every request must show up as an error.
        Scenario("error_500", "/error", check=_status_len(500), matrix=False),
    ]
}

# --------------------------------------------------------------------------- servers

NO_WS_WSGI = "WSGI has no WebSocket"
NO_H2 = "no h2c in this server"
# Why a server has no process for a phase at all (a scenario names the phase in ``proto``).
NOT_SERVED = {"h1": "not an HTTP/1.1 benchmark server", "h2": NO_H2, "tls": "not run over TLS here",
              "grpc": "not a gRPC server", "flask": "does not serve the Flask app here"}
NO_MIDDLEWARE_WSGI = "no compression/CORS middleware in the WSGI app"
NO_CODING = "only rr.contrib.compress has this coding among the peers"
FLOOR_SKIPS = {"websocket_msg_throughput": "the floor speaks no WebSocket", "brotli_middleware": NO_CODING,
               "zstd_middleware": NO_CODING}
H2_TLS_ROWS = [n for n, sc in SCENARIOS.items() if sc.proto == "tls" and sc.client == "h2load"]

Argv = Callable[[dict[str, int]], list[str]]

# The certificate of the tls phase: made by ``make_cert`` when a run has a tls row.
TLS_FILES: dict[str, str] = {}


@dataclass
class ServerSpec:
    name: str
    label: str
    argv: Argv | None  # the h1 process (None: this server has no h1 phase)
    cwd: Path = APPS
    ports: tuple[str, ...] = ("main",)
    unsupported: dict[str, str] = field(default_factory=dict)  # scenario name or "proto:<phase>" -> reason
    needs: str = ""  # a module or an executable in the venv, checked before starting
    # The other phases' processes (h2, tls, grpc, flask), each listening on ports["main"].
    launchers: dict[str, Argv] = field(default_factory=dict)
    # Extra environment of the server process (None: the harness's own).
    env: Callable[[], dict[str, str]] | None = None

    def launcher(self, proto: str) -> Argv | None:
        return self.argv if proto == "h1" else self.launchers.get(proto)

    def why_not(self, sc: Scenario) -> str | None:
        reason = self.unsupported.get(sc.name) or self.unsupported.get(f"proto:{sc.proto}")
        if reason is None and self.launcher(sc.proto) is None:
            reason = NOT_SERVED.get(sc.proto, f"no {sc.proto} process")
        return reason

    def launch(self, proto: str) -> tuple[Argv, tuple[str, ...]]:
        """The command line and port names of this server's process for one phase."""
        make = self.launcher(proto)
        assert make is not None
        return make, (self.ports if proto == "h1" else ("main",))


def _uvicorn(http: str, ws: str, tls: bool = False) -> Argv:
    """The uvicorn command line for one HTTP and one WebSocket implementation."""
    def argv(p: dict[str, int]) -> list[str]:
        cmd = [str(BIN / "uvicorn"), "--host", HOST, "--port", str(p["main"]), "--workers", "1",
               "--loop", "uvloop", "--http", http, "--ws", ws,
               "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "600",
               "--lifespan", "off", "--app-dir", str(APPS), "asgi_app:app"]
        if tls:
            cmd += ["--ssl-certfile", TLS_FILES["cert"], "--ssl-keyfile", TLS_FILES["key"]]
        return cmd

    return argv


def _rr_argv(p: dict[str, int]) -> list[str]:
    return [PY, str(APPS / "rr_app.py"), str(p["main"]), str(p["manual"])]


def _rr_h2_argv(p: dict[str, int]) -> list[str]:
    return [PY, str(APPS / "rr_app.py"), "--h2", str(p["main"])]


def _rr_tls_argv(p: dict[str, int]) -> list[str]:
    return [PY, str(APPS / "rr_app.py"), "--tls", TLS_FILES["cert"], TLS_FILES["key"], str(p["main"])]


def _grpc_argv(kind: str) -> Argv:
    return lambda p: [PY, str(APPS / "grpc_bench.py"), "serve", kind, str(p["main"])]


def _rr_flask_argv(p: dict[str, int]) -> list[str]:
    # rr's own CLI, as a Flask user would run it; rr_flask.toml sets the keep-alive options.
    return [PY, "-m", "rr", "--config", str(APPS / "rr_flask.toml"), "--port", str(p["main"]),
            "--chdir", str(APPS), "flask_hello:app"]


def _gunicorn(app: str) -> Argv:
    return lambda p: [str(BIN / "gunicorn"), "-k", "gevent", "--workers", "1", "--bind", f"{HOST}:{p['main']}",
                      "--worker-connections", "20000", "--keep-alive", "600", "--log-level", "warning",
                      "--chdir", str(APPS), app]


# ``rr-base``: rr as it was at another checkout (RR_BASE=<a git worktree>), in the same run as
# ``rr``, so a change's before/after rows come from one set of interleaved rounds.
def _rr_base() -> Path:
    base = os.environ.get("RR_BASE")
    if not base:
        raise SystemExit("--servers rr-base needs RR_BASE=<path of an rr checkout to compare with>")
    return Path(base).resolve()


def _rr_base_argv(p: dict[str, int]) -> list[str]:
    return [PY, str(_rr_base() / "tools" / "bench_apps" / "rr_app.py"), str(p["main"]), str(p["manual"])]


def _rr_base_h2_argv(p: dict[str, int]) -> list[str]:
    return [PY, str(_rr_base() / "tools" / "bench_apps" / "rr_app.py"), "--h2", str(p["main"])]


def _rr_base_tls_argv(p: dict[str, int]) -> list[str]:
    return [PY, str(_rr_base() / "tools" / "bench_apps" / "rr_app.py"), "--tls", TLS_FILES["cert"],
            TLS_FILES["key"], str(p["main"])]


def _rr_base_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(_rr_base())}


def _granian(http: str, tls: bool = False) -> Argv:
    def argv(p: dict[str, int]) -> list[str]:
        cmd = [str(BIN / "granian"), "--interface", "asgi", "--host", HOST, "--port", str(p["main"]),
               "--workers", "1", "--runtime-threads", "1", "--blocking-threads", "1",
               "--backpressure", "20000", "--http", http, "--no-access-log", "--log-level", "warning",
               "--working-dir", str(APPS), "asgi_app:app"]
        if tls:
            cmd += ["--ssl-certificate", TLS_FILES["cert"], "--ssl-keyfile", TLS_FILES["key"]]
        return cmd

    return argv


def _hypercorn(tls: bool = False) -> Argv:
    # Also serves h2c with prior knowledge on the same port (it recognises the h2 preface);
    # over TLS it offers h2 and http/1.1 by ALPN.
    def argv(p: dict[str, int]) -> list[str]:
        cmd = [str(BIN / "hypercorn"), "--bind", f"{HOST}:{p['main']}", "--workers", "1", "--worker-class",
               "uvloop", "--keep-alive", "600", "--log-level", "warning", "asgi_app:app"]
        if tls:
            cmd += ["--certfile", TLS_FILES["cert"], "--keyfile", TLS_FILES["key"]]
        return cmd

    return argv


SERVERS: dict[str, ServerSpec] = {
    s.name: s
    for s in [
        ServerSpec("rr", "rr", _rr_argv, ports=("main", "manual"),
                   launchers={"h2": _rr_h2_argv, "tls": _rr_tls_argv, "grpc": _grpc_argv("rr"),
                              "flask": _rr_flask_argv}),
        ServerSpec("rr-base", "rr at $RR_BASE (before/after)", _rr_base_argv, ports=("main", "manual"),
                   launchers={"h2": _rr_base_h2_argv, "tls": _rr_base_tls_argv}, env=_rr_base_env),
        ServerSpec("floor", "floor (bare gevent StreamServer)",
                   lambda p: [PY, str(APPS / "floor.py"), str(p["main"])], unsupported=FLOOR_SKIPS),
        ServerSpec("raw", "raw floor (non-blocking sockets, gevent io watchers)",
                   lambda p: [PY, str(APPS / "floor.py"), "--raw", str(p["main"])], unsupported=FLOOR_SKIPS,
                   launchers={"flask": lambda p: [PY, str(APPS / "wsgi_floor.py"), str(p["main"]), "flask_hello:app"]}),
        ServerSpec("granian", "granian (ASGI, 1 runtime thread)", _granian("auto"),
                   launchers={"h2": _granian("2"), "tls": _granian("auto", tls=True)},
                   unsupported={"brotli_middleware": NO_CODING, "zstd_middleware": NO_CODING}, needs="granian"),
        ServerSpec("uvicorn", "uvicorn (httptools + uvloop)", _uvicorn("httptools", "websockets"),
                   launchers={"tls": _uvicorn("httptools", "websockets", tls=True)},
                   unsupported={"brotli_middleware": NO_CODING, "zstd_middleware": NO_CODING,
                                **{n: "uvicorn has no HTTP/2" for n in H2_TLS_ROWS}},
                   needs="uvicorn"),
        ServerSpec("uvicorn-h11", "uvicorn (h11 + uvloop)", _uvicorn("h11", "wsproto"), needs="uvicorn",
                   unsupported={"brotli_middleware": NO_CODING, "zstd_middleware": NO_CODING}),
        ServerSpec("hypercorn", "hypercorn (uvloop)", _hypercorn(),
                   launchers={"h2": _hypercorn(), "tls": _hypercorn(tls=True)},
                   unsupported={"brotli_middleware": NO_CODING, "zstd_middleware": NO_CODING}, needs="hypercorn"),
        ServerSpec("gunicorn", "gunicorn -k gevent", _gunicorn("wsgi_app:app"),
                   unsupported={"websocket_msg_throughput": NO_WS_WSGI, "proto:h2": "h2 only over TLS here",
                                "gzip_middleware": NO_MIDDLEWARE_WSGI, "brotli_middleware": NO_MIDDLEWARE_WSGI,
                                "zstd_middleware": NO_MIDDLEWARE_WSGI, "cors_preflight": NO_MIDDLEWARE_WSGI},
                   launchers={"flask": _gunicorn("flask_hello:app")}, needs="gunicorn"),
        ServerSpec("pywsgi", "gevent.pywsgi",
                   lambda p: [PY, str(APPS / "wsgi_app.py"), str(p["main"])],
                   unsupported={"websocket_msg_throughput": NO_WS_WSGI,
                                "gzip_middleware": NO_MIDDLEWARE_WSGI, "brotli_middleware": NO_MIDDLEWARE_WSGI,
                                "zstd_middleware": NO_MIDDLEWARE_WSGI, "cors_preflight": NO_MIDDLEWARE_WSGI},
                   launchers={"flask": lambda p: [PY, str(APPS / "flask_hello.py"), str(p["main"])]}),
        ServerSpec("grpcio", "grpcio (grpc.server, 8-thread pool)", None,
                   launchers={"grpc": _grpc_argv("grpcio")}),
        ServerSpec("grpc-aio", "grpcio (grpc.aio.server)", None, launchers={"grpc": _grpc_argv("aio")}),
    ]
}

DEFAULT_SERVERS = [name for name in SERVERS if name != "rr-base"]

# --------------------------------------------------------------------------- processes

_children: dict[int, str] = {}  # pid -> what it is; every process this harness started
_children_lock = threading.Lock()


def _spawn(argv: list[str], *, cpu: str | None, cwd: Path, env: dict | None = None, stdout=None,
           stderr=None) -> subprocess.Popen:
    if cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", cpu, *argv]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    with _children_lock:
        _children[proc.pid] = argv[0]
    return proc


def stop_process(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process group led by proc.pid, then SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # Whatever the leader left behind in its group (gunicorn/granian workers).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with _children_lock:
        _children.pop(proc.pid, None)


def _kill_all_children() -> None:
    with _children_lock:
        pids = list(_children)
        _children.clear()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


atexit.register(_kill_all_children)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- /proc sampling

_CLK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds) from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK


def process_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                parents.setdefault(st[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo and len(tree) < 10_000:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    return sum(st[1] for st in map(_stat, pids) if st)


class Sampler:
    """Peak RSS (sampled every 100 ms) and CPU% of a process tree while a run lasts."""

    def __init__(self, pid: int) -> None:
        self.pids = process_tree(pid)
        self.peak = rss_bytes(self.pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_bytes(self.pids))

    def __enter__(self) -> Sampler:
        self._t0, self._cpu0 = time.monotonic(), cpu_seconds(self.pids)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        wall = time.monotonic() - self._t0
        self.cpu_pct = 100.0 * (cpu_seconds(self.pids) - self._cpu0) / wall if wall > 0 else 0.0


# --------------------------------------------------------------------------- results


@dataclass
class RunResult:
    requests: int = 0
    duration_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    p50_us: float | None = None
    p99_us: float | None = None
    rss_peak: int = 0
    cpu_pct: float = 0.0
    failure: str = ""  # the load generator produced no result
    proto: str = ""  # h2load's "Application protocol"

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Cell:
    """One server x one scenario: its measured rounds, or why it did not run."""

    runs: list[RunResult] = field(default_factory=list)
    skipped: str = ""
    check: str = ""  # what the pre-flight request found wrong, if anything

    def median(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.runs if not r.failure and getattr(r, attr) is not None]
        return statistics.median(vals) if vals else None

    @property
    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            for k, v in r.errors.items():
                if v:
                    out[k] = out.get(k, 0) + v
            if r.failure:
                out["no result"] = out.get("no result", 0) + 1
        return out


@dataclass
class Report:
    command: str
    servers: list[str]
    scenarios: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    server_skips: dict[str, str] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    memory: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    profile: str = ""
    started: str = ""
    elapsed_s: float = 0.0
    compressors: dict = field(default_factory=dict)  # compressor_costs()
    flames: list[tuple[str, str, str]] = field(default_factory=list)  # (scenario, svg path, why not made)
    out_dir: str = ""  # where the Markdown report goes (links are relative to it)


# --------------------------------------------------------------------------- load generators

_BENCH_JSON = re.compile(r"^BENCH_JSON (\{.*\})\s*$", re.M)


def parse_wrk_output(text: str) -> RunResult:
    """The JSON line printed by tools/bench_lua/report.lua's done() hook."""
    m = _BENCH_JSON.search(text)
    if not m:
        raise ValueError("no BENCH_JSON line in wrk output: " + text.strip()[-300:])
    d = json.loads(m.group(1))
    lat = d.get("latency_us", {})
    if lat.get("p99") == 0 and lat.get("p50"):
        lat["p99"] = None  # wrk's histogram gives 0 when pipelining skews its counts: not a measurement
    return RunResult(requests=int(d["requests"]), duration_s=d["duration_us"] / 1e6,
                     errors={k: int(v) for k, v in d.get("errors", {}).items()},
                     p50_us=lat.get("p50"), p99_us=lat.get("p99"))


def parse_h2load_output(text: str) -> RunResult:
    """h2load's summary: it exits 0 even when every request failed, so read the counts.

    h2load's ``failed`` = ``errored`` (stream or connection failures, timeouts
    included) + responses ≥ 400; they are reported here once each, as
    ``status`` (4xx/5xx), ``errored`` (not timeouts) and ``timeout``. p50 is
    h2load's mean and p99 is unknown unless ``latency_from_log`` fills them in.
    """
    fin = re.search(r"finished in ([\d.]+)(m?s)", text)
    reqs = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (fin and reqs and codes):
        raise ValueError("unrecognised h2load output: " + text.strip()[-300:])
    secs = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    _total, _started, done, _ok, _failed, errored, timeout = map(int, reqs.groups())
    _c2, _c3, c4, c5 = map(int, codes.groups())
    lat = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    mean = None
    if lat and done:
        mean = float(lat.group(5)) * {"us": 1, "ms": 1e3, "s": 1e6}[lat.group(6)]
    proto = re.search(r"^Application protocol: (\S+)", text, re.M)
    return RunResult(requests=done, duration_s=secs,
                     errors={"status": c4 + c5, "errored": errored - timeout, "timeout": timeout},
                     p50_us=mean, p99_us=None, proto=proto.group(1) if proto else "")


def latency_from_log(path: Path) -> tuple[float, float] | None:
    """p50/p99 in µs from an h2load ``--log-file`` (start µs, status, µs to end of response)."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return None
    lat = sorted(int(f[2]) for f in (line.split(b"\t") for line in lines) if len(f) >= 3 and f[1] != b"-1")
    if not lat:
        return None
    return (float(lat[min(len(lat) - 1, int(0.5 * len(lat)))]),
            float(lat[min(len(lat) - 1, int(0.99 * len(lat)))]))


def _run_client(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    with tempfile.TemporaryFile() as out:
        proc = _spawn(argv, cpu=CLIENT_CPU, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = -1
        finally:
            stop_process(proc, grace=1.0)
        out.seek(0)
        return rc, out.read().decode(errors="replace")


def run_load(sc: Scenario, port: int, *, duration: int, connections: int) -> RunResult:
    env = {**os.environ, **sc.env}
    limit = duration + 30
    if sc.client == "wrk":
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", sc.lua]
        for h in sc.headers:
            argv += ["-H", h]
        argv.append(f"{sc.scheme}://{HOST}:{port}{sc.path}")
        rc, text = _run_client(argv, LUA, env, limit)
        parse = parse_wrk_output
    elif sc.client == "h2load":
        return run_h2load(sc, port, duration=duration, connections=connections, env=env)
    elif sc.client == "ws":
        if not ws_client_argv:
            return RunResult(failure="no WebSocket client: " + (ws_client_why or "none chosen"))
        argv = [*ws_client_argv, "--url", f"ws://{HOST}:{port}{sc.path}",
                "--connections", str(connections), "--duration", str(duration), "--size", "1024"]
        rc, text = _run_client(argv, BENCH_WS, env, limit)
        parse = parse_wrk_output
    else:
        argv = [PY, str(Path(__file__).resolve()), "--client", sc.client, "--port", str(port), "--path", sc.path,
                "--connections", str(connections), "--duration", str(duration)]
        rc, text = _run_client(argv, ROOT, env, limit)
        parse = parse_wrk_output
    try:
        return parse(text)
    except (ValueError, KeyError) as exc:
        return RunResult(failure=f"rc={rc}: {exc}")


def h2load_argv(sc: Scenario, port: int, *, duration: int, connections: int, log_file: Path,
                body_file: Path | None) -> list[str]:
    argv = ["h2load", "-t1", f"-c{sc.connections or connections}", f"-m{sc.streams}", "-D", str(duration),
            f"--log-file={log_file}"]
    for h in sc.headers:
        argv += ["-H", h]
    if body_file is not None:
        argv += ["-d", str(body_file)]  # h2load sends it as a POST body with content-length
    return [*argv, f"{sc.scheme}://{HOST}:{port}{sc.path}"]


def run_h2load(sc: Scenario, port: int, *, duration: int, connections: int, env: dict[str, str]) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="rr-h2load-") as tmp:
        log_file = Path(tmp) / "requests.tsv"
        body_file = None
        if sc.body:
            body_file = Path(tmp) / "body"
            body_file.write_bytes(sc.body)
        argv = h2load_argv(sc, port, duration=duration, connections=connections, log_file=log_file,
                           body_file=body_file)
        rc, text = _run_client(argv, Path(tmp), env, duration + 30)
        try:
            res = parse_h2load_output(text)
        except ValueError as exc:
            return RunResult(failure=f"rc={rc}: {exc}")
        if res.proto != sc.h2_proto:
            res.failure = f"h2load negotiated {res.proto or 'no protocol'}, not {sc.h2_proto}"
        elif res.requests == 0:
            res.failure = "h2load completed no request: " + " ".join(text.strip()[-200:].split())
        pct = latency_from_log(log_file)
        if pct:
            res.p50_us, res.p99_us = pct
        return res


# --------------------------------------------------------------------------- WebSocket clients (wsbench, node ws)

# The client argv prefix run() chose for the WebSocket rows (empty: none could run, ws_client_why says why).
ws_client_argv: list[str] = []
ws_client_why = ""


def wsbench_unavailable() -> str | None:
    """Why tools/bench_ws/wsbench.c cannot run (None when it can): built into tools/bench_ws/build/
    when the binary is missing or older than the source (``bench_common.build_c``)."""
    return common.build_c(WSBENCH_SRC, WSBENCH_BIN)


def choose_ws_client(which: str = "auto") -> str:
    """Set ws_client_argv for the WebSocket rows and say which client it is, for the report's load line:
    wsbench when it builds (``which`` auto or wsbench), else node's ``ws`` (auto or node)."""
    global ws_client_argv, ws_client_why
    why: list[str] = []
    if which in ("auto", "wsbench"):
        no = wsbench_unavailable()
        if no is None:
            ws_client_argv, ws_client_why = [str(WSBENCH_BIN)], ""
            return f"wsbench (tools/bench_ws/wsbench.c: C, one thread, epoll; {_cc_version()})"
        why.append(f"wsbench: {no}")
    if which in ("auto", "node"):
        no = node_ws_unavailable()
        if no is None:
            ws_client_argv, ws_client_why = ["node", str(BENCH_WS / "client.js")], ""
            return f"node's `ws` package ({_node_ws_version()}; tools/bench_ws/client.js)"
        why.append(f"node ws: {no}")
    ws_client_argv, ws_client_why = [], "; ".join(why)
    return "none (" + ws_client_why + ")"


def _cc_version() -> str:
    cc = os.environ.get("CC") or "cc"
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=10).stdout
        return f"built with `{cc} -O2`, " + (out.strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.TimeoutExpired):
        return f"built earlier (no `{cc}` now)"


def _node_ws_version() -> str:
    try:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        lock = json.loads((BENCH_WS / "package-lock.json").read_text())
        return f"node {node}, ws {lock['packages']['node_modules/ws']['version']}"
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError):
        return "absent"


def node_ws_unavailable() -> str | None:
    """Why tools/bench_ws/client.js cannot run (None when it can): installs its locked
    ``ws`` package with ``npm ci`` when ``node_modules`` is missing (once, bounded)."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "node/npm are not installed (apt-get install -y nodejs npm)"
    if (BENCH_WS / "node_modules" / "ws" / "package.json").exists():
        return None
    try:
        out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH_WS, capture_output=True,
                             text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "npm ci in tools/bench_ws took over 300 s"
    if out.returncode:
        return "npm ci in tools/bench_ws failed: " + ((out.stderr or out.stdout).strip().splitlines() or ["?"])[-1]
    return None


# --------------------------------------------------------------------------- own client (SSE)


def own_client(kind: str, port: int, path: str, connections: int, duration: float) -> dict:
    """Closed-loop gevent client: ``connections`` greenlets, each on its own connection."""
    import gevent
    from gevent import socket as gsocket

    deadline = time.monotonic() + duration
    lat: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    count = [0]

    class Conn:
        def __init__(self) -> None:
            self.sock = gsocket.create_connection((HOST, port), timeout=5)
            self.buf = b""

        def fill(self) -> None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("closed by server")
            self.buf += data

        def head(self) -> bytes:
            while b"\r\n\r\n" not in self.buf:
                self.fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            return head

    def sse_worker() -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            conn = Conn()
            conn.sock.sendall(request)
            if not conn.head().startswith(b"HTTP/1.1 200"):
                errors["status"] += 1
                conn.sock.close()
                return
            while common.SSE_END not in conn.buf:
                conn.fill()
            conn.sock.close()
            events = conn.buf.count(b"event: tick")
            if events != common.SSE_EVENTS:
                errors["status"] += 1
            lat.append(time.perf_counter() - t0)
            count[0] += events

    def guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except TimeoutError:
            errors["timeout"] += 1
        except ConnectionRefusedError:
            errors["connect"] += 1
        except OSError:
            errors["read"] += 1

    worker = sse_worker
    t0 = time.monotonic()
    jobs = [gevent.spawn(guard, worker) for _ in range(connections)]
    gevent.joinall(jobs, timeout=duration + 15)
    gevent.killall(jobs, timeout=2)
    elapsed = min(time.monotonic(), deadline) - t0
    lat.sort()

    def pct(q: float) -> int:
        return int(lat[min(len(lat) - 1, round(q * len(lat)))] * 1e6) if lat else 0

    return {"requests": count[0], "duration_us": int(elapsed * 1e6), "bytes": 0, "errors": errors,
            "latency_us": {"min": pct(0), "mean": statistics.fmean(lat) * 1e6 if lat else 0, "p50": pct(0.5),
                           "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)}}


# --------------------------------------------------------------------------- running servers


@dataclass
class Running:
    spec: ServerSpec
    proc: subprocess.Popen
    ports: dict[str, int]
    log: Path


def _port(r: Running, sc: Scenario) -> int:
    return r.ports.get(sc.port_key, r.ports["main"])


def _client_tls(alpn: str) -> ssl.SSLContext:
    """A client context for the bench's own self-signed certificate (not verified), offering ``alpn``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def _connection(sc_proto: str, port: int, timeout: float) -> http.client.HTTPConnection:
    if sc_proto == "tls":
        return http.client.HTTPSConnection(HOST, port, timeout=timeout, context=_client_tls("http/1.1"))
    return http.client.HTTPConnection(HOST, port, timeout=timeout)


def _answers_tls(port: int, timeout: float = 1.0) -> bool:
    return _answers(port, timeout, proto="tls")


def _answers(port: int, timeout: float = 1.0, proto: str = "h1") -> bool:
    try:
        conn = _connection(proto, port, timeout)
        conn.request("GET", "/")
        conn.getresponse().read()
        conn.close()
        return True
    except (OSError, http.client.HTTPException):
        return False


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _answers_h2(port: int, timeout: float = 1.0) -> bool:
    """Does the port answer the h2c preface with a SETTINGS frame (the server's first frame)?"""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(H2_PREFACE + _EMPTY_SETTINGS)
            head = b""
            while len(head) < 9:
                data = s.recv(9 - len(head))
                if not data:
                    return False
                head += data
            return head[3] == 0x04 and head[5:9] == b"\0\0\0\0"
    except OSError:
        return False


def rr_unavailable() -> str | None:
    """Why rr cannot serve the bench app right now (None when it can)."""
    probe = "import rr; rr.start_listener; from rr import resp; resp.Response; resp.Stream"
    try:
        out = subprocess.run([PY, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "importing rr took over 30 s"
    if out.returncode:
        return "rr does not import: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return None


def server_unavailable(spec: ServerSpec) -> str | None:
    if spec.name == "rr":
        return rr_unavailable()
    if spec.needs and not (BIN / spec.needs).exists():
        return f"{spec.needs} is not installed (pip install -e '.[bench]')"
    return None


def start_servers(specs: list[ServerSpec], logdir: Path, *, ready_timeout: float = 30.0,
                  profile: dict[str, Path] | None = None,
                  proto: str = "h1") -> tuple[dict[str, Running], dict[str, str]]:
    """Start every server's ``proto`` process at once, then poll each port until it answers (bounded)."""
    running: dict[str, Running] = {}
    skips: dict[str, str] = {}
    answers = {"h2": _answers_h2, "grpc": _answers_h2, "tls": _answers_tls}.get(proto, _answers)
    for spec in specs:
        reason = server_unavailable(spec)
        if reason:
            skips[spec.name] = reason
            continue
        make_argv, port_names = spec.launch(proto)
        ports = {key: free_port() for key in port_names}
        argv = make_argv(ports)
        if profile and spec.name in profile and argv[0] == PY:
            argv = [PY, "-m", "cProfile", "-o", str(profile[spec.name]), *argv[1:]]
        log = logdir / f"{spec.name}.{proto}.log"
        with open(log, "wb") as fh:
            proc = _spawn(argv, cpu=SERVER_CPU, cwd=spec.cwd, env=spec.env() if spec.env else None,
                          stdout=fh, stderr=subprocess.STDOUT)
        running[spec.name] = Running(spec, proc, ports, log)
    deadline = time.monotonic() + ready_timeout
    pending = dict(running)
    while pending and time.monotonic() < deadline:
        for name, r in list(pending.items()):
            if r.proc.poll() is not None:
                skips[name] = f"exited with {r.proc.returncode} at start: {_tail(r.log)}"
            elif all(answers(p, 0.5) for p in r.ports.values()):
                del pending[name]
                continue
            else:
                continue
            del pending[name]
            running.pop(name)
            stop_process(r.proc)
        if pending:
            time.sleep(0.1)
    for name, r in pending.items():
        skips[name] = f"did not answer within {ready_timeout:.0f} s: {_tail(r.log)}"
        running.pop(name)
        stop_process(r.proc)
    return running, skips


def _tail(path: Path, n: int = 300) -> str:
    try:
        return " ".join(path.read_text(errors="replace").strip()[-n:].split())
    except OSError:
        return ""


def preflight(sc: Scenario, port: int) -> str:
    """One request with http.client: does this server answer this scenario as expected?"""
    if sc.check is None:
        return ""
    if sc.client == "h2load":
        return preflight_h2(sc, port)
    headers = dict(h.split(": ", 1) for h in sc.headers)
    if sc.body:
        headers.setdefault("Content-Type", "application/octet-stream")
    try:
        conn = _connection(sc.proto, port, 10)
        conn.request(sc.method, sc.path, body=sc.body or None, headers=headers)
        r = conn.getresponse()
        body = r.read()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return f"pre-flight request failed: {exc!r}"
    return sc.check(r.status, {k.lower(): v for k, v in r.getheaders()}, body) or ""


def h2_request(sc: Scenario, port: int, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request over h2 (the ``h2`` state machine): status, headers (trailers merged in), body.

    h2c with prior knowledge, or h2 negotiated by ALPN for a tls scenario.
    """
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    headers = [(":method", sc.method), (":scheme", sc.scheme), (":authority", f"{HOST}:{port}"), (":path", sc.path)]
    headers += [(k.lower(), v) for k, v in (h.split(": ", 1) for h in sc.headers)]
    if sc.body and sc.proto != "grpc":
        headers.append(("content-length", str(len(sc.body))))
    conn.send_headers(1, headers, end_stream=not sc.body)
    for i in range(0, len(sc.body), 16384):
        conn.send_data(1, sc.body[i:i + 16384], end_stream=i + 16384 >= len(sc.body))
    status, resp_headers, body = 0, {}, bytearray()
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((HOST, port), timeout=timeout))
        if sc.proto == "tls":
            sock = stack.enter_context(_client_tls("h2").wrap_socket(sock, server_hostname="localhost"))
            if sock.selected_alpn_protocol() != "h2":
                raise ConnectionError(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        sock.sendall(conn.data_to_send())
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the response ended")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    resp_headers = {k: v for k, v in ev.headers if not k.startswith(":")}
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.TrailersReceived):
                    resp_headers.update(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    return status, resp_headers, bytes(body)
                elif isinstance(ev, h2.events.StreamReset):
                    raise ConnectionError(f"stream reset, error code {ev.error_code}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY, error code {ev.error_code}")
            sock.sendall(conn.data_to_send())
    raise TimeoutError(f"no complete response within {timeout:.0f} s")


def preflight_h2(sc: Scenario, port: int) -> str:
    try:
        status, headers, body = h2_request(sc, port)
    except ImportError:
        return "pre-flight needs the h2 package (an rr dependency)"
    except Exception as exc:  # h2's ProtocolError when the peer is not speaking h2, socket errors
        return f"{sc.h2_proto} pre-flight request failed: {exc!r}"
    return (sc.check(status, headers, body) or "") if sc.check else ""


# --------------------------------------------------------------------------- the bench


def run_matrix(report: Report, running: dict[str, Running], scenarios: list[Scenario], *, duration: int,
               rounds: int, warmup: int, connections: int, log: Callable[[str], None] = print,
               skips: dict[str, str] | None = None, flame: Path | None = None) -> None:
    """Run ``scenarios`` against ``running``; ``skips``: servers of this phase that did not start, and why.

    With ``flame`` (a directory), rr then serves one more run of each scenario,
    not counted in the table, under ``py-spy record``: ``<flame>/rr-<scenario>.svg``.
    """
    skips = report.server_skips if skips is None else skips
    for sc in scenarios:
        active: list[Running] = []
        for name in report.servers:
            cell = report.cells.setdefault((sc.name, name), Cell())
            reason = SERVERS[name].why_not(sc)
            if reason:
                cell.skipped = reason
                continue
            if name not in running:
                cell.skipped = f"server did not start: {skips[name]}" if name in skips else "server did not start"
                continue
            r = running[name]
            cell.check = preflight(sc, _port(r, sc))
            active.append(r)
        if not active:
            continue
        if warmup > 0:
            for r in active:
                run_load(sc, _port(r, sc), duration=warmup, connections=connections)
        for rnd in range(rounds):
            for r in active:
                with Sampler(r.proc.pid) as smp:
                    res = run_load(sc, _port(r, sc), duration=duration, connections=connections)
                res.rss_peak, res.cpu_pct = smp.peak, smp.cpu_pct
                report.cells[(sc.name, r.spec.name)].runs.append(res)
                errs = f", {res.error_count} errors" if res.error_count else ""
                log(f"  {sc.name:<26} {r.spec.name:<12} round {rnd + 1}/{rounds}: "
                    f"{res.failure or f'{res.rate:,.0f} {sc.unit}'}{errs}")
        if flame is not None and "rr" in running and any(r.spec.name == "rr" for r in active):
            out = flame / f"rr-{sc.name}.svg"
            why = flame_run(sc, running["rr"], out, duration=duration, connections=connections)
            report.flames.append((sc.name, str(out), why))
            log(f"  {sc.name:<26} rr           flame graph: {why or out}")


COMPRESSED = {"gzip_response": "gzip", "gzip_middleware": "gzip", "brotli_middleware": "br",
              "zstd_middleware": "zstd"}

# Timed in a child process pinned to the server CPU: each coding as the middlewares are
# configured (zlib level 6 with a gzip wrapper, brotli quality 4, zstd level 3), on the payload.
_COMPRESSOR_CODE = r"""
import json, sys, time, zlib
sys.path.insert(0, sys.argv[1])
import bench_common as c
data = c.GZIP_SOURCE
# As in a server that has run a while: one large allocation freed raises glibc's dynamic mmap
# and trim thresholds. Without it, each compressobj's ~270 KB of state is returned to the OS
# when freed and faulted back in at the next call: zlib level 6 timed 87 us here against
# 44 us in the servers' own processes (docs/bench_rr.md).
_settle = bytes(1 << 20)
del _settle
def gz(mod=zlib):
    z = mod.compressobj(c.GZIP_LEVEL, mod.DEFLATED, 31)
    return z.compress(data) + z.flush()
coders = {"gzip": gz}
try:
    from zlib_ng import zlib_ng
    coders["gzip-ng"] = lambda: gz(zlib_ng)
except ImportError:
    pass
try:
    import brotli
    coders["br"] = lambda: brotli.compress(data, quality=c.BROTLI_QUALITY)
except ImportError:
    pass
try:
    import zstandard
    zc = zstandard.ZstdCompressor(level=c.ZSTD_LEVEL)
    coders["zstd"] = lambda: zc.compress(data)
except ImportError:
    pass
out = {}
for name, fn in coders.items():
    size = len(fn())
    n, t0 = 0, time.process_time()  # CPU time, like the servers' CPU per request
    while time.process_time() - t0 < 0.5:
        fn(); n += 1
    out[name] = {"us": (time.process_time() - t0) / n * 1e6, "size": size}
    # the fastest of 5 slices of 0.2 s: a busy neighbour only ever adds time
    best = None
    for _ in range(5):
        n, t0 = 0, time.process_time()
        while time.process_time() - t0 < 0.2:
            fn(); n += 1
        us = (time.process_time() - t0) / n * 1e6
        best = us if best is None else min(best, us)
    out[name]["us"] = best
print(json.dumps({"source": len(data), "codings": out}))
"""


def compressor_costs(log: Callable[[str], None] = print) -> dict:
    """The compressor alone on the compression rows' payload: µs per body and coded size, per coding."""
    argv = [PY, "-c", _COMPRESSOR_CODE, str(APPS)]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", SERVER_CPU, *argv]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        costs = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        log(f"  compressor timing failed: {exc!r}")
        return {}
    for name, c in costs["codings"].items():
        log(f"  compressor alone: {name} {c['us']:.1f} µs per body, {costs['source']:,} -> {c['size']:,} B")
    return costs


def make_cert(directory: Path) -> dict[str, str]:
    """A throwaway self-signed P-256 certificate for 127.0.0.1 (the key in PKCS#8, as granian wants)."""
    cert, key = directory / "bench-cert.pem", directory / "bench-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return {"cert": str(cert), "key": str(key)}


def flame_run(sc: Scenario, r: Running, out: Path, *, duration: int, connections: int) -> str:
    """One more run of ``sc`` with py-spy sampling the server's process; '' or why no graph was made."""
    spy = BIN / "py-spy"
    if not spy.exists():
        return "py-spy is not installed (pip install -e '.[bench]')"
    with tempfile.TemporaryFile() as err:
        # Pinned with the load generator: py-spy's own work stays off the server's core.
        proc = _spawn([str(spy), "record", "--pid", str(r.proc.pid), "--duration", str(duration), "--rate", "200",
                       "--format", "flamegraph", "--output", str(out)], cpu=CLIENT_CPU, cwd=ROOT,
                      stdout=err, stderr=subprocess.STDOUT)
        try:
            run_load(sc, _port(r, sc), duration=duration, connections=connections)
            proc.wait(duration + 30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_process(proc, grace=5.0)
        if proc.returncode != 0 or not out.exists():
            err.seek(0)
            return f"py-spy failed (rc={proc.returncode}): " + " ".join(err.read().decode(errors="replace").split())[-200:]
    return ""


def memory_test(report: Report, running: dict[str, Running], counts: list[int], *, budget: float = 90.0,
                log: Callable[[str], None] = print) -> None:
    """Open N idle keep-alive connections (one GET each), then read the server's RSS."""
    raise_nofile(max(counts) + 1024)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for name, r in running.items():
        port = r.ports["main"]
        for n in counts:
            pids = process_tree(r.proc.pid)
            before = rss_bytes(pids)
            socks: list[socket.socket] = []
            deadline = time.monotonic() + budget
            failed = ""
            try:
                while len(socks) < n and time.monotonic() < deadline:
                    s = socket.create_connection((HOST, port), timeout=5)
                    socks.append(s)
                    s.sendall(request)
                    if not s.recv(65536):
                        failed = f"closed after {len(socks)} connections"
                        break
            except OSError as exc:
                failed = f"{exc.__class__.__name__} after {len(socks)} connections"
            time.sleep(1.0)
            pids = process_tree(r.proc.pid)
            after = rss_bytes(pids)
            still_open = 0
            for s in socks:
                s.setblocking(False)
                try:
                    still_open += s.recv(1) != b""
                except BlockingIOError:
                    still_open += 1
                except OSError:
                    pass
            for s in socks:
                s.close()
            per = (after - before) / still_open if still_open else 0.0
            report.memory.setdefault(name, {})[n] = {"opened": len(socks), "open": still_open,
                                                     "before": before, "after": after, "per_conn": per,
                                                     "note": failed}
            log(f"  memory {name:<12} N={n}: {still_open} open, {before / 2**20:.1f} -> "
                f"{after / 2**20:.1f} MiB, {per / 1024:.1f} KiB/conn {failed}")
            time.sleep(1.0)


def collect_env() -> dict[str, str]:
    env: dict[str, str] = {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Model name:\s*(.+)", lscpu)
        env["cpu"] = f"{m.group(1).strip() if m else '?'}, {os.cpu_count()} CPUs"
    except (OSError, subprocess.TimeoutExpired):
        env["cpu"] = f"? ({os.cpu_count()} CPUs)"
    env["kernel"] = platform.release()
    env["python"] = subprocess.run([PY, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                                   text=True, timeout=30).stdout.strip()
    code = ("import importlib.metadata as m\n"
            "for p in ['gevent','greenlet','uvicorn','httptools','uvloop','h11','hypercorn','gunicorn','granian',"
            "'websockets','wsproto','h2','starlette','grpcio','flask','brotli','zstandard','py-spy']:\n"
            "    try: print(p, m.version(p))\n"
            "    except Exception: print(p, '-')\n")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30).stdout
    env["packages"] = ", ".join(line.replace(" ", " ") for line in out.strip().splitlines())
    for tool, flag in (("wrk", "-v"), ("h2load", "--version")):
        try:
            txt = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
            env[tool] = " ".join((txt.stdout + txt.stderr).strip().splitlines()[0].split()[:2])
        except (OSError, subprocess.TimeoutExpired, IndexError):
            env[tool] = "absent"
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip()
        # Others edit rr/ while benchmarks run: say when the numbers are not exactly the commit's.
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rr"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
        if dirty:
            env["commit"] += f" (+ uncommitted changes in {', '.join(dirty)})"
    except (OSError, subprocess.TimeoutExpired):
        env["commit"] = "?"
    return env


# --------------------------------------------------------------------------- rendering


def _k(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:,.0f}"


def _ms(us: float | None) -> str:
    if us is None:
        return "—"
    return f"{us / 1000:.2f}" if us < 10_000 else f"{us / 1000:.0f}"


def baseline_of(report: Report) -> str | None:
    """Ratios are rr / peer; when rr did not run, the floor stands in."""
    for name in ("rr", "floor"):
        if name in report.servers and name not in report.server_skips:
            return name
    return None


def render_markdown(report: Report) -> str:
    base = baseline_of(report)
    servers = report.servers
    lines: list[str] = ["# rr benchmark results", ""]
    s = report.settings
    lines += [f"- command: `{report.command}`",
              f"- date: {report.started} (took {report.elapsed_s / 60:.1f} min); commit {report.env.get('commit', '?')}",
              f"- machine: {report.env.get('cpu', '?')}, Linux {report.env.get('kernel', '?')}; "
              f"Python {report.env.get('python', '?')}",
              f"- packages: {report.env.get('packages', '?')}",
              f"- load: {report.env.get('wrk', 'wrk ?')} `-t1 -c{s.get('connections')}`; h2load "
              f"({report.env.get('h2load', '?')}) for h2; WebSocket: {report.env.get('ws_client', 'not run')}, "
              f"{s.get('connections')} connections, "
              "one 1 KiB message in flight each; SSE: this harness's own gevent client (one greenlet per "
              "connection), which is slower than wrk and may be the bottleneck for that row",
              f"- method: each server one OS process with one worker, pinned to CPU {SERVER_CPU} (`taskset`); the "
              f"load generator pinned to CPU {CLIENT_CPU}; {s.get('warmup')} s warm-up per server and scenario, "
              f"then {s.get('rounds')} interleaved rounds of {s.get('duration')} s; medians shown; errors summed "
              "over all rounds; RSS and CPU% are of the server's whole process tree (/proc)",
              ""]
    skips = {n: r for n, r in report.server_skips.items() if n in servers}
    if skips:
        lines += ["Servers that did not run:", ""]
        lines += [f"- **{n}**: {r}" for n, r in skips.items()]
        lines.append("")
    for proto in (*PROTOS, "h3"):
        rows = [sc for sc in (SCENARIOS[n] for n in report.scenarios) if sc.proto == proto]
        if not rows:
            continue
        # A server with no row of this protocol (e.g. no h2c at all) gets no column, only a line.
        shown, absent = [], []
        for n in servers:
            if n in report.server_skips:
                continue
            cells = [report.cells.get((sc.name, n), Cell()) for sc in rows]
            if all(c.skipped and not c.runs and SERVERS[n].why_not(sc) for c, sc in zip(cells, rows, strict=True)):
                absent.append(f"{n} ({cells[0].skipped})")
            else:
                shown.append(n)
        title = {"h1": "HTTP/1.1", "h2": "HTTP/2 (h2c)", "h3": "HTTP/3", "tls": "TLS (HTTP/1.1 and HTTP/2)",
                 "grpc": "gRPC (h2c)", "flask": "A Flask app (WSGI)"}[proto]
        lines += [f"## {title}", ""]
        h2_rows = [sc for sc in rows if sc.client == "h2load"]
        if proto == "tls":
            lines += ["Over TLS with a self-signed P-256 certificate made for the run: the `*_tls` rows are "
                      "HTTP/1.1 from `wrk` over https, the `*_h2_tls` rows HTTP/2 negotiated by ALPN from "
                      "h2load. One server process serves both: rr `rr_app.py --tls` (`protocols: "
                      "[\"http2\", \"http1\"]`), granian `--http auto` with its `--ssl-*` options, hypercorn "
                      "`--certfile/--keyfile`, uvicorn `--ssl-*` (HTTP/1.1 only).", ""]
        elif proto == "grpc":
            lines += ["HttpArena's BenchmarkService (`tools/bench_apps/grpc_bench.py serve KIND`) on rr "
                      "(`rr.contrib.grpc`), grpcio's `grpc.server` with an 8-thread pool and `grpc.aio.server`; "
                      "the same h2load client for every server, sending a fixed length-prefixed request body "
                      "(`-d`) with `content-type: application/grpc` and `te: trailers`. h2load counts HTTP "
                      "statuses only (a failed call is an HTTP 200), so each row's pre-flight call checks "
                      "`grpc-status: 0` and the reply messages; `✗` marks a server that failed it.", ""]
        elif proto == "flask":
            lines += ["The Flask hello app (`tools/bench_apps/flask_hello.py`, GET /hello) under rr's own CLI "
                      "(`python -m rr --config rr_flask.toml flask_hello:app`, through `rr.contrib.wsgi`), "
                      "`gunicorn -k gevent` and `gevent.pywsgi`; wrk as for HTTP/1.1. `raw` is the WSGI floor "
                      "(`tools/bench_apps/wsgi_floor.py`): the raw floor's socket loop calling the same app through "
                      "the least WSGI bridge, no checks — the ceiling of a gevent server running this app.", ""]
        if proto == "h2":
            lines += ["Cleartext HTTP/2 with prior knowledge, load from h2load (one thread); p50/p99 from its "
                      "per-request log. Each server's h2 phase is its own process: rr `rr_app.py --h2` "
                      "(`protocols: [\"http2\"]`), granian `--http 2`, hypercorn its usual command. Loads:", ""]
        if h2_rows:
            if proto != "h2":
                lines += ["h2load loads:", ""]
            lines += [f"- {sc.name}: {sc.load_text(int(s.get('connections') or 50))}" for sc in h2_rows]
            protos = sorted({r.proto or "?" for sc in h2_rows for n in shown
                             for r in report.cells.get((sc.name, n), Cell()).runs})
            want = h2_rows[0].h2_proto
            lines += ["", f"h2load's negotiated protocol over all runs: {', '.join(protos) or '—'}; every row "
                      f"also passed a pre-flight {want} request (status and body checked) unless marked `✗`.", ""]
        if absent:
            lines += [f"Not in this table: {'; '.join(absent)}.", ""]
        ratio_note = (f"`×` = {base} ÷ that server (above 1: {base} is faster)" if base else "no baseline ran")
        if base == "floor":
            ratio_note += "; rr did not run, so the floor stands in as the baseline"
        lines += [f"Throughput, median {', '.join(sorted({sc.unit for sc in rows}))}; {ratio_note}.", ""]
        lines.append("| scenario | " + " | ".join(shown) + " |")
        lines.append("|---|" + "---:|" * len(shown))
        footnotes: list[str] = []
        for sc in rows:
            cells = []
            base_rate = report.cells.get((sc.name, base), Cell()).median("rate") if base else None
            for n in shown:
                cell = report.cells.get((sc.name, n), Cell())
                rate = cell.median("rate")
                if cell.skipped or rate is None:
                    reason = cell.skipped or "no result"
                    cells.append("—")
                    footnotes.append(f"{sc.name} / {n}: {reason}")
                    continue
                txt = _k(rate)
                if base and n != base and base_rate and rate:
                    txt += f" ({base_rate / rate:.2f}×)"
                if cell.errors:
                    txt += " ⚠"
                if cell.check:
                    txt += " ✗"
                    footnotes.append(f"{sc.name} / {n}: pre-flight check: {cell.check}")
                cells.append(txt)
            unit = "" if sc.unit == "req/s" else f" ({sc.unit})"
            lines.append(f"| {sc.name}{unit} | " + " | ".join(cells) + " |")
        lines.append("")
        noted = [sc for sc in rows if sc.note and sc not in h2_rows]
        if noted:
            lines += ["What some rows do:", ""] + [f"- {sc.name}: {sc.note}" for sc in noted] + [""]
        lines += ["Latency p50 / p99, ms (median over rounds)" + (
            "; h2load rows from its `--log-file` (time from request start to end of response)" if h2_rows else "")
            + ".", ""]
        lines.append("| scenario | " + " | ".join(shown) + " |")
        lines.append("|---|" + "---:|" * len(shown))
        for sc in rows:
            vals = []
            for n in shown:
                cell = report.cells.get((sc.name, n), Cell())
                vals.append("—" if not cell.runs else f"{_ms(cell.median('p50_us'))} / {_ms(cell.median('p99_us'))}")
            lines.append(f"| {sc.name} | " + " | ".join(vals) + " |")
        lines.append("")
        lines += ["Server process: peak RSS MiB / CPU % (median over rounds).", ""]
        lines.append("| scenario | " + " | ".join(shown) + " |")
        lines.append("|---|" + "---:|" * len(shown))
        for sc in rows:
            vals = []
            for n in shown:
                cell = report.cells.get((sc.name, n), Cell())
                if not cell.runs:
                    vals.append("—")
                    continue
                peak = max(r.rss_peak for r in cell.runs) / 2**20
                vals.append(f"{peak:.0f} / {cell.median('cpu_pct') or 0:.0f}")
            lines.append(f"| {sc.name} | " + " | ".join(vals) + " |")
        lines.append("")
        errs = [(sc.name, n, report.cells[(sc.name, n)].errors) for sc in rows for n in shown
                if (sc.name, n) in report.cells and report.cells[(sc.name, n)].errors]
        lines += ["Errors (⚠ above; summed over all rounds; `status` = responses ≥ 400" + (
            ", `errored` = streams or connections that failed, `timeout`, `no result` = a run that completed "
            f"no request or did not negotiate {h2_rows[0].h2_proto}" if h2_rows
            else ", from wrk or the own client's checks")
            + "):", ""]
        if errs:
            for scn, n, e in errs:
                lines.append(f"- {scn} / {n}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(e.items())))
            failures = [(sc.name, n, r.failure) for sc in rows for n in shown
                        for r in report.cells.get((sc.name, n), Cell()).runs if r.failure]
            for scn, n, f in failures[:20]:
                lines.append(f"  - {scn} / {n}: {f}")
        else:
            lines.append("- none: every response in every run was 2xx, and no socket errors")
        lines.append("")
        if footnotes:
            lines += ["`—` and `✗`:", ""] + [f"- {f}" for f in footnotes] + [""]
        lines += compressor_lines(report, rows, shown)
    if report.flames:
        lines += ["## Flame graphs (`--flame`)", "",
                  "py-spy sampling rr (200 Hz) through one extra run of each scenario, not counted above:", ""]
        lines += [f"- {scn}: " + (f"not made: {why}" if why else
                                  f"[{Path(svg).name}]({os.path.relpath(svg, report.out_dir or '.')})")
                  for scn, svg, why in report.flames]
        lines.append("")
    if report.memory:
        counts = sorted({n for m in report.memory.values() for n in m})
        lines += ["## Idle keep-alive connections (`--memory`)", "",
                  "Server RSS growth per idle keep-alive connection (one GET each, then idle), KiB; "
                  "`open` = connections still open when RSS was read.", ""]
        lines.append("| server | " + " | ".join(f"N={n}: KiB/conn (open, RSS MiB)" for n in counts) + " |")
        lines.append("|---|" + "---:|" * len(counts))
        for name, per in report.memory.items():
            vals = []
            for n in counts:
                m = per.get(n)
                if not m:
                    vals.append("—")
                    continue
                note = f" {m['note']}" if m["note"] else ""
                vals.append(f"{m['per_conn'] / 1024:.1f} ({m['open']:,}, {m['after'] / 2**20:.0f}){note}")
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
        lines.append("")
    if report.profile:
        lines += ["## Profile", "", "```", report.profile.rstrip(), "```", ""]
    return "\n".join(lines)


def compressor_lines(report: Report, rows: list[Scenario], shown: list[str]) -> list[str]:
    """The compressor's own cost next to the compression rows, and each server's CPU per request without it."""
    costs = report.compressors.get("codings", {})
    rows = [sc for sc in rows if sc.name in COMPRESSED and COMPRESSED[sc.name] in costs]
    if not rows:
        return []
    lines = ["Compression rows: the compressor alone, timed in a child process pinned to the server CPU on the "
             f"same {report.compressors.get('source', 0):,} B payload — " + "; ".join(
                 f"{name} ({_LEVELS[name]}): {c['us']:.0f} µs per body, {c['size']:,} B"
                 for name, c in costs.items()) + ". Below: the server's CPU per request (CPU % ÷ req/s) and, "
             "after `−`, what is left once the compressor's µs are taken out — the server's own overhead "
             "(the floors compress per request too, with the standard zlib).", ""]
    lines.append("| scenario | " + " | ".join(shown) + " |")
    lines.append("|---|" + "---:|" * len(shown))
    for sc in rows:
        vals = []
        for n in shown:
            us = costs[_coder(sc.name, n, costs)]["us"]
            cell = report.cells.get((sc.name, n), Cell())
            rate, cpu = cell.median("rate"), cell.median("cpu_pct")
            if not rate or cpu is None:
                vals.append("—")
                continue
            per = cpu / 100 * 1e6 / rate
            vals.append(f"{per:.0f} − {us:.0f} = {per - us:.0f} µs")
        lines.append(f"| {sc.name} | " + " | ".join(vals) + " |")
    lines.append("")
    return lines


_LEVELS = {"gzip": f"zlib level {common.GZIP_LEVEL}", "gzip-ng": f"zlib-ng level {common.GZIP_LEVEL}",
           "br": f"quality {common.BROTLI_QUALITY}", "zstd": f"level {common.ZSTD_LEVEL}"}


def _coder(scenario: str, server: str, costs: dict) -> str:
    """The coder ``server`` runs on ``scenario``: rr's middleware uses zlib-ng when it is installed
    (rr.contrib.compress.ZLIB); gzip_response's handler and every peer use the standard zlib."""
    coding = COMPRESSED[scenario]
    if coding == "gzip" and scenario != "gzip_response" and server.startswith("rr") and "gzip-ng" in costs:
        from rr.contrib import compress

        if compress.ZLIB == "zlib-ng":
            return "gzip-ng"
    return coding


def render_chart(report: Report, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [n for n in report.scenarios if SCENARIOS[n].headline and SCENARIOS[n].proto == "h1"]
    shown = [n for n in report.servers if n not in report.server_skips]
    if not rows or not shown:
        return False
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 1.3), 5))
    width = 0.8 / len(shown)
    for i, name in enumerate(shown):
        vals = [report.cells.get((r, name), Cell()).median("rate") or 0 for r in rows]
        ax.bar([x + i * width for x in range(len(rows))], vals, width, label=name)
    ax.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(rows))])
    ax.set_xticklabels(rows, rotation=30, ha="right")
    ax.set_ylabel("req/s (median)")
    ax.set_title(f"HTTP/1.1, one process each, wrk -t1 -c{report.settings.get('connections')} ({report.started})")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


_GREENLET_SWITCHES = ("<method 'switch' of 'greenlet.greenlet' objects>",
                      "<method 'throw' of 'greenlet.greenlet' objects>")


def greenlet_safe_cumulative(stats, top: int) -> list[str]:
    """Cumulative time of the functions that never switched greenlets while profiled.

    cProfile keeps one call stack per thread, so a function that waits (its
    callees reach ``greenlet.switch``) is charged with whatever other greenlets
    ran meanwhile: its cumulative time can exceed the whole run. gevent switches
    inside compiled code cProfile does not see, so every gevent function counts
    as one that may wait. The functions left, the ones seen to reach neither,
    keep honest cumulative times.
    """
    stats.calc_callees()
    waits = [f for f in stats.stats if f[2] in _GREENLET_SWITCHES or "gevent" in Path(f[0]).parts[:-1]]
    seen, todo = set(waits), list(waits)
    while todo:
        for caller in stats.stats[todo.pop()][4]:
            if caller not in seen:
                seen.add(caller)
                todo.append(caller)
    rows = sorted(((v[3], v[2], v[1], f) for f, v in stats.stats.items() if f not in seen), reverse=True)
    out = [f"{'ncalls':>9} {'tottime':>8} {'cumtime':>8}  function (of {stats.total_tt:.3f} s profiled)"]
    out += [f"{nc:>9} {tt:8.3f} {ct:8.3f}  {'/'.join(Path(f[0]).parts[-2:])}:{f[1]}({f[2]})"
            for ct, tt, nc, f in rows[:top]]
    return out


def profile_text(path: Path, top: int = 30) -> str:
    """The top functions by own time, by cumulative time, and by cumulative time without greenlet waits."""
    import io
    import pstats

    if not path.exists() or path.stat().st_size == 0:
        return f"no profile written to {path}"
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf).strip_dirs()  # a copy: strip_dirs() merges same-named files
    for key in ("tottime", "cumulative"):
        buf.write(f"--- sorted by {key}\n")
        stats.sort_stats(key).print_stats(top)
    buf.write("--- sorted by cumulative, only functions that never switched greenlets "
              "(the others' cumulative includes other greenlets' work)\n")
    buf.write("\n".join(greenlet_safe_cumulative(pstats.Stats(str(path)), top)) + "\n")
    return buf.getvalue()


# --------------------------------------------------------------------------- command line


def _split(value: str, known: dict, what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="rr benchmark harness", formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help="comma list: " + ", ".join(SERVERS))
    p.add_argument("--scenarios", default=",".join(n for n, s in SCENARIOS.items() if s.matrix),
                   help="comma list: " + ", ".join(SCENARIOS))
    p.add_argument("--duration", type=int, default=5, help="seconds per measured run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up seconds per server and scenario (default 1)")
    p.add_argument("--connections", type=int, default=50, help="concurrent connections (default 50)")
    p.add_argument("--out", help="write the Markdown report here")
    p.add_argument("--chart", help="write the h1 headline bar chart (PNG) here")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--quick", action="store_true",
                   help="1 s runs (3 rounds), hello only unless --scenarios is given: a smoke run in < 60 s")
    p.add_argument("--profile", nargs="?", const="rr", metavar="SERVER",
                   help="run SERVER (default rr; a Python-launched one: rr, floor, pywsgi) under cProfile "
                        "and print its top functions")
    p.add_argument("--flame", metavar="DIR",
                   help="after each scenario's rounds, one more run with py-spy sampling rr (not counted): "
                        "a flame graph DIR/rr-<scenario>.svg per scenario rr ran")
    p.add_argument("--memory", nargs="?", const="1000,10000", metavar="N,N",
                   help="after the matrix, hold N idle keep-alive connections per server (default 1000,10000) "
                        "and report RSS per connection; --scenarios '' skips the matrix")
    # Internal: the SSE load client, run as a child process on the client CPU.
    p.add_argument("--ws-client", choices=["auto", "wsbench", "node"], default="auto",
                   help="WebSocket load client: wsbench (C, built with cc) or node's ws; auto: wsbench when it "
                        "builds (default)")
    p.add_argument("--client", choices=["sse"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--path", default="/", help=argparse.SUPPRESS)
    return p


PROTOS = ("h1", "h2", "tls", "grpc", "flask")


def _scenario_names(args: argparse.Namespace) -> list[str]:
    """--scenarios, with the group names h1 and h2 expanded (``--scenarios h2``: every h2 row)."""
    names: list[str] = []
    for item in (v.strip() for v in args.scenarios.split(",")):
        if item in PROTOS:
            names += [n for n, sc in SCENARIOS.items() if sc.proto == item and sc.matrix]
        elif item:
            names.append(item)
    return _split(",".join(dict.fromkeys(names)), SCENARIOS, "scenario")


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Report:
    if args.quick:
        args.duration, args.rounds, args.warmup = 1, 3, 1
        if args.scenarios == build_parser().get_default("scenarios"):
            args.scenarios = "hello"
    servers = _split(args.servers, SERVERS, "server")
    scenarios = _scenario_names(args)
    if not (1 <= args.duration <= 600 and 1 <= args.rounds <= 20 and 0 <= args.warmup <= 60
            and 1 <= args.connections <= 10_000):
        raise SystemExit("--duration 1..600, --rounds 1..20, --warmup 0..60, --connections 1..10000")
    raise_nofile(65536)
    report = Report(command=" ".join(["tools/bench.py", *sys.argv[1:]]) if getattr(args, "command", None) is None
                    else args.command,
                    servers=servers, scenarios=scenarios,
                    settings={"duration": args.duration, "rounds": args.rounds, "warmup": args.warmup,
                              "connections": args.connections},
                    started=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    t0 = time.monotonic()
    report.out_dir = str(Path(args.out).resolve().parent) if getattr(args, "out", None) else ""
    report.env = collect_env()
    if any(SCENARIOS[n].client == "ws" for n in scenarios):
        report.env["ws_client"] = choose_ws_client(getattr(args, "ws_client", "auto"))
        log(f"WebSocket client: {report.env['ws_client']}")
    logdir = Path(tempfile.mkdtemp(prefix="rr-bench-"))
    # One phase per protocol, each with its own server processes (rr and granian serve h2c from
    # another command line). --memory measures the h1 processes.
    phases = [(proto, [SCENARIOS[n] for n in scenarios if SCENARIOS[n].proto == proto]) for proto in PROTOS]
    phases = [(proto, scs) for proto, scs in phases if scs or (proto == "h1" and args.memory)]
    if any(proto == "tls" for proto, _ in phases):
        TLS_FILES.update(make_cert(logdir))
    if any(n in COMPRESSED for n in scenarios):
        report.compressors = compressor_costs(log=log)
    flame = Path(args.flame) if args.flame else None
    if flame:
        flame.mkdir(parents=True, exist_ok=True)
    started: set[str] = set()
    failed: dict[str, str] = {}
    profiles: list[tuple[str, Path]] = []
    for proto, scs in phases:
        wanted = [SERVERS[n] for n in servers
                  if (proto == "h1" and args.memory) or any(SERVERS[n].why_not(sc) is None for sc in scs)]
        prof = {args.profile: logdir / f"{args.profile}.{proto}.prof"} if args.profile else None
        running: dict[str, Running] = {}
        try:
            log(f"[{proto}] starting {', '.join(s.name for s in wanted) or 'no server'} (server CPU {SERVER_CPU}, "
                f"load CPU {CLIENT_CPU}; logs in {logdir})")
            running, skips = start_servers(wanted, logdir, profile=prof, proto=proto)
            started.update(running)
            for name, why in skips.items():
                failed.setdefault(name, why if proto == "h1" else f"{proto}: {why}")
                log(f"  skipped {name}: {why}")
            run_matrix(report, running, scs, duration=args.duration, rounds=args.rounds, warmup=args.warmup,
                       connections=args.connections, log=log, skips=skips, flame=flame)
            if args.memory and proto == "h1":
                counts = [int(x) for x in args.memory.split(",") if x.strip()]
                memory_test(report, running, counts, log=log)
        finally:
            if prof and args.profile in running:
                stop_process(running.pop(args.profile).proc, grace=10.0)
                profiles.append((proto, prof[args.profile]))
            for r in running.values():
                stop_process(r.proc)
    # A column is dropped only for a server that started in no phase.
    report.server_skips = {n: why for n, why in failed.items() if n not in started}
    if args.profile:
        if profiles:
            report.profile = "\n".join(f"[{proto}] {profile_text(path)}" for proto, path in profiles)
        else:
            why = failed.get(args.profile, "it was not among the servers run")
            report.profile = f"{args.profile} did not run: {why}"
    report.elapsed_s = time.monotonic() - t0
    return report


def _on_sigterm(signum, frame):  # make SIGTERM unwind through the finally blocks, like Ctrl-C
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.client:
        result = own_client(args.client, args.port, args.path, args.connections, args.duration)
        print("BENCH_JSON " + json.dumps(result), flush=True)
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.scenarios.strip():
        names = ["hello"] if args.quick and args.scenarios == build_parser().get_default("scenarios") \
            else _scenario_names(args)
        for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
            if any(SCENARIOS[n].client == tool for n in names) and not shutil.which(tool):
                print(f"{tool} is not installed (apt-get install -y {package})", file=sys.stderr)
                return 2
        if any(SCENARIOS[n].proto == "tls" for n in names) and not shutil.which("openssl"):
            print("openssl is not installed (apt-get install -y openssl): the tls rows need a certificate",
                  file=sys.stderr)
            return 2
        if any(SCENARIOS[n].client == "ws" for n in names):
            chosen = choose_ws_client(args.ws_client)
            if not ws_client_argv:
                print(f"websocket_msg_throughput: {chosen}", file=sys.stderr)
                return 2
    report = run(args, log=lambda s: print(s, flush=True))
    text = render_markdown(report)
    if args.chart and render_chart(report, Path(args.chart)):
        text = text.replace("# rr benchmark results\n", f"# rr benchmark results\n\n![h1 headline rows]"
                            f"({os.path.relpath(args.chart, Path(args.out).parent if args.out else '.')})\n", 1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        raw = {f"{k[0]}/{k[1]}": {"skipped": c.skipped, "check": c.check,
                                  "runs": [r.__dict__ for r in c.runs]} for k, c in report.cells.items()}
        Path(args.json).write_text(json.dumps({"servers_skipped": report.server_skips, "cells": raw,
                                               "memory": report.memory, "compressors": report.compressors,
                                               "flames": report.flames}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
