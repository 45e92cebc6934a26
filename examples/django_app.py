"""A single-file Django project served by rr through the WSGI adapter (``rr.contrib.wsgi``).

    pip install django
    python examples/django_app.py                        # http://127.0.0.1:8080/ (HTTP/1.1 + h2c)
    cd examples && rr django_app:application             # the same through the CLI (auto-detects WSGI)
    gunicorn -k gevent --chdir examples django_app:application

The same pages as ``flask_app.py``: a form post (``/greet``), a file upload
(``/upload``), a streamed response (``/stream``), static files
(``/static/...``: Django's ``FileResponse`` goes through ``wsgi.file_wrapper``,
which rr sends with ``Sendfile``), and error pages (``/boom`` raises; unknown
paths get the 404 page). Settings live in this file; there is no database.
The form has no CSRF token to stay small: a real project keeps
``CsrfViewMiddleware`` and renders ``{% csrf_token %}``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.utils.html import escape
from django.views.static import serve

import rr
from rr.contrib import wsgi

STATIC = Path(__file__).resolve().parent / "static_site"

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="rr-example-not-a-secret",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        DATA_UPLOAD_MAX_MEMORY_SIZE=1024 * 1024,
        FILE_UPLOAD_MAX_MEMORY_SIZE=1024 * 1024,  # larger uploads are spooled to a temporary file
        LOGGING_CONFIG=None,
    )
    django.setup()

PAGE = """<!doctype html><meta charset="utf-8"><title>rr + Django</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/css/site.css">
<h1>rr + Django</h1>
<form method=post action=/greet><input name=name> <button>greet</button></form>
<form method=post action=/upload enctype=multipart/form-data>
<input type=file name=file> <button>upload</button></form>
<p><a href=/stream>a streamed response</a> · <a href=/boom>an error</a></p>
"""


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


def greet(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    name = request.POST.get("name", "").strip() or "stranger"
    return HttpResponse(f"<!doctype html><p>Hello, {escape(name)}!</p>")


def upload(request: HttpRequest) -> HttpResponse:
    sent = request.FILES.get("file")
    if request.method != "POST" or sent is None:
        return JsonResponse({"error": "no file field"})
    digest = hashlib.sha256()
    for chunk in sent.chunks():
        digest.update(chunk)
    return JsonResponse({"filename": sent.name, "size": sent.size, "sha256": digest.hexdigest()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = min(int(request.GET.get("n", "5")), 1000)

    def lines() -> Iterator[bytes]:  # each line is sent as it is produced
        for i in range(count):
            yield f"line {i}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain")


def static(request: HttpRequest, name: str) -> HttpResponse:
    return serve(request, name, document_root=str(STATIC))


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the example's error page")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return HttpResponse("<!doctype html><h1>Not here</h1>", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<!doctype html><h1>Something broke</h1>", status=500)


urlpatterns = [
    path("", index),
    path("greet", greet),
    path("upload", upload),
    path("stream", stream),
    path("static/<path:name>", static),
    path("boom", boom),
]
handler404 = not_found
handler500 = server_error

application = get_wsgi_application()


def main() -> None:
    rr.start_listener("django", {
        "port": int(os.environ.get("RR_PORT", "8080")),
        "ip": os.environ.get("RR_IP", "127.0.0.1"),
        "protocols": ["http1", "http2"],
        "routes": wsgi.handler(application),
        "body_buffering": "manual",
        "max_content_length": 64 * 1024 * 1024,
    })
    print(f"rr: serving examples/django_app.py on http://127.0.0.1:{rr.listener_port('django')}/", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
