"""Dispatch: the one place a request becomes a response, for every protocol.

What it owns: calling the listener's compiled application (a handler, or the
router plus middlewares) inside the request's telemetry span, binding the
``request_id`` for logging, and turning a crash into a 500.

What it must never do: write to a socket or know the protocol. Its one
caller is ``rr.exchange``, which every protocol drives the same way.

Telemetry: ``begin`` emits ``("rr", "request", "start")``; ``crashed`` emits
``exception`` when the handler raises (or returns something unsendable); the
exchange calls ``finish`` once the response is on the wire (or failed), which
emits ``stop`` with the status, the body bytes sent and the outcome. The
metadata's ``route`` is the matched route's pattern (the router sets it), so
metrics can be labelled by route without one series per URL.
With no subscriber each step is one dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent

from rr import response as resp
from rr import telemetry, watchdog
from rr.log import current_request, get_logger
from rr.request import Request

App = Callable[[Request], Any]

_START = ("rr", "request", "start")
_STOP = ("rr", "request", "stop")
_EXCEPTION = ("rr", "request", "exception")

_log = get_logger("rr.dispatch")

INTERNAL_ERROR = resp.Response(500, [("content-type", "text/plain; charset=utf-8")], b"Internal Server Error")
NOT_IMPLEMENTED = resp.Response(501, [("content-type", "text/plain; charset=utf-8")], b"Not Implemented")


def _metadata(req: Request) -> dict[str, Any]:
    return {
        "request_id": req.request_id,
        "listener": req.listener,
        "method": req.method,
        "path": req.path,
        "peer": req.peer,
        "route": req.route,
        "route_name": req.route_name,
        "protocol": req.version,
        "scheme": req.scheme,
    }


def begin(req: Request) -> float:
    """Bind the request for logging and emit the start event; returns the start time."""
    current_request.set(req)
    if watchdog.tracking:  # the blocking monitor names the request its greenlet runs
        getcurrent().rr_request = req
    if telemetry.enabled(_START):
        telemetry.execute(_START, {"system_time": time.time()}, _metadata(req))
    return time.monotonic()


_SHAPES = frozenset({resp.Response, resp.Stream, resp.Loop, resp.Sendfile, resp.WebSocket, resp.WebTransport})
_SHAPE_UNION = resp.Response | resp.Stream | resp.Loop | resp.Sendfile | resp.WebSocket | resp.WebTransport


def call(app: App, req: Request, started: float,
         passthrough: tuple[type[BaseException], ...] = ()) -> resp.Shape:
    """Run the application; a crash or a non-response becomes a logged 500.

    Exceptions in ``passthrough`` (the exchange's "client gone" and "bad body")
    are not crashes: they propagate to the caller.
    """
    try:
        result = app(req)
    except passthrough:
        raise
    except Exception as exc:
        return crashed(req, started, exc)
    # An exact-type check first (the shapes are final dataclasses); isinstance for subclasses.
    if type(result) not in _SHAPES and not isinstance(result, _SHAPE_UNION):
        return crashed(req, started, TypeError(f"handler returned {type(result).__name__}, not a response"))
    return result


def crashed(req: Request, started: float, exc: BaseException) -> resp.Response:
    """Log a handler failure with its request id, emit ``exception``, answer 500."""
    _log.error(
        "handler crashed",
        method=req.method,
        path=req.path,
        route=req.route,
        route_name=req.route_name,
        request_id=req.request_id,
        exc_info=exc,
    )
    if telemetry.enabled(_EXCEPTION):
        telemetry.execute(
            _EXCEPTION,
            {"duration": time.monotonic() - started},
            {**_metadata(req), "kind": type(exc).__name__, "reason": exc},
        )
    return INTERNAL_ERROR


def finish(req: Request, status: int, started: float, sent: int = 0, outcome: str = "ok") -> None:
    """Emit the stop event once the response has been written (or failed: ``outcome``)."""
    if watchdog.tracking:
        getcurrent().rr_request = None
    if telemetry.enabled(_STOP):
        telemetry.execute(
            _STOP, {"duration": time.monotonic() - started, "bytes": sent},
            {**_metadata(req), "status": status, "outcome": outcome},
        )

