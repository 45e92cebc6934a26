"""The floor: a bare gevent StreamServer that finds each request's end and writes a fixed response.

No HTTP parsing beyond what framing needs: find ``\\r\\n\\r\\n``, read the
request line's path, skip a ``Content-Length`` body, write bytes prepared at
start-up. It is the ceiling for a gevent server on this machine, not a server.

    python floor.py PORT
"""

from __future__ import annotations

import signal
import socket
import sys

import bench_common as c
import gevent
from gevent.server import StreamServer


def _response(status: bytes, ctype: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


HELLO = _response(b"200 OK", b"text/plain", c.HELLO)
RESPONSES = {
    b"/": HELLO,
    b"/json": _response(b"200 OK", b"application/json", __import__("json").dumps(c.JSON_OBJ).encode()),
    b"/large": _response(b"200 OK", b"application/octet-stream", c.LARGE),
    b"/form": _response(b"200 OK", b"text/plain", str(c.FORM_PAIRS).encode()),
    b"/drain": _response(b"200 OK", b"text/plain", b"ok"),
    b"/gzip": _response(b"200 OK", b"application/json", c.gzip_body(), b"content-encoding: gzip\r\n"),
    b"/sse": _response(b"200 OK", b"text/event-stream", b"".join(c.sse_events())),
    b"/streaming": _response(b"200 OK", b"application/octet-stream", b"".join(c.stream_chunks())),
    b"/error": _response(b"500 Internal Server Error", b"text/plain", b"error"),
}
RESPONSES.update({p.encode(): HELLO for p in c.ROUTES})
ECHO = {n: _response(b"200 OK", b"application/octet-stream", b"x" * n) for n in (256, 4096)}


CLOSE = {k: v.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1) for k, v in RESPONSES.items()}


def handle(sock, _addr) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    out: list[bytes] = []  # responses to pipelined requests go out in one write
    recv, sendall = sock.recv, sock.sendall
    try:
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if out:
                    sendall(b"".join(out))
                    out.clear()
                data = recv(65536)
                if not data:
                    return
                buf += data
                continue
            head = buf[:end]
            buf = buf[end + 4:]
            lower = head.lower()
            length = length_of(lower)
            need = length - len(buf)
            if need <= 0:
                buf = buf[length:]
            else:  # skip the rest of the body without reading past it
                buf = b""
                while need > 0:
                    data = recv(need if need < 65536 else 65536)
                    if not data:
                        return
                    need -= len(data)
            path = head[head.find(b" ") + 1:head.find(b" ", head.find(b" ") + 1)]
            if b"connection: close" in lower:
                sendall(b"".join(out) + CLOSE.get(path, CLOSE[b"/"]))
                return
            if path == b"/echo":
                out.append(ECHO.get(length, HELLO))
            else:
                out.append(RESPONSES.get(path, HELLO))
    except OSError:
        return
    finally:
        sock.close()


def length_of(lower_head: bytes) -> int:
    i = lower_head.find(b"content-length:")
    if i < 0:
        return 0
    j = lower_head.find(b"\r\n", i)
    return int(lower_head[i + 15:j if j > 0 else None])


def main() -> None:
    server = StreamServer(("127.0.0.1", int(sys.argv[1])), handle, backlog=2048)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
