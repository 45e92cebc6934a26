"""Server-side cost of one TLS read and one write through rr.tlsio.TlsStream, in one process.

    PYTHONPATH=CHECKOUT python tools/bench_tlsio.py recv|nowait|floor [BODY_BYTES] [N]

A ``TlsStream`` over a socket pair (the certificate of ``tools/bench_cpu_tls.sh``,
made there under /tmp/bench_cpu_tls) serves N (default 20000) request/response
rounds to a stdlib ``SSLObject`` client driven by the same thread: the client
seals an h2load-like request and writes it, the server reads it (``recv`` with a
timeout, or ``recv_nowait``) and writes a response with a body of BODY_BYTES
(default 13) with ``sendall``. Prints the mean time of the server's read and of
its write. ``floor`` is the same round with the C calls alone (``recv_into``, the
BIO write, ``read``; ``write``, the BIO read, ``send``): what no Python layer can
go under. The bytes are in the socket before each read and the client drains the
answer outside the timed part, so unlike the CPU scripts this times the stream's
own work, no wait. Loopback only (a socket pair).
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time

import gevent
import gevent.socket

from rr.tlsio import TlsStream

CERTS = "/tmp/bench_cpu_tls"
REQUEST = b"GET / HTTP/1.1\r\nhost: 127.0.0.1:1\r\nuser-agent: h2load\r\naccept: */*\r\n\r\n"


def main() -> None:
    mode = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 13
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    response = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\ndate: x\r\n\r\n" % size
                + b"x" * size)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(f"{CERTS}/cert.pem", f"{CERTS}/key.pem")
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    a, cli = socket.socketpair()
    srv = gevent.socket.socket(fileno=a.detach())
    srv.setblocking(False)
    cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(cin, cout, server_side=False)

    def client_handshake() -> None:  # blocking, on a plain socket: in an OS thread
        while True:
            try:
                client.do_handshake()
                cli.sendall(cout.read())
                return
            except ssl.SSLWantReadError:
                out = cout.read()
                if out:
                    cli.sendall(out)
                cin.write(cli.recv(65536))

    stream = TlsStream(srv, server_ctx)
    stream.settimeout(5)
    thread = threading.Thread(target=client_handshake)
    shaking = gevent.spawn(stream.do_handshake)
    thread.start()
    shaking.get()
    thread.join()

    def drain(total: int) -> None:
        got = 0
        while got < total:
            cin.write(cli.recv(262144))
            try:
                while True:
                    got += len(client.read(262144))
            except ssl.SSLWantReadError:
                pass

    buf = bytearray(65536)
    view = memoryview(buf)
    c_obj = stream.obj._sslobj
    clock = time.perf_counter
    reading = writing = 0.0
    for _ in range(n):
        client.write(REQUEST)
        cli.sendall(cout.read())
        t0 = clock()
        if mode == "floor":
            k = stream.raw.recv_into(buf)
            stream.incoming.write(view[:k])
            data = c_obj.read(65536)
            t1 = clock()
            c_obj.write(response)
            stream.raw.send(stream.outgoing.read())
        else:
            if mode == "nowait":
                data = stream.recv_nowait(65536)
            else:
                stream.settimeout(5.0)
                data = stream.recv(65536)
            t1 = clock()
            stream.settimeout(5.0)
            stream.sendall(response)
        t2 = clock()
        assert data == REQUEST, data
        reading += t1 - t0
        writing += t2 - t1
        drain(len(response))
    print(f"{mode} body={size}: read {reading / n * 1e6:.2f} us, write {writing / n * 1e6:.2f} us")


if __name__ == "__main__":
    main()
