"""The HTTP/2 connection process: the shell around ``rr.http2.machine``.

What it is: the conn process that accepted the connection (TLS+ALPN "h2",
h2c prior knowledge, or handed over after ``Upgrade: h2c``), now running h2.
It owns the socket, the connection's ``H2Machine``, and the map from stream
ids to their worker processes. It only ever waits in ``supervisors.receive()``:
an io watcher on the socket posts ``("h2.readable",)`` and stops, and this
process makes one non-blocking ``recv`` when it takes the message (over TLS,
``rr.tlsio.TlsStream.recv_nowait``: one read, every whole record decrypted),
then arms the watcher again. No other process touches the socket.

What it must never do: run application code, block on a worker, or decide
anything about the protocol: it moves bytes and messages between the socket,
the machine and the workers, and acts on the machine's events (start a
worker with ``spawn_monitor`` — monitored, not linked, so a crashing handler
resets one stream and nothing else —, send one a message, kill one).

Mailbox protocol (messages this process accepts):

=====================================================  =========================================
message                                                meaning
=====================================================  =========================================
``("h2.readable",)``                                   from the io watcher: the socket is readable
``rr.stream`` messages (``RESPONSE``, ``INTERIM``,     from a worker: its response, body credit,
``HEAD``, ``DATA``, ``TRAILERS``, ``CREDIT``,          "it waits for send credit" and "a Loop
``WANT``, ``LOOP``)                                    runs" (see ``rr.stream``)
``("DOWN", ref, pid, reason)``                         a worker ended
=====================================================  =========================================

Messages it sends: a worker's ``rr.stream`` inbound messages (body, body end,
acknowledgements, ``CLOSED``, ``DRAIN``) as the machine says.

Drain: when ``runtime.draining`` becomes true (checked at least every
``TICK`` seconds) the machine says ``GOAWAY(NO_ERROR)`` and ``DRAIN`` to its
Loop workers; the connection closes once its open streams finish. ``idle``
(no stream open) lets ``rr.listener.drain`` end it at once; ended so, it
says GOAWAY first. When the connection ends, live workers are told
(``CLOSED``) and a reaper process kills those still alive after
``CLOSE_GRACE``.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

import supervisors
from rr import response as resp
from rr import stream as sw
from rr.http2 import codec
from rr.http2.machine import KILL, START, TELL, ConnectionEnded, H2Machine
from rr.request import Request
from rr.stream import CREDIT, DATA, HEAD, INTERIM, LOOP, RESPONSE, TRAILERS, WANT
from rr.tlsio import TlsStream

if TYPE_CHECKING:
    from rr.runtime import ListenerRuntime

RECV_SIZE = 65536
# How often the loop looks at the drain flag and the idle timeout when nothing arrives.
TICK = 0.5
# Messages handled before the output is written even if more are queued.
BATCH = 64

_CLOSED = (resp.CLOSED,)
_READABLE = ("h2.readable",)


class Http2Conn:
    """One h2 connection's process state; ``serve`` is the loop."""

    def __init__(self, sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str, *,
                 proxy: Any = None, peer_cert: dict[str, Any] | None = None) -> None:
        self.sock = sock
        self.runtime = runtime
        self.config = runtime.config
        self.pid = supervisors.self()
        self.machine = H2Machine(peer, runtime, scheme, proxy=proxy, peer_cert=peer_cert)
        self.workers: dict[int, tuple[supervisors.Pid, Any]] = {}  # sid -> (pid, monitor ref)
        self.by_ref: dict[Any, int] = {}
        # Plain TCP: the non-blocking OS socket under gevent's wrapper, read by this process
        # when an io watcher says it is readable (``h2.readable``). TLS: the TlsStream, read
        # the same way with recv_nowait (rr.transport makes no other kind of socket).
        raw = getattr(sock, "_sock", None) if scheme == "http" else None
        self.raw: Any = raw if raw is not None and hasattr(sock, "_write_event") else None
        self.tls: TlsStream | None = sock if isinstance(sock, TlsStream) else None
        self.watcher: Any = None
        self.last_activity = time.monotonic()
        self.writing = False  # inside a socket write (an exit there must not add bytes mid-frame)
        self.close_reason = "normal"
        self.heard = False  # any byte from the peer yet (first_byte_timeout)

    @property
    def idle(self) -> bool:
        """No stream open: drain may end this connection at once."""
        return not self.machine.streams

    @property
    def requests(self) -> int:
        return self.machine.requests

    # -- the socket ------------------------------------------------------------

    def flush(self) -> None:
        data = self.machine.data_to_send()
        if data:
            self.writing = True
            try:
                raw = self.raw
                if raw is not None:  # one attempt; gevent's sendall only for what did not fit
                    try:
                        sent = raw.send(data)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(data):
                        self.sock.settimeout(self.config.request_timeout)
                        self.sock.sendall(memoryview(data)[sent:])
                else:
                    self.sock.settimeout(self.config.request_timeout)
                    self.sock.sendall(data)
            except OSError:
                raise ConnectionEnded("peer_error") from None
            self.writing = False

    def readable(self) -> None:
        """The io watcher's callback (in the hub): one message, then quiet until it is read."""
        self.watcher.stop()
        supervisors.send(self.pid, _READABLE)

    def read(self) -> None:
        """The socket is readable: one ``recv``, fed to the machine."""
        tls = self.tls
        more = False
        if tls is not None:
            try:
                got = tls.recv_nowait(RECV_SIZE)
            except (OSError, ValueError):  # ssl.SSLError is an OSError: a forged or broken record
                got = b""
            if got is None:
                self.watcher.start(self.readable)
                return
            data = got
            more = len(data) == RECV_SIZE  # more may be decrypted already: no readiness will say so
        else:
            try:
                data = self.raw.recv(RECV_SIZE)
            except BlockingIOError:
                self.watcher.start(self.readable)
                return
            except OSError:
                data = b""
        if not data:
            self.machine.close_reason = "peer_closed"
            raise ConnectionEnded("peer_closed")
        self.heard = True
        self.last_activity = time.monotonic()
        if more:
            supervisors.send(self.pid, _READABLE)
        else:
            self.watcher.start(self.readable)  # before feed: a connection error ends it anyway
        self.machine.feed(data)

    # -- the machine's events ----------------------------------------------------

    def act(self) -> None:
        machine = self.machine
        if not machine.events and not machine.starved:  # starved: budget may have come back
            return
        for event in machine.take_events():
            kind = event[0]
            if kind == TELL:
                worker = self.workers.get(event[1])
                if worker is not None:
                    supervisors.send(worker[0], event[2])
            elif kind == START:
                sid = event[1]
                pid, ref = supervisors.spawn_monitor(
                    sw.run_stream, self.pid, sid, event[2], self.runtime, event[3], event[4], event[5],
                    label="rr.h2.stream", **self.config.handler_spawn.as_kwargs(),
                )
                self.workers[sid] = (pid, ref)
                self.by_ref[ref] = sid
            elif kind == KILL:
                worker = self.workers.pop(event[1], None)
                if worker is not None:
                    self.by_ref.pop(worker[1], None)
                    supervisors.demonitor(worker[1], flush=True)
                    supervisors.exit(worker[0], "kill")

    # -- the loop ----------------------------------------------------------------

    def serve(self, initial: bytes = b"", upgrade: tuple[bytes, Request, bytes] | None = None) -> None:
        """Run until the connection ends.

        ``initial``: bytes already read (they start with the client preface).
        ``upgrade``: for h2c Upgrade, ``(HTTP2-Settings payload, request, body)``:
        the request becomes stream 1, half-closed from the client's side.
        """
        machine = self.machine
        try:
            machine.start()
            if upgrade is not None:
                self.heard = True
                machine.upgraded(*upgrade)
            self.act()
            self.flush()
            if self.raw is not None:
                self.watcher = self.sock.hub.loop.io(self.sock.fileno(), 1)
                self.watcher.start(self.readable)
            else:
                assert self.tls is not None, "an h2 socket is gevent's or a TlsStream"
                self.watcher = self.tls.sock.hub.loop.io(self.tls.fileno(), 1)
                # the handshake's last read may hold the preface already decrypted-to-be:
                # read once now rather than wait for readiness that may not come
                supervisors.send(self.pid, _READABLE)
            if initial:
                self.heard = True
                machine.feed(initial)
                self.act()
                self.flush()
            self.loop()
        except ConnectionEnded as end:
            if self.close_reason == "normal":
                self.close_reason = machine.close_reason if machine.close_reason != "normal" else end.reason
            try:
                self.flush()  # a connection error's GOAWAY
            except ConnectionEnded:
                pass

    def loop(self) -> None:
        machine = self.machine
        runtime = self.runtime
        idle_timeout = self.config.keep_alive_timeout
        receive = supervisors.receive
        mailbox_size = supervisors.mailbox_size
        stall_tick = min(TICK, machine.opts.stall_timeout / 2)
        batched = 0
        while True:
            if runtime.draining and not machine.goaway_sent:
                machine.drain(runtime.drain_deadline)
                self.act()
                self.flush()
            if (machine.goaway_sent or machine.goaway_received) and not machine.streams:
                self.flush()
                self.close_reason = machine.close_reason
                return
            try:
                msg = receive(timeout=stall_tick if machine.flow.stalled else TICK)
            except supervisors.Timeout:
                now = time.monotonic()
                if machine.timed:
                    machine.tick(now)
                    self.act()
                    self.flush()
                if not self.heard and now - self.last_activity > self.config.first_byte_timeout:
                    self.close_reason = "first_byte_timeout"  # a connection that never spoke
                    machine.goaway(codec.NO_ERROR)
                    self.flush()
                    return
                if not machine.streams and now - self.last_activity > idle_timeout:
                    self.close_reason = "idle_timeout"
                    machine.goaway(codec.NO_ERROR)
                    self.flush()
                    return
                continue
            self.handle(msg)
            self.act()
            batched += 1
            if batched >= BATCH or not mailbox_size():
                batched = 0
                if machine.timed:
                    machine.tick(time.monotonic())
                    self.act()
                self.flush()

    def handle(self, msg: Any) -> None:
        machine = self.machine
        tag = msg[0] if isinstance(msg, tuple) and msg else None
        # the most frequent messages first
        if tag == "h2.readable":
            self.read()
        elif tag == RESPONSE:
            machine.on_response(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif tag == "DOWN":
            sid = self.by_ref.pop(msg[1], None)
            if sid is not None:
                self.workers.pop(sid, None)
                machine.worker_down(sid, msg[3])
        elif tag == DATA:
            machine.on_worker_data(msg[1], msg[2], msg[3])
        elif tag == CREDIT:
            machine.credit(msg[1], msg[2])
        elif tag == WANT:
            machine.want(msg[1])
        elif tag == HEAD:
            machine.on_worker_headers(msg[1], msg[2], msg[3], msg[4], msg[5])
        elif tag == TRAILERS:
            machine.on_trailers_from_worker(msg[1], msg[2])
        elif tag == INTERIM:
            machine.on_interim(msg[1], msg[2], msg[3])
        elif tag == LOOP:
            machine.loop_started(msg[1], self.runtime.draining, self.runtime.drain_deadline)


def serve_h2(sock: Any, peer: Any, runtime: ListenerRuntime, scheme: str, initial: bytes = b"",
             upgrade: tuple[bytes, Request, bytes] | None = None, *,
             proxy: Any = None, peer_cert: dict[str, Any] | None = None) -> Http2Conn:
    """Run an h2 connection in the calling (conn) process until it closes.

    Registers the connection in ``runtime.conns`` (so drain sees ``idle``) and
    ends every stream worker still running when the connection goes.
    Returns the connection (for its ``close_reason`` and ``requests``).
    """
    conn = Http2Conn(sock, peer, runtime, scheme, proxy=proxy, peer_cert=peer_cert)
    runtime.conns[conn.pid] = conn
    try:
        conn.serve(initial, upgrade)
    except supervisors.Exit as exc:
        # rr.drain ends an idle connection with exit "shutdown": say GOAWAY first, so a
        # request the client sent meanwhile is known unprocessed (safe to retry).
        machine = conn.machine
        if exc.reason == "shutdown" and machine.preface_ok and not machine.goaway_sent and not conn.writing:
            conn.close_reason = "drain"
            try:
                sock.settimeout(1.0)
                sock.sendall(codec.goaway_frame(machine.highest, codec.NO_ERROR))
            except OSError:
                pass
        raise
    finally:
        orphans = []
        for sid in conn.machine.end_workers():
            worker = conn.workers.pop(sid, None)
            if worker is not None:
                supervisors.demonitor(worker[1], flush=True)
                supervisors.send(worker[0], _CLOSED)
                orphans.append(worker[0])
        if orphans:
            supervisors.spawn(sw.reap, orphans, label="rr.h2.reaper")
        if conn.watcher is not None:
            conn.watcher.close()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    return conn
