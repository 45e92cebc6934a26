#!/usr/bin/env python3
"""Where an HTTP/3 request waits: rr's datagrams and worker messages, timestamped, for
sequential requests from libcurl (curl_cffi), one connection.

    .venv/bin/python tools/h3_trace.py [--path /echo --method POST --body-size 256] [--requests 30]

Serves ``tools/bench_apps/rr_app.py``'s routes over HTTP/3 on an ephemeral port, runs the
client in a subprocess, then prints the last ``--lines`` events (time since the first shown,
gap since the previous one; ``IN``/``OUT`` datagram sizes, ``MSG`` a worker message's tag) and
the datagrams per request each way, and the median time from one response to the next. A gap before an ``IN`` is the client's, before an ``OUT``
or ``MSG`` rr's. On a quiet machine only: the gaps are what it measures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools" / "bench_apps")]

CLIENT = """
import sys
from curl_cffi import CurlHttpVersion, requests
url, method, size, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with requests.Session() as s:
    for _ in range(n):
        r = s.request(method, url, data=(b"x" * size) or None, verify=False,
                      http_version=CurlHttpVersion.V3ONLY, timeout=10)
        assert r.status_code == 200, r.status_code
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default="/")
    p.add_argument("--method", default="GET")
    p.add_argument("--body-size", type=int, default=0)
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--lines", type=int, default=24)
    a = p.parse_args()

    import rr_app
    from gevent import subprocess

    import rr
    import rr.http3.conn as conn
    from tests.rr.certs import make_cert

    log: list[tuple[float, str, object]] = []
    counts = {"in": 0, "out": 0}
    receive, send, handle = conn.Http3Conn.receive_datagram, conn.send_datagrams, conn.Http3Conn.handle

    def traced_receive(self, data, addr):  # type: ignore[no-untyped-def]
        counts["in"] += 1
        log.append((time.monotonic(), "IN ", len(data)))
        return receive(self, data, addr)

    def traced_send(sock, datagrams):  # type: ignore[no-untyped-def]
        counts["out"] += len(datagrams)
        log.append((time.monotonic(), "OUT", [len(d) for d, _ in datagrams]))
        return send(sock, datagrams)

    def traced_handle(self, msg):  # type: ignore[no-untyped-def]
        if type(msg) is tuple and msg and msg[0] != "h3.dgram":
            log.append((time.monotonic(), "MSG", msg[0]))
        return handle(self, msg)

    conn.Http3Conn.receive_datagram = traced_receive  # type: ignore[method-assign]
    conn.send_datagrams = traced_send
    conn.Http3Conn.handle = traced_handle  # type: ignore[method-assign]

    cert = make_cert(Path(tempfile.mkdtemp(prefix="h3-trace-")))
    rr.start_listener("trace", {"port": 0, "ip": "127.0.0.1", "tls": {"certfile": cert[0], "keyfile": cert[1]},
                                "protocols": ["http3", "http2"], "routes": list(rr_app.TABLE.items())})
    port = rr.listener_info("trace")["port"]
    url = f"https://127.0.0.1:{port}{a.path}"
    subprocess.run([sys.executable, "-c", CLIENT, url, a.method, str(a.body_size), str(a.requests)],
                   check=True, timeout=120)
    shown = log[-a.lines:]
    t0 = prev = shown[0][0]
    for t, kind, what in shown:
        print(f"{(t - t0) * 1000:9.3f} ms  +{(t - prev) * 1000:7.3f}  {kind} {what}")
        prev = t
    answers = [t for t, kind, what in log if kind == "MSG" and what in ("stream.response", "stream.head")]
    gaps = sorted(b - a for a, b in zip(answers, answers[1:], strict=False))
    if gaps:
        print(f"request to request: median {gaps[len(gaps) // 2] * 1000:.2f} ms")
    n = rr.listener_info("trace")["requests_served"]
    print(f"{n} requests: {counts['in'] / n:.2f} datagrams in, {counts['out'] / n:.2f} out per request "
          "(the handshake included)")
    rr.stop_listener("trace")


if __name__ == "__main__":
    main()
