#!/usr/bin/env python3
"""An rr WebSocket echo endpoint for Autobahn's fuzzing cases (docs/conformance.md).

    .venv/bin/python tools/ws_echo.py 9001 &
    .venv/bin/kosoku -p 2 -o /tmp/autobahn 127.0.0.1:9001      # all 517 cases, ~12 min on 2 cores

Every path answers a WebSocket session that sends each message back as it
came. Section 9 sends messages up to 16 MiB in frames up to 4 MiB, so the
limits are raised to 64 MiB here (the defaults are 1 MiB / 16 MiB).
SIGTERM drains (sessions close 1001) and exits.
"""

from __future__ import annotations

import sys

import rr
from rr import resp


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
    rr.start_listener("ws_echo", {
        "port": port, "ip": "127.0.0.1", "max_clients": 1000,
        "routes": lambda req: resp.WebSocket(Echo),
        "ws": {"max_message_size": 64 * 1024 * 1024, "max_frame_size": 64 * 1024 * 1024},
    })
    print(f"rr: WebSocket echo on ws://127.0.0.1:{rr.listener_port('ws_echo')}/", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
