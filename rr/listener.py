"""A listener: a supervision subtree that owns one listening socket.

Process tree (``rest_for_one``, so a crash restarts what depends on it)::

    listener "web" (supervisor, rest_for_one)
    ├── socket owner   (gen_server: binds the port, closes it on exit)
    ├── conns          (supervisor, simple_one_for_one, temporary children)
    │   ├── conn process, one per TCP connection (rr.transport: PROXY header, TLS, then h1 or h2)
    │   └── QUIC conn process, one per HTTP/3 connection (rr.http3.conn)
    ├── acceptor 1..N  (each blocks in accept() on its own dup of the socket)
    └── quic endpoint 1..N  (with http3, one per UDP socket (``http3.listeners``): reads it,
                        routes datagrams by connection id, admits new QUIC connections like
                        accepted sockets)

What it owns: the listening socket and the ``ListenerRuntime`` (``rr.runtime``) — the shared
counters and flags of one listener (the analogue of roadrunner's atomics and
persistent_term): active connection slots, requests served, rejections, the
``draining`` flag, and the live conn pids drain needs. Conn processes update
the counters directly: greenlets are cooperative, so a ``+= 1`` between two
switches is atomic, and no counter needs a mailbox round trip.

What it must never do: let a stopped or drained listener come back, or die
unnoticed. The listener is a ``permanent`` child of rr's root supervisor:
exceeding its own restart intensity (10 in 10 s) ends it with ``shutdown``
and the root restarts it on the same port, within the root's intensity
(past it, ``rr.wait()`` raises ``rr.ServerDown``). Drain and stop remove it
with ``terminate_child`` + ``delete_child``, which never restart; an embedded
listener (``rr.child_spec``) is ``transient`` unless asked otherwise.
``listener_info`` says ``down`` while no listener supervisor is alive.

Drain (``drain(name, timeout)``), in this order so nothing already sent is
lost: stop the acceptors, take (and serve) the connections already queued in
the kernel, set ``draining``, close the socket; connections idle at that
moment keep ``DRAIN_IDLE_GRACE`` (0.5 s) for a request already on its way,
then end lingering; busy ones finish their request, answering with
``connection: close`` (h2: ``GOAWAY``); ``Loop`` responses get ``(DRAIN,
deadline)``; at the deadline whatever is left is killed. Returns
``{"drained": n, "killed": m}``.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import gevent

import supervisors
from rr import telemetry, watchdog
from rr.response import DRAIN
from rr.runtime import ListenerRuntime
from rr.transport import serve_connection

_ACCEPT = ("rr", "listener", "accept")
_CONN_REJECTED = ("rr", "listener", "conn_rejected")
_DRAIN_START = ("rr", "drain", "start")
_DRAIN_STOP = ("rr", "drain", "stop")


class SocketOwner(supervisors.Server):
    """Owns the listening socket for the listener's lifetime (closes it on exit)."""

    def init(self, runtime: ListenerRuntime) -> None:
        supervisors.trap_exit(True)
        self.runtime = runtime
        if runtime.sock is None:
            runtime.bind()

    def handle_call(self, msg: Any, from_: Any) -> Any:
        if msg == "close":
            self.runtime.close_socket()
            return "ok"
        raise ValueError(f"unexpected call {msg!r}")

    def terminate(self, reason: Any) -> None:
        self.runtime.close_sockets()


# Connections one acceptor takes from the kernel's queue before handing them over together.
ACCEPT_BATCH = 32


def acceptor(runtime: ListenerRuntime) -> None:
    """Accept connections forever, enforcing ``max_clients`` at the door.

    After a (cooperatively) blocking ``accept``, what else already waits in the
    kernel's queue is taken without waiting (up to ``ACCEPT_BATCH``) and the
    admitted connections are handed to the connection supervisor in one call.
    """
    lsock = runtime.sock.dup()
    # For the non-blocking accepts after the first: the OS socket and what wraps an fd.
    raw_accept = lsock._sock._accept
    wrap = type(lsock)
    family, kind, proto = lsock.family, lsock.type, lsock.proto
    try:
        while True:
            try:
                sock, peer = lsock.accept()
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    gevent.sleep(0.1)  # out of fds: back off rather than spin
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                raise
            batch = [(sock, peer or None)]  # a Unix socket's client has no address: None
            while len(batch) < ACCEPT_BATCH:
                try:
                    fd, peer = raw_accept()
                except OSError:  # nothing more queued (or an error the blocking accept will see)
                    break
                batch.append((wrap(family, kind, proto, fileno=fd), peer or None))
            _admit_batch(runtime, batch)
    finally:
        lsock.close()


# At max_clients, the oldest idle keep-alive connections are closed to make room: at most
# this many admissions past the cap wait for their evicted connection to end.
EVICT_SLACK = 16
# Idle connections looked at per admission at the cap (the oldest first).
EVICT_SCAN = 64
# Refused plain-TCP connections lingering at once to deliver their 503 (beyond: closed at once).
REFUSE_LINGER_MAX = 32
REFUSE_LINGER_SECONDS = 1.0
_OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
               b"retry-after: 1\r\ncontent-length: 19\r\nconnection: close\r\n\r\n"
               b"Service Unavailable")


def _evict_idle(runtime: ListenerRuntime) -> bool:
    """Close the oldest idle keep-alive connection (one that served a request and waits for
    the next) to admit a new one; False when none is idle or too many are already closing."""
    if runtime.active >= runtime.config.max_clients + EVICT_SLACK:
        return False
    for scanned, (pid, conn) in enumerate(runtime.conns.items()):
        if scanned >= EVICT_SCAN:
            break
        if conn is not None and conn.idle and conn.requests and pid not in runtime.evicting:
            runtime.evicting.add(pid)
            runtime.evicted += 1
            supervisors.exit(pid, "shutdown")  # an idle conn ends lingering (h1) or with GOAWAY (h2)
            return True
    return False


def _refuse(runtime: ListenerRuntime, sock: Any) -> None:
    """Over the cap: answer 503 + Retry-After on plain TCP (TLS cannot answer before a
    handshake: closed), lingering briefly so the answer is not lost to a reset."""
    if runtime.config.tls is None and runtime.refusing < REFUSE_LINGER_MAX:
        try:
            sock.send(_OVERLOADED)  # one non-blocking attempt: a fresh socket's buffer is empty
        except OSError:
            sock.close()
            return
        runtime.refusing += 1
        supervisors.spawn(_linger_refused, runtime, sock, label="rr.refused")
        return
    sock.close()


def _linger_refused(runtime: ListenerRuntime, sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + REFUSE_LINGER_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass
    finally:
        runtime.refusing -= 1
        sock.close()


def _admit(runtime: ListenerRuntime, sock: Any, peer: Any) -> None:
    """One accepted connection: a slot and a connection process, or a refusal at the cap."""
    _admit_batch(runtime, [(sock, peer)])


def _take_slot(runtime: ListenerRuntime, sock: Any, peer: Any) -> bool:
    """A slot for one accepted connection (evicting an idle one at the cap), or a refusal."""
    config = runtime.config
    if runtime.active >= config.max_clients and _evict_idle(runtime):
        pass  # an idle keep-alive connection makes room for this one
    elif runtime.active >= config.max_clients:
        runtime.rejected += 1
        _refuse(runtime, sock)
        if telemetry.enabled(_CONN_REJECTED):
            telemetry.execute(_CONN_REJECTED, {}, {"listener": runtime.name, "peer": peer, "reason": "max_clients"})
        return False
    runtime.active += 1
    runtime.accepted += 1
    if telemetry.enabled(_ACCEPT):
        telemetry.execute(_ACCEPT, {}, {"listener": runtime.name, "peer": peer})
    return True


def _admit_batch(runtime: ListenerRuntime, accepted: list[tuple[Any, Any]]) -> None:
    """Accepted connections: a slot each (or a refusal), then one process each, started by
    the connection supervisor in one call. A connection whose start failed gives its slot
    back; the first such error is raised after the others are handled."""
    batch = [(sock, peer) for sock, peer in accepted if _take_slot(runtime, sock, peer)]
    if not batch:
        return
    assert runtime.conn_sup is not None, "acceptors start after the conn supervisor"
    try:
        started = supervisors.start_children(runtime.conn_sup, batch)
    except Exception:
        for sock, _ in batch:
            runtime.active -= 1
            sock.close()
        raise
    error: BaseException | None = None
    for (sock, _), pid in zip(batch, started, strict=True):
        if isinstance(pid, supervisors.Pid):
            if pid.is_alive:
                # Known to drain from now on, even before the process first runs.
                runtime.conns.setdefault(pid, None)
            continue
        runtime.active -= 1  # no process: no exit will give the slot back
        sock.close()
        if error is None and isinstance(pid, BaseException):
            error = pid
    if error is not None:
        raise error


def _start_conn(runtime: ListenerRuntime, sock: Any, peer: Any) -> supervisors.Pid:
    if runtime.config.http3 is not None and not hasattr(sock, "fileno"):  # a QuicAdmission
        from rr.http3.conn import serve_h3

        return supervisors.spawn_link(serve_h3, sock, peer, runtime, label="rr.h3.conn")
    return supervisors.spawn_link(
        serve_connection, sock, peer, runtime, label="rr.conn", **runtime.config.handler_spawn.as_kwargs()
    )


def _start_endpoint(runtime: ListenerRuntime, index: int) -> supervisors.Pid:
    from rr.http3.endpoint import endpoint

    label = f"rr.quic.{runtime.name}" if index == 0 else f"rr.quic.{runtime.name}.{index}"
    return supervisors.spawn_link(endpoint, runtime, _admit, index, label=label)


def _conn_ended(runtime: ListenerRuntime, pid: supervisors.Pid, reason: Any, args: tuple[Any, ...]) -> None:
    """The connection supervisor saw a connection process end: its slot is free again.

    Whatever ended it — its own return, a crash, a kill before it ran a line —
    the supervisor that started it observes the end; the process's own
    ``finally`` may never run.
    """
    runtime.active -= 1
    runtime.conns.pop(pid, None)
    runtime.loops.discard(pid)
    runtime.evicting.discard(pid)
    try:
        args[0].close()  # the accepted socket (a no-op if the connection closed it)
    except OSError:
        pass


def _start_conn_sup(runtime: ListenerRuntime) -> supervisors.Pid:
    # A (re)started connection supervisor has no connection: those of a previous one died
    # with it (linked), and its on_exit cannot run for them any more.
    runtime.active = 0
    runtime.conns.clear()
    runtime.loops.clear()
    runtime.evicting.clear()
    spec = supervisors.ChildSpec("conn", _start_conn, args=(runtime,), restart="temporary", shutdown=5.0,
                                 on_exit=lambda pid, reason, args: _conn_ended(runtime, pid, reason, args))
    pid = supervisors.start_supervisor(
        [spec], strategy="simple_one_for_one", link=True, label=f"rr.conns.{runtime.name}"
    )
    runtime.conn_sup = pid
    return pid


def _start_acceptor(runtime: ListenerRuntime) -> supervisors.Pid:
    return supervisors.spawn_link(acceptor, runtime, label=f"rr.acceptor.{runtime.name}")


def start_link(runtime: ListenerRuntime) -> supervisors.Pid:
    """Start the listener supervisor, linked to the caller (a supervisor's start function)."""
    children = [
        supervisors.ChildSpec("socket", supervisors.start_server, args=(SocketOwner, runtime),
                              restart="permanent", shutdown=5.0),
        supervisors.ChildSpec("conns", _start_conn_sup, args=(runtime,), restart="permanent",
                              shutdown="infinity", type="supervisor"),
    ]
    children += [
        supervisors.ChildSpec(f"acceptor{i}", _start_acceptor, args=(runtime,), restart="permanent",
                              shutdown="brutal_kill")
        for i in range(runtime.config.num_acceptors)
    ]
    if runtime.config.http3 is not None:
        children += [
            supervisors.ChildSpec("quic" if i == 0 else f"quic{i}", _start_endpoint, args=(runtime, i),
                                  restart="permanent", shutdown="brutal_kill")
            for i in range(runtime.config.http3.listeners)
        ]
    runtime.draining = False
    if runtime.config.blocking_monitor is not None:
        watchdog.enable(runtime.config.blocking_monitor)
    pid = supervisors.start_supervisor(
        children, strategy="rest_for_one", max_restarts=10, max_seconds=10.0,
        link=True, label=f"rr.listener.{runtime.name}",
    )
    runtime.sup = pid
    return pid


def _down_matcher(ref: Any) -> Any:
    def match(msg: Any) -> bool:
        return isinstance(msg, tuple) and msg[:2] == ("DOWN", ref)

    return match


# Drain: how long a connection idle at the start of a drain may still receive a request
# already on its way (served with connection: close) before it is closed lingering.
DRAIN_IDLE_GRACE = 0.5
# Connections still in the kernel's accept queue taken (and served) when a drain starts.
DRAIN_BACKLOG_MAX = 4096


def _take_backlog(runtime: ListenerRuntime) -> int:
    """Accept what already waits in the kernel's queue (it would be reset at close)."""
    sock = runtime.sock
    if sock is None:
        return 0
    taken = 0
    sock.settimeout(0.0)
    try:
        while taken < DRAIN_BACKLOG_MAX:
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, TimeoutError, InterruptedError):
                break
            except OSError:
                break
            _admit(runtime, conn, peer or None)
            taken += 1
    finally:
        try:
            sock.settimeout(None)
        except OSError:
            pass
    return taken


def drain(runtime: ListenerRuntime, timeout: float) -> dict[str, int]:
    """Stop accepting, let in-flight requests finish, kill what is left at the deadline.

    The order is what makes it lossless: the acceptors stop first (none accepts
    and refuses in between), the connections already queued in the kernel are
    taken and served, and only then is ``draining`` set and the socket closed.
    A connection idle at that moment keeps ``DRAIN_IDLE_GRACE`` for a request
    already on its way (answered with ``connection: close``) before it is
    closed lingering; a busy one answers its request with ``connection:
    close``; ``Loop`` responses get ``(DRAIN, deadline)``.
    """
    started = time.monotonic()
    # graceful_drain=False: a hard stop, in-flight requests are not waited for.
    graceful = runtime.config.graceful_drain
    deadline = started + (timeout if graceful else 0.0)
    if runtime.sup is not None:
        for i in range(runtime.config.num_acceptors):
            try:
                supervisors.terminate_child(runtime.sup, f"acceptor{i}")
            except Exception:  # already gone: nothing to stop
                pass
    late = _take_backlog(runtime) if graceful else 0
    runtime.drain_deadline = deadline
    runtime.draining = True
    if telemetry.enabled(_DRAIN_START):
        telemetry.execute(_DRAIN_START, {}, {"listener": runtime.name, "deadline": deadline, "backlog": late})
    runtime.close_socket()

    refs = {}
    for pid in list(runtime.conns):
        refs[supervisors.monitor(pid)] = pid
        if pid in runtime.loops:
            supervisors.send(pid, (DRAIN, deadline))

    def is_down(m: Any) -> bool:
        return isinstance(m, tuple) and len(m) == 4 and m[0] == "DOWN" and m[1] in refs

    drained = killed = 0
    grace_end = min(deadline, started + DRAIN_IDLE_GRACE) if graceful else started
    idle_closed = False
    while refs:
        now = time.monotonic()
        if not idle_closed and now >= grace_end:
            idle_closed = True
            for pid in refs.values():  # still idle after the grace: nothing more is coming
                conn = runtime.conns.get(pid)
                if conn is not None and conn.idle:
                    supervisors.exit(pid, "shutdown")
        wait = (grace_end if not idle_closed else deadline) - now
        try:
            msg = supervisors.receive(is_down, timeout=max(wait, 0))
        except supervisors.Timeout:
            if idle_closed:
                break
            continue
        refs.pop(msg[1])
        drained += 1
    for pid in refs.values():
        supervisors.exit(pid, "kill")
        killed += 1
    for ref in refs:
        supervisors.receive(_down_matcher(ref), timeout=5.0)
    if telemetry.enabled(_DRAIN_STOP):
        telemetry.execute(
            _DRAIN_STOP,
            {"duration": time.monotonic() - started, "drained": drained, "killed": killed},
            {"listener": runtime.name},
        )
    return {"drained": drained, "killed": killed}
