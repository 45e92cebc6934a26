"""The ``rr`` command (also ``python -m rr``): serve an app from a module, options as flags.

    rr myapp:handler                       # an rr handler: handler(req) -> response
    rr myapp:ROUTES                        # a route list
    rr mysite.wsgi:application             # a WSGI app (Django, Flask...): app(environ, start_response)
    rr myapp:app --bind 127.0.0.1:8080 --bind [::1]:8080 --certfile c.pem --keyfile k.pem
    rr myapp:app --config rr.toml          # options from a TOML file, named as start_listener's
    rr myapp:app --bind unix:/run/rr.sock  # a Unix domain socket (repeatable, with TCP binds too)
    rr myapp:app --workers 4               # a master and 4 worker processes (rr.workers)
    rr myapp:app --reload                  # development: new code served when a .py file changes
    rr myapp:app --workers 4 --metrics-dir /run/rr-metrics   # Prometheus metrics merged across workers

What it owns: reading the command line and the config file, importing the
app, deciding what kind of app it is, and turning all of it into
``rr.start_listener`` calls (one listener per address); then it waits for
SIGTERM or SIGINT and drains them (``rr.wait()``'s job, with the signals
caught before the first listener starts).

What it must never do: serve anything itself, or let a user mistake surface
as a traceback. A bad ``module:attr``, a module that cannot be imported, an
app rr does not serve, a bad option or an address that cannot be bound is one
line on stderr and exit status 2.

With ``--workers N`` (or ``--reload``) this process becomes the master of
``rr.workers``: it imports the app once to fail early, binds the sockets,
prints the start-up lines, and each forked worker imports the app's modules
again (those under the app's directory), so a rolling restart (SIGHUP, or a
changed file under ``--reload``) serves the code as it is on disk then.

Start-up says, per listener, its name, what is served, the address (a URL or
``unix:PATH``) and the protocols; a stop signal says ``draining N
connections (deadline D s; send the signal again to force)``.

What the app is (``--interface auto``, the default), from its signature:

- a list → a route list;
- an ``async def`` function, or an object whose ``__call__`` is one, or a
  callable with three required positional parameters (``scope, receive,
  send``) → refused: that is ASGI, and rr serves rr handlers and WSGI apps;
- two required positional parameters (``environ, start_response``) → WSGI,
  wrapped in ``rr.contrib.wsgi.handler``;
- one → an rr handler;
- anything else (``*args`` only, a builtin without a signature) → refused,
  asking for ``--interface rr`` or ``--interface wsgi``. An explicit
  interface decides only what the signature leaves open: it never serves
  an async or ASGI callable, nor one whose parameter count says otherwise.

Precedence: defaults, then the ``--config`` file, then flags. The file's
keys are ``start_listener`` option names (``port``, ``ip``, ``protocols``,
``[tls]``, ``max_clients``, ...) plus the command's own (``app``,
``interface``, ``bind``, ``name``, ``script_name``, ``chdir``,
``log_level``, ``log_format``, ``drain_timeout``, ``workers``, ``reload``,
``metrics_dir``).

``--metrics-dir DIR`` (with ``--workers``/``--reload``) turns on
prometheus_client's multiprocess mode: the directory is named in
``PROMETHEUS_MULTIPROC_DIR`` before the app is imported (prometheus_client
decides at its first import), and ``rr.workers`` looks after its files.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event

import rr
from rr import config as listener_config

DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8080,
    "name": "rr",
    "interface": "auto",
    "log_level": "info",
    "log_format": "console",
    "drain_timeout": 30.0,
    "protocols_tcp": "http1,http2",
    "protocols_tls": "http2,http1",
    "forwarded_allow_ips": "127.0.0.1,::1",
}

# Keys of a --config file that are the command's own, not listener options.
_CLI_KEYS = {"app", "interface", "bind", "name", "script_name", "chdir", "log_level", "log_format",
             "drain_timeout", "workers", "reload", "metrics_dir"}
# Listener options a file cannot give: they are Python objects.
_CODE_KEYS = {"routes", "middlewares", "not_found"}
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class UsageError(Exception):
    """A mistake of the user's: printed as one line, exit status 2."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("rr")
    except PackageNotFoundError:
        return "unknown (not installed)"


# -- the app -------------------------------------------------------------------


def load_app(spec: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted); ``UsageError`` when that fails."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"APP must look like module:attribute (e.g. mysite.wsgi:application), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UsageError(f"cannot import {module_name!r}: no module named {exc.name!r} "
                             f"(looked in {cwd} and the Python path)") from None
        raise UsageError(f"importing {module_name!r} failed: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _is_coroutine_function(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's, not a metaclass's
    return not inspect.isfunction(obj) and not inspect.isclass(obj) and inspect.iscoroutinefunction(call)


def positional_arity(obj: Any) -> int | None:
    """Required positional parameters of ``obj``'s call; None when ``*args`` or no signature hides it."""
    sig = _signature(obj)
    if sig is None:
        return None
    required = 0
    for param in sig.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) \
                and param.default is inspect.Parameter.empty:
            required += 1
    return required


_NOT_SERVED = "rr serves rr handlers (handler(req)) and WSGI apps (app(environ, start_response))"


def detect_interface(obj: Any, spec: str, interface: str = "auto") -> str:
    """``"routes"``, ``"rr"`` or ``"wsgi"`` for ``obj``; ``UsageError`` for anything rr does not serve.

    ``interface`` (``rr`` or ``wsgi``) decides when the signature cannot,
    but never overrides a signature that says otherwise.
    """
    if isinstance(obj, list):
        if interface == "wsgi":
            raise UsageError(f"{spec} is a route list, not a WSGI app")
        return "routes"
    if not callable(obj):
        raise UsageError(f"{spec} is a {type(obj).__name__}, not an app: {_NOT_SERVED}, or a route list")
    if _is_coroutine_function(obj):
        raise UsageError(f"{spec} is an async (ASGI-style) callable: {_NOT_SERVED}")
    arity = positional_arity(obj)
    if arity == 3:
        raise UsageError(f"{spec} takes (scope, receive, send), an ASGI app: {_NOT_SERVED}")
    if interface != "auto":
        expected = {"rr": 1, "wsgi": 2}[interface]
        if arity is not None and arity != expected:
            raise UsageError(f"--interface {interface} needs a callable of {expected} positional "
                             f"parameter(s); {spec} takes {arity}")
        return interface
    if arity == 2:
        return "wsgi"
    if arity == 1:
        return "rr"
    raise UsageError(f"cannot tell what {spec} is from its signature: {_NOT_SERVED}; "
                     f"say which with --interface rr or --interface wsgi")


def routes_for(obj: Any, spec: str, interface: str, script_name: str | None) -> tuple[Any, str]:
    """What ``start_listener`` gets as ``routes`` for ``obj`` served as ``interface``, and what it is."""
    detected = detect_interface(obj, spec, interface)
    if script_name is not None and detected != "wsgi":
        raise UsageError("--script-name mounts a WSGI app; this app is served as an rr handler or routes")
    if detected == "wsgi":
        from rr.contrib import wsgi

        try:
            return wsgi.handler(obj, script_name=script_name or ""), "WSGI app"
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return obj, ("route list" if detected == "routes" else "rr handler")


# -- options -------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    base = listener_config.load({"port": 0})  # the listener's own defaults, so --help cannot drift from them
    p = argparse.ArgumentParser(
        prog="rr", argument_default=argparse.SUPPRESS,
        description="Serve an rr handler, a route list or a WSGI app (HTTP/1.1 and HTTP/2).",
        epilog="Flags override the --config file, which overrides the defaults. "
               "SIGTERM or Ctrl-C drains the listeners, then exits.",
    )
    p.add_argument("app", nargs="?", metavar="APP",
                   help="module:attribute (an rr handler, a route list or a WSGI callable); "
                        "may come from the config file instead")
    p.add_argument("--version", action="version", version=f"rr {version()}")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="TOML file of options named as start_listener's (port, ip, protocols, [tls], ...)")
    p.add_argument("--interface", choices=["auto", "rr", "wsgi"],
                   help=f"what APP is; auto decides by its signature (default: {d['interface']})")
    p.add_argument("--script-name", metavar="PATH", help="mount a WSGI app under this path prefix (default: none)")
    p.add_argument("--chdir", metavar="DIR", help="change to DIR before importing APP (default: stay)")
    p.add_argument("--host", metavar="ADDR", help=f"IP address to listen on (default: {d['host']})")
    p.add_argument("--port", type=int, help=f"TCP port, 0 picks a free one (default: {d['port']})")
    p.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help="listen here, repeatable: HOST:PORT, [::1]:8080 for IPv6, unix:/path/to.sock; "
                        "replaces --host/--port (default: --host:--port)")
    p.add_argument("-w", "--workers", type=int, metavar="N",
                   help="serve from N worker processes under a master that restarts them "
                        "(SIGHUP: rolling restart) (default: none, one process)")
    p.add_argument("--reload", action="store_true",
                   help="development only: restart the workers when a .py file under the app's "
                        "directory changes (default: off)")
    p.add_argument("--metrics-dir", metavar="DIR",
                   help="with --workers: prometheus_client's multiprocess mode in DIR (created, emptied of "
                        "old *.db files), so rr.contrib.prometheus serves every worker's metrics merged "
                        "(default: PROMETHEUS_MULTIPROC_DIR when set, else off)")
    p.add_argument("--name", help=f"listener name; the 2nd, 3rd --bind get -2, -3 (default: {d['name']})")
    p.add_argument("--protocols", metavar="LIST",
                   help=f"comma list in preference order (default: {d['protocols_tcp']}; "
                        f"{d['protocols_tls']} with TLS)")
    p.add_argument("--certfile", metavar="PEM", help="serve TLS with this certificate (default: plain TCP)")
    p.add_argument("--keyfile", metavar="PEM", help="the certificate's key, when not in --certfile")
    p.add_argument("--ca-certs", metavar="PEM",
                   help="verify client certificates against these CAs (tls.cafile; default: no client check)")
    p.add_argument("--verify-client", choices=["none", "optional", "required"],
                   help="client certificate check (tls.verify_client; default: required with --ca-certs)")
    p.add_argument("--proxy-headers", action="store_true",
                   help="believe Forwarded / X-Forwarded-For/-Proto/-Host from --forwarded-allow-ips "
                        "(default: off)")
    p.add_argument("--forwarded-allow-ips", metavar="LIST",
                   help="comma list of proxy addresses/CIDRs whose forwarding headers are believed, or '*'; "
                        f"implies --proxy-headers (default: {d['forwarded_allow_ips']})")
    p.add_argument("--log-level", choices=_LOG_LEVELS, help=f"(default: {d['log_level']})")
    p.add_argument("--log-format", choices=["console", "json"],
                   help=f"log lines, rr's and the standard library's, on stderr (default: {d['log_format']})")
    p.add_argument("--access-log", action="store_true", help="log each request (default: off)")
    p.add_argument("--blocking-monitor", type=float, metavar="S",
                   help="log the request whose handler held the event loop this long (default: off)")
    p.add_argument("--max-clients", type=int, metavar="N",
                   help=f"open connections at most (default: {base.max_clients})")
    p.add_argument("--body-buffering", choices=["auto", "manual"],
                   help=f"auto reads a body before the handler runs, manual lets it stream it "
                        f"(default: {base.body_buffering}; manual for a WSGI app)")
    p.add_argument("--max-content-length", type=int, metavar="BYTES",
                   help=f"largest request body (default: {base.max_content_length})")
    p.add_argument("--request-timeout", type=float, metavar="S",
                   help=f"a request's head and body must arrive within this (default: {base.request_timeout:g})")
    p.add_argument("--keep-alive-timeout", type=float, metavar="S",
                   help=f"an idle connection is closed after this (default: {base.keep_alive_timeout:g})")
    p.add_argument("--drain-timeout", type=float, metavar="S",
                   help=f"on SIGTERM, wait this long for requests in flight (default: {d['drain_timeout']:g})")
    return p


def read_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read config {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path!r} is not valid TOML: {exc}") from None
    for key in data:
        if key in _CODE_KEYS:
            raise UsageError(f"config {path!r}: option {key!r} is Python code; give it in APP instead")
    if "protocols" in data and isinstance(data["protocols"], list):
        # TOML has no tuples: ["http2", {stream_window = 65536}] is start_listener's (name, options) pair.
        data["protocols"] = [tuple(p) if isinstance(p, list) else p for p in data["protocols"]]
    return data


def parse_bind(value: str) -> dict[str, Any]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``unix:PATH`` → the listener's address options."""
    if value.startswith("unix:"):
        if not value[5:]:
            raise UsageError(f"--bind {value}: give the socket's path, as in unix:/run/rr.sock")
        return {"unix": value[5:]}
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--bind must look like HOST:PORT, [IPv6]:PORT or unix:PATH, got {value!r}")
    return {"ip": host, "port": int(port)}


_FLAG_OPTIONS = {  # flag dest -> start_listener option
    "host": "ip", "port": "port", "max_clients": "max_clients", "body_buffering": "body_buffering",
    "max_content_length": "max_content_length", "request_timeout": "request_timeout",
    "keep_alive_timeout": "keep_alive_timeout", "access_log": "access_log",
    "blocking_monitor": "blocking_monitor",
}  # fmt: skip


def settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the command's own settings, the listener options) from defaults, the file and the flags."""
    given = vars(args)
    file = read_config(given["config"]) if "config" in given else {}
    own = {k: DEFAULTS[k] for k in ("interface", "name", "log_level", "log_format", "drain_timeout")}
    own.update({k: v for k, v in file.items() if k in _CLI_KEYS})
    own.update({k: given[k] for k in _CLI_KEYS if k in given})
    opts: dict[str, Any] = {"ip": DEFAULTS["host"], "port": DEFAULTS["port"]}
    opts.update({k: v for k, v in file.items() if k not in _CLI_KEYS})
    for flag, option in _FLAG_OPTIONS.items():
        if flag in given:
            opts[option] = given[flag]
    if given.keys() & {"certfile", "keyfile", "ca_certs", "verify_client"}:
        tls = dict(opts.get("tls") or {})
        tls.update({k: given[k] for k in ("certfile", "keyfile") if k in given})
        if "ca_certs" in given:
            tls["cafile"] = given["ca_certs"]
            tls.setdefault("verify_client", "required")
        if "verify_client" in given:
            tls["verify_client"] = given["verify_client"]
        if "certfile" not in tls:
            raise UsageError("--ca-certs / --verify-client need --certfile (client certificates are a TLS matter)")
        opts["tls"] = tls
    if "forwarded_allow_ips" in given or given.get("proxy_headers"):
        opts["forwarded_allow_ips"] = given.get("forwarded_allow_ips", DEFAULTS["forwarded_allow_ips"])
    if "protocols" in given:
        opts["protocols"] = [p.strip() for p in given["protocols"].split(",") if p.strip()]
    elif "protocols" not in opts:
        default = DEFAULTS["protocols_tls" if opts.get("tls") else "protocols_tcp"]
        opts["protocols"] = default.split(",")
    if own["log_level"] not in _LOG_LEVELS:
        raise UsageError(f"log_level must be one of {', '.join(_LOG_LEVELS)}, got {own['log_level']!r}")
    if own["log_format"] not in ("console", "json"):
        raise UsageError(f"log_format must be console or json, got {own['log_format']!r}")
    if own["interface"] not in ("auto", "rr", "wsgi"):
        raise UsageError(f"interface must be auto, rr or wsgi, got {own['interface']!r}")
    if "app" not in own:
        raise UsageError("no APP given (module:attribute on the command line, or app = ... in --config)")
    for key in ("app", "name", "script_name", "chdir", "metrics_dir"):
        if key in own and not isinstance(own[key], str):
            raise UsageError(f"{key} must be a string, got {own[key]!r}")
    bind = own.get("bind", [])
    if not isinstance(bind, list) or not all(isinstance(b, str) for b in bind):
        raise UsageError(f"bind must be a list of \"HOST:PORT\" or \"unix:PATH\" strings, got {bind!r}")
    workers = own.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024):
        raise UsageError(f"workers must be a number of processes in 1..1024, got {workers!r}")
    if own.get("metrics_dir") and not (own.get("workers") or own.get("reload")):
        raise UsageError("--metrics-dir is for --workers (one process needs no multiprocess mode)")
    if not isinstance(own.get("reload", False), bool):
        raise UsageError(f"reload must be true or false, got {own['reload']!r}")
    if isinstance(own["drain_timeout"], bool) or not isinstance(own["drain_timeout"], int | float):
        raise UsageError(f"drain_timeout must be a number of seconds, got {own['drain_timeout']!r}")
    return own, opts


def configure_logging(level_name: str, log_format: str = "console") -> None:
    """rr's and the standard library's log lines in one format on stderr (``rr.log.configure``)."""
    rr.log.configure(json=log_format == "json", level=level_name)


def _address(opts: dict[str, Any], port: int) -> str:
    """What the start-up line says a listener listens on: a URL, or ``unix:PATH``."""
    if "unix" in opts:
        return f"unix:{opts['unix']}"
    host = opts.get("ip") or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if opts.get('tls') else 'http'}://{host}:{port}/"


def _announce(name: str, kind: str, own: dict[str, Any], opts: dict[str, Any], port: int) -> None:
    """The start-up line: the listener's name, what it serves, where, and its protocols."""
    print(f"rr: listener {name!r} ({kind} {own['app']}) listening on {_address(opts, port)} "
          f"({', '.join(map(str, _names(opts)))})", flush=True)


def _app_root(spec: str) -> str:
    """The directory the app's top-level module or package was imported from."""
    top = sys.modules.get(spec.partition(":")[0].split(".")[0])
    path = getattr(top, "__file__", None)
    if path is None:
        return os.getcwd()
    path = os.path.dirname(os.path.abspath(path))
    return os.path.dirname(path) if os.path.basename(getattr(top, "__file__", "")) == "__init__.py" else path


def plan(own: dict[str, Any], opts: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], Any, str]:
    """Import the app (in this process) and decide the listeners: (name -> options, routes, kind)."""
    if own.get("chdir"):
        os.chdir(own["chdir"])
    obj = load_app(own["app"])
    routes, kind = routes_for(obj, own["app"], own["interface"], own.get("script_name"))
    if kind == "WSGI app" and "body_buffering" not in opts:
        opts = {**opts, "body_buffering": "manual"}  # wsgi.input streams the body as the app reads it
    default = {"unix": opts["unix"]} if "unix" in opts else {"ip": opts["ip"], "port": opts["port"]}
    binds = [parse_bind(b) for b in own.get("bind") or []] or [default]
    base = {k: v for k, v in opts.items() if k not in ("ip", "port", "unix")}
    listeners = {}
    for i, address in enumerate(binds):
        name = own["name"] if i == 0 else f"{own['name']}-{i + 1}"
        listeners[name] = {**base, **address}
    return listeners, routes, kind


def start(own: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    """Import the app and start one listener per address in this process; returns their names."""
    listeners, routes, kind = plan(own, opts)
    names: list[str] = []
    try:
        for name, listener_opts in listeners.items():
            try:
                # Not announced: _announce prints the command's own line, which names the app.
                rr._start_listener(name, {**listener_opts, "routes": routes}, announce=False)
            except (ValueError, OSError) as exc:
                raise UsageError(f"listener {name!r} on {_where(listener_opts)}: {exc}") from None
            names.append(name)
            _announce(name, kind, own, listener_opts, rr.listener_port(name))
    except BaseException:
        for name in names:
            rr.stop_listener(name)
        raise
    return names


def _where(opts: dict[str, Any]) -> str:
    return f"unix:{opts['unix']}" if "unix" in opts else f"{opts['ip']}:{opts['port']}"


def serve_workers(own: dict[str, Any], opts: dict[str, Any]) -> int:
    """``--workers``/``--reload``: a master (this process) forks workers that each import the app."""
    from rr import workers

    metrics_dir = own.get("metrics_dir") or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        # Before the app's first import of prometheus_client, which reads the variable then
        # (absolute: --chdir comes next).
        own = {**own, "metrics_dir": os.path.abspath(metrics_dir)}
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own["metrics_dir"]
        try:
            os.makedirs(own["metrics_dir"], exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--metrics-dir {own['metrics_dir']}: {exc.strerror}") from None
    before = set(sys.modules)
    listeners, _, kind = plan(own, opts)  # imported here only to fail early with one line
    root = _app_root(own["app"])

    def fresh_routes() -> Any:
        # A worker forks from this master; it imports the app's modules again, as they are
        # on disk now, so a rolling restart (SIGHUP, --reload) serves the new code.
        workers.forget_modules_under(root, keep=before)
        return routes_for(load_app(own["app"]), own["app"], own["interface"], own.get("script_name"))[0]

    try:
        return workers.run(
            listeners, own.get("workers") or 1, routes=fresh_routes, drain_timeout=float(own["drain_timeout"]),
            reload_dir=root if own.get("reload") else None, metrics_dir=own.get("metrics_dir"),
            on_bound=lambda name, sock: _announce(name, kind, own, listeners[name], _port(sock)),
        )
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _port(sock: Any) -> int:
    address = sock.getsockname()
    return address[1] if isinstance(address, tuple) else 0


def _names(opts: dict[str, Any]) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in opts["protocols"]]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The stop signals are caught before any listener starts, so a SIGTERM that arrives
    # right after the "listening on" line still drains instead of killing the process.
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)]
    try:
        try:
            own, opts = settings(args)
            configure_logging(own["log_level"], own["log_format"])
            if own.get("workers") or own.get("reload"):
                for handler in handlers:  # the master catches its signals itself
                    handler.cancel()
                return serve_workers(own, opts)
            start(own, opts)
        except UsageError as exc:
            print(f"rr: {exc}", file=sys.stderr)
            return 2
        rr.wait(float(own["drain_timeout"]), signalled=stop)
    finally:
        for handler in handlers:
            handler.cancel()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
