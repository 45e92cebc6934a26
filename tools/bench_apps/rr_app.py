"""The benchmark app for rr: ``python rr_app.py PORT [MANUAL_PORT]``, ``--h2 PORT`` or ``--tls CERT KEY PORT``.

Listener ``bench`` on PORT buffers bodies (``body_buffering: auto``); listener
``bench_manual`` on MANUAL_PORT (when given) serves the same routes with
``body_buffering: manual`` for ``large_post_streaming``. With ``--h2`` the one
listener on PORT speaks HTTP/2 only (``protocols: ["http2"]``: h2c with prior
knowledge), with rr's default http2 options. With ``--tls`` the one listener
on PORT serves TLS with CERT and KEY, HTTP/1.1 and HTTP/2 by ALPN. Same routes
and bytes as the ASGI/WSGI apps. SIGTERM drains and exits (``rr.wait`` returns), so
``python -m cProfile -o OUT rr_app.py ...`` writes its profile.
"""

from __future__ import annotations

import sys

import bench_common as c

import rr
from rr import resp
from rr.contrib import compress, cors

TEXT = [("content-type", "text/plain")]
OCTET = [("content-type", "application/octet-stream")]


def hello(req):
    return resp.Response(200, TEXT, c.HELLO)


def json_(req):
    return resp.json(200, c.JSON_OBJ)


def echo(req):
    return resp.Response(200, OCTET, req.read_body())


def large(req):
    return resp.Response(200, OCTET, c.LARGE)


def form(req):
    """post_4kb_form the way an rr user parses a form: ``req.read_form()`` (rr.qs), answering the
    number of pairs as ``count_form`` does; the peers' raw ASGI/WSGI apps use ``parse_qsl`` there."""
    with req.read_form() as data:
        pairs = sum(map(len, data.fields.values()))
    return resp.Response(200, TEXT, str(pairs).encode())


def drain(req):
    for _chunk in req.iter_body():
        pass
    return resp.Response(200, TEXT, b"ok")


def gzip_(req):
    return resp.Response(200, [("content-type", "application/json"), ("content-encoding", "gzip"),
                               ("vary", "accept-encoding")], c.gzip_body())


def gzip_payload(req):
    """The gzip_response payload left plain: rr.contrib.compress codes it (/gzip_mw)."""
    return resp.Response(200, [("content-type", "application/json")], c.GZIP_SOURCE)


# The middleware rows: /gzip_mw (gzip_middleware), /br_mw and /zstd_mw are the gzip_response
# payload coded by rr.contrib.compress instead of the handler, one coding per route; OPTIONS /cors
# with c.CORS_PREFLIGHT_HEADERS (cors_preflight) is a preflight answered by rr.contrib.cors (204)
# without reaching the handler.
MIDDLEWARE_ROUTES = [
    {"path": "/gzip_mw", "handler": gzip_payload,
     "middlewares": [compress.middleware(encodings=["gzip"], gzip_level=c.GZIP_LEVEL)]},
    {"path": "/br_mw", "handler": gzip_payload,
     "middlewares": [compress.middleware(encodings=["br"], brotli_quality=c.BROTLI_QUALITY)]},
    {"path": "/zstd_mw", "handler": gzip_payload,
     "middlewares": [compress.middleware(encodings=["zstd"], zstd_level=c.ZSTD_LEVEL)]},
    {"path": "/cors", "handler": hello,
     "middlewares": [cors.middleware(origins=[c.CORS_ORIGIN], allow_methods=c.CORS_METHODS,
                                     allow_headers=c.CORS_HEADERS)]},
]


def sse(req):
    def run(send):
        for event in c.sse_events():
            send(event)
        send(b"", fin=True)

    return resp.Stream(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache")], run)


def streaming(req):
    def run(send):
        for chunk in c.stream_chunks():
            send(chunk)
        send(b"", fin=True)

    return resp.Stream(200, OCTET, run)


def error(req):
    return resp.Response(500, TEXT, b"error")


def not_found(req):
    return resp.Response(404, TEXT, b"not found")


class WsEcho:
    """``websocket_msg_throughput``: every message back as it came (no permessage-deflate offered)."""

    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


def ws(req):
    return resp.WebSocket(WsEcho)


TABLE = {"/": hello, c.WS_PATH: ws, "/json": json_, "/echo": echo, "/large": large, "/form": form, "/drain": drain,
         "/gzip": gzip_, "/sse": sse, "/streaming": streaming,
         "/error": error}
TABLE.update({path: hello for path in c.ROUTES})


def dispatch(req):
    """Single-handler form: used when the listener does not take a route list."""
    return TABLE.get(req.path, not_found)(req)


def start(name: str, port: int, buffering: str, protocols: tuple[str, ...] = ("http1",),
          tls: dict[str, str] | None = None) -> None:
    opts = {"port": port, "ip": "127.0.0.1", "body_buffering": buffering, "max_clients": 100_000,
            "keep_alive_timeout": 600, "max_keep_alive_requests": 1_000_000_000, "protocols": list(protocols)}
    if tls:
        opts["tls"] = tls
    try:
        rr.start_listener(name, {**opts, "routes": [*MIDDLEWARE_ROUTES, *TABLE.items()]})
    except (TypeError, ValueError) as exc:
        print(f"rr_app: route list refused ({exc}); using one dispatching handler", file=sys.stderr, flush=True)
        rr.start_listener(name, {**opts, "routes": dispatch})


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--h2"]:
        start("bench_h2", int(args[1]), "auto", ("http2",))
    elif args[:1] == ["--tls"]:
        start("bench_tls", int(args[3]), "auto", ("http2", "http1"), {"certfile": args[1], "keyfile": args[2]})
    else:
        start("bench", int(args[0]), "auto")
        if len(args) > 1:
            start("bench_manual", int(args[1]), "manual")
    rr.wait()


if __name__ == "__main__":
    main()
