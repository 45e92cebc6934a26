"""rr serving the benchmark routes over HTTP/3: ``python rr_h3_app.py PORT CERTFILE KEYFILE``.

The same routes and bytes as ``rr_app.py`` (its route table), on one TLS listener
with ``protocols: ["http3", "http2", "http1"]``: QUIC on UDP PORT (TCP on the same
port number). Used by ``tools/bench_h3.py``. SIGTERM drains and exits.
``RR_H3_MAX_DATAGRAM_SIZE`` sets the listener's ``http3.max_datagram_size``
(``tools/bench_h3.py``'s ``rr-dgram`` server; default: rr's own, 16384, reached by path MTU probes);
``RR_H3_LISTENERS`` its ``http3.listeners`` (UDP sockets on the port; default 1).
"""

from __future__ import annotations

import os
import sys

import rr_app

import rr


def main() -> None:
    port, certfile, keyfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    http3 = {"max_concurrent_streams": 256}
    if os.environ.get("RR_H3_MAX_DATAGRAM_SIZE"):
        http3["max_datagram_size"] = int(os.environ["RR_H3_MAX_DATAGRAM_SIZE"])
    if os.environ.get("RR_H3_LISTENERS"):
        http3["listeners"] = int(os.environ["RR_H3_LISTENERS"])
    rr.start_listener("bench_h3", {
        "port": port, "ip": "127.0.0.1", "max_clients": 100_000, "keep_alive_timeout": 600,
        "tls": {"certfile": certfile, "keyfile": keyfile},
        "protocols": [("http3", http3), "http2", "http1"],
        "routes": list(rr_app.TABLE.items()),
    })
    rr.wait()


if __name__ == "__main__":
    main()
