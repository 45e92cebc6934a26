"""``rr --workers 2 --metrics-dir DIR``: rr.contrib.prometheus in prometheus_client's
multiprocess mode, over real sockets.

The server runs as a subprocess (``python -m rr``, as ``tests/rr/test_workers.py``
runs it); requests go out on fresh connections until both workers answered some
(each response names its worker's pid), then ``/metrics`` is scraped and parsed by
prometheus_client's own parser. What they hold: the request counters add up across
the workers, whichever one the scrape lands on; after a ``kill -9`` of one worker
the scrape still answers, still counts the dead worker's requests, and the master
has removed the dead worker's live-gauge file (``mark_process_dead``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rr import workers
from tests.rr import test_workers
from tests.rr.test_workers import DEADLINE, Server, servers  # noqa: F401 - the fixture

pytestmark = pytest.mark.peers("curl")

APP = '''
import os
from rr import resp
from rr.contrib import prometheus

prometheus.install()

def whoami(req):
    return resp.text(200, str(os.getpid()))

ROUTES = [("/", whoami), prometheus.route("/metrics")]
'''


def _requests_by_route(url: str) -> tuple[dict[str, float], float]:
    """One scrape: rr_requests_total summed per route, and rr_requests_in_flight summed."""
    text = httpx.get(url + "/metrics", timeout=10).raise_for_status().text
    totals: dict[str, float] = {}
    in_flight = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rr_requests_total":
                route = sample.labels["route"]
                totals[route] = totals.get(route, 0.0) + sample.value
            elif sample.name == "rr_requests_in_flight":
                in_flight += sample.value
    return totals, in_flight


def _scrape_until(url: str, count: int) -> dict[str, float]:
    """Scrape until the ``/`` count reaches ``count`` (a request is counted at its stop
    event, just after its response went out), bounded by DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        totals, _ = _requests_by_route(url)
        if totals.get("/", 0.0) >= count or time.monotonic() > deadline:
            return totals


def _until_both_answer(url: str, pids: set[int]) -> dict[int, int]:
    """GET / on new connections until every worker in ``pids`` answered at least 5 (at most 2000)."""
    served = dict.fromkeys(pids, 0)
    for _ in range(2000):
        with httpx.Client(timeout=10) as client:  # a new connection: either worker may accept it
            served[int(client.get(url + "/").text)] += 1
        if min(served.values()) >= 5:
            break
    return served


@pytest.mark.parametrize("given_by", ["flag", "environment"])
def test_metrics_add_up_across_two_workers_and_survive_a_kill_9(servers, tmp_path: Path,  # noqa: F811
                                                                 monkeypatch: Any, given_by: str):
    (tmp_path / "papp.py").write_text(APP)
    metrics_dir = tmp_path / "metrics"
    if given_by == "flag":
        metrics_dir.mkdir()
        (metrics_dir / "counter_1.db").write_bytes(b"a previous run's file")  # deleted before any fork
        args = ["--metrics-dir", str(metrics_dir)]
    else:  # gunicorn's convention: PROMETHEUS_MULTIPROC_DIR set by the user; rr creates the directory
        monkeypatch.setattr(test_workers, "ENV", {**test_workers.ENV, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        args = []
    server: Server = servers(tmp_path, sys.executable, "-m", "rr", "papp:ROUTES", "--port", "0",
                             "--workers", "2", *args)
    url = server.expect(r"listening on (http://\S+?)/ ").group(1)
    pids = {server.accepting()[1], server.accepting()[1]}
    pool = gevent.get_hub().threadpool

    served = pool.apply(_until_both_answer, (url, pids))
    assert min(served.values()) >= 5, served
    sent = sum(served.values())
    for _ in range(3):  # scrapes land on either worker: each sees every worker's counts
        totals = pool.apply(_scrape_until, (url, sent))
        assert totals["/"] == sent, (totals, served)

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    server.expect(rf"worker exited unexpectedly: restarting it\s+(?:\[[\w.]+\]\s+)?how='killed by SIGKILL' "
                  rf"pid={victim} ")
    server.accepting()
    totals, in_flight = pool.apply(_requests_by_route, (url,))
    assert totals["/"] == sent  # the dead worker's requests still count
    assert in_flight == 1.0  # the scrape itself, on a live worker; the dead one's gauge is gone
    names = set(os.listdir(metrics_dir))
    assert f"counter_{victim}.db" in names and "counter_1.db" not in names, names
    assert not [n for n in names if n.startswith("gauge_live") and n.endswith(f"_{victim}.db")], names


def test_metrics_dir_set_after_prometheus_client_was_imported_is_refused_before_any_fork(tmp_path: Path,
                                                                                         monkeypatch: Any):
    # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: too late.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ValueError, match="'metrics_dir'.*imported before"):
        workers.run({"web": {"port": 0}}, 2, metrics_dir=str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_metrics_dir_without_workers_is_a_usage_error(capsys: Any, tmp_path: Path):
    from rr import cli

    assert cli.main(["x:y", "--metrics-dir", str(tmp_path)]) == 2
    assert "--metrics-dir is for --workers" in capsys.readouterr().err


def test_install_refuses_a_multiproc_dir_that_came_after_prometheus_client(monkeypatch: Any, tmp_path: Path):
    from prometheus_client import CollectorRegistry

    from rr.contrib import prometheus

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="imported before it was"):
        prometheus.install(registry)
    with pytest.raises(ValueError, match="imported before it was"):
        prometheus.metrics_handler()
    assert list(registry.collect()) == []  # refused before any metric was made
