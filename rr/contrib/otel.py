"""OpenTelemetry tracing from rr's telemetry: a SERVER span per request.

    from rr.contrib import otel
    otel.install()                 # the global TracerProvider, or install(provider)

What it owns: a telemetry handler (``install``/``uninstall``) that, on
``("rr", "request", "start")``, extracts the trace context of the incoming
request (``traceparent``/``tracestate``, through the global propagator: W3C
Trace Context and Baggage unless configured otherwise), starts a span of kind
SERVER as its child, and makes it the current span for the handler's code (so
a span the handler starts nests under it); on ``stop`` it names the span
``"{method} {route}"``, sets the status, and ends it. ``stop`` fires when the
response is over, so the span of a ``Stream``, ``Loop``, ``Sendfile`` or
WebSocket session covers all of it. A handler crash is recorded on the span
(``exception`` event, status ERROR, ``error.type``).

Attributes follow OpenTelemetry's HTTP server semantic conventions:
``http.request.method`` (``_OTHER`` plus ``http.request.method_original`` for
a method outside the registry), ``url.scheme``, ``url.path``, ``url.query``,
``server.address``/``server.port`` (from the request's authority),
``client.address``/``client.port``, ``network.protocol.name``/``version``,
``user_agent.original``, then ``http.route`` (the route pattern) and
``http.response.status_code``; ``error.type`` for a 5xx, a crash, or a
response that did not complete (``client_gone``, ``aborted``).

What it must never do: keep a span open past its request, or break one: the
span travels in ``req.private`` and the context token is detached in the
same greenlet at ``stop``; a failure in here detaches the handler (rr's
telemetry rule) and the requests go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from rr import telemetry
from rr.log import current_request

__all__ = ["Tracing", "install"]

_START = ("rr", "request", "start")
_STOP = ("rr", "request", "stop")
_EXCEPTION = ("rr", "request", "exception")
_KEY = "rr.otel"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"})


class _HeadersGetter(Getter[Any]):
    """Reads propagation fields from ``rr.request.Headers``."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = carrier.get_all(key)
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeadersGetter()


def _authority(host: str | None) -> tuple[str | None, int | None]:
    if not host:
        return None, None
    if host.startswith("["):  # [v6]:port
        addr, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        addr, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return addr, (int(port) if port.isdigit() else None)


class Tracing:
    """A span per request; ``install()`` attaches it to rr's telemetry."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, *,
                 handler_id: str = "rr.contrib.otel") -> None:
        self.tracer = trace.get_tracer("rr.contrib.otel", tracer_provider=tracer_provider)
        self.handler_id = handler_id

    def install(self) -> Tracing:
        telemetry.attach_many(self.handler_id, [_START, _STOP, _EXCEPTION], self.handle)
        return self

    def uninstall(self) -> None:
        telemetry.detach(self.handler_id)

    def handle(self, event: tuple[str, ...], measurements: Mapping[str, Any], metadata: Mapping[str, Any],
               config: Any) -> None:
        req = current_request.get()
        if req is None:
            return
        if event == _START:
            self._start(req, metadata)
        elif event == _STOP:
            self._stop(req, metadata)
        else:
            held = req.private.get(_KEY)
            if held is not None:
                span = held[0]
                held[3] = True
                reason = metadata["reason"]
                if isinstance(reason, BaseException):
                    span.record_exception(reason)
                span.set_attribute("error.type", metadata["kind"])
                span.set_status(Status(StatusCode.ERROR, str(reason)))

    def _start(self, req: Any, meta: Mapping[str, Any]) -> None:
        parent = propagate.extract(req.headers, getter=_GETTER)
        method = req.method
        attributes: dict[str, Any] = {
            "http.request.method": method if method in _METHODS else "_OTHER",
            "url.scheme": req.scheme,
            "url.path": req.path,
            "network.protocol.name": "http",
            "network.protocol.version": req.version.partition("/")[2],
        }
        if method not in _METHODS:
            attributes["http.request.method_original"] = method
        if req.query_string:
            attributes["url.query"] = req.query_string
        address, port = _authority(req.host)
        if address:
            attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
        if req.peer:
            attributes["client.address"] = req.peer[0]
            attributes["client.port"] = req.peer[1]
        agent = req.headers.get("user-agent")
        if agent:
            attributes["user_agent.original"] = agent
        span = self.tracer.start_span(attributes["http.request.method"], context=parent, kind=SpanKind.SERVER,
                                      attributes=attributes)
        token = context.attach(trace.set_span_in_context(span, parent))
        # [span, context token, its method name, a crash was recorded]
        req.private[_KEY] = [span, token, attributes["http.request.method"], False]

    def _stop(self, req: Any, meta: Mapping[str, Any]) -> None:
        held = req.private.pop(_KEY, None)
        if held is None:
            return  # installed while this request ran
        span, token, name, crashed = held
        try:
            route = meta["route"]
            if route:
                span.set_attribute("http.route", route)
                span.update_name(f"{name} {route}")
            status = meta["status"]
            if status:
                span.set_attribute("http.response.status_code", status)
            if status >= 500 or meta["outcome"] != "ok":
                if not crashed:  # a crash already named it
                    span.set_attribute("error.type", str(status) if status >= 500 else meta["outcome"])
                span.set_status(Status(StatusCode.ERROR))
            span.end()
        finally:
            context.detach(token)


def install(tracer_provider: trace.TracerProvider | None = None, **options: Any) -> Tracing:
    """Trace every request of every listener (``handler_id`` option: to install twice)."""
    return Tracing(tracer_provider, **options).install()
