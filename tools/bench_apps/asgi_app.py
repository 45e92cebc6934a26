"""The benchmark app for ASGI servers (uvicorn, hypercorn, granian).

Run from this directory (``--app-dir`` / ``--working-dir``), as ``asgi_app:app``.
Same routes and bytes as ``wsgi_app``, ``rr_app`` and ``floor``.

The middleware rows go through Starlette (the bench extra), as an ASGI user
would write them: ``/gzip_mw`` is the plain payload under ``GZipMiddleware``
(gzip level ``GZIP_LEVEL``, like rr's ``/gzip_mw``) and ``/cors`` is the hello
route under ``CORSMiddleware`` (same origin, methods and headers as rr's).
Without Starlette those two paths answer 404 and the rows show ``✗``.
"""

from __future__ import annotations

import json

import bench_common as c

TEXT = [(b"content-type", b"text/plain")]
OCTET = [(b"content-type", b"application/octet-stream")]


async def _body(receive) -> bytes:
    parts = []
    while True:
        msg = await receive()
        parts.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(parts)


async def _send(send, status: int, headers: list, body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _hello(scope, receive, send):
    await _send(send, 200, TEXT, c.HELLO)


async def _json(scope, receive, send):
    await _send(send, 200, [(b"content-type", b"application/json")], json.dumps(c.JSON_OBJ).encode())


async def _echo(scope, receive, send):
    await _send(send, 200, OCTET, await _body(receive))


async def _large(scope, receive, send):
    await _send(send, 200, OCTET, c.LARGE)


async def _form(scope, receive, send):
    await _send(send, 200, TEXT, c.count_form(await _body(receive)))


async def _drain(scope, receive, send):
    # Read the body as it arrives, keeping nothing: the streaming-upload idiom.
    while True:
        msg = await receive()
        if not msg.get("more_body"):
            break
    await _send(send, 200, TEXT, b"ok")


async def _gzip(scope, receive, send):
    await _send(send, 200, [(b"content-type", b"application/json"), (b"content-encoding", b"gzip"),
                            (b"vary", b"accept-encoding")], c.gzip_body())


async def _sse(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    for event in c.sse_events():
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _streaming(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": OCTET})
    for chunk in c.stream_chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _error(scope, receive, send):
    await _send(send, 500, TEXT, b"error")


async def _not_found(scope, receive, send):
    await _send(send, 404, TEXT, b"not found")


async def _ws(scope, receive, send):
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.receive":
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg.get("bytes") or b""})
        else:
            return


ROUTES = {"/": _hello, "/json": _json, "/echo": _echo, "/large": _large, "/form": _form, "/drain": _drain,
          "/gzip": _gzip, "/sse": _sse, "/streaming": _streaming,
          "/error": _error}
ROUTES.update({path: _hello for path in c.ROUTES})


async def _gzip_payload(scope, receive, send):
    await _send(send, 200, [(b"content-type", b"application/json")], c.GZIP_SOURCE)


def _starlette_routes() -> dict:
    """``/gzip_mw`` and ``/cors`` wrapped in Starlette's middlewares (empty without Starlette)."""
    try:
        from starlette.middleware.cors import CORSMiddleware
        from starlette.middleware.gzip import GZipMiddleware
    except ImportError:
        return {}
    return {"/gzip_mw": GZipMiddleware(_gzip_payload, minimum_size=500, compresslevel=c.GZIP_LEVEL),
            "/cors": CORSMiddleware(_hello, allow_origins=[c.CORS_ORIGIN], allow_methods=c.CORS_METHODS,
                                    allow_headers=c.CORS_HEADERS)}


ROUTES.update(_starlette_routes())


async def _lifespan(receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "http":
        await ROUTES.get(scope["path"], _not_found)(scope, receive, send)
    elif kind == "websocket":
        await _ws(scope, receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)
