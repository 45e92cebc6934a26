"""tools/bench_h3.py's pieces that need no server: the load clients' command lines, the parser of
their JSON line (on lines captured from real runs), the checks a cell's result must pass, the
choice of client, and the table. h3bench against a real rr is tests/rr/http3/test_h3bench.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("rr_tools_bench_h3", ROOT / "tools" / "bench_h3.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench_h3 = _load()
S = bench_h3.SCENARIOS

# Captured from real runs (2026-12-01, loopback): h3bench against rr_h3_app.py's /echo
# (POST 256 B, c=20), and h3_load.py (curl_cffi) against the same route.
H3BENCH_LINE = (
    '{"requests": 17059, "errors": 0, "seconds": 3.006267, "client_cpu": 0.716662, "client_idle": 0.7454, '
    '"statuses": {"200": 17059}, "not_h3": 0, "connections": 0, "body_min": 256, "body_max": 256, '
    '"first_error": "", "libcurl": "libcurl/8.23.0-IMPERSONATE BoringSSL zlib/1.3.1 brotli/1.2.1 zstd/1.5.7 '
    'c-ares/1.34.9 libidn2/2.3.7 nghttp2/1.63.0 ngtcp2/1.20.0 nghttp3/1.15.0 curl-impersonate/local"}')
CURL_CFFI_LINE = (
    '{"requests": 6940, "errors": 0, "seconds": 3.0021309340008884, "client_cpu": 1.729823, '
    '"client_idle": 0.30560038891382246}')


def test_the_scenarios_keep_their_meaning():
    assert {n: (s.path, s.method, s.body_size, s.concurrency) for n, s in S.items()} == {
        "hello": ("/", "GET", 0, 20), "json": ("/json", "GET", 0, 20), "echo": ("/echo", "POST", 256, 20),
        "large_response": ("/large", "GET", 0, 20), "multiplex_100": ("/", "GET", 0, 100),
        "echo_100": ("/echo", "POST", 256, 100)}
    assert (S["hello"].response_size, S["echo"].response_size, S["large_response"].response_size) == (13, 256, 65536)
    assert S["json"].response_size is None  # rr and json.dumps may space the object differently


def test_h3bench_command_line(monkeypatch):
    monkeypatch.setattr(bench_h3, "curl_cffi_libs", lambda: ("/x/_wrapper.abi3.so", "/y/libpython3.11.so.1.0"))
    argv = bench_h3.client_argv("h3bench", S["echo_100"], 4433, duration=4)
    assert argv == [str(bench_h3.H3BENCH_BIN), "--lib", "/x/_wrapper.abi3.so", "--preload", "/y/libpython3.11.so.1.0",
                    "--url", "https://127.0.0.1:4433/echo", "--concurrency", "100", "--duration", "4",
                    "--warmup", "1", "--method", "POST", "--body-size", "256"]
    pre = bench_h3.client_argv("h3bench", S["hello"], 4433, duration=0.3, warmup=0.1, concurrency=1)
    assert pre[pre.index("--concurrency") + 1] == "1" and pre[pre.index("--duration") + 1] == "0.3"
    assert pre[pre.index("--url") + 1] == "https://127.0.0.1:4433/"


def test_h3bench_command_line_says_why_without_libcurl(monkeypatch):
    monkeypatch.setattr(bench_h3, "curl_cffi_libs", lambda: "curl_cffi is not installed (pip install curl_cffi)")
    with pytest.raises(SystemExit, match="curl_cffi is not installed"):
        bench_h3.client_argv("h3bench", S["hello"], 1, duration=1)
    assert bench_h3.h3bench_unavailable() == "curl_cffi is not installed (pip install curl_cffi)"
    assert bench_h3.choose_client("auto") == ("curl_cffi", "h3bench: curl_cffi is not installed (pip install curl_cffi)")
    with pytest.raises(SystemExit, match="--client h3bench: curl_cffi is not installed"):
        bench_h3.choose_client("h3bench")


def test_curl_cffi_command_line():
    argv = bench_h3.client_argv("curl_cffi", S["large_response"], 4433, duration=4)
    assert argv == [bench_h3.PY, str(bench_h3.APPS / "h3_load.py"), "https://127.0.0.1:4433/large",
                    "--concurrency", "20", "--duration", "4", "--warmup", "1", "--method", "GET", "--body-size", "0"]
    with pytest.raises(ValueError, match="client 'h2load'"):
        bench_h3.client_argv("h2load", S["hello"], 1, duration=1)
    with pytest.raises(SystemExit, match="--client 'h2load'"):
        bench_h3.choose_client("h2load")
    assert bench_h3.choose_client("curl_cffi") == ("curl_cffi", "")


def test_parse_a_captured_h3bench_line():
    r = bench_h3.parse_client("\n" + H3BENCH_LINE + "\n")
    assert r["requests"] == 17059 and r["rps"] == pytest.approx(17059 / 3.006267)
    assert r["client_cpu_share"] == pytest.approx(0.716662 / 3.006267)
    assert r["statuses"] == {"200": 17059} and r["body_min"] == r["body_max"] == 256
    assert "ngtcp2/" in r["libcurl"] and r["not_h3"] == 0
    assert bench_h3.problems(r, S["echo"]) == []


def test_parse_a_captured_curl_cffi_line():
    r = bench_h3.parse_client(CURL_CFFI_LINE)
    assert r["rps"] == pytest.approx(6940 / 3.0021309340008884)
    assert r["client_cpu_share"] == pytest.approx(1.729823 / 3.0021309340008884)
    assert bench_h3.problems(r, S["echo"]) == []


@pytest.mark.parametrize("out, match", [
    ("", "printed nothing"),
    ('{"requests": 1, "errors": 0, "seconds": 1}', "no 'client_cpu'"),
])
def test_parse_refuses_what_is_not_a_result(out, match):
    with pytest.raises(ValueError, match=match):
        bench_h3.parse_client(out)


def test_problems_name_each_wrong_response():
    base = bench_h3.parse_client(H3BENCH_LINE)
    assert bench_h3.problems({**base, "errors": 3, "first_error": "curl 56: Failure when receiving data"},
                             S["echo"]) == ["3 errors (curl 56: Failure when receiving data)"]
    assert bench_h3.problems({**base, "not_h3": 2}, S["echo"]) == ["2 responses not over HTTP/3"]
    assert bench_h3.problems({**base, "statuses": {"200": 5, "404": 2}}, S["echo"]) == ["statuses {'404': 2}"]
    assert bench_h3.problems({**base, "connections": 2}, S["echo"]) == ["2 connections (one expected)"]
    assert bench_h3.problems({**base, "body_min": 13}, S["echo"]) == ["bodies of 13..256 bytes"]
    assert bench_h3.problems(base, S["hello"]) == ["bodies of 256 bytes, 13 expected"]
    assert bench_h3.problems(base, S["json"]) == []  # any one length


def test_round_line_and_table():
    r = {**bench_h3.parse_client(H3BENCH_LINE), "rps": 3750.0, "client_cpu_share": 0.25, "server_cpu": 0.9,
         "server_us": 240.0, "client_us": 66.7, "server_idle": 0.1, "problems": []}
    h = {**r, "rps": 1250.0, "server_cpu": 1.0, "server_us": 800.0}
    line = bench_h3.round_line(1, S["echo"], "rr", r)
    assert "3750 req/s" in line and "client cpu 25% (67 µs/request)" in line and "idle: server 10% client 75%" in line
    assert "PROBLEMS: 2 errors" in bench_h3.round_line(1, S["echo"], "rr", {**r, "problems": ["2 errors"]})
    rows = bench_h3.table({("echo", "rr"): r, ("echo", "hypercorn"): h}, ["rr", "hypercorn"], [S["echo"]])
    assert rows[0].endswith("| rr ÷ hypercorn | by server µs/req |") and rows[1] == "|---|---|---|---|---|"
    assert rows[2] == ("| echo (c=20) | 3750 (90% / 25%; 240 / 67 µs) | 1250 (100% / 25%; 800 / 67 µs) | 3.00× "
                       "| 3.33× |")
    solo = bench_h3.table({("echo", "rr"): r}, ["rr"], [S["echo"]])
    assert solo[1] == "|---|---|" and solo[2].endswith("240 / 67 µs) |")


def test_a_server_that_exits_before_answering_is_named_with_its_log(tmp_path):
    # A missing package or a bad option ends the server at once: say so, with its own words,
    # instead of probing a dead port until the timeout.
    import subprocess

    log = tmp_path / "hypercorn.log"
    log.write_text("ModuleNotFoundError: No module named 'hypercorn'\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(timeout=30)
    with pytest.raises(SystemExit, match=r"exited \(3\) before it answered: ModuleNotFoundError"):
        bench_h3.wait_ready("h3bench", 9, proc, log, timeout=30)


def test_hypercorn_missing_is_said_before_anything_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_h3, "BIN", tmp_path)
    with pytest.raises(SystemExit, match=r"hypercorn is not installed"):
        bench_h3.server_argv("hypercorn", 9, ("c.pem", "k.pem"))
