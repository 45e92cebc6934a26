"""tools/bench_apps/h3bench.c, tools/bench_h3.py's C load client (curl_cffi's libcurl + ngtcp2),
against rr's HTTP/3 listener: what it counts is what rr served, over HTTP/3, on one connection.

rr's side says so too: the access log's ``version`` of every request, and ``listener_info``
(requests served, UDP datagrams received, one connection accepted: the QUIC one). The wrong answers
(another status, another body length) must show up in bench_h3.py's ``problems``.
"""

from __future__ import annotations

import pytest
import structlog
from gevent import subprocess

import rr
from rr import resp
from tests import peers
from tests.rr.certs import make_cert
from tests.tools.test_bench_h3 import bench_h3

S = bench_h3.SCENARIOS


@pytest.fixture(scope="module")
def h3bench() -> None:
    peers.require("cc", "curl_cffi")
    why = bench_h3.h3bench_unavailable()  # compiles tools/bench_apps/h3bench.c when it is newer than the binary
    assert why is None, why


def app(req: rr.Request) -> resp.Shape:
    if req.path == "/echo":
        return resp.Response(200, [("content-type", "application/octet-stream")], req.read_body())
    if req.path == "/":
        return resp.text(200, "Hello, World!")
    return resp.text(404, "not here")


@pytest.fixture
def site(serve, tmp_path):
    cert = make_cert(tmp_path)
    return serve(app, tls={"certfile": cert[0], "keyfile": cert[1]}, access_log=True,
                 protocols=[("http3", {"max_concurrent_streams": 256}), "http2", "http1"])


def run(sc: bench_h3.Scenario, port: int, concurrency: int = 4) -> dict:
    argv = bench_h3.client_argv("h3bench", sc, port, duration=0.5, warmup=0.2, concurrency=concurrency)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return {**bench_h3.parse_client(done.stdout), "returncode": done.returncode, "stderr": done.stderr}


@pytest.mark.peers("curl_cffi", "cc")
@pytest.mark.parametrize("name", ["hello", "echo"])
def test_h3bench_counts_what_rr_served_over_h3(h3bench, site, name):
    sc = S[name]
    with structlog.testing.capture_logs() as logs:
        r = run(sc, site.port)
    assert r["returncode"] == 0, r
    assert r["requests"] > 0 and bench_h3.problems(r, sc) == [], r
    assert r["statuses"] == {"200": r["requests"]} and r["body_min"] == sc.response_size
    assert r["connections"] == 0  # counting starts after the warm-up: the one connection is older
    assert "ngtcp2" in r["libcurl"] and "nghttp3" in r["libcurl"]
    access = [e for e in logs if e.get("logger") == "rr.access"]
    assert access and {e["version"] for e in access} == {"HTTP/3"}, access[:3]
    assert {e["path"] for e in access} == {sc.path} and {e["status"] for e in access} == {200}
    assert len(access) >= r["requests"]  # plus the warm-up's
    info = rr.listener_info(site.name)
    assert info["requests_served"] == len(access)
    assert info["accepted"] == 1 and sum(info["quic_received"]) > 0  # one QUIC connection the whole run


@pytest.mark.peers("curl_cffi", "cc")
def test_h3bench_reports_another_status_and_a_wrong_length(h3bench, site):
    wrong = bench_h3.Scenario("wrong", "/nothing-here", response_size=13)
    r = run(wrong, site.port, concurrency=2)
    assert r["returncode"] == 1 and r["requests"] == 0 and r["errors"] > 0
    assert r["statuses"] == {"404": r["errors"]}
    assert bench_h3.problems(r, wrong) == [f"{r['errors']} errors (status other than 200)",
                                           f"statuses {{'404': {r['errors']}}}"]
    short = bench_h3.Scenario("short", "/", response_size=14)
    r = run(short, site.port, concurrency=2)
    assert bench_h3.problems(r, short) == ["bodies of 13 bytes, 14 expected"]
