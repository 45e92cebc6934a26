"""The smallest rr app: one handler, one listener, graceful stop on SIGTERM/Ctrl-C.

    python examples/hello.py            # http://127.0.0.1:8080/
    RR_PORT=9000 python examples/hello.py

The listener speaks HTTP/1.1 and HTTP/2 on the same plain port: try
``curl --http2 ...`` (Upgrade: h2c) or ``curl --http2-prior-knowledge ...``.
"""

import os

import rr
from rr import resp


def hello(req: rr.Request) -> resp.Response:
    name = req.query().get("name", ["roadrunner"])[0]
    return resp.text(200, f"Hello, {name}!\n")


def main() -> None:
    port = int(os.environ.get("RR_PORT", "8080"))
    rr.start_listener("hello", {
        "port": port,
        "ip": os.environ.get("RR_IP", "127.0.0.1"),
        "protocols": ["http1", "http2"],
        "routes": hello,
    })
    print(f"rr: serving examples/hello.py on http://127.0.0.1:{rr.listener_port('hello')}/ (Ctrl-C stops)",
          flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
