"""Headless Chromium loads the Flask example from rr over TLS, ALPN h2 (rr.contrib.wsgi end to end).

The browser (Debian's ``chromium``, driven by Playwright in a subprocess: see
tests/rr/http2/test_chromium.py, whose fixture and helper this reuses) opens
the home page, which pulls the stylesheet from Flask's static route
(``Sendfile``), then posts the form, uploads a 300 KB file as
``multipart/form-data`` and reads the streamed response with ``fetch``.
"""

from __future__ import annotations

import json
import sys

import pytest
from gevent import subprocess

from rr.contrib import wsgi
from tests.examples.test_wsgi_examples import wsgi_app
from tests.rr.certs import make_cert
from tests.rr.http2.test_chromium import HELPER, chromium, spki_hash  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

EVALUATE = """async () => {
    const resources = performance.getEntriesByType('resource');
    const form = new URLSearchParams({name: 'Chromium <3'});
    const greet = await (await fetch('/greet', {method: 'POST', body: form})).text();
    const upload = new FormData();
    upload.append('file', new Blob([new Uint8Array(300000).fill(7)]), 'sevens.bin');
    const uploaded = await (await fetch('/upload', {method: 'POST', body: upload})).json();
    const streamed = await (await fetch('/stream?n=3')).text();
    return {
        nav: performance.getEntriesByType('navigation')[0].nextHopProtocol,
        css: resources.filter(e => e.name.endsWith('/static/css/site.css')).map(e => e.nextHopProtocol),
        h1_color: getComputedStyle(document.querySelector('h1')).color,
        greet, uploaded, streamed,
    };
}"""


def test_chromium_loads_the_flask_example_over_tls_h2(serve, tmp_path, chromium):  # noqa: F811
    certfile, keyfile = make_cert(tmp_path)
    srv = serve(wsgi.handler(wsgi_app("flask")), tls={"certfile": certfile, "keyfile": keyfile},
                protocols=["http2", "http1"], body_buffering="manual")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    spec = {"url": f"https://127.0.0.1:{srv.port}/", "chromium": chromium, "profile": str(profile),
            "spki": spki_hash(certfile), "evaluate": EVALUATE, "timeout_ms": 30_000}
    done = subprocess.run([sys.executable, str(HELPER), json.dumps(spec)], capture_output=True, text=True,
                          timeout=90)
    assert done.returncode == 0, f"chromium_page.py failed:\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["page_errors"] == [] and report["console_errors"] == [], report
    result = report["result"]
    assert result["nav"] == "h2" and result["css"] == ["h2"]
    assert result["h1_color"] == "rgb(170, 51, 51)"  # site.css arrived and applied
    assert "Hello, Chromium &lt;3!" in result["greet"]
    assert result["uploaded"]["size"] == 300000 and result["uploaded"]["filename"] == "sevens.bin"
    assert result["streamed"] == "line 0\nline 1\nline 2\n"
    assert {r["protocol"] for r in report["responses"]} == {"h2"}
