"""The floors: gevent servers that find each request's end and write a fixed response.

No HTTP parsing beyond what framing needs: find ``\\r\\n\\r\\n``, read the
request line's path, skip a ``Content-Length`` body, write bytes prepared at
start-up — except on the compression rows (``/gzip``, ``/gzip_mw``), where
every server compresses the payload per request, so the floors do too (the
same ``bench_common.gzip_body``) and rr ÷ floor compares like with like. They
are ceilings for a gevent server on this machine, not servers.

    python floor.py PORT          # "floor": gevent's StreamServer, recv + sendall
    python floor.py --raw PORT    # "raw": the socket met directly (below)

The raw floor is still one greenlet per connection on gevent's hub, but meets
the socket the cheapest way gevent allows: non-blocking sockets with
``TCP_NODELAY``, ``recv_into`` one reused buffer (shared by every connection:
a greenlet parses what it read before it can switch), one ``send`` attempt before
any wait, and the loop's io watchers waited on directly
(``hub.wait(loop.io(fd, READ))``) only when a call would block; accept the
same way. It owns nothing but that loop and must not grow features: it is
the measure of what rr's design could reach (issue 17).
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
RESPONSES[b"/gzip_mw"] = RESPONSES[b"/gzip"]
RESPONSES.update({p.encode(): HELLO for p in c.ROUTES})


def gzip_now() -> bytes:
    """The compression rows' answer, compressed now, as each server's handler or middleware does."""
    return _response(b"200 OK", b"application/json", c.gzip_body(), b"content-encoding: gzip\r\n")


# Paths answered with work per request: RESPONSES holds None for them (one check on the hot path).
PER_REQUEST = {b"/gzip": gzip_now, b"/gzip_mw": gzip_now}
# cors_preflight: the answer rr.contrib.cors gives, for any method on /cors.
RESPONSES[b"/cors"] = (b"HTTP/1.1 204 No Content\r\naccess-control-allow-origin: " + c.CORS_ORIGIN.encode()
                       + b"\r\naccess-control-allow-methods: " + ", ".join(c.CORS_METHODS).encode()
                       + b"\r\naccess-control-allow-headers: " + ", ".join(c.CORS_HEADERS).encode()
                       + b"\r\nvary: origin\r\n\r\n")
ECHO = {n: _response(b"200 OK", b"application/octet-stream", b"x" * n) for n in (256, 4096)}


CLOSE = {k: v.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1) for k, v in RESPONSES.items()}
RESPONSES.update(dict.fromkeys(PER_REQUEST))


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
                ready = RESPONSES.get(path, HELLO)
                out.append(ready if ready is not None else PER_REQUEST[path]())
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


READ, WRITE = 1, 2  # libev/libuv io watcher events
# One receive buffer for every connection: a greenlet parses what it read before anything
# can switch away, so only an unfinished head (rare) is kept per connection, as bytes.
BUF = bytearray(65536)
VIEW = memoryview(BUF)


def raw_connection(sock: socket.socket) -> None:
    """One connection of the raw floor: the same framing as ``handle``, on the bare socket."""
    hub = gevent.get_hub()
    loop, wait = hub.loop, hub.wait
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = sock.fileno()
    readable = loop.io(fd, READ)
    writable = None
    buf, view = BUF, VIEW
    recv_into, send, find = sock.recv_into, sock.send, buf.find
    pending = b""  # an unfinished request head, put back at the start of buf before each read
    skip = 0  # body bytes of the last request still to arrive (and be dropped)
    try:
        while True:
            have = len(pending)
            try:
                if have:
                    buf[:have] = pending
                n = recv_into(view[have:])
            except BlockingIOError:
                wait(readable)
                continue
            if not n:
                return
            end = have + n
            pos = 0
            if skip:
                pos = min(skip, end)
                skip -= pos
            out = []
            close = False
            while not skip:
                h = find(b"\r\n\r\n", pos, end)
                if h < 0:
                    break
                lower = buf[pos:h].lower()
                length = length_of(lower)
                first = lower.find(b" ")
                path = bytes(buf[pos + first + 1:pos + lower.find(b" ", first + 1)])
                pos = h + 4
                here = min(length, end - pos)
                pos += here
                skip = length - here
                if b"connection: close" in lower:
                    out.append(CLOSE.get(path, CLOSE[b"/"]))
                    close = True
                    break
                ready = ECHO.get(length, HELLO) if path == b"/echo" else RESPONSES.get(path, HELLO)
                out.append(ready if ready is not None else PER_REQUEST[path]())
            if skip or pos >= end:
                pending = b""
            else:  # keep the start of the next request
                if pos == 0 and end == len(buf):
                    return  # a head larger than the buffer: not a benchmark request
                pending = bytes(buf[pos:end])
            if out:
                data = out[0] if len(out) == 1 else b"".join(out)
                try:
                    sent = send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    writable = send_rest(sock, data, sent, writable)
            if close:
                return
    except OSError:
        return
    finally:
        readable.close()
        if writable is not None:
            writable.close()
        sock.close()


def send_rest(sock: socket.socket, data: bytes, sent: int, writable):
    """The rest of ``data`` after a first ``send`` took ``sent`` bytes: waits on the socket's
    write watcher (made on first need and returned, for the connection to keep and close)."""
    hub = gevent.get_hub()
    fd = sock.fileno()
    while sent < len(data):
        if writable is None:
            writable = hub.loop.io(fd, WRITE)
        hub.wait(writable)
        try:
            sent += sock.send(memoryview(data)[sent:])
        except BlockingIOError:
            pass
    return writable


def serve_raw(port: int, connection=raw_connection, *args) -> None:
    """The raw floor's accept loop: a non-blocking listening socket, a greenlet per connection
    running ``connection(sock, *args)`` (the WSGI floor passes its own)."""
    hub = gevent.get_hub()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(2048)
    listener.setblocking(False)
    acceptable = hub.loop.io(listener.fileno(), READ)
    accept, wait, spawn = listener.accept, hub.wait, gevent.spawn_raw
    while True:
        try:
            conn, _addr = accept()
        except BlockingIOError:
            wait(acceptable)
            continue
        except OSError:  # EMFILE, ECONNABORTED: this connection is lost, the floor goes on
            gevent.sleep(0.001)
            continue
        spawn(connection, conn, *args)


def main() -> None:
    if sys.argv[1] == "--raw":
        serve_raw(int(sys.argv[2]))  # SIGTERM's default action ends it
        return
    server = StreamServer(("127.0.0.1", int(sys.argv[1])), handle, backlog=2048)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
