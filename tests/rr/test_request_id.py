"""request_id_header: a trusted proxy's request id is reused and echoed, on h1 and h2 alike
(also on the 500 the h2 conn answers for a stream worker that died before its head)."""

from __future__ import annotations

import re

import httpx
import pytest
import structlog

from rr import resp
from tests.rr.conftest import in_thread
from tests.rr.http2.client import H2Client


def _get(url: str, http2: bool, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        return client.get(url, headers=headers)


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_a_proxys_request_id_is_reused_and_echoed(serve, protocol):
    seen = []
    srv = serve(lambda req: (seen.append(req.request_id), resp.text(200, "ok"))[1],
                protocols=[protocol], request_id_header="x-request-id")
    url = f"{srv.url}/"
    r = in_thread(_get, url, protocol == "http2", {"x-request-id": "edge-7f3a:42"})
    assert r.headers["x-request-id"] == "edge-7f3a:42" == seen[-1]
    r = in_thread(_get, url, protocol == "http2", {})  # none given: rr's own id, echoed
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"]) and r.headers["x-request-id"] == seen[-1]
    r = in_thread(_get, url, protocol == "http2", {"x-request-id": "has space"})  # not safe: replaced
    assert r.headers["x-request-id"] != "has space" and r.headers["x-request-id"] == seen[-1]


def test_without_the_option_no_id_is_echoed(serve):
    srv = serve(lambda req: resp.text(200, "ok"))
    r = in_thread(_get, f"{srv.url}/", False, {"x-request-id": "abc"})
    assert "x-request-id" not in r.headers


def test_request_id_header_must_be_a_lowercase_header_name(serve):
    with pytest.raises(ValueError, match="request_id_header"):
        serve(lambda req: resp.text(200, "ok"), request_id_header="X Request\r\nId")


@pytest.mark.parametrize("given", ["edge-7f3a:42", None], ids=["proxy_id", "own_id"])
def test_h2_500_for_a_worker_that_died_before_its_head_carries_the_request_id(serve, given):
    """The worker dies (over its ``max_heap`` while the body is read) before any head: the
    h2 conn answers 500 in its place, and that answer carries the id like every other."""
    seen = []

    def app(req):
        seen.append(req.request_id)
        return resp.text(200, "fine")

    srv = serve(app, protocols=["http2"], request_id_header="x-request-id",
                handler_spawn={"max_heap": 256 * 1024})
    c = H2Client(srv.port)
    try:
        extra = [("x-request-id", given)] if given else []
        with structlog.testing.capture_logs() as logs:
            big = c.request("POST", "/upload", body=b"z" * (2 * 1024 * 1024), headers=extra)
            res = c.run(timeout=15)
        fine = c.request("GET", "/", headers=extra)
        res.update(c.run([fine]))
    finally:
        c.close()
    assert res[big].status == 500, res[big].headers
    died = [e for e in logs if e.get("event") == "h2 stream worker died"]
    assert len(died) == 1, logs
    echoed = res[big].header("x-request-id")
    assert echoed == died[0]["request_id"], (res[big].headers, died)
    if given:
        assert echoed == given and res[fine].header("x-request-id") == given
    else:
        assert echoed is not None and re.fullmatch(r"[0-9a-f]{16}", echoed)
    assert seen == [res[fine].header("x-request-id")]  # the upload's handler never ran
