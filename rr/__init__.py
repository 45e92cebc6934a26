"""rr: an HTTP server for gevent, built like an Erlang/OTP system.

The public API. Everything else under ``rr/`` may move; these names stay.

- ``start_listener(name, opts)`` / ``stop_listener(name)`` / ``drain(name, timeout)``
- ``listener_info(name)``, ``listener_port(name)``, ``listeners()``
- ``child_spec(name, opts)``: embed a listener in your own ``supervisors`` tree
- ``wait()``: block; SIGTERM/SIGINT drain every listener, then return
  (``ServerDown`` if rr's root supervisor gave up meanwhile)
- ``Request``, ``resp`` (response shapes and builders), ``telemetry``, ``ClientGone``
- ``rr.workers.run(listeners, workers)``: the same listeners served from N
  forked worker processes under a master (module ``rr.workers``)

Listeners started with ``start_listener`` live under rr's root supervisor
(``one_for_one``, 10 restarts in 10 s, registered as ``"rr.sup"``), started
on first use and never linked to the caller. They are ``permanent`` children:
a listener whose own intensity is exceeded (its acceptors or socket owner
crashing) is restarted on the same port; past the root's intensity the root
stops and ``wait()`` raises. A listener embedded with ``child_spec`` lives
wherever the application puts it, with the restart type it asks for.
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event

import supervisors
from rr import config as _config
from rr import listener as _listener
from rr import log, telemetry
from rr import middleware as _middleware
from rr import response as resp
from rr import router as _router
from rr.exchange import ClientGone
from rr.request import Headers, Request
from rr.runtime import ListenerRuntime
from supervisors.supervisor import Restart

__all__ = [
    "ClientGone", "Headers", "Request", "ServerDown", "child_spec", "drain", "listener_info", "listener_port",
    "listeners", "reload_routes", "resp", "send", "start_listener", "stop_listener", "telemetry",
    "url_for", "wait",
]  # fmt: skip

_ROOT = "rr.sup"
_runtimes: dict[str, ListenerRuntime] = {}

send = supervisors.send
_log = log.get_logger("rr")


def _root() -> supervisors.Pid:
    pid = supervisors.whereis(_ROOT)
    if pid is None:
        pid = supervisors.start_supervisor(
            [], strategy="one_for_one", max_restarts=10, max_seconds=10.0, name=_ROOT, label=_ROOT
        )
    return pid


def _compile_app(config: _config.Config, runtime: ListenerRuntime) -> Any:
    routes = config.routes if config.routes is not None else config.handler or _default_handler
    try:
        return _router.compile_app(routes, _middleware.listener_chain(config, lambda: runtime.port),
                                   config.not_found,
                                   config.redirect_slashes)
    except ValueError as exc:
        raise ValueError(f"invalid listener option 'routes': {exc}") from None


def _default_handler(req: Request) -> resp.Response:
    return resp.text(404, "rr is running, but this listener has no routes yet.\n")


def _runtime(name: str, opts: Any) -> ListenerRuntime:
    if not isinstance(name, str) or not name:
        raise ValueError(f"listener name must be a non-empty string, got {name!r}")
    config = _config.load(opts)
    runtime = ListenerRuntime(name, config, None)
    runtime.app = _compile_app(config, runtime)
    return runtime


def _start_registered(runtime: ListenerRuntime, announce: bool = True) -> supervisors.Pid:
    pid = _listener.start_link(runtime)
    _runtimes[runtime.name] = runtime
    if announce:
        _log.info(listening_message(runtime.name, runtime.url(), runtime.config.protocols))
    return pid


def listening_message(name: str, url: str, protocols: Any) -> str:
    """The start-up line: ``listener 'web' listening on http://127.0.0.1:8080/ (http1, http2)``.

    ``start_listener`` (and a ``child_spec`` listener, at each start) logs it at info level
    on the ``rr`` logger, so an application's logging configuration can silence it; the
    ``rr`` command prints its own line instead, which also says what app it serves.
    """
    return f"listener {name!r} listening on {url} ({', '.join(protocols)})"


class ServerDown(RuntimeError):
    """rr's root supervisor gave up: its listeners crashed past its restart intensity."""


def child_spec(name: str, opts: dict[str, Any], restart: Restart = "transient") -> supervisors.ChildSpec:
    """A child spec that runs listener ``name`` under the application's own supervisor.

    Options are validated now, so a bad option fails here, not at start.
    ``restart="transient"`` (the default) lets ``rr.drain``/``rr.stop_listener``
    end an embedded listener for good; a listener that gives up (more crashes
    of its acceptors or socket owner than its restart intensity allows) then
    stays down too, as OTP's transient children do — use ``"permanent"`` to
    have your supervisor restart it (and stop it with ``terminate_child``).
    """
    return _child_spec(name, opts, restart, announce=True)


def _child_spec(name: str, opts: dict[str, Any], restart: Restart, announce: bool) -> supervisors.ChildSpec:
    runtime = _runtime(name, opts)
    log.configure_default()
    return supervisors.ChildSpec(
        name, _start_registered, args=(runtime, announce), restart=restart, shutdown="infinity", type="supervisor"
    )


def start_listener(name: str, opts: dict[str, Any]) -> supervisors.Pid:
    """Start listener ``name`` under rr's root supervisor; returns its supervisor pid.

    Once it listens, logs ``listener NAME listening on URL (PROTOCOLS)`` at info
    level (``listening_message``). Raises ``ValueError`` for a bad option (naming
    it), for a duplicate name, and ``OSError`` when the port cannot be bound.
    """
    return _start_listener(name, opts, announce=True)


def _start_listener(name: str, opts: dict[str, Any], *, announce: bool) -> supervisors.Pid:
    """``start_listener``; ``announce=False`` for the ``rr`` command and ``rr.workers``,
    which say where they listen themselves (once, not once per worker)."""
    current = _runtimes.get(name)
    if current is not None and current.sup is not None and current.sup.is_alive:
        raise ValueError(f"a listener named {name!r} is already running")
    # permanent under rr's root (as ranch's listeners are): a listener that exceeds its own
    # restart intensity is restarted by the root, within the root's; stop and drain remove it
    # with terminate_child + delete_child, which never restart.
    spec = _child_spec(name, opts, "permanent", announce)
    root = _root()
    try:
        supervisors.delete_child(root, name)
    except Exception:  # no stale spec of that name: nothing to delete
        pass
    pid = supervisors.start_child(root, spec)
    if pid is None:
        raise RuntimeError(f"listener {name!r} did not start")
    return pid


def _get(name: str) -> ListenerRuntime:
    runtime = _runtimes.get(name)
    if runtime is None:
        raise KeyError(f"no listener named {name!r}")
    return runtime


def _remove(name: str) -> None:
    root = supervisors.whereis(_ROOT)
    runtime = _runtimes.pop(name, None)
    if root is not None:
        try:
            supervisors.terminate_child(root, name)
            supervisors.delete_child(root, name)
        except Exception:  # embedded via child_spec: the application's supervisor owns it
            if runtime is not None and runtime.sup is not None and runtime.sup.is_alive:
                supervisors.exit(runtime.sup, "shutdown")


def stop_listener(name: str) -> None:
    """Stop listener ``name`` now: close the socket and end its connections."""
    _get(name)
    _remove(name)


def drain(name: str, timeout: float = 30.0) -> dict[str, int]:
    """Gracefully stop listener ``name``; see ``rr.listener`` for the contract."""
    runtime = _get(name)
    result = _listener.drain(runtime, timeout)
    _remove(name)
    return result


def reload_routes(name: str, routes: Any) -> None:
    """Compile ``routes`` and swap them in atomically; in-flight requests keep the old table.

    Listener middlewares are resolved again (their ``init`` runs again).
    """
    runtime = _get(name)
    config = runtime.config
    if not isinstance(routes, list) and not callable(routes):
        raise ValueError("invalid listener option 'routes': a handler callable or a list of routes")
    try:
        app = _router.compile_app(routes, _middleware.listener_chain(config, lambda: runtime.port),
                                  config.not_found,
                                  config.redirect_slashes)
    except ValueError as exc:
        raise ValueError(f"invalid listener option 'routes': {exc}") from None
    runtime.app = app


def url_for(name: str, route: str, _query: Any = None, **bindings: Any) -> str:
    """The path of the route named ``route`` on listener ``name``; ``_query`` (a mapping
    or pairs) becomes its query string: ``url_for("web", "user", id=7, _query={"tab": "x"})``."""
    app = _get(name).app
    if not isinstance(app, _router.Router):
        raise KeyError(f"listener {name!r} has no route table")
    return app.url_for(route, _query, **bindings)


def listener_info(name: str) -> dict[str, Any]:
    return _get(name).info()


def listener_port(name: str) -> int:
    return _get(name).port


def listeners() -> list[str]:
    return sorted(_runtimes)


def draining_message(connections: int, deadline: float) -> str:
    """What a server says when a stop signal starts its drain."""
    plural = "" if connections == 1 else "s"
    return (f"draining {connections} connection{plural} (deadline {deadline:g} s; "
            f"send the signal again to force)")


def wait(drain_timeout: float = 30.0, *, signalled: gevent.event.Event | None = None) -> dict[str, dict[str, int]]:
    """Block until SIGTERM or SIGINT, then drain every listener; returns what each drained.

    The drain starts with a log line ``draining N connections (deadline D s;
    send the signal again to force)``. A second SIGTERM/SIGINT during the
    drain forces the exit (a log line says so): every listener is stopped at
    once, in-flight requests cut.

    ``signalled``: an event the caller's own signal handlers set before
    ``wait`` took over (the ``rr`` command catches the stop signals before its
    first listener starts): already set, the drain starts at once.

    Raises ``ServerDown`` (after a log line saying why) if rr's root supervisor
    gives up meanwhile: its listeners crashed more often than it may restart them.
    """
    import signal

    stop = gevent.event.Event()
    draining = [False]
    down: list[Any] = []
    root = _root()

    def watch_root() -> None:
        ref = supervisors.monitor(root)
        msg = supervisors.receive(lambda m: type(m) is tuple and len(m) == 4 and m[:2] == ("DOWN", ref))
        down.append(msg[3])
        stop.set()

    def on_signal() -> None:
        if not draining[0]:
            stop.set()
            return
        _log.warning("second signal: forcing the exit, in-flight requests are cut", listeners=listeners())
        for name in listeners():
            gevent.spawn(_remove, name)

    watcher = supervisors.spawn(watch_root, label="rr.wait")
    # One handler for both phases, so no signal ever meets the default action meanwhile.
    handlers = [gevent.signal_handler(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)]
    if signalled is not None and signalled.is_set():
        stop.set()
    try:
        stop.wait()
        supervisors.exit(watcher, "kill")
        if down:
            _log.error("rr's root supervisor stopped: its listeners exceeded their restart intensity",
                       reason=str(down[0]), listeners=listeners())
            _runtimes.clear()
            raise ServerDown(f"rr's root supervisor stopped ({down[0]}): "
                             "listeners crashed past its restart intensity")
        draining[0] = True
        names = listeners()
        connections = sum(_runtimes[name].active for name in names)
        _log.info(draining_message(connections, drain_timeout), listeners=names)
        results: dict[str, dict[str, int]] = {}
        for name in names:
            if name in _runtimes:
                results[name] = drain(name, drain_timeout)
        return results
    finally:
        for h in handlers:
            h.cancel()
        supervisors.exit(watcher, "kill")
