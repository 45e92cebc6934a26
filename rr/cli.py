"""The ``rr`` command: serve a handler from a module, options as flags.

    rr myapp:handler --port 8080 --ip 127.0.0.1          # HTTP/1.1 + h2c on one port
    rr myapp:handler --certfile c.pem --keyfile k.pem    # TLS, ALPN h2 preferred
    rr myapp:handler --protocols http1                   # HTTP/1.1 only
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

import rr


def load_app(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"rr: APP must look like module:attribute, got {spec!r}")
    sys.path.insert(0, ".")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"rr: module {module_name!r} has no attribute {attr!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rr", description="Serve an rr handler.")
    parser.add_argument("app", help="module:handler (a callable taking a Request)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--max-clients", type=int, default=None)
    parser.add_argument("--body-buffering", choices=["auto", "manual"], default=None)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--protocols", default=None,
                        help="comma list in preference order (default: http1,http2 on plain TCP, "
                             "http2,http1 with TLS)")
    parser.add_argument("--certfile", default=None, help="serve TLS with this certificate (PEM)")
    parser.add_argument("--keyfile", default=None, help="the certificate's key, when not in --certfile")
    args = parser.parse_args(argv)
    opts: dict[str, Any] = {"port": args.port, "ip": args.ip, "routes": load_app(args.app)}
    if args.certfile:
        opts["tls"] = {"certfile": args.certfile, **({"keyfile": args.keyfile} if args.keyfile else {})}
    default_protocols = "http2,http1" if args.certfile else "http1,http2"
    opts["protocols"] = [p.strip() for p in (args.protocols or default_protocols).split(",") if p.strip()]
    if args.max_clients is not None:
        opts["max_clients"] = args.max_clients
    if args.body_buffering:
        opts["body_buffering"] = args.body_buffering
    if args.access_log:
        opts["access_log"] = True
    try:
        rr.start_listener("rr", opts)
    except (ValueError, OSError) as exc:
        print(f"rr: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if args.certfile else "http"
    print(f"rr: listening on {scheme}://{args.ip}:{rr.listener_port('rr')}/ "
          f"({', '.join(opts['protocols'])})", flush=True)
    rr.wait(args.drain_timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
