"""103 Early Hints (``req.early_hints``) seen by clients rr did not write.

curl prints interim responses (``-i`` and ``-v``) over HTTP/1.1 and h2; nghttp
prints every frame (``-v``), so the 103 is seen as a HEADERS frame without
END_STREAM before the final HEADERS; the ``h2`` library reports it as an
``InformationalResponseReceived`` event. An HTTP/1.0 client gets none. The
103 leaves while the handler is still working (it is not held back until the
final response). The per-protocol rules themselves are rows of the behaviour
matrix (``tests/rr/test_matrix.py``, section 18); Chromium preloading from a
103 is in ``tests/rr/http2/test_chromium.py``.
"""

from __future__ import annotations

import re

import gevent.event
import pytest
from gevent import subprocess

import rr
from rr import resp
from rr.request import Headers, Request
from tests.rr.http2 import frames
from tests.rr.http2.client import H2Client

STYLE = "</style.css>; rel=preload; as=style"
SCRIPT = "</app.js>; rel=preload; as=script"


def hinted(req: rr.Request) -> resp.Shape:
    sent = req.early_hints([("Link", STYLE), ("link", SCRIPT)])
    return resp.text(200, f"hinted={sent}\n")


def run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, timeout=timeout, check=False)


@pytest.mark.peers("curl")
@pytest.mark.parametrize("how", ["http1.1", "http2-prior-knowledge"])
def test_curl_prints_the_103_with_its_links_before_the_200(serve, how):
    srv = serve(hinted, protocols=["http1", "http2"])
    proc = run("curl", "-sv", "--include", f"--{how}", f"{srv.url}/")
    out, err = proc.stdout.decode("latin-1"), proc.stderr.decode("latin-1")
    assert proc.returncode == 0, err
    version = "1.1" if how == "http1.1" else "2"
    # --include prints every head, the interim one first, then the body.
    heads = re.findall(rf"HTTP/{re.escape(version)} (\d+)[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n", out)
    assert [status for status, _ in heads] == ["103", "200"], out
    assert heads[0][1].lower() == f"link: {STYLE}\r\nlink: {SCRIPT}\r\n".lower(), out
    assert out.endswith("hinted=True\n"), out
    assert f"< HTTP/{version} 103" in err, err  # -v shows it too


@pytest.mark.peers("curl")
def test_an_http10_client_gets_no_103(serve):
    srv = serve(hinted)
    proc = run("curl", "-s", "--include", "--http1.0", f"{srv.url}/")
    out = proc.stdout.decode("latin-1")
    assert out.startswith("HTTP/1.1 200 OK\r\n") and " 103 " not in out, out
    assert out.endswith("hinted=False\n"), out


@pytest.mark.peers("nghttp")
def test_nghttp_sees_a_headers_frame_without_end_stream_with_status_103(serve):
    srv = serve(hinted, protocols=["http2"])
    proc = run("nghttp", "-v", f"http://127.0.0.1:{srv.port}/")
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    blocks = _nghttp_header_blocks(out, 13)
    assert len(blocks) == 2, out
    (interim_flags, interim), (final_flags, final) = blocks
    assert interim_flags == "0x04", out  # END_HEADERS only: the stream goes on
    assert interim == [":status: 103", f"link: {STYLE}", f"link: {SCRIPT}"], out
    assert final[0] == ":status: 200" and "content-length: 12" in final, out
    assert out.index(":status: 103") < out.index(":status: 200")


def _nghttp_header_blocks(out: str, sid: int) -> list[tuple[str, list[str]]]:
    """(flags, fields) of each HEADERS frame received on ``sid``: nghttp -v prints a block's
    fields (``recv (stream_id=N) name: value``) before the frame's own line."""
    blocks, fields = [], []
    for line in out.splitlines():
        field = re.search(rf"\] recv \(stream_id={sid}\) (.*)$", line)
        frame = re.search(rf"\] recv HEADERS frame <length=\d+, flags=(0x[0-9a-f]+), stream_id={sid}>", line)
        if field:
            fields.append(field.group(1))
        elif frame:
            blocks.append((frame.group(1), fields))
            fields = []
    return blocks


def test_the_h2_library_reports_an_informational_response(serve):
    srv = serve(hinted, protocols=["http2"])
    c = H2Client(srv.port)
    try:
        sid = c.request("GET", "/")
        res = c.run()[sid]
    finally:
        c.close()
    assert res.interim == [[(":status", "103"), ("link", STYLE), ("link", SCRIPT)]], res.interim
    assert res.status == 200 and res.body == b"hinted=True\n"


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_the_103_leaves_while_the_handler_still_works(serve, protocol):
    """The client reads the 103 before the handler has decided its final response."""
    release = gevent.event.Event()

    def app(req):
        req.early_hints([("link", STYLE)])
        release.wait(10)
        return resp.text(200, "late")

    srv = serve(app, protocols=[protocol])
    if protocol == "http1":
        with srv.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:
                got += sock.recv(65536)
            assert got == f"HTTP/1.1 103 Early Hints\r\nlink: {STYLE}\r\n\r\n".encode(), got
            assert not release.is_set()
            release.set()
            while b"late" not in got:
                got += sock.recv(65536)
        assert b"HTTP/1.1 200 OK\r\n" in got
        return
    with frames.Peer(srv.port) as p:
        p.send(p.headers(1, p.request_fields("GET", "/"), end_stream=True))
        res = p.responses.setdefault(1, frames.Response())
        p.wait(lambda: res.headers is not None, what="the 103")
        assert res.status == 103 and res.header("link") == STYLE and not res.ended
        assert not release.is_set()
        release.set()
        p.wait(lambda: res.done, what="the final response")
    assert res.status == 200 and res.body == b"late" and res.interim[0][0] == (":status", "103")


def test_early_hints_outside_a_served_request_do_nothing():
    """A handler called directly (a unit test) has no response to precede: ``False``."""
    req = Request("GET", "/", "/", "", "HTTP/1.1", Headers([]))
    assert req.early_hints([("link", STYLE)]) is False
