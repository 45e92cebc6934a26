"""Chromium (Debian's, headless, driven by Playwright in a subprocess) over ws:// and wss://.

The page opens a WebSocket to rr's echo endpoint and exchanges text, binary
and a 70,000-byte message, then closes with 1000. The server side records
which protocol carried the page and the handshake, and what the browser
offered (Chromium offers permessage-deflate, so the inflate path is exercised
by a real browser). On a TLS listener preferring h2 the WebSocket goes over
HTTP/2 (RFC 8441): rr advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and
Chromium sends an extended CONNECT on the page's own connection.
"""

from __future__ import annotations

import json
import sys

import gevent.event
import pytest
from gevent import subprocess

from rr import resp
from tests.rr.certs import make_cert
from tests.rr.http2.test_chromium import HEAD, HELPER, chromium, spki_hash  # noqa: F401  (fixture)

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
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
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


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss-on-h2-listener"])
def test_chromium_exchanges_text_binary_and_70000_bytes(serve, tmp_path, chromium, tls):  # noqa: F811
    """ws:// on a plain h1 listener; wss:// on a TLS listener that prefers h2: the page
    itself comes over h2, and since rr advertises RFC 8441, Chromium opens its WebSocket
    as an extended CONNECT stream on HTTP/2 (asserted from the server side)."""
    echo = Echo()
    pages: list[str] = []

    def app(req):
        if req.path == "/ws":
            return resp.WebSocket(echo)
        pages.append(req.version)
        return resp.html(200, HEAD + "<title>ws</title>")

    opts: dict = {}
    spki = "AAAA"
    if tls:
        certfile, keyfile = make_cert(tmp_path)
        spki = spki_hash(certfile)
        opts = {"tls": {"certfile": certfile, "keyfile": keyfile}, "protocols": ["http2", "http1"]}
    srv = serve(app, **opts)
    profile = tmp_path / "profile"
    profile.mkdir()
    spec = {"url": f"{'https' if tls else 'http'}://127.0.0.1:{srv.port}/", "chromium": chromium,
            "profile": str(profile), "spki": spki, "evaluate": PAGE_JS, "timeout_ms": 30_000}
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
    # The server's view: the page over h2 on TLS (h1 on plain TCP), the WebSocket an
    # extended CONNECT on h2 (RFC 8441) with TLS, an HTTP/1.1 upgrade without;
    # Chromium offered (and got) permessage-deflate either way.
    assert pages == ["HTTP/2" if tls else "HTTP/1.1"]
    assert [s["version"] for s in echo.seen] == ["HTTP/2" if tls else "HTTP/1.1"]
    assert "permessage-deflate" in echo.seen[0]["extensions"]
    assert result["extensions"].startswith("permessage-deflate")
    assert echo.ended.get(timeout=10) == ("remote", 1000, "done")
