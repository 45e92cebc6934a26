"""The Flask and Django examples on rr (rr.contrib.wsgi), over the wire, and against gunicorn.

Each example is driven by httpx with the same requests: the home page, a form
post, a 3 MB file upload, a streamed response, static files (whole, HEAD,
a range), the error page and the 404 page. They run on HTTP/1.1, on h2c
(prior knowledge) and on h2 over TLS; and the same requests sent to the same
app under ``gunicorn -k gevent`` (a subprocess on an ephemeral port) must give
the same status, the same relevant headers and the same body.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import gevent
import httpx
import pytest
from gevent import subprocess

from rr import resp
from rr.contrib import wsgi
from rr.request import Headers, Request
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
APPS = {"flask": ("flask_app", "app"), "django": ("django_app", "application")}
UPLOAD = random.Random(14).randbytes(3 * 1024 * 1024)
SITE_CSS = (EXAMPLES / "static_site" / "css" / "site.css").read_bytes()
INDEX_HTML = (EXAMPLES / "static_site" / "index.html").read_bytes()
# Headers whose values come from the app, so rr and gunicorn must agree on them.
COMPARED = ("content-type", "content-length", "content-disposition", "content-range", "location",
            "etag", "last-modified", "cache-control", "accept-ranges", "allow")


def load(module_name: str) -> ModuleType:
    """Import an example under its own name (Django's ROOT_URLCONF is the module's name)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{module_name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def wsgi_app(kind: str) -> Any:
    module_name, attr = APPS[kind]
    return getattr(load(module_name), attr)


def exchange(client: httpx.Client) -> dict[str, httpx.Response]:
    """The example requests every server gets; keyed by a short name."""
    out = {
        "home": client.get("/"),
        "form": client.post("/greet", data={"name": "<b>Ann & Bob</b>"}),
        "upload": client.post("/upload", files={"file": ("photo.bin", UPLOAD, "application/octet-stream")}),
        "stream": client.get("/stream", params={"n": "200"}),
        "static": client.get("/static/css/site.css"),
        "static_head": client.head("/static/index.html"),
        "static_range": client.get("/static/index.html", headers={"range": "bytes=2-9"}),
        "error": client.get("/boom"),
        "missing": client.get("/no/such/page"),
    }
    for response in out.values():
        response.read()
    return out


def check_example_answers(kind: str, answers: dict[str, httpx.Response]) -> None:
    assert answers["home"].status_code == 200 and b"<form method=post action=/greet>" in answers["home"].content
    assert answers["form"].status_code == 200
    assert b"Hello, &lt;b&gt;Ann &amp; Bob&lt;/b&gt;!" in answers["form"].content
    upload = answers["upload"].json()
    assert upload == {"filename": "photo.bin", "size": len(UPLOAD), "sha256": hashlib.sha256(UPLOAD).hexdigest()}
    assert answers["stream"].content == b"".join(b"line %d\n" % i for i in range(200))
    assert answers["static"].status_code == 200 and answers["static"].content == SITE_CSS
    assert answers["static"].headers["content-type"].startswith("text/css")
    assert answers["static_head"].status_code == 200 and answers["static_head"].content == b""
    assert answers["static_head"].headers["content-length"] == str(len(INDEX_HTML))
    if kind == "flask":  # werkzeug serves ranges; Django's static view answers the whole file
        assert answers["static_range"].status_code == 206 and answers["static_range"].content == INDEX_HTML[2:10]
    else:
        assert answers["static_range"].status_code == 200 and answers["static_range"].content == INDEX_HTML
    assert answers["error"].status_code == 500 and b"Something broke" in answers["error"].content
    assert answers["missing"].status_code == 404 and b"Not here" in answers["missing"].content


def serve_example(serve, kind: str, **opts: Any):
    opts.setdefault("body_buffering", "manual")
    opts.setdefault("max_content_length", 64 * 1024 * 1024)
    return serve(wsgi.handler(wsgi_app(kind)), **opts)


@pytest.mark.parametrize("kind", sorted(APPS))
def test_example_serves_form_upload_stream_static_and_error_pages_over_http1(serve, kind):
    srv = serve_example(serve, kind)

    def run() -> dict[str, httpx.Response]:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            return exchange(client)

    answers = in_thread(run)
    check_example_answers(kind, answers)
    assert all(r.http_version == "HTTP/1.1" for r in answers.values())
    assert answers["stream"].headers.get("transfer-encoding") == "chunked"  # streamed, not buffered


@pytest.mark.parametrize("kind", sorted(APPS))
def test_example_static_files_go_out_as_sendfile(kind):
    handler = wsgi.handler(wsgi_app(kind))
    req = Request("GET", "/static/css/site.css", "/static/css/site.css", "", "HTTP/1.1",
                  Headers([("host", "localhost")]), host="localhost", peer=("127.0.0.1", 1), body=b"")
    shape = handler(req)
    assert isinstance(shape, resp.Sendfile)
    assert (shape.path, shape.offset, shape.length) == (str(EXAMPLES / "static_site" / "css" / "site.css"), 0,
                                                        len(SITE_CSS))


def test_flask_example_over_h2c_prior_knowledge_and_h2_over_tls(serve, tmp_path):
    plain = serve_example(serve, "flask", protocols=["http1", "http2"])
    certfile, keyfile = make_cert(tmp_path)
    tls = serve_example(serve, "flask", protocols=["http2", "http1"],
                        tls={"certfile": certfile, "keyfile": keyfile})

    def run() -> tuple[dict[str, httpx.Response], dict[str, httpx.Response]]:
        with httpx.Client(base_url=plain.url, http1=False, http2=True, timeout=30) as h2c, \
                httpx.Client(base_url=f"https://127.0.0.1:{tls.port}", http2=True, verify=False,
                             timeout=30) as h2:
            return exchange(h2c), exchange(h2)

    for answers in in_thread(run):
        check_example_answers("flask", answers)
        assert {r.http_version for r in answers.values()} == {"HTTP/2"}


# -- the same requests under gunicorn -k gevent ---------------------------------


@pytest.fixture
def gunicorn() -> Iterator[Any]:
    procs: list[subprocess.Popen] = []

    def start(kind: str) -> str:
        module_name, attr = APPS[kind]
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", "127.0.0.1:0",
             "--chdir", str(EXAMPLES), "--limit-request-line", "8190", f"{module_name}:{attr}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        procs.append(proc)
        seen = []
        with gevent.Timeout(30, TimeoutError("gunicorn did not say where it listens")):
            while True:
                line = proc.stderr.readline().decode()
                seen.append(line)
                if not line:
                    raise RuntimeError("gunicorn exited: " + "".join(seen))
                match = re.search(r"Listening at: (http://\S+)", line)
                if match:
                    return match.group(1)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(15)


def comparable(response: httpx.Response) -> dict[str, Any]:
    return {
        "status": response.status_code,
        "headers": {name: response.headers.get(name) for name in COMPARED},
        "body": response.content,
    }


@pytest.mark.parametrize("kind", sorted(APPS))
def test_same_requests_give_the_same_answers_under_rr_and_gunicorn_gevent(serve, gunicorn, kind):
    srv = serve_example(serve, kind)
    gunicorn_url = gunicorn(kind)

    def run(url: str) -> dict[str, httpx.Response]:
        with httpx.Client(base_url=url, timeout=30) as client:
            return exchange(client)

    under_rr = in_thread(run, srv.url)
    under_gunicorn = in_thread(run, gunicorn_url)
    check_example_answers(kind, under_gunicorn)  # the reference itself serves the example as expected
    for name in under_rr:
        assert comparable(under_rr[name]) == comparable(under_gunicorn[name]), name
    assert json.loads(under_rr["upload"].content) == json.loads(under_gunicorn["upload"].content)


@pytest.mark.parametrize("kind", sorted(APPS))
def test_the_rr_command_detects_and_serves_each_example(kind):
    module_name, attr = APPS[kind]
    proc = subprocess.Popen([sys.executable, "-m", "rr", f"{module_name}:{attr}", "--chdir", str(EXAMPLES),
                             "--port", "0"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        match = re.search(r"\(WSGI app .*\) listening on (\S+?)/ ", line)
        assert match, (line, proc.stderr.read().decode() if proc.poll() is not None else "")

        def run() -> dict[str, httpx.Response]:
            with httpx.Client(base_url=match.group(1), timeout=30) as client:
                return exchange(client)

        check_example_answers(kind, in_thread(run))
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0
