"""File upload with multipart/form-data: fields and files, spooled to disk past 1 MiB.

    python examples/upload.py
    curl -F title=holiday -F photo=@beach.jpg localhost:8080/upload
"""

from __future__ import annotations

import hashlib
import os

import rr
from rr import resp
from rr.contrib import multipart

FORM = """<!doctype html><title>upload</title>
<form method=post action=/upload enctype=multipart/form-data>
<input name=title> <input type=file name=photo multiple> <button>send</button></form>"""


def form(req: rr.Request) -> resp.Response:
    return resp.html(200, FORM)


def upload(req: rr.Request) -> resp.Response:
    if not (req.header("content-type") or "").lower().startswith("multipart/form-data"):
        return resp.json(415, {"error": "send multipart/form-data"})
    try:
        data = req.read_form()
    except multipart.MultipartError as exc:
        return resp.json(exc.status, {"error": str(exc)})
    with data:
        files = [
            {"field": name, "filename": f.safe_filename, "size": f.size,
             "sha256": hashlib.sha256(f.read()).hexdigest(), "spooled": f.path is not None}
            for name, items in data.files.items()
            for f in items
        ]
        return resp.json(200, {"fields": data.fields, "files": files})


ROUTES = [
    {"path": "/", "handler": form, "methods": ["GET"]},
    {"path": "/upload", "handler": upload, "methods": ["POST"]},
]
# Uploads stream through the multipart parser: read the body on demand (manual mode).
OPTIONS = {"routes": ROUTES, "body_buffering": "manual", "max_content_length": 64 * 1024 * 1024}


def main() -> None:
    rr.start_listener("upload", {"port": int(os.environ.get("RR_PORT", "8080")), "ip": "127.0.0.1", **OPTIONS})
    print(f"rr: serving examples/upload.py on http://127.0.0.1:{rr.listener_port('upload')}/", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
