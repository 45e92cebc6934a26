"""A Flask app served by rr through the WSGI adapter (``rr.contrib.wsgi``).

    pip install flask
    python examples/flask_app.py                    # http://127.0.0.1:8080/ (HTTP/1.1 + h2c)
    cd examples && rr flask_app:app                 # the same through the CLI (auto-detects WSGI)
    gunicorn -k gevent --chdir examples flask_app:app   # the same app under gunicorn

A form post (``/greet``), a file upload (``/upload``), a streamed response
(``/stream``), static files (``/static/...``, sent with ``Sendfile``), and
error pages (``/boom`` raises; unknown paths get the 404 page).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response, request
from markupsafe import Markup, escape

import rr
from rr.contrib import wsgi

STATIC = Path(__file__).resolve().parent / "static_site"

app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024

PAGE = Markup("""<!doctype html><meta charset="utf-8"><title>rr + Flask</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/css/site.css">
<h1>rr + Flask</h1>
<form method=post action=/greet><input name=name> <button>greet</button></form>
<form method=post action=/upload enctype=multipart/form-data>
<input type=file name=file> <button>upload</button></form>
<p><a href=/stream>a streamed response</a> · <a href=/boom>an error</a></p>
""")


@app.get("/")
def index() -> str:
    return PAGE


@app.post("/greet")
def greet() -> str:
    name = request.form.get("name", "").strip() or "stranger"
    return f"<!doctype html><p>Hello, {escape(name)}!</p>"


@app.post("/upload")
def upload() -> dict[str, object]:
    sent = request.files.get("file")
    if sent is None:
        return {"error": "no file field"}
    digest = hashlib.sha256()
    size = 0
    while chunk := sent.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": sent.filename, "size": size, "sha256": digest.hexdigest()}


@app.get("/stream")
def stream() -> Response:
    count = min(int(request.args.get("n", "5")), 1000)

    def lines() -> Iterator[str]:  # each line is sent as it is produced
        for i in range(count):
            yield f"line {i}\n"

    return Response(lines(), mimetype="text/plain")


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("the example's error page")


@app.errorhandler(404)
def not_found(_error: Exception) -> tuple[str, int]:
    return "<!doctype html><h1>Not here</h1>", 404


@app.errorhandler(500)
def server_error(_error: Exception) -> tuple[str, int]:
    return "<!doctype html><h1>Something broke</h1>", 500


def main() -> None:
    rr.start_listener("flask", {
        "port": int(os.environ.get("RR_PORT", "8080")),
        "ip": os.environ.get("RR_IP", "127.0.0.1"),
        "protocols": ["http1", "http2"],
        "routes": wsgi.handler(app),
        # Uploads stream through wsgi.input from the connection instead of being buffered first.
        "body_buffering": "manual",
        "max_content_length": 64 * 1024 * 1024,
    })
    print(f"rr: serving examples/flask_app.py on http://127.0.0.1:{rr.listener_port('flask')}/", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
