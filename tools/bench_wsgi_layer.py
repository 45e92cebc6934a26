"""rr.contrib.wsgi's own cost per request, without sockets: CPU µs per call of the handler.

    PYTHONPATH=<rr checkout> python tools/bench_wsgi_layer.py [LABEL]

Calls ``wsgi.handler(app)(req)`` on a ``Request`` like h2load's (three header
fields) for two apps answering 13 bytes with a content-length: one returning a
one-element list, one returning an iterator with ``close()`` (what Flask's
``ClosingIterator`` is). The cost of building the ``Request`` is measured apart
and taken off, so what is left is the environ, ``start_response``, the body
path and ``close()``. Best of 25 repeats: it barely moves with other load on
the machine, unlike a whole-server number; compare two checkouts back to back.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Iterator
from typing import Any

from rr.contrib import wsgi
from rr.request import Headers, Request

CALLS = 20000
REPEATS = 25
HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "13")]


def listed(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", list(HEADERS))
    return [b"Hello, World!"]


class Closing:
    """An iterator with ``close()``, as werkzeug's ``ClosingIterator``."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = iter(chunks)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self.chunks)

    def close(self) -> None:
        pass


def closing(environ: dict[str, Any], start_response: Any) -> Closing:
    start_response("200 OK", list(HEADERS))
    return Closing([b"Hello, World!"])


FIELDS = Headers([("host", "127.0.0.1:8080"), ("user-agent", "h2load nghttp2/1.59.0"), ("accept", "*/*")])


def request() -> Request:
    return Request("GET", "/hello", "/hello", "", "HTTP/1.1", FIELDS, peer=("127.0.0.1", 5555), listener="bench")


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "rr"
    base = min(timeit.repeat(request, number=CALLS, repeat=REPEATS))
    for name, app in (("list", listed), ("closing iterator", closing)):
        handler = wsgi.handler(app)
        best = min(timeit.repeat(lambda h=handler: h(request()), number=CALLS, repeat=REPEATS))
        print(f"{label} {name}: {(best - base) / CALLS * 1e6:.2f} us per request (the WSGI layer)")


if __name__ == "__main__":
    main()
