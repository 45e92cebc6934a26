"""Chromium (Debian's, headless, driven by Playwright in a subprocess) over ws://.

The page opens a WebSocket to rr's echo endpoint and exchanges text, binary
and a 70,000-byte message, then closes with 1000. The server side records
which protocol carried the handshake and what the browser offered
(Chromium offers permessage-deflate, so the inflate path is exercised by a
real browser). wss:// over h2 (RFC 8441) is not served yet.
"""

from __future__ import annotations

import json
import sys

import gevent.event
import pytest
from gevent import subprocess

from rr import resp
from tests.rr.http2.test_chromium import HEAD, HELPER, chromium  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


class Echo:
    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.ended = gevent.event.AsyncResult()

    def init(self, req, state):
        self.seen.append({"version": req.version,
                          "extensions": req.headers.get("sec-websocket-extensions", "")})
        return state

    def handle_frame(self, frame, state):
        return [frame], state

    def terminate(self, reason, state):
        self.ended.set(reason)


PAGE_JS = """async () => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    ws.binaryType = 'arraybuffer';
    const inbox = [];
    let wake = null;
    ws.onmessage = (e) => { inbox.push(e.data); if (wake) { wake(); wake = null; } };
    const next = () => inbox.length ? Promise.resolve(inbox.shift())
        : new Promise(r => { wake = r; }).then(() => inbox.shift());
    await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
    ws.send('héllo rr');
    const text = await next();
    ws.send(new Uint8Array([0, 1, 2, 255]));
    const bin = Array.from(new Uint8Array(await next()));
    const big = new Uint8Array(70000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) % 251;
    ws.send(big);
    const back = new Uint8Array(await next());
    let same = back.length === big.length;
    for (let i = 0; same && i < back.length; i++) same = back[i] === big[i];
    const closed = new Promise(r => { ws.onclose = (e) => r([e.code, e.wasClean]); });
    ws.close(1000, 'done');
    return {text, bin, bigLength: back.length, same, extensions: ws.extensions, closed: await closed};
}"""


def test_chromium_exchanges_text_binary_and_70000_bytes_over_ws(serve, tmp_path, chromium):  # noqa: F811
    echo = Echo()

    def app(req):
        if req.path == "/ws":
            return resp.WebSocket(echo)
        return resp.html(200, HEAD + "<title>ws</title>")

    srv = serve(app)
    profile = tmp_path / "profile"
    profile.mkdir()
    spec = {"url": f"http://127.0.0.1:{srv.port}/", "chromium": chromium, "profile": str(profile),
            "spki": "AAAA", "evaluate": PAGE_JS, "timeout_ms": 30_000}
    done = subprocess.run([sys.executable, str(HELPER), json.dumps(spec)], capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["page_errors"] == [] and report["console_errors"] == [], report
    result = report["result"]
    assert result["text"] == "héllo rr"
    assert result["bin"] == [0, 1, 2, 255]
    assert result["bigLength"] == 70000 and result["same"]
    assert result["closed"] == [1000, True]
    # The server's view: an HTTP/1.1 upgrade; Chromium offered (and got) permessage-deflate.
    assert [s["version"] for s in echo.seen] == ["HTTP/1.1"]
    assert "permessage-deflate" in echo.seen[0]["extensions"]
    assert result["extensions"].startswith("permessage-deflate")
    assert echo.ended.get(timeout=10) == ("remote", 1000, "done")
