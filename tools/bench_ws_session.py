#!/usr/bin/env python3
"""The WebSocket session's own CPU per message, without sockets: fast path vs wsproto's path.

    PYTHONPATH=. .venv/bin/python tools/bench_ws_session.py [--size 1024] [--count 20000]

Feeds one masked text frame of ``--size`` bytes at a time to ``Session.receive``
(what a session does with each chunk it reads) with the echo handler of
tools/bench_apps/rr_app.py, the reply written to a list, in a supervisors
process: the decode, the handler call, the encode, the max_heap charge. Prints
µs per message for the fast path and for wsproto's path (the fast path turned
off on the same session class), best of 5 rounds of process CPU time. The socket work around it
(epoll, recv, send, the wake-up) is what tools/bench_ws_cpu.sh adds.
"""

from __future__ import annotations

import argparse
import os
import time

import gevent.event

import supervisors
from rr.config import WsOptions
from rr.request import Headers, Request
from rr.ws import session


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


class Sink:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if len(self.out) > 1000:
            self.out.clear()

    def read(self, max_bytes: int) -> bytes:
        return b""

    def close(self) -> None:
        pass


def masked_text(size: int) -> bytes:
    payload = b"x" * size
    key = os.urandom(4)
    head = bytes((0x81, 0x80 | size)) if size < 126 else bytes((0x81, 0xFE, size >> 8, size & 0xFF))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def per_message(fast: bool, data: bytes, count: int) -> float:
    sink = Sink()
    req = Request("GET", "/ws", "/ws", "", "HTTP/1.1", Headers([]))
    s = session.Session(sink, req, Echo, None, WsOptions())
    s.fast_ok = fast
    receive = s.receive
    t0 = time.process_time()
    for _ in range(count):
        receive(data)
    return (time.process_time() - t0) / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--count", type=int, default=20000)
    args = ap.parse_args()
    data = masked_text(args.size)
    result = gevent.event.AsyncResult()

    def run() -> None:
        best = {True: float("inf"), False: float("inf")}
        for _ in range(5):
            for fast in (False, True):
                best[fast] = min(best[fast], per_message(fast, data, args.count))
        result.set(best)

    supervisors.spawn(run, label="bench_ws_session")
    best = result.get()
    print(f"{args.size} B text echo: wsproto path {best[False]:.2f} us/message, "
          f"fast path {best[True]:.2f} us/message, unmask: {getattr(session._unmask, '__qualname__', '?')} ({session._unmask.__module__})")


if __name__ == "__main__":
    main()
