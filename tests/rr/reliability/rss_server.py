"""An rr listener in its own process, for tests that measure its resident memory.

Run as ``python -m tests.rr.reliability.rss_server '{"http2": {...}, ...}'``: it serves
``http1`` + ``http2`` (h2c prior knowledge) on an ephemeral port of 127.0.0.1, prints the
port on its first line, and serves until its stdin closes. Routes: ``/bytes/N`` answers N
bytes (one shared body: the handler allocates nothing per request), ``/status`` answers
JSON with the listener's info and the response bytes queued at its h2 connections.
"""

from __future__ import annotations

import json
import sys

import gevent
from gevent.os import make_nonblocking, nb_read

import rr
from rr import resp

_BODIES: dict[int, bytes] = {}


def _queued() -> dict[str, int]:
    runtime = rr._runtimes["rss"]
    queued = credited = conns = 0
    for conn in list(runtime.conns.values()):
        machine = getattr(conn, "machine", None)
        if machine is None:
            continue
        conns += 1
        credited += machine.credited
        for st in machine.streams.values():
            queued += sum(len(item[1]) for item in st.pending if item[0] == "data")
    return {"queued": queued, "credited": credited, "h2_conns": conns}


def app(req):
    if req.path.startswith("/bytes/"):
        size = int(req.path[7:])
        body = _BODIES.get(size) or _BODIES.setdefault(size, b"x" * size)
        return resp.Response(200, [("content-type", "application/octet-stream")], body)
    if req.path == "/status":
        info = rr.listener_info("rss")
        return resp.Response(200, [("content-type", "application/json")],
                             json.dumps({**info, **_queued()}).encode())
    return resp.text(200, "ok")


def main() -> None:
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    http2 = opts.pop("http2", {})
    rr.start_listener("rss", {"port": 0, "ip": "127.0.0.1", "routes": app,
                              "protocols": ["http1", ("http2", http2)], **opts})
    print(rr.listener_port("rss"), flush=True)
    make_nonblocking(0)
    while nb_read(0, 4096):  # until the test closes our stdin
        pass
    gevent.sleep(0)


if __name__ == "__main__":
    main()
