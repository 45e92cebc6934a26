"""Chaos: random kills of connection, stream and acceptor processes under h1 and h2 load.

For a bounded time (and a bounded number of kills), a killer process ends a
random rr process every few milliseconds while wrk (HTTP/1.1) and h2load (h2c)
load the listener. Afterwards the listener must serve at its earlier rate, and
the process table and connection slots must be back to their baseline: what a
kill leaves behind is cleaned up by whoever observes the end.
"""

from __future__ import annotations

import random
import re
import time

import gevent
import pytest
from gevent import subprocess

import supervisors
from rr import resp

KILLS_MAX = 400
ACCEPTOR_KILLS_MAX = 5  # the listener allows 10 restarts in 10 s, rr's root 10 more
CHAOS_SECONDS = 3.0


def _rr_processes() -> dict[int, str]:
    return {p.pid.id: p.label for p in supervisors.processes()
            if p.label and p.label.startswith(("rr.conn", "rr.h2", "rr.acceptor", "rr.refused"))}


def _wrk_rate(url: str, seconds: int = 1) -> float:
    out = subprocess.run(["wrk", "-t1", "-c20", f"-d{seconds}s", url], capture_output=True, timeout=60)
    return float(re.search(rb"Requests/sec:\s+([\d.]+)", out.stdout).group(1))


@pytest.mark.slow
@pytest.mark.peers("wrk", "h2load")
def test_random_kills_under_load_leave_nothing_behind_and_the_rate_recovers(serve):
    def handler(req):
        gevent.sleep(0.002)  # streams and requests live long enough to be hit
        return resp.text(200, "ok")

    srv = serve(handler, protocols=["http1", "http2"], max_clients=500)
    url = f"{srv.url}/"
    baseline = set(_rr_processes().values())
    before = _wrk_rate(url)

    rng = random.Random(13)
    kills = {"conn": 0, "stream": 0, "acceptor": 0}

    def killer() -> None:
        deadline = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < deadline and sum(kills.values()) < KILLS_MAX:
            kind = rng.choices(["stream", "conn", "acceptor"], weights=[12, 6, 1])[0]
            label = {"stream": "rr.h2.stream", "conn": "rr.conn", "acceptor": "rr.acceptor"}[kind]
            victims = [p for p in supervisors.processes() if (p.label or "").startswith(label)]
            if victims and (kind != "acceptor" or kills["acceptor"] < ACCEPTOR_KILLS_MAX):
                supervisors.exit(rng.choice(victims).pid, rng.choice(["kill", "chaos"]))
                kills[kind] += 1
            gevent.sleep(0.005)

    chaos = supervisors.spawn(killer, label="test.chaos")
    ref = supervisors.monitor(chaos)
    h1 = subprocess.Popen(["wrk", "-t1", "-c20", f"-d{int(CHAOS_SECONDS)}s", url],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h2 = subprocess.Popen(["h2load", "-c10", "-m10", "-D", str(int(CHAOS_SECONDS)), url],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    supervisors.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref), timeout=60)
    h1.wait(60)
    h2.wait(60)
    assert kills["conn"] > 10 and kills["stream"] > 10, kills

    # The load is over: every connection and stream process ends, every slot comes back.
    deadline = time.monotonic() + 30
    while set(_rr_processes().values()) - baseline or srv.info()["active_clients"]:
        assert time.monotonic() < deadline, (_rr_processes(), srv.info())
        gevent.sleep(0.05)  # bounded; the processes' own timeouts end them
    assert srv.info()["status"] == "accepting"
    after = _wrk_rate(url)
    assert after > 0.5 * before, (before, after, kills)
