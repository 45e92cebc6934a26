"""RSS per idle keep-alive TLS connection on rr, for A/B comparisons of rr against itself.

    python tools/idle_memory_tls.py CHECKOUT PORT N

Starts ``tools/bench_apps/rr_app.py --tls`` (the certificate of
``tools/bench_cpu_tls.sh``, made there under /tmp/bench_cpu_tls) importing rr
from CHECKOUT, opens and closes 200 TLS connections (warm-up), reads the
server's RSS, opens N TLS connections (HTTP/1.1 by ALPN) with one ``GET /``
each, so every one has served a request and waits idle, reads the RSS again
after 2 s and prints the growth per connection. Loopback only; the client
raises its fd limit (and the server's) up to the hard limit.
"""

from __future__ import annotations

import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

APPS = Path(__file__).resolve().parent / "bench_apps"
CERTS = "/tmp/bench_cpu_tls"


def main() -> None:
    checkout, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    srv = subprocess.Popen([sys.executable, "rr_app.py", "--tls", f"{CERTS}/cert.pem", f"{CERTS}/key.pem", str(port)],
                           cwd=APPS, env=dict(os.environ, PYTHONPATH=checkout), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])

    def rss_kib() -> int:
        for line in Path(f"/proc/{srv.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def connect() -> ssl.SSLSocket:
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        return sock

    try:
        for _ in range(100):  # the server starting
            try:
                connect().close()
                break
            except OSError:
                time.sleep(0.1)
        for sock in [connect() for _ in range(200)]:
            sock.close()
        time.sleep(1)
        before = rss_kib()
        socks = [connect() for _ in range(n)]
        time.sleep(2)
        after = rss_kib()
        print(f"{checkout}: {(after - before) / len(socks):.1f} KiB RSS per idle TLS connection ({n})")
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    main()
