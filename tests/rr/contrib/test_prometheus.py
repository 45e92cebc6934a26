"""rr.contrib.prometheus over real sockets: requests over HTTP/1.1 and h2c (httpx), an
h2 PING flood, then a scrape of ``/metrics`` parsed by prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import gevent.event
import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from rr import resp, telemetry
from rr.contrib import prometheus
from tests.rr.conftest import in_thread
from tests.rr.http2 import frames as fr


@pytest.fixture
def registry():
    reg = CollectorRegistry()
    metrics = prometheus.install(reg)
    yield reg
    metrics.uninstall()


class Stops:
    """Counts request stop events, so a scrape waits for the requests before it."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = gevent.event.Event()
        telemetry.attach("t-stops", ("rr", "request", "stop"), self.seen)

    def seen(self, *args: Any) -> None:
        self.count += 1
        self.changed.set()

    def wait(self, n: int) -> None:
        while self.count < n:
            self.changed.clear()
            assert self.changed.wait(10), f"{self.count} of {n} requests stopped"


@pytest.fixture
def stops():
    s = Stops()
    yield s
    telemetry.detach("t-stops")


def _get_all(url: str, http2: bool, paths: list[str]) -> list[int]:
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        return [client.get(url + path).status_code for path in paths]


def _scrape(url: str) -> tuple[str, str]:
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    return r.headers["content-type"], r.text


def samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict[str, list[Any]], name: str, **labels: str) -> float:
    matching = [s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, found.get(name))
    return matching[0]


def test_requests_over_h1_and_h2_are_counted_by_route_pattern_method_status_protocol(serve, registry, stops):
    def boom(req):
        raise RuntimeError("boom")

    routes = [
        ("/users/:id", lambda req: resp.text(200, "user " + req.bindings["id"])),
        ("/boom", boom),
        prometheus.route("/metrics", registry),
    ]
    srv = serve(routes, protocols=["http1", ("http2", {"max_pings": 5})])
    paths = ["/users/1", "/users/2", "/users/3", "/boom", "/nope"]
    assert in_thread(_get_all, srv.url, False, paths) == [200, 200, 200, 500, 404]
    assert in_thread(_get_all, srv.url, True, paths[:2]) == [200, 200]
    with fr.Peer(srv.port) as p:  # a PING flood: GOAWAY(ENHANCE_YOUR_CALM)
        p.handshake()
        p.send(*(fr.ping(b"%08d" % i) for i in range(20)))
        p.expect_goaway(fr.ENHANCE_YOUR_CALM)
    stops.wait(7)
    content_type, text = in_thread(_scrape, srv.url)
    assert content_type.startswith("text/plain")
    found = samples(text)

    h1 = {"listener": srv.name, "route": "/users/:id", "method": "GET", "status": "200"}
    assert value(found, "rr_requests_total", protocol="HTTP/1.1", **h1) == 3
    assert value(found, "rr_requests_total", protocol="HTTP/2", **h1) == 2
    assert value(found, "rr_request_duration_seconds_count", protocol="HTTP/2", **h1) == 2
    assert value(found, "rr_request_duration_seconds_bucket", protocol="HTTP/1.1", le="+Inf", **h1) == 3
    assert value(found, "rr_response_body_bytes_total", protocol="HTTP/1.1", **h1) == 3 * len("user 1")
    assert value(found, "rr_requests_total", listener=srv.name, route="", status="404") == 1
    assert value(found, "rr_requests_total", listener=srv.name, route="/boom", status="500") == 1
    assert value(found, "rr_request_exceptions_total", route="/boom", kind="RuntimeError") == 1
    # No series per URL: the paths never appear as label values.
    assert not [s for ss in found.values() for s in ss if "/users/1" in s.labels.values()]

    # The scrape's own connection is open while the gauges are read.
    assert value(found, "rr_connections_active", listener=srv.name) >= 1
    assert value(found, "rr_listener_accepting", listener=srv.name) == 1
    assert value(found, "rr_connections_max", listener=srv.name) > 0
    assert value(found, "rr_http2_goaway_total", listener=srv.name, error="ENHANCE_YOUR_CALM") == 1
    assert value(found, "rr_http2_floods_total", listener=srv.name, kind="ping") == 1
    assert value(found, "rr_connections_closed_total", listener=srv.name, reason="connection_error") == 1
    assert value(found, "rr_connections_accepted_total", listener=srv.name) >= 4
    assert value(found, "rr_requests_in_flight", listener=srv.name) == 1  # the scrape itself


def test_a_scraper_asking_for_openmetrics_gets_it(serve, registry):
    srv = serve([prometheus.route("/metrics", registry)])

    def scrape() -> httpx.Response:
        return httpx.get(srv.url + "/metrics", headers={"accept": "application/openmetrics-text"}, timeout=10)

    r = in_thread(scrape)
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_bad_options_fail_at_install_naming_the_option():
    with pytest.raises(ValueError, match="buckets"):
        prometheus.install(CollectorRegistry(), buckets=[1.0, 0.5])
    with pytest.raises(ValueError, match="namespace"):
        prometheus.install(CollectorRegistry(), namespace="rr-server")
    assert not telemetry.list_handlers(("rr",))


def test_installed_while_a_request_runs_the_in_flight_gauge_does_not_go_below_zero(serve, stops):
    gate, held = gevent.event.Event(), gevent.event.Event()

    def hold(req):
        held.set()
        gate.wait(10)
        return resp.text(200, "held")

    reg = CollectorRegistry()
    srv = serve([("/hold", hold), prometheus.route("/metrics", reg)])
    client = gevent.spawn(in_thread, _get_all, srv.url, False, ["/hold"])
    assert held.wait(10)
    metrics = prometheus.install(reg)  # the held request started before: not counted in flight
    try:
        gate.set()
        assert client.get(timeout=10) == [200]
        stops.wait(1)
        _, text = in_thread(_scrape, srv.url)
        assert value(samples(text), "rr_requests_in_flight", listener=srv.name) == 1  # the scrape alone
        assert value(samples(text), "rr_requests_total", listener=srv.name, route="/hold") == 1
    finally:
        metrics.uninstall()
