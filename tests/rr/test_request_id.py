"""request_id_header: a trusted proxy's request id is reused and echoed, on h1 and h2 alike."""

from __future__ import annotations

import re

import httpx
import pytest

from rr import resp
from tests.rr.conftest import in_thread


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
