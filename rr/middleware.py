"""Continuation-style middleware: ``mw(req, next, state) -> response``.

What it is: the chain builder. A middleware entry is a callable, or a
``(callable, config)`` pair. When the callable has an ``init`` attribute,
``state = mw.init(config)`` runs once per entry when the routes compile (and
again on ``rr.reload_routes``): a listener-wide or group entry wraps many
routes with one state. Otherwise the config itself is the state.

A middleware may pass the request on (``return next(req)``), rewrite it
first, short-circuit (return its own response without calling ``next``), or
wrap whatever shape ``next`` returns — including a ``Stream``, whose ``fn``
it may replace to transform chunks on the way out.

Order: the first middleware listed is the outermost — it sees the request
first and the response last. Listener-wide middlewares wrap per-route ones.

What it must never do: build closures per request. Chains are composed once,
at compile time; a request walks pre-built closures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rr import response as resp

Handler = Callable[[Any], Any]
Middleware = Callable[[Any, Handler, Any], Any]


def resolve(entries: Iterable[Any], where: str = "middlewares") -> list[tuple[Middleware, Any]]:
    """Turn entries into ``(mw, state)`` pairs, running each ``init`` once."""
    resolved = []
    for entry in entries:
        config: Any = None
        mw = entry
        if isinstance(entry, tuple):
            if len(entry) != 2 or not callable(entry[0]):
                raise ValueError(f"{where}: an entry must be a callable or (callable, config), got {entry!r}")
            mw, config = entry
        elif not callable(entry):
            raise ValueError(f"{where}: an entry must be a callable or (callable, config), got {entry!r}")
        _check_signature(mw, where)
        init = getattr(mw, "init", None)
        state = init(config) if callable(init) else config
        resolved.append((mw, state))
    return resolved


def _check_signature(mw: Any, where: str) -> None:
    """A middleware is called ``mw(req, next, state)``: refuse one that cannot be, now
    (at start_listener) rather than with a 500 on every request."""
    try:
        signature = inspect.signature(mw)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    try:
        signature.bind(None, None, None)
    except TypeError:
        raise TypeError(f"{where}: middleware {mw!r} must accept (req, next, state); "
                        f"its signature is {signature}") from None


def _link(mw: Middleware, state: Any, nxt: Handler) -> Handler:
    def step(req: Any) -> Any:
        return mw(req, nxt, state)

    return step


def chain(middlewares: Sequence[tuple[Middleware, Any]], handler: Handler) -> Handler:
    """Compose ``middlewares`` (outermost first) around ``handler``."""
    app = handler
    for mw, state in reversed(middlewares):
        app = _link(mw, state, app)
    return app


def alt_svc(req: Any, nxt: Handler, value: str | Callable[[], str]) -> Any:
    """The listener's ``alt_svc`` option: advertise alternative services (RFC 7838), e.g. h3.

    Added to every response that does not carry its own ``alt-svc``, on every
    protocol; rr puts it outermost in the chain when the option is set. A
    listener serving ``http3`` without the option advertises its own h3 port
    on its TCP protocols (``value`` is then a function: the port is known
    once bound).
    """
    result = nxt(req)
    if isinstance(result, resp.WebSocket | resp.WebTransport) or resp.get_header(result, "alt-svc") is not None:
        return result
    if callable(value):
        if req.version == "HTTP/3":
            return result
        value = value()
    return resp.with_header(result, "alt-svc", value)


# How long a client may remember the h3 alternative (RFC 7838 ``ma``): a day, as is common.
H3_MAX_AGE = 86400


def listener_chain(config: Any, port: Callable[[], int] | None = None) -> tuple[Any, ...]:
    """The listener's middleware entries, with rr's own (``alt_svc``) outermost when configured.

    ``port`` gives the bound port: with ``http3`` and no ``alt_svc`` option, responses on
    h1/h2 advertise ``h3=":PORT"; ma=86400``.
    """
    if config.alt_svc is not None:
        return ((alt_svc, config.alt_svc), *config.middlewares)
    if getattr(config, "http3", None) is not None and port is not None:
        return ((alt_svc, lambda: f'h3=":{port()}"; ma={H3_MAX_AGE}'), *config.middlewares)
    return tuple(config.middlewares)
