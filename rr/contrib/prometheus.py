"""Prometheus metrics from rr's telemetry: one call installs them, one route serves them.

    from rr.contrib import prometheus
    prometheus.install()                        # telemetry handlers + listener gauges
    routes = [..., prometheus.route("/metrics")]

What it owns: a ``Metrics`` object — the counters and histograms it creates
in a ``prometheus_client`` registry (the default one unless given), the
telemetry handler that feeds them (``install``/``uninstall``), and a collector
that reads every running listener's ``rr.listener_info`` at scrape time for
the connection gauges. The metric families (``namespace`` ``rr`` by
default):

- ``rr_requests_total``, ``rr_request_duration_seconds`` (histogram) and
  ``rr_response_body_bytes_total``, by ``listener``, ``route``, ``method``,
  ``status``, ``protocol``;
- ``rr_requests_in_flight`` by ``listener``;
- ``rr_request_exceptions_total`` by ``listener``, ``route``, ``method``, ``kind``;
- ``rr_requests_rejected_total`` (h1, unparsable) by ``listener``, ``status``,
  ``reason``; ``rr_requests_throttled_total`` (h2, over
  ``max_concurrent_requests``) by ``listener``, ``reason``;
- ``rr_connections_accepted_total``, ``rr_connections_rejected_total``
  (``reason``), ``rr_connections_closed_total`` (``reason``; an h2 connection
  error counts as ``connection_error``) by ``listener``;
- ``rr_http2_goaway_total`` (``error``), ``rr_http2_floods_total`` (``kind``:
  ``reset``, ``ping``, ``settings``, ``priority``, ``window_update``,
  ``empty_data``, ``continuation``, ``header_block``) and
  ``rr_http2_resets_total`` (``by``, ``error``) by ``listener``;
- gauges read from the listeners: ``rr_connections_active``,
  ``rr_connections_max``, ``rr_http2_streams_active``,
  ``rr_listener_accepting`` (1 or 0) by ``listener``.

What it must never do: label by anything a client controls without bound.
``route`` is the route *pattern* (``""`` when no route matched, and on a
listener serving one handler), never the path; a method outside RFC 9110's
and PATCH is counted as ``_OTHER``; reasons are rr's own words. And a metric
must never break a request: rr detaches a telemetry handler that raises.

Multiprocess mode (``rr --workers N --metrics-dir DIR``, or
``rr.workers.run(..., metrics_dir=DIR)``; prometheus_client's own mode, on
when ``PROMETHEUS_MULTIPROC_DIR`` was set before ``prometheus_client`` was
first imported): every worker writes its values to files in that directory
and ``metrics_handler`` (``route``) answers with all workers' values merged
(``MultiProcessCollector``), whichever worker the scrape lands on. Counters
and histograms add up across workers, a dead worker's included;
``rr_requests_in_flight`` and the listener gauges are summed over the live
workers (``livesum``; ``rr_listener_accepting`` is ``livemax``: 1 while any
worker accepts), and the master removes a dead worker's gauge files
(``mark_process_dead``). The listener gauges cannot be read from the other
workers at scrape time, so in this mode each worker writes its own when a
connection is accepted or closed (and the scraped worker just before the
scrape).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

import rr
from rr import response as resp
from rr import telemetry
from rr.log import current_request

__all__ = ["DEFAULT_BUCKETS", "Metrics", "install", "metrics_handler", "multiprocess", "route"]

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_START = ("rr", "request", "start")
_STOP = ("rr", "request", "stop")
_EXCEPTION = ("rr", "request", "exception")
_REJECTED = ("rr", "request", "rejected")
_THROTTLED = ("rr", "request", "throttled")
_ACCEPT = ("rr", "listener", "accept")
_CONN_REJECTED = ("rr", "listener", "conn_rejected")
_CONN_CLOSE = ("rr", "conn", "close")
_GOAWAY = ("rr", "http2", "goaway")
_RESET = ("rr", "http2", "reset")
EVENTS = (_START, _STOP, _EXCEPTION, _REJECTED, _THROTTLED, _ACCEPT, _CONN_REJECTED, _CONN_CLOSE, _GOAWAY, _RESET)

_REQUEST_LABELS = ("listener", "route", "method", "status", "protocol")


# The Metrics installed in this process, by handler id (see ``install``).
_installed: dict[str, Metrics] = {}


def multiprocess() -> bool:
    """Whether prometheus_client runs in multiprocess mode here (``ValueError`` when
    ``PROMETHEUS_MULTIPROC_DIR`` is set but came too late to take effect)."""
    on = bool(getattr(values.ValueClass, "_multiprocess", False))
    if not on and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise ValueError("PROMETHEUS_MULTIPROC_DIR is set, but prometheus_client was imported before it was, so "
                         "its multiprocess mode is off: set it before the first import (rr --metrics-dir does)")
    return on


def _method(method: str) -> str:
    return method if method in _METHODS else "_OTHER"


def _flood_kind(reason: str) -> str:
    """``"ping flood"`` -> ``ping``; an oversized header block -> ``header_block``."""
    if reason.endswith(" flood"):
        return reason[: -len(" flood")].lower()
    return "header_block"


class _ListenerGauges:
    """A collector: the connection gauges, read from every listener at scrape time."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ns = self.namespace
        families = {
            "active_clients": GaugeMetricFamily(f"{ns}_connections_active", "Open client connections",
                                                labels=["listener"]),
            "max_clients": GaugeMetricFamily(f"{ns}_connections_max", "The listener's max_clients",
                                             labels=["listener"]),
            "live_streams": GaugeMetricFamily(f"{ns}_http2_streams_active", "HTTP/2 streams being served",
                                              labels=["listener"]),
        }
        accepting = GaugeMetricFamily(f"{ns}_listener_accepting", "1 while the listener accepts connections",
                                      labels=["listener"])
        for name in rr.listeners():
            try:
                info = rr.listener_info(name)
            except (KeyError, ValueError):  # stopped between the two calls
                continue
            for key, family in families.items():
                family.add_metric([name], float(info[key]))
            accepting.add_metric([name], 1.0 if info["status"] == "accepting" else 0.0)
        yield from families.values()
        yield accepting

    def describe(self) -> list[Any]:
        return []  # read at scrape time; nothing to check at registration


class Metrics:
    """rr's metrics in one registry; ``install()`` feeds them from telemetry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, namespace: str = "rr",
                 buckets: Sequence[float] = DEFAULT_BUCKETS, handler_id: str = "rr.contrib.prometheus") -> None:
        if not isinstance(namespace, str) or not _NAME.fullmatch(namespace):
            raise ValueError(f"namespace must be a Prometheus metric name prefix, got {namespace!r}")
        bounds = list(buckets)
        if not bounds or any(not isinstance(b, int | float) or isinstance(b, bool) or b <= 0 for b in bounds) \
                or bounds != sorted(set(bounds)):
            raise ValueError(f"buckets must be increasing positive seconds, got {buckets!r}")
        self.multiprocess = multiprocess()
        self.registry = registry if registry is not None else REGISTRY
        self.handler_id = handler_id
        self.installed = False
        reg = self.registry
        ns = namespace
        self.requests = Counter(f"{ns}_requests", "Requests answered", _REQUEST_LABELS, registry=reg)
        self.duration = Histogram(f"{ns}_request_duration_seconds", "Request duration, head parsed to response end",
                                  _REQUEST_LABELS, buckets=bounds, registry=reg)
        self.body_bytes = Counter(f"{ns}_response_body_bytes", "Response body bytes sent", _REQUEST_LABELS,
                                  registry=reg)
        self.in_flight = Gauge(f"{ns}_requests_in_flight", "Requests being served", ["listener"], registry=reg,
                               multiprocess_mode="livesum")
        self.exceptions = Counter(f"{ns}_request_exceptions", "Handler crashes",
                                  ["listener", "route", "method", "kind"], registry=reg)
        self.rejected = Counter(f"{ns}_requests_rejected", "Unparsable requests answered and closed (HTTP/1.1)",
                                ["listener", "status", "reason"], registry=reg)
        self.throttled = Counter(f"{ns}_requests_throttled", "HTTP/2 streams refused over max_concurrent_requests",
                                 ["listener", "reason"], registry=reg)
        self.accepted = Counter(f"{ns}_connections_accepted", "Connections accepted", ["listener"], registry=reg)
        self.conn_rejected = Counter(f"{ns}_connections_rejected", "Connections refused",
                                     ["listener", "reason"], registry=reg)
        self.closed = Counter(f"{ns}_connections_closed", "Connections ended", ["listener", "reason"], registry=reg)
        self.goaways = Counter(f"{ns}_http2_goaway", "HTTP/2 connections ended for a connection error",
                               ["listener", "error"], registry=reg)
        self.floods = Counter(f"{ns}_http2_floods", "HTTP/2 connections ended with ENHANCE_YOUR_CALM",
                              ["listener", "kind"], registry=reg)
        self.resets = Counter(f"{ns}_http2_resets", "HTTP/2 streams reset", ["listener", "by", "error"],
                              registry=reg)
        self.gauges: Any
        if self.multiprocess:  # written by each worker, merged at scrape time (module docstring)
            self.gauges = {
                "active_clients": Gauge(f"{ns}_connections_active", "Open client connections", ["listener"],
                                        registry=reg, multiprocess_mode="livesum"),
                "max_clients": Gauge(f"{ns}_connections_max", "The listener's max_clients", ["listener"],
                                     registry=reg, multiprocess_mode="livesum"),
                "live_streams": Gauge(f"{ns}_http2_streams_active", "HTTP/2 streams being served", ["listener"],
                                      registry=reg, multiprocess_mode="livesum"),
                "accepting": Gauge(f"{ns}_listener_accepting", "1 while the listener accepts connections",
                                   ["listener"], registry=reg, multiprocess_mode="livemax"),
            }
        else:
            self.gauges = _ListenerGauges(ns)
            reg.register(self.gauges)
        self.pid = os.getpid()
        # (listener, route, method, status, protocol) -> the three children: labels() once per series.
        self._series: dict[tuple[str, str, str, str, str], tuple[Any, Any, Any]] = {}
        self._handlers: dict[tuple[str, ...], Callable[[Mapping[str, Any], Mapping[str, Any]], None]] = {
            _START: self._start, _STOP: self._stop, _EXCEPTION: self._exception, _REJECTED: self._rejected,
            _THROTTLED: self._throttled, _ACCEPT: self._accept, _CONN_REJECTED: self._conn_rejected,
            _CONN_CLOSE: self._close, _GOAWAY: self._goaway, _RESET: self._reset,
        }

    # -- wiring ------------------------------------------------------------------

    def install(self) -> Metrics:
        """Attach the telemetry handler (``ValueError`` if ``handler_id`` is taken)."""
        telemetry.attach_many(self.handler_id, EVENTS, self.handle)
        self.installed = True
        _installed[self.handler_id] = self
        return self

    def uninstall(self) -> None:
        """Detach the handler and remove every metric from the registry."""
        telemetry.detach(self.handler_id)
        self.installed = False
        if _installed.get(self.handler_id) is self:
            del _installed[self.handler_id]
        gauges = list(self.gauges.values()) if isinstance(self.gauges, dict) else [self.gauges]
        for collector in (self.requests, self.duration, self.body_bytes, self.in_flight, self.exceptions,
                          self.rejected, self.throttled, self.accepted, self.conn_rejected, self.closed,
                          self.goaways, self.floods, self.resets, *gauges):
            self.registry.unregister(collector)

    def write_listener_gauges(self, name: str | None = None) -> None:
        """Multiprocess mode: write this worker's listener gauges (of ``name``, or of every
        listener) to its files; the scrape merges them. A no-op otherwise."""
        if not isinstance(self.gauges, dict):
            return
        for listener in (name,) if name is not None else rr.listeners():
            try:
                info = rr.listener_info(listener)
            except (KeyError, ValueError):  # stopped meanwhile
                continue
            for key in ("active_clients", "max_clients", "live_streams"):
                self.gauges[key].labels(listener).set(float(info[key]))
            self.gauges["accepting"].labels(listener).set(1.0 if info["status"] == "accepting" else 0.0)

    def handle(self, event: tuple[str, ...], measurements: Mapping[str, Any], metadata: Mapping[str, Any],
               config: Any) -> None:
        self._handlers[event](measurements, metadata)

    # -- events ------------------------------------------------------------------

    def _start(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        req = current_request.get()  # the request itself, during its events
        if req is not None:
            req.private[self.handler_id] = True  # counted in flight: its stop takes it out
            self.in_flight.labels(meta["listener"]).inc()

    def _stop(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        key = (meta["listener"], meta["route"] or "", _method(meta["method"]), str(meta["status"]),
               meta["protocol"])
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (self.requests.labels(*key), self.duration.labels(*key),
                                          self.body_bytes.labels(*key))
        series[0].inc()
        series[1].observe(meas["duration"])
        if meas["bytes"]:
            series[2].inc(meas["bytes"])
        req = current_request.get()
        if req is not None and req.private.pop(self.handler_id, False):  # not if installed mid-request
            self.in_flight.labels(meta["listener"]).dec()

    def _exception(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.exceptions.labels(meta["listener"], meta["route"] or "", _method(meta["method"]), meta["kind"]).inc()

    def _rejected(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.rejected.labels(meta["listener"], str(meta["status"]), meta["reason"]).inc()

    def _throttled(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.throttled.labels(meta["listener"], meta["reason"]).inc()

    def _accept(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.accepted.labels(meta["listener"]).inc()
        if self.multiprocess:
            self.write_listener_gauges(meta["listener"])

    def _conn_rejected(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.conn_rejected.labels(meta["listener"], meta["reason"]).inc()

    def _close(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        reason = str(meta["reason"]).partition(":")[0]  # "connection_error: <text>" -> one series
        self.closed.labels(meta["listener"], reason).inc()
        if self.multiprocess:
            self.write_listener_gauges(meta["listener"])

    def _goaway(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.goaways.labels(meta["listener"], meta["error"]).inc()
        if meta["error"] == "ENHANCE_YOUR_CALM":
            self.floods.labels(meta["listener"], _flood_kind(str(meta["reason"]))).inc()

    def _reset(self, meas: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.resets.labels(meta["listener"], meta["by"], meta["error"]).inc()


def install(registry: CollectorRegistry | None = None, **options: Any) -> Metrics:
    """Create rr's metrics in ``registry`` (default: prometheus_client's) and feed them.

    ``options``: ``namespace`` (``"rr"``), ``buckets`` (seconds, increasing),
    ``handler_id``. Returns the ``Metrics``; ``uninstall()`` undoes it.

    A ``Metrics`` this process inherited through a fork (``rr --workers``: the
    master imported the app, then each worker imports it again) is uninstalled
    first, so the worker's own takes its place instead of clashing with it.
    """
    inherited = _installed.get(options.get("handler_id", "rr.contrib.prometheus"))
    if inherited is not None and inherited.pid != os.getpid():
        inherited.uninstall()
    return Metrics(registry, **options).install()


def metrics_handler(registry: CollectorRegistry | None = None) -> Callable[[Any], resp.Response]:
    """An rr handler answering the registry's exposition (text, or OpenMetrics when
    the scraper's ``Accept`` asks for it). In multiprocess mode, without a ``registry``
    given: every worker's values, merged from the mode's directory."""
    if registry is not None:
        reg = registry
    elif multiprocess():
        reg = CollectorRegistry()
        MultiProcessCollector(reg)
    else:
        reg = REGISTRY

    def handler(req: Any) -> resp.Response:
        for metrics in list(_installed.values()):
            metrics.write_listener_gauges()  # multiprocess mode: this worker's, now
        encode, content_type = choose_encoder(req.headers.get("accept") or "")
        return resp.Response(200, [("content-type", content_type), ("cache-control", "no-store")], encode(reg))

    return handler


def route(path: str = "/metrics", registry: CollectorRegistry | None = None) -> dict[str, Any]:
    """A route (GET and HEAD) serving the metrics, for a listener's route list."""
    return {"path": path, "handler": metrics_handler(registry), "methods": ["GET"]}
