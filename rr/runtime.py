"""A listener's shared state: counters, flags, its socket and live connections.

What it is: ``ListenerRuntime``, the analogue of roadrunner's atomics and
persistent_term for one listener. Connection processes (every protocol)
update its counters directly: greenlets are cooperative, so a ``+= 1``
between two switches is atomic, and no counter needs a mailbox round trip.

What it must never do: import a protocol or the listener's processes. Every
layer may read it (its type, at least); it depends only on the config and
the h1 codec's ``Limits``.
"""

from __future__ import annotations

import socket
from typing import Any

from gevent import socket as gsocket

import supervisors
from rr.config import Config
from rr.http1 import codec


class ListenerRuntime:
    """Shared state of one listener (counters, flags, live connections)."""

    def __init__(self, name: str, config: Config, app: Any) -> None:
        self.name = name
        self.config = config
        self.app = app
        self.limits = codec.Limits(
            max_request_line=config.http1.max_request_line,
            max_header_line=config.http1.max_header_line,
            max_header_block=config.http1.max_header_block,
            max_header_count=config.http1.max_header_count,
            max_content_length=config.max_content_length,
        )
        self.sock: Any = None
        self.port = config.port
        self.active = 0
        self.requests_served = 0
        self.rejected = 0
        self.evicted = 0  # idle keep-alive connections closed to admit a new one at the cap
        self.evicting: set[supervisors.Pid] = set()
        self.refusing = 0  # refused connections lingering to deliver their 503
        self.accepted = 0
        self.draining = False
        self.conn_sup: supervisors.Pid | None = None
        self.sup: supervisors.Pid | None = None
        # pid -> Http1Conn (None while the TLS handshake runs)
        self.conns: dict[supervisors.Pid, Any] = {}
        self.loops: set[supervisors.Pid] = set()
        # h2 stream workers alive across the listener (for max_concurrent_requests).
        self.live_streams = 0
        self.throttled = 0
        # Exchanges running across the listener (every protocol), and requests answered 503
        # because ``shed_concurrent_requests`` of them were running (rr.exchange).
        self.in_flight = 0
        self.shed = 0
        # When a drain started: its deadline (monotonic), passed to Loop handlers.
        self.drain_deadline = 0.0

    def status(self) -> str:
        """``accepting``, ``draining``, or ``down`` (no live listener supervisor: it gave up,
        or its parent is restarting it)."""
        if self.sup is None or not self.sup.is_alive:
            return "down"
        return "draining" if self.draining else "accepting"

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "active_clients": self.active,
            "max_clients": self.config.max_clients,
            "max_concurrent_requests": self.config.max_concurrent_requests,
            "live_streams": self.live_streams,
            "throttled": self.throttled,
            "in_flight": self.in_flight,
            "shed_concurrent_requests": self.config.shed_concurrent_requests,
            "shed": self.shed,
            "requests_served": self.requests_served,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "evicted": self.evicted,
            "status": self.status(),
            "protocols": list(self.config.protocols),
        }

    # -- the socket ------------------------------------------------------------

    def bind(self) -> None:
        """Open the listening socket (dual-stack by default); keeps the port across restarts."""
        config = self.config
        ip = config.ip
        if ip is None:
            family, ip = (socket.AF_INET6, "::") if socket.has_ipv6 and _ipv6_usable() else (socket.AF_INET, "0.0.0.0")
        else:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = gsocket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and config.ip is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((ip, self.port))
            sock.listen(config.socket_backlog)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port = sock.getsockname()[1]

    def close_socket(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _ipv6_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False
