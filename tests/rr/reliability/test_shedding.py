"""Load shedding (issue 13, defect 2): above ``shed_concurrent_requests`` running
exchanges, a new request gets ``503`` + ``retry-after`` instead of being served.

Held requests fill the listener; curl (h1, and h2c with prior knowledge) then
asks for more on the same port. The h2 connection that was answered 503 on one
stream serves its next stream once the load is gone.
"""

from __future__ import annotations

import gevent.event
import gevent.subprocess
import pytest

import rr
from rr import resp, telemetry
from tests.rr.conftest import read_response
from tests.rr.http2.frames import Peer


@pytest.fixture
def held():
    release = gevent.event.Event()
    yield release
    release.set()


def _app(release: gevent.event.Event, entered: list[str], both: gevent.event.Event):
    def app(req):
        if req.path == "/hold":
            entered.append(req.version)
            if len(entered) == 2:
                both.set()
            release.wait(20)
        return resp.text(200, "ok")
    return app


def _curl(port: int, *flags: str) -> tuple[str, str]:
    out = gevent.subprocess.run(
        ["curl", "-s", "-i", "--max-time", "10", *flags, f"http://127.0.0.1:{port}/"],
        capture_output=True, check=True, timeout=20).stdout.decode()
    head, _, body = out.partition("\r\n\r\n")
    return head.lower(), body


def test_requests_over_shed_concurrent_requests_get_503_with_retry_after_on_h1_and_h2(serve, held):
    entered: list[str] = []
    both = gevent.event.Event()
    seen = []
    telemetry.attach("t-shed", ("rr", "request", "shed"), lambda ev, meas, meta, cfg: seen.append(meas))
    try:
        srv = serve(_app(held, entered, both), protocols=["http1", "http2"], shed_concurrent_requests=2)
        h1 = srv.connect()
        h2 = Peer(srv.port)
        try:
            h1.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
            h2.handshake()
            h2.request(1, "/hold")
            assert both.wait(10), entered
            assert rr.listener_info(srv.name)["in_flight"] == 2

            head, body = _curl(srv.port)
            assert head.startswith("http/1.1 503") and "retry-after: 1" in head, head
            head, body = _curl(srv.port, "--http2-prior-knowledge")
            assert head.startswith("http/2 503") and "retry-after: 1" in head, head
            h2.request(3, "/")
            answer = h2.response(3)
            assert answer.status == 503 and answer.header("retry-after") == "1"
            info = rr.listener_info(srv.name)
            assert info["shed"] == 3 and info["shed_concurrent_requests"] == 2
            assert len(entered) == 2

            held.set()
            assert h2.response(1).status == 200
            head, body = read_response(h1)
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
            # Below the threshold again: served, on the same h2 connection too.
            assert h2.expect_alive(5).body == b"ok"
            head, body = _curl(srv.port, "--http2-prior-knowledge")
            assert head.startswith("http/2 200") and body == "ok"
            assert rr.listener_info(srv.name)["shed"] == 3
        finally:
            h1.close()
            h2.close()
    finally:
        telemetry.detach("t-shed")
    assert len(seen) == 3 and all(m["in_flight"] >= 2 for m in seen)


def test_shed_concurrent_requests_is_off_by_default_and_validated(serve):
    srv = serve(lambda req: resp.text(200, "ok"))
    assert rr.listener_info(srv.name)["shed_concurrent_requests"] is None
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError, match="shed_concurrent_requests"):
            rr.start_listener("bad-shed", {"port": 0, "routes": lambda req: None, "shed_concurrent_requests": bad})
