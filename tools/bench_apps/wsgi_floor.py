"""The WSGI floor: the raw floor's socket loop calling a WSGI app through the least bridge.

    python wsgi_floor.py PORT MODULE:APP        # e.g. flask_hello:app (tools/bench.py's flask row, "raw")

What a gevent server that runs a WSGI app must at least do per request, and
nothing more: one greenlet per connection on non-blocking sockets (as
``floor.py --raw``: ``recv_into`` a shared buffer, one ``send`` attempt, the
loop's io watchers waited on only when a call would block), the head split
into lines, an environ of the keys PEP 3333 requires plus ``HTTP_*`` fields,
the app called, its status and fields joined into a head, the body joined
and written with it. It checks nothing a real server must check (field
syntax, sizes, timeouts, bodies: a request with a body closes the
connection), so it is the ceiling of a gevent WSGI server with this app on
this machine, not a server: issue 14's Flask row reads rr ÷ it as "how far
from the floor", the way issue 17's rows read rr ÷ ``raw``.
"""

from __future__ import annotations

import importlib
import io
import socket
import sys

import gevent
from floor import BUF, READ, VIEW, send_rest, serve_raw

_WSGI_ERRORS = sys.stderr


def _starter() -> tuple[list, object]:
    """A request's ``start_response`` and the list it fills with (status, fields)."""
    started: list = []

    def start_response(status, fields, exc_info=None):
        started[:] = (status, fields)

    return started, start_response


def connection(sock: socket.socket, app, port: str) -> None:
    hub = gevent.get_hub()
    loop, wait = hub.loop, hub.wait
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = sock.fileno()
    readable = loop.io(fd, READ)
    writable = None
    peer_host, peer_port = sock.getpeername()[:2]
    pending = b""  # the start of a head that has not fully arrived
    try:
        while True:
            try:
                n = sock.recv_into(VIEW)
            except BlockingIOError:
                wait(readable)
                continue
            if not n:
                return
            data = pending + VIEW[:n].tobytes() if pending else VIEW[:n].tobytes()
            out = []
            pos = 0
            while (end := data.find(b"\r\n\r\n", pos)) >= 0:
                lines = data[pos:end].decode("latin-1").split("\r\n")
                pos = end + 4
                method, target, protocol = lines[0].split(" ", 2)
                path, _, query = target.partition("?")
                environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
                           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": port, "SERVER_PROTOCOL": protocol,
                           "REMOTE_ADDR": peer_host, "REMOTE_PORT": str(peer_port),
                           "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
                           "wsgi.errors": _WSGI_ERRORS, "wsgi.multithread": False, "wsgi.multiprocess": False,
                           "wsgi.run_once": False}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    key = name.upper().replace("-", "_")
                    if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                        return  # no bodies on the floor
                    environ["HTTP_" + key] = value.strip()
                started, start_response = _starter()
                result = app(environ, start_response)
                try:
                    body = b"".join(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                status, fields = started
                head = "".join([f"HTTP/1.1 {status}\r\n", *[f"{k}: {v}\r\n" for k, v in fields], "\r\n"])
                out.append(head.encode("latin-1") + body)
            pending = data[pos:]
            if len(pending) > len(BUF):
                return  # a head larger than the buffer: not a benchmark request
            if out:
                reply = out[0] if len(out) == 1 else b"".join(out)
                try:
                    sent = sock.send(reply)
                except BlockingIOError:
                    sent = 0
                if sent < len(reply):
                    writable = send_rest(sock, reply, sent, writable)
    except OSError:
        return
    finally:
        readable.close()
        if writable is not None:
            writable.close()
        sock.close()


def main() -> None:
    port = int(sys.argv[1])
    module, _, attr = sys.argv[2].partition(":")
    sys.path.insert(0, ".")
    app = getattr(importlib.import_module(module), attr)
    serve_raw(port, connection, app, str(port))


if __name__ == "__main__":
    main()  # SIGTERM's default action ends it
