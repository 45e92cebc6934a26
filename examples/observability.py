"""Observability: Prometheus metrics, OpenTelemetry traces and JSON logs for an rr app.

    pip install 'rr[prometheus,otel]'
    python examples/observability.py
    curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \\
        http://127.0.0.1:8080/users/7
    curl http://127.0.0.1:8080/metrics

Each request prints one JSON log line per log call (with its ``request_id``)
and one span (a child of the ``traceparent`` the client sent) on stdout;
``/metrics`` counts requests by route pattern, method, status and protocol.
"""

from __future__ import annotations

import os
from typing import Any

import structlog
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter

import rr
from rr import resp
from rr.contrib import otel, prometheus

log = structlog.get_logger("example")
tracer_provider = TracerProvider(resource=Resource.create({"service.name": "rr-example"}))
tracer = tracer_provider.get_tracer("example")


def user(req: rr.Request) -> resp.Response:
    with tracer.start_as_current_span("load user"):  # a child of the request's span
        log.info("loading user", user_id=req.bindings["id"])
        return resp.json(200, {"id": req.bindings["id"]})


ROUTES: list[Any] = [("/users/:id", user), prometheus.route("/metrics")]


def instrument(exporter: SpanExporter | None = None) -> tuple[prometheus.Metrics, otel.Tracing]:
    """Metrics into prometheus_client's default registry, spans to ``exporter`` (the console)."""
    # A real deployment exports in batches (BatchSpanProcessor) to a collector (OTLP).
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter or ConsoleSpanExporter()))
    return prometheus.install(), otel.install(tracer_provider)


def main() -> None:
    rr.log.configure(json=True, level="info")
    instrument()
    rr.start_listener("observed", {
        "port": int(os.environ.get("RR_PORT", "8080")),
        "ip": os.environ.get("RR_IP", "127.0.0.1"),
        "protocols": ["http1", "http2"],
        "routes": ROUTES,
        "request_id_header": "x-request-id",
    })
    print(f"rr: serving examples/observability.py on http://127.0.0.1:{rr.listener_port('observed')}/ "
          "(Ctrl-C stops)", flush=True)
    rr.wait()


if __name__ == "__main__":
    main()
