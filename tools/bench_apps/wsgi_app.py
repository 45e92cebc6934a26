"""The benchmark app for WSGI servers (gunicorn -k gevent, gevent.pywsgi).

``wsgi_app:app`` for gunicorn (``--chdir`` here); ``python wsgi_app.py PORT``
serves it with ``gevent.pywsgi.WSGIServer`` (no access log, TCP_NODELAY on
accepted sockets: see ``NoDelayHandler``). WSGI has no
WebSocket, so ``/ws`` is absent.
"""

from __future__ import annotations

import json
import sys

import bench_common as c

TEXT = "text/plain"
OCTET = "application/octet-stream"


def _reply(start_response, status: str, ctype: str, body: bytes, extra=()):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra])
    return [body]


def _read(environ) -> bytes:
    n = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(n) if n else b""


def _hello(environ, sr):
    return _reply(sr, "200 OK", TEXT, c.HELLO)


def _json(environ, sr):
    return _reply(sr, "200 OK", "application/json", json.dumps(c.JSON_OBJ).encode())


def _echo(environ, sr):
    return _reply(sr, "200 OK", OCTET, _read(environ))


def _large(environ, sr):
    return _reply(sr, "200 OK", OCTET, c.LARGE)


def _form(environ, sr):
    return _reply(sr, "200 OK", TEXT, c.count_form(_read(environ)))


def _drain(environ, sr):
    stream = environ["wsgi.input"]
    left = int(environ.get("CONTENT_LENGTH") or 0)
    while left > 0:
        chunk = stream.read(min(c.DRAIN_CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
    return _reply(sr, "200 OK", TEXT, b"ok")


def _gzip(environ, sr):
    return _reply(sr, "200 OK", "application/json", c.gzip_body(),
                  [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")])


def _sse(environ, sr):
    sr("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    return iter(c.sse_events())


def _streaming(environ, sr):
    sr("200 OK", [("Content-Type", OCTET)])
    return iter(c.stream_chunks())


def _error(environ, sr):
    return _reply(sr, "500 Internal Server Error", TEXT, b"error")


def _not_found(environ, sr):
    return _reply(sr, "404 Not Found", TEXT, b"not found")


ROUTES = {"/": _hello, "/json": _json, "/echo": _echo, "/large": _large, "/form": _form, "/drain": _drain,
          "/gzip": _gzip, "/sse": _sse, "/streaming": _streaming,
          "/error": _error}
ROUTES.update({path: _hello for path in c.ROUTES})


def app(environ, start_response):
    return ROUTES.get(environ["PATH_INFO"], _not_found)(environ, start_response)


def main() -> None:
    import signal
    import socket

    import gevent
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class NoDelayHandler(WSGIHandler):
        # pywsgi sends the head and the body in two writes; without TCP_NODELAY,
        # Nagle + the client's delayed ACK add ~40 ms to every keep-alive response.
        def handle(self):
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return super().handle()

    server = WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, handler_class=NoDelayHandler)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
