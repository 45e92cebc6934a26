"""A listener's shared state: counters, flags, its socket and live connections.

What it is: ``ListenerRuntime``, the analogue of roadrunner's atomics and
persistent_term for one listener. Connection processes (every protocol)
update its counters directly: greenlets are cooperative, so a ``+= 1``
between two switches is atomic, and no counter needs a mailbox round trip.

It also opens the listening socket: ``bind_tcp`` and ``bind_unix`` (a
stale Unix socket file replaced, a live one refused, the file removed on
close only while it is still the one this listener made), which
``rr.workers``' master uses too, or a dup of an inherited ``socket``.

What it must never do: import a protocol or the listener's processes. Every
layer may read it (its type, at least); it depends only on the config and
the h1 codec's ``Limits``.
"""

from __future__ import annotations

import os
import socket
import stat
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
        # HTTP/3: the UDP sockets bound on the same port number (http3.listeners; connection
        # processes send from the first), what each one's endpoint has read, and connection
        # id -> QUIC conn pid (kept by the QUIC conn processes; rr.http3.endpoint routes with it).
        self.udp_socks: list[Any] = []
        self.quic_received: list[int] = []
        # The Retry token key (http3.retry), one for every endpoint, made by the first.
        self.quic_retry: Any = None
        self.quic_routes: dict[bytes, supervisors.Pid] = {}
        self.quic_dropped = 0  # datagrams dropped at a connection whose mailbox was full
        self.quic_configuration: Any = None  # built by the first QUIC connection (rr.http3.conn)
        self.port = config.port
        # (st_dev, st_ino) of the Unix socket file this listener created: removed on close
        # only while it is still that file (a successor may have bound the path meanwhile).
        self.unix_file: tuple[int, int] | None = None
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
            "address": self.address(),
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
            **({"quic_connection_ids": len(self.quic_routes), "quic_dropped": self.quic_dropped,
                "quic_received": list(self.quic_received)}
               if self.config.http3 is not None else {}),
        }

    # -- the socket ------------------------------------------------------------

    def address(self) -> str:
        """Where the listener listens: ``unix:/path``, ``127.0.0.1:8080``, ``[::1]:8080``."""
        config = self.config
        if config.unix is not None:
            return f"unix:{config.unix}"
        if config.socket is not None:
            name = config.socket.getsockname()
            if not isinstance(name, tuple):
                return f"unix:{name}"
            host = name[0]
        else:
            host = config.ip or "::"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def url(self) -> str:
        """What the start-up line says the listener listens on (``listening_url``)."""
        return listening_url(self.sock.getsockname() if self.sock is not None else ("::", self.port),
                             self.config.tls is not None)

    def bind(self) -> None:
        """Open the listening socket: a Unix socket at ``unix``, a dup of an inherited
        ``socket``, or a TCP port (dual-stack by default); keeps the port across restarts.

        With ``http3``, also the UDP socket(s) on the same port number (``http3.listeners``;
        for port 0: a port free for both, tried a few times). On an inherited socket
        (``rr.workers``) each worker binds its own UDP socket(s) with SO_REUSEPORT: the kernel hashes a client's
        datagrams (by address and port) to one of them, so a QUIC connection stays with the
        worker that accepted it while the set of workers is stable."""
        config = self.config
        if config.socket is not None:
            # A dup: closing it (drain, stop, a restart) leaves the giver's socket, and the
            # accept queue every holder shares, open (rr.workers relies on that).
            self.sock = gsocket.socket(fileno=os.dup(config.socket.fileno()))
            name = self.sock.getsockname()
            if isinstance(name, tuple):
                self.port = name[1]
            if config.http3 is not None:
                self._bind_udp(reuseport=True)
            return
        if config.unix is not None:
            self.sock = bind_unix(config.unix, config.socket_backlog)
            info = os.stat(config.unix)
            self.unix_file = (info.st_dev, info.st_ino)
            return
        for attempt in range(20):
            self.sock = bind_tcp(config.ip, self.port, config.socket_backlog, gsocket.socket)
            self.port = self.sock.getsockname()[1]
            if config.http3 is None:
                return
            try:
                self._bind_udp()
                return
            except OSError:
                self.close_socket()
                if config.port != 0 or attempt == 19:
                    raise
                self.port = 0

    def _bind_udp(self, reuseport: bool = False) -> None:
        """Bind ``http3.listeners`` UDP sockets on the port (SO_REUSEPORT on each when there
        are several, or when ``reuseport``); all or none."""
        assert self.config.http3 is not None
        count = self.config.http3.listeners
        reuseport = reuseport or count > 1
        family = self.sock.family
        socks: list[Any] = []
        try:
            for _ in range(count):
                sock = gsocket.socket(family, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuseport:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6 and self.config.ip is None:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind((self.sock.getsockname()[0], self.port))
                # Room for bursts of datagrams between two reads of the endpoint (the kernel caps it).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        except OSError:
            for sock in socks:
                sock.close()
            raise
        self.udp_socks = socks
        self.quic_received = [0] * count

    def close_socket(self) -> None:
        """Close the TCP listening socket (drain; QUIC connections still need the UDP one)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.unix_file is not None and self.config.unix is not None:
            path, ours, self.unix_file = self.config.unix, self.unix_file, None
            try:
                info = os.stat(path)
            except OSError:
                return
            if (info.st_dev, info.st_ino) == ours:
                os.unlink(path)

    def close_sockets(self) -> None:
        """Close every socket of the listener (its end)."""
        self.close_socket()
        for sock in self.udp_socks:
            sock.close()
        self.udp_socks = []


def bind_tcp(ip: str | None, port: int, backlog: int, cls: Any = socket.socket) -> Any:
    """A listening TCP socket of class ``cls`` on ``ip`` (None: every address, dual-stack)."""
    if ip is None:
        family, host = (socket.AF_INET6, "::") if socket.has_ipv6 and _ipv6_usable() else (socket.AF_INET, "0.0.0.0")
    else:
        family, host = (socket.AF_INET6 if ":" in ip else socket.AF_INET), ip
    sock = cls(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ip is None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def bind_unix(path: str, backlog: int, cls: Any = gsocket.socket) -> Any:
    """A listening Unix domain socket at ``path``.

    A socket file left by a server that died is replaced; one a live server
    answers on is not (``EADDRINUSE``), nor is any other kind of file.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise OSError(f"{path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)  # nobody listens: a stale file from a server that died
            except OSError:
                pass
            else:
                raise OSError(f"{path}: a server is already listening there")
    sock = cls(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _ipv6_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def listening_url(sockname: Any, tls: bool) -> str:
    """A listening socket's address as start-up lines say it: ``http://127.0.0.1:8080/``,
    ``https://[::]:8443/``, or ``unix:/run/rr.sock``."""
    if not isinstance(sockname, tuple):
        return f"unix:{sockname.decode() if isinstance(sockname, bytes) else sockname}"
    host = sockname[0]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{sockname[1]}/"
