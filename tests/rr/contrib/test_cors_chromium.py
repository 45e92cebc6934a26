"""rr.contrib.cors judged by the browser that enforces CORS: headless Chromium.

A page on one origin (``https://127.0.0.1:A``) fetches from rr listeners on
other origins (other ports): a plain cross-origin GET that reads an exposed
header, a credentialed login that sets a cookie and a credentialed request that
sends it back, a credentialed request to an API that does not allow
credentials (the browser must refuse to hand over the answer), a preflighted
PUT, a preflight the middleware rejects (the DELETE must never reach the
server), and a 404 the page can still read. The API runs on h2 (ALPN) and on
HTTP/1.1 alone; the browser's verdicts must be the same.

Chromium is driven as in tests/rr/http2/test_chromium.py (Playwright in a
subprocess, Debian's chromium, the one test certificate accepted by its SPKI
hash). Cross-origin failures are logged to the console by Chromium, so the
console is checked for exactly those.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from gevent import subprocess

import rr
from rr import resp
from rr.contrib import cors
from tests.rr.certs import make_cert
from tests.rr.http2 import test_chromium as chromium_support

pytestmark = pytest.mark.slow

chromium = chromium_support.chromium  # the fixture: Debian's Chromium, or a clear failure/skip

PAGE = chromium_support.HEAD + "<title>cors</title>"

SCRIPT = """async () => {
    const api = API, strict = STRICT;
    const out = {};
    const attempt = async (label, url, init) => {
        try {
            const r = await fetch(url, init);
            out[label] = {status: r.status, body: await r.text(),
                          exposed: r.headers.get('ratelimit-remaining'), hidden: r.headers.get('x-hidden')};
        } catch (e) {
            out[label] = {error: e.name};
        }
    };
    await attempt('plain', api + '/data');
    await attempt('login', api + '/login', {method: 'POST', credentials: 'include'});
    await attempt('whoami', api + '/whoami', {credentials: 'include'});
    await attempt('strict', strict + '/whoami', {credentials: 'include'});
    await attempt('put', api + '/data', {method: 'PUT', headers: {'x-token': 't', 'content-type': 'text/plain'},
                                         body: 'new'});
    await attempt('delete', api + '/data', {method: 'DELETE'});
    await attempt('custom_header', api + '/data', {headers: {'x-secret': '1'}});
    await attempt('missing', api + '/missing');
    return out;
}"""


class Api:
    """An rr listener on its own origin that records what reached it."""

    def __init__(self, serve: Any, tls: dict[str, str], protocols: list[str], mw: Any) -> None:
        self.seen: list[tuple[str, str]] = []
        routes = [
            {"path": "/data", "handler": self.data, "methods": ["GET", "PUT", "DELETE"]},
            {"path": "/login", "handler": self.login, "methods": ["POST"]},
            ("/whoami", self.whoami),
        ]
        self.srv = serve(routes, middlewares=[self.record, mw], tls=tls, protocols=protocols)
        self.base = f"https://127.0.0.1:{self.srv.port}"

    def record(self, req: rr.Request, nxt: Any, state: Any) -> Any:
        self.seen.append((req.method, req.path))
        return nxt(req)

    def data(self, req: rr.Request) -> resp.Response:
        return resp.text(200, f"{req.method} data", {"ratelimit-remaining": "7", "x-hidden": "secret"})

    def login(self, req: rr.Request) -> resp.Shape:
        return resp.set_cookie(resp.text(200, "logged in"), "sid", "s3cret", path="/", secure=True,
                               http_only=True, same_site="None")

    def whoami(self, req: rr.Request) -> resp.Response:
        return resp.text(200, req.cookies().get("sid", "anonymous"))


def browse(chromium: str, tmp_path: Path, spki: str, url: str, evaluate: str) -> dict[str, Any]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    spec = {"url": url, "chromium": chromium, "profile": str(profile), "spki": spki,
            "evaluate": evaluate, "timeout_ms": 30_000}
    done = subprocess.run([sys.executable, str(chromium_support.HELPER), json.dumps(spec)],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"chromium_page.py failed:\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["page_errors"] == [], report
    return report


@pytest.mark.parametrize("protocols", [["http2", "http1"], ["http1"]], ids=["h2", "h1"])
def test_chromium_cross_origin_fetches(serve, tmp_path, chromium, protocols):
    certfile, keyfile = make_cert(tmp_path)
    tls = {"certfile": certfile, "keyfile": keyfile}
    page = serve([("/", lambda req: resp.html(200, PAGE))], tls=tls, protocols=["http2", "http1"])
    origin = f"https://127.0.0.1:{page.port}"
    api = Api(serve, tls, protocols, cors.middleware(
        origins=[origin], allow_methods=["GET", "PUT"], allow_headers=["x-token", "content-type"],
        expose_headers=["ratelimit-remaining"], allow_credentials=True, max_age=0))
    strict = Api(serve, tls, protocols, cors.middleware(origins=[origin]))  # no credentials

    script = SCRIPT.replace("API", json.dumps(api.base)).replace("STRICT", json.dumps(strict.base))
    report = browse(chromium, tmp_path, chromium_support.spki_hash(certfile), origin + "/", script)
    out = report["result"]

    # Without credentials: readable, and only the exposed header is visible to the page.
    assert out["plain"] == {"status": 200, "body": "GET data", "exposed": "7", "hidden": None}
    # With credentials: the cookie set cross-origin comes back on the next credentialed request.
    assert out["login"].get("status") == 200 and out["whoami"].get("body") == "s3cret", out
    # An API that does not allow credentials: the request went out, the browser withheld the answer.
    assert out["strict"] == {"error": "TypeError"} and ("GET", "/whoami") in strict.seen
    # A preflighted PUT with allowed headers goes through.
    assert out["put"]["status"] == 200 and out["put"]["body"] == "PUT data"
    # Rejected preflights (a method, a header not allowed): the real request never reached rr.
    assert out["delete"] == {"error": "TypeError"} and out["custom_header"] == {"error": "TypeError"}
    assert ("OPTIONS", "/data") in api.seen and ("DELETE", "/data") not in api.seen
    assert [m for m, p in api.seen if p == "/data"].count("GET") == 1  # the x-secret GET never went out
    # A 404 from the router carries the CORS headers, so the page can read it.
    assert out["missing"]["status"] == 404
    # The only console errors are the four refusals Chromium reports.
    assert len(report["console_errors"]) >= 3 and all("CORS" in e or "Failed to load" in e
                                                      or "net::ERR_FAILED" in e for e in report["console_errors"])
