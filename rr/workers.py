"""Workers: one master OS process, N forked worker processes, each a whole rr.

    import rr.workers
    raise SystemExit(rr.workers.run({"web": {"port": 8080, "routes": ROUTES}}, workers=4))

What it owns: the master. It binds every listener's socket once, forks N
workers that each start their own rr supervision tree on those sockets
(``rr.start_listener`` with the ``socket`` option), restarts a worker that
dies, replaces them one by one on SIGHUP, and drains them all on SIGTERM or
SIGINT. It also watches source files for ``rr --reload``.

What it must never do: serve a request, or leave a worker behind. The
master runs no listener and calls no handler (the ``rr`` command has it
import the app once, only to fail early); a worker that
loses its master (killed with -9, say) sees its end of the master's
socketpair close and drains itself.

Why one inherited socket, not SO_REUSEPORT. With SO_REUSEPORT each worker
would bind its own socket and the kernel would hash each new connection to
one of them: a connection queued on the socket of a worker that dies, or
that closes it to drain, is reset (Linux migrates queued connections only
under ``net.ipv4.tcp_migrate_req=1``, off by default, and only since 5.14).
Here the master binds each socket once and every worker accepts from the
same queue: a worker killed with -9 loses only the connections it had
already accepted, a draining worker simply stops taking from the queue, and
no connection is ever refused or reset during a restart, on any Unix. The
price is balance: every idle worker is woken for a new connection and the
first to ``accept`` wins, so the split follows who is least busy rather
than an even hash (measured in docs/workers.md).

Worker ids: a worker has a slot 1..N, its id. A replacement (after a crash
or in a rolling restart) takes the slot of the one it replaces, so log and
telemetry fields (``worker``, see ``rr.log``) keep a bounded set of values.

The master's loop (one OS thread, no greenlets): signals are turned into
bytes on a self-pipe (``signal.set_wakeup_fd``); ``select`` waits on that
pipe and on the socketpairs of workers still starting; after every wake it
reaps exited children with ``waitpid(WNOHANG)``. Messages on a worker's
socketpair: the worker sends ``R`` once its listeners accept; the master
sends nothing, and its end closing (the master died) tells the worker to
drain.

Restarts: a worker that exits while the master did not ask it to is
replaced at once, unless more than ``max_restarts`` such exits happened in
``max_seconds``: then the master logs why, drains the rest and returns 1
(as a supervisor past its restart intensity gives up). The defaults, 5 in
60 s, give up within seconds on a worker that crashes as soon as it starts,
and never on one crash now and then. A worker failing
before any worker ever accepted (an app that cannot be imported, say) ends
the master at once with status 2: that is a user error, not a crash.

SIGHUP, the rolling restart: for each slot in turn, fork a new worker, wait
until it accepts, then SIGTERM the old one, which drains (its in-flight
requests finish; ``connection: close`` / GOAWAY tell its clients to come
back, and the queue they come back to is the shared one). A new worker
forks from the master, so with ``routes`` given as a function (what the
``rr`` command does) it imports the app's modules as they are on disk then:
replace the files, send SIGHUP, and the new code serves without one refused
connection. A new worker that exits before it accepts (code that does not
import) stops the rolling restart: the old workers keep serving, and it is
not counted as a crash; the next SIGHUP (or changed file) tries again.

Metrics (prometheus_client's multiprocess mode, ``rr.contrib.prometheus``):
with ``metrics_dir`` (``rr --metrics-dir``), or ``PROMETHEUS_MULTIPROC_DIR``
already in the environment, the master creates that directory, deletes the
``*.db`` files a previous run left there, and sets the variable for itself and
every worker it forks, so each worker writes its metrics to its own files
there and a scrape of any worker merges them all. After a worker exits the
master calls ``mark_process_dead`` on its pid: its ``live*`` gauges (requests
in flight, connections) stop counting, its counters stay in the sums. The
variable must be set before ``prometheus_client`` is first imported (it
chooses its storage then): ``run`` raises ``ValueError`` when it was imported
before, and the ``rr`` command sets it before importing the app.

Stop: the first SIGTERM/SIGINT sends SIGTERM to every worker (each drains,
``rr.wait`` in the worker) and says ``stopping N workers: each drains its
connections (deadline D s; send the signal again to force)``; a second one
sends SIGTERM again (each worker then cuts its in-flight requests); workers
still alive ``KILL_GRACE`` seconds after the deadline are killed.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from rr import config as listener_config
from rr import log
from rr.runtime import bind_tcp, bind_unix, listening_url

__all__ = ["run", "worker_id"]

worker_id = log.worker_id

_log = log.get_logger("rr.workers")

# Seconds past the drain deadline after which workers still alive are killed.
KILL_GRACE = 5.0
# How often --reload looks at the source files' modification times.
RELOAD_POLL = 0.5
# The master's longest sleep between two looks at its children (a safety net: a signal,
# a child's exit or a worker's ready message wakes it at once).
TICK = 1.0


@dataclass
class _Worker:
    slot: int
    pid: int
    channel: socket.socket  # the master's end of the worker's socketpair
    state: str = "starting"  # starting -> accepting -> stopping
    replaces: int | None = None  # in a rolling restart: the pid this one replaces
    hung_up: bool = False  # its end of the socketpair closed: it is exiting


@dataclass
class _Listener:
    name: str
    opts: dict[str, Any]
    sock: socket.socket
    unix_path: str | None = None  # a Unix socket file the master created ...
    unix_file: tuple[int, int] | None = None  # ... and its (st_dev, st_ino), removed at exit if unchanged
    owned: bool = True  # False for a ``socket`` option's socket: its giver closes it
    tls: bool = False
    protocols: tuple[str, ...] = ()


@dataclass
class _Master:
    listeners: list[_Listener]
    count: int
    routes: Callable[[], Any] | None
    drain_timeout: float
    max_restarts: int
    max_seconds: float
    reload_dir: str | None
    metrics_dir: str | None = None
    workers: dict[int, _Worker] = field(default_factory=dict)
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    signals: list[int] = field(default_factory=list)
    ever_accepted: bool = False
    stopping: bool = False
    stop_deadline: float = 0.0
    exit_status: int = 0
    rolling: list[int] = field(default_factory=list)  # slots still to replace in a rolling restart
    rolling_active: bool = False
    mtimes: dict[str, float] = field(default_factory=dict)
    next_poll: float = 0.0
    wake_r: int = -1
    wake_w: int = -1


def _validate(name: str, opts: Mapping[str, Any]) -> None:
    """``start_listener``'s own validation, now, in the master (a bad option is a ValueError here)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"listener name must be a non-empty string, got {name!r}")
    listener_config.load({k: v for k, v in opts.items() if k != "routes"})


def _bind(name: str, opts: Mapping[str, Any]) -> _Listener:
    config = listener_config.load({k: v for k, v in opts.items() if k != "routes"})
    worker_opts = {k: v for k, v in opts.items() if k not in ("port", "ip", "unix", "socket")}
    if config.socket is not None:
        listener = _Listener(name, worker_opts, config.socket, owned=False)
    elif config.unix is not None:
        sock = bind_unix(config.unix, config.socket_backlog, socket.socket)
        info = os.stat(config.unix)
        listener = _Listener(name, worker_opts, sock, config.unix, (info.st_dev, info.st_ino))
    else:
        listener = _Listener(name, worker_opts, bind_tcp(config.ip, config.port, config.socket_backlog))
    listener.tls = config.tls is not None
    listener.protocols = config.protocols
    return listener


def run(
    listeners: Mapping[str, Mapping[str, Any]],
    workers: int = 2,
    *,
    routes: Callable[[], Any] | None = None,
    drain_timeout: float = 30.0,
    max_restarts: int = 5,
    max_seconds: float = 60.0,
    reload_dir: str | None = None,
    on_bound: Callable[[str, socket.socket], None] | None = None,
    metrics_dir: str | None = None,
) -> int:
    """Serve ``listeners`` (name -> ``start_listener`` options) from ``workers`` processes.

    Blocks until the workers are stopped (SIGTERM/SIGINT) and returns the
    exit status: 0 after a drain, 1 when workers crashed past the restart
    intensity (``max_restarts`` in ``max_seconds``), 2 when the first worker
    could not start. ``routes``, when given, is called in each worker after
    the fork and gives the routes of every listener without its own
    ``routes`` option (so a rolling restart picks up changed code).
    ``reload_dir``: development only — a rolling restart whenever a ``.py``
    file under it changes. ``on_bound(name, sock)`` is called for each
    listening socket once it is bound, before any worker starts (the ``rr``
    command prints the address); without it the master logs
    ``rr.listening_message`` for each. ``metrics_dir``: prometheus_client's
    multiprocess directory (module docstring; default: ``PROMETHEUS_MULTIPROC_DIR``
    when set, else none). Bad options raise ``ValueError`` and a port that
    cannot be bound ``OSError``, before any fork.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
        raise ValueError(f"invalid workers option 'workers': {workers!r} (accepted: an integer in 1..1024)")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"invalid workers option 'max_restarts': {max_restarts!r} (accepted: an integer >= 0)")
    for key, value in (("drain_timeout", drain_timeout), ("max_seconds", max_seconds)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(f"invalid workers option {key!r}: {value!r} (accepted: seconds, a number > 0)")
    if not listeners:
        raise ValueError("invalid workers option 'listeners': at least one listener")
    for name, opts in listeners.items():
        _validate(name, opts)
    if metrics_dir is None:
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    if metrics_dir is not None:
        _prepare_metrics_dir(metrics_dir)
    bound: list[_Listener] = []
    try:
        for name, opts in listeners.items():
            bound.append(_bind(name, opts))
            if on_bound is not None:
                on_bound(name, bound[-1].sock)
        log.configure()
        if on_bound is None:  # the start-up line, once here rather than once per worker
            import rr

            for listener in bound:
                _log.info(rr.listening_message(listener.name, listening_url(listener.sock.getsockname(),
                                                                            listener.tls), listener.protocols))
        master = _Master(bound, workers, routes, float(drain_timeout), max_restarts, float(max_seconds), reload_dir,
                         metrics_dir)
        return _serve(master)
    finally:
        for listener in bound:
            _close(listener)


def _prepare_metrics_dir(path: Any) -> None:
    """The multiprocess metrics directory: created, emptied of a previous run's files, and
    named in ``PROMETHEUS_MULTIPROC_DIR`` for this process and the workers it forks."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"invalid workers option 'metrics_dir': {path!r} (accepted: a directory path)")
    if importlib.util.find_spec("prometheus_client") is None:
        raise ValueError("invalid workers option 'metrics_dir': it is prometheus_client's multiprocess mode, "
                         "and prometheus_client is not installed (rr's extra 'prometheus')")
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise ValueError("invalid workers option 'metrics_dir': prometheus_client was imported before "
                         "PROMETHEUS_MULTIPROC_DIR was set, so its multiprocess mode is off; set the variable "
                         "before the first import (the rr command does)")
    try:
        os.makedirs(path, exist_ok=True)
        for entry in os.scandir(path):
            if entry.name.endswith(".db") and entry.is_file():
                os.unlink(entry.path)
    except OSError as exc:
        raise ValueError(f"invalid workers option 'metrics_dir': {path!r}: {exc.strerror}") from None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def _mark_dead(m: _Master, pid: int) -> None:
    """A worker's ``live*`` gauges stop counting (prometheus_client's ``mark_process_dead``)."""
    if m.metrics_dir is None:
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, m.metrics_dir)
    except OSError as exc:
        _log.warning("could not remove a dead worker's metrics files", pid=pid, error=str(exc))


def _close(listener: _Listener) -> None:
    if listener.owned:
        listener.sock.close()
    if listener.unix_path is not None:
        try:
            info = os.stat(listener.unix_path)
        except OSError:
            return
        if (info.st_dev, info.st_ino) == listener.unix_file:
            os.unlink(listener.unix_path)


# -- the master ------------------------------------------------------------------


def _serve(m: _Master) -> int:
    m.wake_r, m.wake_w = os.pipe()
    os.set_blocking(m.wake_w, False)
    os.set_blocking(m.wake_r, False)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)}
    old_wakeup = signal.set_wakeup_fd(m.wake_w)
    for sig in previous:
        signal.signal(sig, lambda signum, frame: m.signals.append(signum))
    try:
        if m.reload_dir is not None:
            m.mtimes = _source_mtimes(m.reload_dir)
            m.next_poll = time.monotonic() + RELOAD_POLL
        _log.info("master started", pid=os.getpid(), workers=m.count)
        _spawn(m, 1)  # the others once it accepts: an app that cannot start fails once, not N times
        while m.workers or not m.stopping:
            _loop_once(m)
        return m.exit_status
    finally:
        for w in list(m.workers.values()):  # only on an exception in the master itself
            _kill(w.pid, signal.SIGKILL)
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(m.wake_r)
        os.close(m.wake_w)


def _loop_once(m: _Master) -> None:
    _reap(m)
    while m.signals:
        _on_signal(m, m.signals.pop(0))
    now = time.monotonic()
    if m.stopping and now >= m.stop_deadline:
        for w in m.workers.values():
            _log.warning("worker still alive past the drain deadline: killed", worker=w.slot, pid=w.pid)
            _kill(w.pid, signal.SIGKILL)
        m.stop_deadline = now + TICK
    if m.reload_dir is not None and not m.stopping and now >= m.next_poll:
        _poll_sources(m)
    if not m.workers and m.stopping:
        return
    starting = {w.channel.fileno(): w for w in m.workers.values() if w.state == "starting" and not w.hung_up}
    timeout = TICK if m.reload_dir is None else min(TICK, max(0.0, m.next_poll - now))
    try:
        readable, _, _ = select.select([m.wake_r, *starting], [], [], timeout)
    except InterruptedError:
        return
    for fd in readable:
        if fd == m.wake_r:
            try:
                os.read(m.wake_r, 4096)
            except BlockingIOError:
                pass
        elif fd in starting:
            _on_message(m, starting[fd])


def _on_message(m: _Master, w: _Worker) -> None:
    try:
        data = w.channel.recv(16)
    except OSError:
        data = b""
    if not data:
        w.hung_up = True  # the worker is exiting; waitpid reports it
        return
    if data != b"R" or w.state != "starting":
        return
    w.state = "accepting"
    m.ever_accepted = True
    _log.info("worker accepting", worker=w.slot, pid=w.pid)
    if m.stopping:
        _kill(w.pid, signal.SIGTERM)
        w.state = "stopping"
        return
    if w.replaces is not None:
        old = m.workers.get(w.replaces)
        if old is not None:
            old.state = "stopping"
            _kill(old.pid, signal.SIGTERM)  # it drains; the shared queue keeps every new connection
    elif w.slot == 1 and len(m.workers) < m.count:
        for slot in range(2, m.count + 1):
            if not any(x.slot == slot for x in m.workers.values()):
                _spawn(m, slot)
    # A rolling restart goes on once nobody is starting: after this replacement, or after a
    # worker (a crash's replacement, the first ones) that was starting when SIGHUP came.
    if m.rolling_active and not any(x.state == "starting" for x in m.workers.values()):
        _next_rolling(m)


def _next_rolling(m: _Master) -> None:
    if m.stopping:
        m.rolling.clear()
        m.rolling_active = False
        return
    while m.rolling:
        slot = m.rolling.pop(0)
        old = next((w for w in m.workers.values() if w.slot == slot and w.state == "accepting"), None)
        if old is not None:
            _spawn(m, slot, replaces=old.pid)
            return
    if m.rolling_active:
        m.rolling_active = False
        _log.info("rolling restart done", workers=sorted((w.slot, w.pid) for w in m.workers.values()
                                                          if w.state == "accepting"))


def _on_signal(m: _Master, signum: int) -> None:
    if signum == signal.SIGCHLD:
        return  # _reap runs on every wake
    if signum == signal.SIGHUP:
        if not m.stopping:
            _rolling_restart(m, "SIGHUP")
        return
    if not m.stopping:
        _stop(m, 0, reason=signal.Signals(signum).name)
        return
    _log.warning("second signal: forcing the workers to exit, in-flight requests are cut",
                 workers=len(m.workers))
    for w in m.workers.values():
        _kill(w.pid, signal.SIGTERM)


def _stop(m: _Master, status: int, reason: str) -> None:
    m.stopping = True
    m.exit_status = status
    m.stop_deadline = time.monotonic() + m.drain_timeout + KILL_GRACE
    n = len(m.workers)
    _log.info(f"stopping {n} worker{'' if n == 1 else 's'}: each drains its connections "
              f"(deadline {m.drain_timeout:g} s; send the signal again to force)", reason=reason)
    for w in m.workers.values():
        w.state = "stopping"
        _kill(w.pid, signal.SIGTERM)


def _rolling_restart(m: _Master, reason: str) -> None:
    # A worker still starting may have imported the code before the signal: it is replaced too.
    slots = sorted({w.slot for w in m.workers.values() if w.state in ("accepting", "starting")})
    _log.info("rolling restart", reason=reason, workers=len(slots))
    m.rolling = slots
    m.rolling_active = True
    if not any(w.state == "starting" for w in m.workers.values()):
        _next_rolling(m)  # else the worker starting now continues it once it accepts


def _reap(m: _Master) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        w = m.workers.pop(pid, None)
        if w is None:
            continue  # not a worker (a child the application forked and did not reap)
        w.channel.close()
        _mark_dead(m, pid)
        _on_exit(m, w, status)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _on_exit(m: _Master, w: _Worker, status: int) -> None:
    if w.state == "stopping" or m.stopping:
        _log.info("worker exited", worker=w.slot, pid=w.pid, how=_describe(status))
        return
    if not m.ever_accepted:
        _log.error("the first worker failed to start: stopping", worker=w.slot, pid=w.pid, how=_describe(status))
        _stop(m, 2, reason="first worker failed")
        return
    if w.state == "starting" and w.replaces is not None and w.replaces in m.workers:
        # New code that does not start (a typo under --reload, a broken deploy): the old
        # workers keep serving the old code; the next SIGHUP or change tries again.
        _log.error("a new worker failed to start: the rolling restart stops, the old workers keep serving",
                   worker=w.slot, pid=w.pid, how=_describe(status))
        m.rolling.clear()
        m.rolling_active = False
        return
    now = time.monotonic()
    m.crashes.append(now)
    while m.crashes and m.crashes[0] < now - m.max_seconds:
        m.crashes.popleft()
    if len(m.crashes) > m.max_restarts:
        _log.error(f"workers exited {len(m.crashes)} times in {m.max_seconds:g} s, more than the restart "
                   f"intensity allows (max_restarts={m.max_restarts} in max_seconds={m.max_seconds:g}): "
                   f"stopping", worker=w.slot, pid=w.pid, how=_describe(status))
        _stop(m, 1, reason="restart intensity")
        return
    _log.warning("worker exited unexpectedly: restarting it", worker=w.slot, pid=w.pid, how=_describe(status))
    _spawn(m, w.slot)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _spawn(m: _Master, slot: int, replaces: int | None = None) -> None:
    master_end, worker_end = socket.socketpair()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the master's stack
        master_end.close()
        status = 70
        try:
            status = _become_worker(m, slot, worker_end)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)
    worker_end.close()
    m.workers[pid] = _Worker(slot, pid, master_end, replaces=replaces)
    _log.info("worker started", worker=slot, pid=pid, **({"replaces": replaces} if replaces else {}))


# -- a worker --------------------------------------------------------------------


def _become_worker(m: _Master, slot: int, channel: socket.socket) -> int:
    """Everything a forked worker does: forget the master, start rr, wait, drain."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)  # Ctrl-C reaches the master alone; it tells the workers
    os.close(m.wake_r)
    os.close(m.wake_w)
    for other in m.workers.values():
        other.channel.close()
    import gevent

    gevent.reinit()
    log.set_worker(slot)
    os.environ["RR_WORKER_ID"] = str(slot)
    return _worker_main(m, channel)


def _worker_main(m: _Master, channel: socket.socket) -> int:
    import gevent
    from gevent import socket as gsocket

    import rr

    try:
        routes = m.routes() if m.routes is not None else None
        for listener in m.listeners:
            opts = {**listener.opts, "socket": listener.sock}
            if "routes" not in opts and routes is not None:
                opts["routes"] = routes
            rr._start_listener(listener.name, opts, announce=False)  # the master said where
    except Exception as exc:
        print(f"rr: worker {log.worker_id()}: {exc}", file=sys.stderr, flush=True)
        return 2
    link = gsocket.socket(fileno=channel.detach())
    link.sendall(b"R")

    def master_gone() -> None:
        try:
            while link.recv(64):
                pass
        except OSError:
            pass
        _log.warning("the master is gone: draining")
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = gevent.spawn(master_gone)
    try:
        rr.wait(m.drain_timeout)
    finally:
        watcher.kill()
        link.close()
    return 0


# -- --reload --------------------------------------------------------------------

_SKIP_DIRS = {"__pycache__", "node_modules", "venv", "site-packages"}


def _source_mtimes(root: str) -> dict[str, float]:
    """Modification time of every ``.py`` file under ``root`` (hidden and virtualenv dirs skipped)."""
    found: dict[str, float] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for filename in filenames:
            if filename.endswith(".py"):
                path = os.path.join(dirpath, filename)
                try:
                    found[path] = os.stat(path).st_mtime_ns
                except OSError:
                    continue
    return found


def _poll_sources(m: _Master) -> None:
    assert m.reload_dir is not None
    m.next_poll = time.monotonic() + RELOAD_POLL
    now = _source_mtimes(m.reload_dir)
    changed = sorted(path for path in now.keys() | m.mtimes.keys() if now.get(path) != m.mtimes.get(path))
    m.mtimes = now
    if changed:
        shown = os.path.relpath(changed[0], m.reload_dir)
        _log.info("source changed: restarting the workers", file=shown, files=len(changed))
        _rolling_restart(m, f"{shown} changed")


def forget_modules_under(root: str, keep: Collection[str] = ()) -> None:
    """Drop from ``sys.modules`` every module loaded from a file under ``root`` except those
    named in ``keep``, so the next import reads the files as they are now (what a fresh
    worker does for ``--reload``). ``keep`` is what was imported before the app: rr itself,
    when the app lives in rr's own checkout, must stay the one module it is."""
    import importlib

    root = os.path.join(os.path.realpath(root), "")
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name not in keep and path and os.path.realpath(path).startswith(root):
            del sys.modules[name]
    importlib.invalidate_caches()
