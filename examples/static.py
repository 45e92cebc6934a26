"""A static site: rr.contrib.static behind a wildcard route (ETag, ranges, .gz siblings).

    python examples/static.py     # http://127.0.0.1:8080/
"""

from __future__ import annotations

import os
from pathlib import Path

import rr
from rr.contrib import static

ROOT = Path(__file__).parent / "static_site"
ROUTES = [("/*path", static.handler(str(ROOT), cache_control="public, max-age=300"))]


def main() -> None:
    rr.start_listener("static", {"port": int(os.environ.get("RR_PORT", "8080")), "ip": "127.0.0.1",
                                 "routes": ROUTES})
    print(f"rr: serving examples/static.py on http://127.0.0.1:{rr.listener_port('static')}/", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
