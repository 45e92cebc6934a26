"""rr.contrib.compress judged by headless Chromium over TLS (h2 and HTTP/1.1).

The browser picks the coding from its own ``Accept-Encoding`` (gzip, deflate,
br, zstd), must decode every coded answer back to the same bytes, and must see
a gzip-coded event stream event by event: the server holds the second event
until the page, having received the first, asks for it. Without a flush per
chunk the first event would sit in the coder and the page would wait forever.

Driven as in tests/rr/http2/test_chromium.py.
"""

from __future__ import annotations

from typing import Any

import gevent.event
import pytest

from rr import resp
from rr.contrib import compress, sse
from tests.rr.certs import make_cert
from tests.rr.contrib.test_cors_chromium import browse
from tests.rr.http2 import test_chromium as chromium_support

pytestmark = pytest.mark.slow

chromium = chromium_support.chromium

DATA = {"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(400)]}

SCRIPT = """async () => {
    const out = {codings: {}};
    for (const coding of ['br', 'zstd', 'gzip', 'deflate']) {
        const r = await fetch('/data/' + coding);
        const body = await r.json();
        out.codings[coding] = {status: r.status, items: body.items.length, last: body.items[399].name};
    }
    const entries = performance.getEntriesByType('resource').filter(e => e.name.includes('/data'));
    out.sizes = entries.map(e => [e.encodedBodySize, e.decodedBodySize]);
    out.events = await new Promise((resolve, reject) => {
        const seen = [];
        const source = new EventSource('/events');
        source.onmessage = async (e) => {
            seen.push(e.data);
            if (seen.length === 1) await fetch('/release');
            if (seen.length === 2) { source.close(); resolve(seen); }
        };
        source.onerror = () => { source.close(); reject(new Error('event stream failed')); };
    });
    return out;
}"""


@pytest.mark.parametrize("protocols", [["http2", "http1"], ["http1"]], ids=["h2", "h1"])
def test_chromium_decodes_every_coding_and_gets_sse_event_by_event(serve, tmp_path, chromium, protocols):
    certfile, keyfile = make_cert(tmp_path)
    release = gevent.event.Event()
    seen: list[dict[str, Any]] = []

    def data(req):
        seen.append({"path": req.path, "accept-encoding": req.headers.get("accept-encoding")})
        return resp.json(200, DATA)

    def events(req):
        def produce(send):
            send(sse.event("first"))
            # The page asks for the second event only once the first has arrived.
            send(sse.event("second" if release.wait(10) else "never released"))

        return resp.Stream(200, list(sse.HEADERS), produce)

    def release_it(req):
        release.set()
        return resp.no_content()

    codings: list[str | None] = []

    def record(req, nxt, state):
        result = nxt(req)
        codings.append(resp.get_header(result, "content-encoding"))
        return result

    # One route per coding: the browser offers all four, each route offers one.
    routes: list[Any] = [
        {"path": f"/data/{c}", "handler": data, "middlewares": [record, compress.middleware(encodings=[c])]}
        for c in ("br", "zstd", "gzip", "deflate")
    ]
    routes += [
        ("/", lambda req: resp.html(200, chromium_support.HEAD + "<title>compress</title>")),
        {"path": "/events", "handler": events, "middlewares": [record, compress.middleware(encodings=["gzip"])]},
        ("/release", release_it),
    ]
    srv = serve(routes, tls={"certfile": certfile, "keyfile": keyfile}, protocols=protocols)

    report = browse(chromium, tmp_path, chromium_support.spki_hash(certfile),
                    f"https://127.0.0.1:{srv.port}/", SCRIPT)
    out = report["result"]
    assert report["console_errors"] == [], report
    for coding in ("br", "zstd", "gzip", "deflate"):
        assert out["codings"][coding] == {"status": 200, "items": 400, "last": "item-399"}, coding
    # every fetch went out coded: far fewer bytes on the wire than decoded
    assert len(out["sizes"]) == 4 and all(enc * 5 < dec for enc, dec in out["sizes"]), out["sizes"]
    assert all({"br", "zstd", "gzip"} <= {c.strip() for c in s["accept-encoding"].split(",")} for s in seen)
    assert out["events"] == ["first", "second"]
    assert codings == ["br", "zstd", "gzip", "deflate", "gzip"]  # the event stream was coded too
