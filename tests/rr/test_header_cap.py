"""The outbound header cap: ``max_response_header_size`` and the h2 peer's own limit.

A response head over the listener's cap (default 64 KiB, fields sized as
RFC 9113 §6.5.2 size them) is a 500 on every protocol (the matrix rows in
``tests/rr/test_matrix.py`` section 19 pin it per column); here: the default
seen through curl, the option's validation, and an h2 client that announced
``SETTINGS_MAX_HEADER_LIST_SIZE`` (the ``h2`` library, which would refuse an
oversized block itself) getting a 500 instead of a block it cannot take.
"""

from __future__ import annotations

import pytest
import structlog
from gevent import subprocess
from h2.settings import SettingCodes

from rr import resp
from tests.rr.http2.client import H2Client


def big_header(req):
    size = int(req.query()["size"][0])
    if req.query().get("hint"):
        req.early_hints([("link", "<" + "h" * size + ">; rel=preload")])
    return resp.Response(200, [("x-big", "b" * size)], b"ok")


@pytest.mark.peers("curl")
@pytest.mark.parametrize("how", ["http1.1", "http2-prior-knowledge"])
def test_the_default_cap_is_64_kib_through_curl(serve, how):
    srv = serve(big_header, protocols=["http1", "http2"])
    for size, status in ((60_000, "200"), (66_000, "500")):
        proc = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_header}", f"--{how}",
                               f"{srv.url}/?size={size}"], capture_output=True, timeout=30, check=False)
        code, head_bytes = proc.stdout.decode().split()
        assert code == status, (size, proc.stdout, proc.stderr)
        if status == "200":
            assert int(head_bytes) > size


@pytest.mark.parametrize("value", [1023, 0, -1, "64k", 1.5, True, None])
def test_max_response_header_size_must_be_an_integer_of_at_least_1024(serve, value):
    with pytest.raises(ValueError, match="max_response_header_size"):
        serve(big_header, max_response_header_size=value)


@pytest.mark.parametrize("hint", [False, True], ids=["head", "early_hints"])
def test_an_h2_peers_max_header_list_size_is_respected(serve, hint):
    """The client said SETTINGS_MAX_HEADER_LIST_SIZE 2048: a head over it is a 500 (logged,
    naming the client's limit), one under it goes out; the listener's own cap is far above."""
    srv = serve(big_header, protocols=["http2"])
    c = H2Client(srv.port, settings={SettingCodes.MAX_HEADER_LIST_SIZE: 2048})
    q = "&hint=1" if hint else ""
    try:
        with structlog.testing.capture_logs() as logs:
            over = c.request("GET", f"/?size=3000{q}")
            # 1900 + date + 37 fit 2048, not with :status and content-length: still a 500
            edge = c.request("GET", f"/?size=1900{q}")
            under = c.request("GET", f"/?size=1800{q}")
            res = c.run(timeout=10)
    finally:
        c.close()
    assert res[over].status == 500 and res[over].interim == [] and res[over].header("x-big") is None
    assert res[edge].status == 500 and res[edge].interim == []
    assert res[under].status == 200 and res[under].header("x-big") == "b" * 1800
    assert len(res[under].interim) == (1 if hint else 0)
    crashes = [e for e in logs if e.get("event") == "handler crashed"]
    assert len(crashes) == 2 and "over the client's limit of 2048" in str(crashes[0]["exc_info"]), logs
    assert c.goaway is None


@pytest.mark.parametrize("request_id", [False, True])
def test_the_date_and_the_request_id_count_toward_the_cap(serve, request_id):
    """At max_response_header_size 1024: x-big (32 + 5 + size), date (32 + 4 + 29) and, with
    request_id_header, x-request-id (32 + 12 + 16 hex characters) fill it exactly at size 922
    without the id and 862 with it; one byte more is a 500."""
    from tests.rr.conftest import read_response

    opts = {"request_id_header": "x-request-id"} if request_id else {}
    srv = serve(big_header, max_response_header_size=1024, **opts)
    edge = 862 if request_id else 922
    for size, status in ((edge, b"200"), (edge + 1, b"500")):
        with srv.connect() as sock:
            sock.sendall(b"GET /?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
            head, _ = read_response(sock)
        assert head.split(b" ")[1] == status, (size, head[:200])
