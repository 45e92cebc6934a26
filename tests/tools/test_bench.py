"""tools/bench.py: output parsers, rendering, and tiny end-to-end runs.

The h1 end-to-end test starts real server processes (rr when it can start,
otherwise the floor, plus gevent.pywsgi), drives them with wrk for 1 s, and
checks the report, the error accounting and that every process is gone. The
h2 one does the same for rr's h2c process (``rr_app.py --h2``) under h2load.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("rr_tools_bench", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

WRK_SAMPLE = """\
Running 1s test @ http://127.0.0.1:18005/echo
  1 threads and 5 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   283.89us   61.02us   1.54ms   80.93%
    Req/Sec    17.70k     2.24k   19.62k    80.00%
  17539 requests in 1.00s, 5.62MB read
Requests/sec:  17533.44
Transfer/sec:      5.62MB
BENCH_JSON {"requests": 17539, "duration_us": 1000317, "bytes": 5893104, "errors": {"connect": 0, "read": 3, \
"write": 0, "status": 12, "timeout": 1}, "latency_us": {"min": 50, "mean": 283.9, "p50": 265, "p90": 355, \
"p99": 410, "max": 1545}}
"""

H2LOAD_SAMPLE = """\
starting benchmark...
spawning thread #0: 5 total client(s). 1020 total requests
Application protocol: h2c
finished in 1.00s, 1020.00 req/s, 45.32KB/s
requests: 1020 total, 1028 started, 1020 done, 1010 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 1010 2xx, 0 3xx, 4 4xx, 6 5xx
traffic: 45.32KB (46408) total, 5.24KB (5368) headers (space savings 94.68%), 12.95KB (13260) data
                     min         max         mean         sd        +/- sd
time for request:     6.01ms     20.58ms      7.82ms      2.22ms    79.80%
"""


def test_parse_wrk_output():
    r = bench.parse_wrk_output(WRK_SAMPLE)
    assert r.requests == 17539
    assert r.duration_s == pytest.approx(1.000317)
    assert r.rate == pytest.approx(17533.4, rel=1e-3)
    assert r.errors == {"connect": 0, "read": 3, "write": 0, "status": 12, "timeout": 1}
    assert r.error_count == 16
    assert (r.p50_us, r.p99_us) == (265, 410)


def test_parse_wrk_output_without_json_line_fails():
    with pytest.raises(ValueError, match="no BENCH_JSON"):
        bench.parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


# What h2load prints when the server does not speak h2 (here: an HTTP/1.1 server). It still says h2c.
H2LOAD_NOT_H2 = """\
Application protocol: h2c

finished in 1.42ms, 0.00 req/s, 214.12KB/s
requests: 20 total, 4 started, 0 done, 0 succeeded, 20 failed, 20 errored, 3 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 312B (312) total, 0B (0) headers (space savings 0.00%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:        0us         0us         0us         0us     0.00%
"""


def test_parse_h2load_output():
    r = bench.parse_h2load_output(H2LOAD_SAMPLE)
    assert r.requests == 1020
    assert r.duration_s == pytest.approx(1.0)
    assert r.errors == {"status": 10, "errored": 0, "timeout": 0}  # 4xx + 5xx: h2load's 10 "failed"
    assert r.error_count == 10
    assert r.p50_us == pytest.approx(7820)
    assert r.proto == "h2c"


def test_parse_h2load_output_counts_each_failure_once():
    r = bench.parse_h2load_output(H2LOAD_NOT_H2)
    assert r.requests == 0
    assert r.errors == {"status": 0, "errored": 17, "timeout": 3}
    assert r.error_count == 20  # = h2load's "failed", not failed + errored
    assert r.p50_us is None


def test_latency_from_log(tmp_path):
    log = tmp_path / "log.tsv"
    rows = [f"17957485226966{i:02d}\t200\t{(i + 1) * 100}" for i in range(100)] + ["1795748522696700\t-1\t9"]
    log.write_text("\n".join(rows) + "\n")
    assert bench.latency_from_log(log) == (5100.0, 10000.0)  # the failed stream (-1) is not a latency
    assert bench.latency_from_log(tmp_path / "absent") is None


def test_h2load_argv_body_headers_and_per_scenario_connections(tmp_path):
    echo = bench.SCENARIOS["echo_h2"]
    argv = bench.h2load_argv(echo, 8080, duration=5, connections=50, log_file=tmp_path / "l",
                             body_file=tmp_path / "b")
    assert argv[:5] == ["h2load", "-t1", "-c50", "-m10", "-D"]
    assert ["-d", str(tmp_path / "b")] == argv[-3:-1] and argv[-1] == "http://127.0.0.1:8080/echo"
    multi = bench.h2load_argv(bench.SCENARIOS["multi_stream_h2"], 1, duration=1, connections=50,
                              log_file=tmp_path / "l", body_file=None)
    assert "-c10" in multi and "-m100" in multi
    heavy = bench.h2load_argv(bench.SCENARIOS["headers_heavy_h2"], 1, duration=1, connections=50,
                              log_file=tmp_path / "l", body_file=None)
    assert heavy.count("-H") == 16


def test_h2_group_name_expands_to_every_h2_row():
    args = bench.build_parser().parse_args(["--scenarios", "h2,hello"])
    names = bench._scenario_names(args)
    assert names[-1] == "hello"
    assert set(names[:-1]) == {n for n, sc in bench.SCENARIOS.items() if sc.proto == "h2"}
    assert {"hello_h2", "json_h2", "echo_h2", "headers_heavy_h2", "multi_request_body_h2", "multi_stream_h2",
            "streaming_response_h2"} <= set(names)


def test_h2_preflight_fails_on_a_server_that_does_not_speak_h2():
    """An HTTP/1.1 server answering the h2 preface with a 400 is a ✗, not a row."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert not bench._answers_h2(port)
        t.join(5)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        why = bench.preflight(bench.SCENARIOS["hello_h2"], port)
        assert why.startswith("h2c pre-flight request failed"), why
    finally:
        t.join(5)
        listener.close()


def _report_with(cells, servers=("floor", "pywsgi"), scenarios=("hello",), skips=None):
    report = bench.Report(command="tools/bench.py --test", servers=list(servers), scenarios=list(scenarios),
                          settings={"duration": 1, "rounds": 1, "warmup": 0, "connections": 5},
                          started="2026-01-01 00:00 UTC", server_skips=dict(skips or {}))
    report.cells.update(cells)
    return report


def test_render_ratio_dash_and_errors():
    fast = bench.RunResult(requests=20000, duration_s=1.0, errors={"status": 0}, p50_us=1000, p99_us=3000,
                           rss_peak=20 * 2**20, cpu_pct=99.0)
    slow = bench.RunResult(requests=5000, duration_s=1.0, errors={"status": 7, "read": 1}, p50_us=4000,
                           p99_us=9000, rss_peak=30 * 2**20, cpu_pct=98.0)
    cells = {("hello", "floor"): bench.Cell(runs=[fast]), ("hello", "pywsgi"): bench.Cell(runs=[slow]),
             ("websocket_msg_throughput", "floor"): bench.Cell(skipped="the floor speaks no WebSocket"),
             ("websocket_msg_throughput", "pywsgi"): bench.Cell(skipped="WSGI has no WebSocket")}
    text = bench.render_markdown(_report_with(cells, servers=("rr", "floor", "pywsgi"),
                                              scenarios=("hello", "websocket_msg_throughput"),
                                              skips={"rr": "rr does not import"}))
    assert "| scenario | floor | pywsgi |" in text
    assert "| hello | 20.0k | 5,000 (4.00×) ⚠ |" in text
    assert "| websocket_msg_throughput (msg/s) | — | — |" in text
    assert "websocket_msg_throughput / pywsgi: WSGI has no WebSocket" in text
    assert "hello / pywsgi: read 1, status 7" in text
    assert "**rr**: rr does not import" in text
    assert "1.00 / 3.00" in text and "20 / 99" in text


def test_render_baseline_is_rr_when_it_ran():
    run = bench.RunResult(requests=10000, duration_s=1.0, errors={}, p50_us=1, p99_us=2)
    half = bench.RunResult(requests=5000, duration_s=1.0, errors={}, p50_us=1, p99_us=2)
    cells = {("hello", "rr"): bench.Cell(runs=[run]), ("hello", "pywsgi"): bench.Cell(runs=[half])}
    text = bench.render_markdown(_report_with(cells, servers=("rr", "pywsgi")))
    assert "`×` = rr ÷ that server" in text
    assert "| hello | 10.0k | 5,000 (2.00×) |" in text
    assert "none: every response" in text


def test_render_says_post_4kb_form_times_rr_own_parser_against_parse_qsl():
    # So nobody reads the row as server overhead alone: rr parses with read_form, the peers parse_qsl.
    run = bench.RunResult(requests=10000, duration_s=1.0, errors={}, p50_us=1, p99_us=2)
    cells = {("post_4kb_form", "rr"): bench.Cell(runs=[run]), ("post_4kb_form", "pywsgi"): bench.Cell(runs=[run])}
    text = bench.render_markdown(_report_with(cells, servers=("rr", "pywsgi"), scenarios=("post_4kb_form",)))
    line = next(ln for ln in text.splitlines() if ln.startswith("- post_4kb_form: "))
    assert "req.read_form()" in line and "parse_qsl" in line and "not server overhead alone" in line


def test_profile_leaves_greenlet_waits_out_of_the_honest_cumulative_list(tmp_path):
    """A function that waits on a greenlet switch is charged with others' work by cProfile: left out."""
    code = (
        "import cProfile, sys, gevent\n"
        "def busy():\n"
        "    return sum(i * i for i in range(200_000))\n"
        "def waiter():\n"
        "    gevent.sleep(0.05)\n"
        "    busy()\n"
        "def main():\n"
        "    gevent.joinall([gevent.spawn(waiter), gevent.spawn(busy)])\n"
        "cProfile.run('main()', sys.argv[1])\n"
    )
    out = tmp_path / "p.prof"
    subprocess.run([bench.PY, "-c", code, str(out)], check=True, timeout=60)
    text = bench.profile_text(out, top=50)
    safe = text.split("only functions that never switched greenlets")[1]
    assert "(busy)" in safe and "(waiter)" not in safe and "(main)" not in safe
    assert "--- sorted by tottime" in text and "--- sorted by cumulative" in text


@pytest.fixture
def spawned(monkeypatch):
    """Record every process the harness starts; kill whatever is left at teardown."""
    pids: list[int] = []
    real = bench._spawn

    def spawn(*args, **kwargs):
        proc = real(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(bench, "_spawn", spawn)
    yield pids
    bench._kill_all_children()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.mark.peers("wrk")
def test_end_to_end_two_servers(spawned):
    first = "rr" if bench.rr_unavailable() is None else "floor"
    args = bench.build_parser().parse_args(
        ["--servers", f"{first},pywsgi", "--scenarios", "hello,error_500", "--duration", "1", "--rounds", "1",
         "--warmup", "0", "--connections", "8"])
    args.command = "test"
    lines: list[str] = []
    report = bench.run(args, log=lines.append)

    assert report.server_skips == {}, report.server_skips
    for server in (first, "pywsgi"):
        ok = report.cells[("hello", server)]
        assert len(ok.runs) == 1 and not ok.runs[0].failure, ok.runs
        assert ok.runs[0].requests > 0 and ok.median("rate") > 0
        assert ok.errors == {}, ok.errors
        assert ok.check == ""
        assert ok.runs[0].rss_peak > 0
        bad = report.cells[("error_500", server)]
        # Every response is a 500: wrk counts each one, and the report shows them.
        assert bad.errors.get("status", 0) == bad.runs[0].requests > 0

    text = bench.render_markdown(report)
    assert f"| scenario | {first} | pywsgi |" in text
    assert "error_500 / pywsgi: status" in text
    assert "⚠" in text
    # Every process the harness started (servers and wrk) is gone.
    assert spawned and all(_gone(pid) for pid in spawned), [p for p in spawned if not _gone(p)]


@pytest.mark.peers("h2load")
def test_end_to_end_h2_rr_hello(spawned):
    """rr's h2c process under h2load, one 1 s round: a broken h2 bench path fails here."""
    assert bench.rr_unavailable() is None, bench.rr_unavailable()
    args = bench.build_parser().parse_args(["--servers", "rr,floor", "--scenarios", "hello_h2", "--quick",
                                            "--connections", "4"])
    args.command = "test"
    report = bench.run(args, log=lambda _line: None)

    assert report.scenarios == ["hello_h2"]  # --quick keeps an explicit --scenarios
    assert report.server_skips == {}, report.server_skips
    cell = report.cells[("hello_h2", "rr")]
    assert cell.check == "", cell.check  # the h2c pre-flight got "Hello, World!"
    assert len(cell.runs) == 3 and not any(r.failure for r in cell.runs), cell.runs
    assert cell.errors == {}, cell.errors
    for run in cell.runs:
        assert run.proto == "h2c" and run.requests > 0 and run.cpu_pct > 0, run
        assert run.p50_us and run.p99_us and run.p50_us <= run.p99_us
    assert report.cells[("hello_h2", "floor")].skipped == bench.NO_H2

    text = bench.render_markdown(report)
    assert "## HTTP/2 (h2c)" in text and "| scenario | rr |" in text
    assert "Not in this table: floor" in text
    assert "- hello_h2: `h2load -t1 -c4 -m10`: GET /" in text
    assert spawned and all(_gone(pid) for pid in spawned), [p for p in spawned if not _gone(p)]


def test_unknown_names_are_refused():
    args = bench.build_parser().parse_args(["--servers", "nginx"])
    with pytest.raises(SystemExit, match="unknown server"):
        bench.run(args)


# --------------------------------------------------------------------------- rows of issues 14-17

common = bench.common


@pytest.mark.peers("grpcio")
def test_grpc_bodies_decode_as_the_benchmark_proto(tmp_path):
    """The bytes h2load sends and the pre-flight expects are the messages benchmark.proto describes."""
    from rr.contrib.grpc import codegen

    pb2, _ = codegen.generate(ROOT / "tools" / "bench_apps" / "protos" / "benchmark.proto", str(tmp_path))

    def one(data: bytes) -> bytes:
        assert data[0] == 0 and int.from_bytes(data[1:5], "big") == len(data) - 5
        return data[5:]

    req = pb2.SumRequest.FromString(one(common.GRPC_SUM_REQUEST))
    assert (req.a, req.b) == (1, 2)
    stream = pb2.StreamRequest.FromString(one(common.grpc_stream_request()))
    assert (stream.a, stream.b, stream.count) == (1, 2, common.GRPC_STREAM_COUNT)
    assert pb2.StreamRequest.FromString(one(common.grpc_stream_request(5000))).count == 5000
    assert pb2.SumReply.FromString(one(common.grpc_sum_reply(3))).result == 3
    assert pb2.SumReply.FromString(one(common.grpc_sum_reply(300))).result == 300


def test_grpc_check_wants_status_zero_and_the_replies():
    check = bench.SCENARIOS["grpc_unary"].check
    reply = common.grpc_sum_reply(3)
    assert check(200, {"grpc-status": "0"}, reply) is None
    assert "grpc-status '13'" in check(200, {"grpc-status": "13", "grpc-message": "boom"}, b"")
    assert "grpc-status None" in check(200, {}, reply)  # trailers never came
    assert "reply" in check(200, {"grpc-status": "0"}, common.grpc_sum_reply(4))


def _asgi_call(app, method: str, path: str, headers: list[str]) -> tuple[int, dict, bytes]:
    """One request through an ASGI app in-process: status, headers, body."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (h.split(": ", 1) for h in headers)],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.mark.peers("starlette")
def test_asgi_middleware_routes_pass_the_row_checks():
    """Starlette's GZipMiddleware and CORSMiddleware answer the rows the way their pre-flights check."""
    sys.path.insert(0, str(ROOT / "tools" / "bench_apps"))
    import asgi_app

    gz = bench.SCENARIOS["gzip_middleware"]
    assert gz.check(*_asgi_call(asgi_app.app, "GET", gz.path, gz.headers)) is None
    cors = bench.SCENARIOS["cors_preflight"]
    assert cors.check(*_asgi_call(asgi_app.app, "OPTIONS", cors.path, cors.headers)) is None
    # Without the Accept-Encoding the row sends, the same route is a failed check.
    assert "content-encoding None" in gz.check(*_asgi_call(asgi_app.app, "GET", gz.path, []))


def test_compressor_lines_take_the_compressor_out():
    run = bench.RunResult(requests=2000, duration_s=1.0, errors={}, p50_us=1, p99_us=2, cpu_pct=100.0)
    cells = {("gzip_middleware", "rr"): bench.Cell(runs=[run]), ("gzip_middleware", "floor"): bench.Cell(runs=[run])}
    report = _report_with(cells, servers=("rr", "floor"), scenarios=("gzip_middleware",))
    report.compressors = {"source": 13192, "codings": {"gzip": {"us": 200.0, "size": 1813}}}
    text = bench.render_markdown(report)
    assert "gzip (zlib level 6): 200 µs per body, 1,813 B" in text
    # 100 % CPU / 2,000 req/s = 500 µs; the floors compress per request too, so theirs is taken out as well
    assert "| gzip_middleware | 500 − 200 = 300 µs | 500 − 200 = 300 µs |" in text
    # with zlib-ng timed too, rr's middleware row takes out zlib-ng's cost (rr codes with it); a peer the standard one
    cells[("gzip_middleware", "uvicorn")] = bench.Cell(runs=[run])
    report = _report_with(cells, servers=("rr", "uvicorn"), scenarios=("gzip_middleware",))
    report.compressors = {"source": 13192, "codings": {"gzip": {"us": 200.0, "size": 1813},
                                                       "gzip-ng": {"us": 80.0, "size": 1849}}}
    text = bench.render_markdown(report)
    assert "gzip-ng (zlib-ng level 6): 80 µs per body, 1,849 B" in text
    assert "| gzip_middleware | 500 − 80 = 420 µs | 500 − 200 = 300 µs |" in text


@pytest.mark.parametrize("loop", ["handle", "raw_connection"])
def test_floors_compress_per_request(monkeypatch, loop):
    """Both floors answer /gzip and /gzip_mw with a body compressed for that request (as every
    server's handler or middleware does), and the other paths with their prepared bytes."""
    import gzip

    import gevent.socket

    sys.path.insert(0, str(ROOT / "tools" / "bench_apps"))
    import floor

    calls = []

    def counted() -> bytes:
        calls.append(1)
        return gzip.compress(floor.c.GZIP_SOURCE, mtime=0)

    monkeypatch.setattr(floor.c, "gzip_body", counted)
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gevent.socket.create_connection(listener.getsockname(), timeout=10)
    server_end, _ = listener.accept()
    listener.close()
    requests = b"".join(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % p for p in (b"/gzip", b"/", b"/gzip_mw", b"/gzip"))
    run = gevent.spawn(floor.handle, server_end, None) if loop == "handle" else gevent.spawn(floor.raw_connection,
                                                                                           server_end)
    client.sendall(requests)
    client.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := client.recv(65536):
        got += chunk
    run.join(timeout=10)
    client.close()
    assert len(calls) == 3
    answers = got.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 4
    assert answers[1].endswith(b"\r\n\r\n" + floor.c.HELLO)
    for i in (0, 2, 3):
        head, body = answers[i].split(b"\r\n\r\n", 1)
        assert b"content-encoding: gzip" in head
        assert gzip.decompress(body) == floor.c.GZIP_SOURCE


@pytest.mark.peers("wrk", "py-spy")
def test_end_to_end_raw_floor_middleware_rows_and_flame(spawned, tmp_path):
    """rr and the raw floor on the middleware rows, 1 s each, and one py-spy flame graph of rr."""
    assert bench.rr_unavailable() is None, bench.rr_unavailable()
    args = bench.build_parser().parse_args(
        ["--servers", "rr,raw", "--scenarios", "gzip_middleware,cors_preflight", "--duration", "1", "--rounds", "1",
         "--warmup", "0", "--connections", "4", "--flame", str(tmp_path / "flame"), "--out", str(tmp_path / "r.md")])
    args.command = "test"
    report = bench.run(args, log=lambda _line: None)

    assert report.server_skips == {}, report.server_skips
    for scn in ("gzip_middleware", "cors_preflight"):
        for server in ("rr", "raw"):
            cell = report.cells[(scn, server)]
            assert cell.check == "", (scn, server, cell.check)
            assert cell.runs and cell.runs[0].requests > 0 and cell.errors == {}, (scn, server, cell.runs)
    assert report.compressors["codings"]["gzip"]["size"] < len(common.GZIP_SOURCE)
    svg = tmp_path / "flame" / "rr-gzip_middleware.svg"
    assert svg.read_text().count("rr/contrib/compress.py") > 0  # rr's compressor shows in its own graph
    text = bench.render_markdown(report)
    assert "| scenario | rr | raw |" in text and "−" in text
    assert "- gzip_middleware: [rr-gzip_middleware.svg](flame/rr-gzip_middleware.svg)" in text
    assert spawned and all(_gone(pid) for pid in spawned), [p for p in spawned if not _gone(p)]


@pytest.mark.peers("wrk", "h2load", "openssl", "grpcio")
def test_end_to_end_tls_grpc_and_flask_phases(spawned):
    """One 1 s row per new phase: TLS (h1 and h2 by ALPN), gRPC (rr and grpcio) and the Flask app."""
    assert bench.rr_unavailable() is None, bench.rr_unavailable()
    args = bench.build_parser().parse_args(
        ["--servers", "rr,grpcio,pywsgi", "--scenarios", "hello_tls,hello_h2_tls,grpc_unary,flask_hello",
         "--duration", "1", "--rounds", "1", "--warmup", "0", "--connections", "4"])
    args.command = "test"
    report = bench.run(args, log=lambda _line: None)

    assert report.server_skips == {}, report.server_skips
    ran = [("hello_tls", "rr"), ("hello_h2_tls", "rr"), ("grpc_unary", "rr"), ("grpc_unary", "grpcio"),
           ("flask_hello", "rr"), ("flask_hello", "pywsgi")]
    for key in ran:
        cell = report.cells[key]
        assert cell.check == "", (key, cell.check)
        assert cell.runs and not cell.runs[0].failure and cell.runs[0].requests > 0, (key, cell.runs)
        assert cell.errors == {}, (key, cell.errors)
    assert report.cells[("hello_h2_tls", "rr")].runs[0].proto == "h2"
    assert report.cells[("grpc_unary", "rr")].runs[0].proto == "h2c"
    assert report.cells[("hello_tls", "grpcio")].skipped == bench.NOT_SERVED["tls"]
    text = bench.render_markdown(report)
    for title in ("## TLS (HTTP/1.1 and HTTP/2)", "## gRPC (h2c)", "## A Flask app (WSGI)"):
        assert title in text
    assert spawned and all(_gone(pid) for pid in spawned), [p for p in spawned if not _gone(p)]
def test_the_websocket_client_falls_back_to_node_and_says_when_neither_runs(monkeypatch):
    """auto: wsbench when it builds, else node's ws; with neither, the row fails naming both reasons."""
    monkeypatch.setattr(bench, "ws_client_argv", [])
    monkeypatch.setattr(bench, "ws_client_why", "")
    monkeypatch.setattr(bench, "wsbench_unavailable", lambda: "no C compiler")
    monkeypatch.setattr(bench, "node_ws_unavailable", lambda: None)
    assert bench.choose_ws_client("auto").startswith("node's `ws` package")
    assert bench.ws_client_argv == ["node", str(bench.BENCH_WS / "client.js")]
    assert bench.choose_ws_client("wsbench") == "none (wsbench: no C compiler)"
    assert bench.ws_client_argv == []
    monkeypatch.setattr(bench, "node_ws_unavailable", lambda: "node/npm are not installed")
    assert bench.choose_ws_client("auto") == "none (wsbench: no C compiler; node ws: node/npm are not installed)"
    res = bench.run_load(bench.SCENARIOS["websocket_msg_throughput"], 1, duration=1, connections=1)
    assert res.failure == "no WebSocket client: wsbench: no C compiler; node ws: node/npm are not installed"


@pytest.mark.peers("cc")
def test_end_to_end_websocket_row_with_wsbench(spawned):
    """websocket_msg_throughput against rr for 1 s, driven by tools/bench_ws/wsbench.c, which the
    harness compiles itself (the default client when a C compiler is present): echoes counted,
    none wrong, the report's load line names wsbench, the client process gone afterwards."""
    assert bench.rr_unavailable() is None, bench.rr_unavailable()
    args = bench.build_parser().parse_args(["--servers", "rr", "--scenarios", "websocket_msg_throughput",
                                            "--duration", "1", "--rounds", "1", "--warmup", "0",
                                            "--connections", "4"])
    args.command = "test"
    report = bench.run(args, log=lambda _line: None)

    assert bench.WSBENCH_BIN.exists()
    assert bench.ws_client_argv == [str(bench.WSBENCH_BIN)]
    cell = report.cells[("websocket_msg_throughput", "rr")]
    assert len(cell.runs) == 1 and not cell.runs[0].failure, cell.runs
    assert cell.runs[0].requests > 0 and cell.errors == {}, cell.runs
    assert cell.runs[0].p50_us and cell.runs[0].p50_us <= cell.runs[0].p99_us
    assert "WebSocket: wsbench (tools/bench_ws/wsbench.c" in bench.render_markdown(report)
    assert spawned and all(_gone(pid) for pid in spawned), [p for p in spawned if not _gone(p)]


@pytest.mark.peers("node-ws")
def test_end_to_end_websocket_row_with_the_node_client(spawned):
    """websocket_msg_throughput against rr for 1 s, driven by node's ``ws`` (tools/bench_ws,
    ``--ws-client node``): echoes counted, none wrong, the client process gone afterwards."""
    assert bench.rr_unavailable() is None, bench.rr_unavailable()
    args = bench.build_parser().parse_args(["--servers", "rr", "--scenarios", "websocket_msg_throughput",
                                            "--duration", "1", "--rounds", "1", "--warmup", "0",
                                            "--connections", "4", "--ws-client", "node"])
    args.command = "test"
    report = bench.run(args, log=lambda _line: None)

    cell = report.cells[("websocket_msg_throughput", "rr")]
    assert len(cell.runs) == 1 and not cell.runs[0].failure, cell.runs
    assert cell.runs[0].requests > 0 and cell.errors == {}, cell.runs
    assert cell.runs[0].p50_us and cell.runs[0].p50_us <= cell.runs[0].p99_us
    assert "WebSocket: node's `ws` package" in bench.render_markdown(report)
    assert spawned and all(_gone(pid) for pid in spawned), [p for p in spawned if not _gone(p)]


@pytest.mark.peers("node-ws")
def test_the_node_client_counts_a_wrong_echo_as_an_error():
    """A server that answers every message with other bytes: no message counts, each
    connection reports one ``status`` error."""
    import base64
    import hashlib

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            conn.recv(65536)  # the first message
            conn.sendall(b"\x81\x05wrong")  # an unmasked text frame that is not the echo
            conn.recv(65536)  # the client ends the connection

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    out = subprocess.run(["node", str(bench.BENCH_WS / "client.js"), "--url", f"ws://127.0.0.1:{port}/ws",
                          "--connections", "1", "--duration", "1"], capture_output=True, text=True, timeout=30)
    t.join(10)
    listener.close()
    result = bench.parse_wrk_output(out.stdout)
    assert result.requests == 0 and result.errors["status"] == 1, out.stdout
