"""rr hello behind a route table of N dynamic routes: ``python rr_app_routes.py PORT N``.

The N routes (``/api/v1/r{i}/:id``) share the request's prefix and segment
count, the worst case for a router; the hello route (``/api/v1/hello/:name``)
is declared last. N=0 is the one-route baseline (docs/bench_results.md).
"""

from __future__ import annotations

import sys

import rr
from rr import resp

TEXT = [("content-type", "text/plain")]


def hello(req):
    return resp.Response(200, TEXT, b"Hello, World!")


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    routes = [(f"/api/v1/r{i}/:id", hello) for i in range(count)] + [("/api/v1/hello/:name", hello)]
    rr.start_listener("bench", {"port": port, "ip": "127.0.0.1", "routes": routes, "max_clients": 10_000,
                                "keep_alive_timeout": 600, "max_keep_alive_requests": 1_000_000_000})
    rr.wait()


if __name__ == "__main__":
    main()
