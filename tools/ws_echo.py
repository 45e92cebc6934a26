#!/usr/bin/env python3
"""An rr WebSocket echo endpoint for Autobahn's fuzzing cases (docs/conformance.md).

    .venv/bin/python tools/ws_echo.py 9001 &
    .venv/bin/kosoku -p 2 -o /tmp/autobahn 127.0.0.1:9001      # all 517 cases, ~12 min on 2 cores

    PYTHONPATH=. .venv/bin/python tools/ws_echo.py --h2 9002 &  # the same cases over RFC 8441
    .venv/bin/kosoku -p 2 -o /tmp/autobahn-h2 127.0.0.1:9002

Every path answers a WebSocket session that sends each message back as it
came. Section 9 sends messages up to 16 MiB in frames up to 4 MiB, so the
limits are raised to 64 MiB here (the defaults are 1 MiB / 16 MiB).

``--h2``: rr listens h2-only on an ephemeral port and the port given is the
test suite's bridge (``tests/rr/ws/h2bridge.py``): kosoku speaks only h1, so
the bridge turns each of its connections into an extended CONNECT stream on
its own h2 connection to rr and moves the frames unchanged both ways. The
count of sessions rr saw per HTTP version is printed at exit.

SIGTERM drains (sessions close 1001) and exits.
"""

from __future__ import annotations

import sys
from collections import Counter

import rr
from rr import resp


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


def main() -> None:
    args = sys.argv[1:]
    h2 = "--h2" in args
    args = [a for a in args if a != "--h2"]
    port = int(args[0]) if args else 9001
    versions: Counter[str] = Counter()

    def routes(req):
        versions[req.version] += 1
        return resp.WebSocket(Echo)

    opts = {
        "port": 0 if h2 else port, "ip": "127.0.0.1", "max_clients": 1000,
        "routes": routes,
        "ws": {"max_message_size": 64 * 1024 * 1024, "max_frame_size": 64 * 1024 * 1024},
    }
    if h2:
        opts["protocols"] = ["http2"]
    rr.start_listener("ws_echo", opts)
    bridge = None
    if h2:
        from tests.rr.ws.h2bridge import Bridge

        bridge = Bridge(rr.listener_port("ws_echo"), port=port)
        print(f"rr: WebSocket echo over h2 on 127.0.0.1:{rr.listener_port('ws_echo')}, "
              f"h1 bridge on ws://127.0.0.1:{bridge.port}/", flush=True)
    else:
        print(f"rr: WebSocket echo on ws://127.0.0.1:{rr.listener_port('ws_echo')}/", flush=True)
    try:
        rr.wait()
    finally:
        if bridge is not None:
            bridge.stop()
        print(f"rr: sessions by version: {dict(versions)}", flush=True)


if __name__ == "__main__":
    main()
