"""The deployment guide's set-up (docs/deploy.md), run: HAProxy in front of two rr
instances, with health checks, balancing, and a drain on deploy that loses no request.

Both rr backends read the PROXY protocol v2 header (``send-proxy-v2``; HAProxy's
health checks send it too, with the ``LOCAL`` command) and answer ``/health``.
A bounded client loop (a few keep-alive clients, each request checked) runs
through HAProxy the whole time while the test:

1. checks both backends take a share of the requests (round robin);
2. fails one backend's health check and sees HAProxy take it out, then back in;
3. deploys a new instance of backend ``a`` the coordinated way (HAProxy
   ``set server ... state drain``, ``rr.drain``, start the new one on the
   same port, ``state ready``);
4. drains backend ``b`` the uncoordinated way (``rr.drain``, what SIGTERM does
   under the ``rr`` command), HAProxy learning it from refused connections
   (retried on the other server) and failed checks;

and at the end asserts every request of the loop was answered 200.
"""

from __future__ import annotations

import gevent
import gevent.event
import pytest
from gevent.queue import Queue

import rr
from rr import resp
from tests.rr import haproxy
from tests.rr.conftest import read_response

pytestmark = pytest.mark.peers("haproxy")

CONFIG = """
frontend web
    mode http
    bind {{fe0}}
    default_backend rr
backend rr
    mode http
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    retry-on conn-failure empty-response response-timeout 503
    retries 3
    option redispatch 1
    default-server send-proxy-v2 check check-send-proxy inter 100ms fastinter 100ms downinter 100ms fall 2 rise 2
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
"""

CLIENTS = 4
# Per client: the loop is bounded even if a phase never completes. Each client paces itself
# (PACE seconds between requests: a load limit, not a synchronisation) so the run stays a
# few hundred requests a second on a shared machine.
MAX_REQUESTS = 3000
PACE = 0.005


class Backend:
    """One rr instance: answers its name, and /health as told; tells the test of each check."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True
        self.checks: Queue = Queue()

    def __call__(self, req):
        if req.path == "/health":
            self.checks.put(self.healthy)
            return resp.text(200 if self.healthy else 503, "ok" if self.healthy else "sick")
        return resp.text(200, self.name)

    def wait_checks(self, healthy: bool, count: int) -> None:
        seen = 0
        while seen < count:
            if self.checks.get(timeout=10) is healthy:
                seen += 1


class Load:
    """CLIENTS keep-alive clients through HAProxy, each request's status and body recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[int, bytes]] = []
        self.errors: list[str] = []
        self.tick = gevent.event.Event()
        self.stop = gevent.event.Event()
        self.clients = [gevent.spawn(self._client) for _ in range(CLIENTS)]

    def _client(self) -> None:
        sock = None
        try:
            for _ in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                if sock is None:
                    sock = gevent.socket.create_connection(("127.0.0.1", self.port), timeout=10)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
                head, body = read_response(sock)
                self.results.append((int(head.split(b" ", 2)[1]), body))
                self.tick.set()
                if b"connection: close" in head.lower():
                    sock.close()
                    sock = None
                gevent.sleep(PACE)
        except Exception as exc:  # a lost request: recorded, and the test fails on it
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.tick.set()
        finally:
            if sock is not None:
                sock.close()

    def wait_more(self, count: int) -> int:
        """Wait for ``count`` more answers; returns the index where they start."""
        start = len(self.results)
        while len(self.results) < start + count:
            assert not self.errors, self.errors
            self.tick.clear()
            assert self.tick.wait(10), f"the client loop stalled after {len(self.results)} answers"
        return start

    def names(self, start: int) -> set[bytes]:
        return {body for _, body in self.results[start:]}

    def finish(self) -> None:
        self.stop.set()
        gevent.joinall(self.clients, timeout=10, raise_error=True)


def test_haproxy_balances_health_checks_and_drains_rr_backends_without_losing_a_request(serve, tmp_path):
    a1, b, a2 = Backend("a1"), Backend("b"), Backend("a2")
    srv_a = serve(a1, proxy_protocol=True)
    srv_b = serve(b, proxy_protocol=True)
    with haproxy.start(CONFIG.format(a=srv_a.port, b=srv_b.port), tmp_path) as lb:
        a1.wait_checks(True, 1)
        b.wait_checks(True, 1)
        load = Load(lb.ports[0])
        try:
            # 1. balancing: both backends serve a share
            start = load.wait_more(60)
            served = [body for _, body in load.results[start:]]
            assert served.count(b"a1") >= 15 and served.count(b"b") >= 15, served

            # 2. a failing health check takes a1 out; a passing one brings it back
            a1.healthy = False
            a1.wait_checks(False, 3)  # fall 2: out after the second, the third proves it was seen
            start = load.wait_more(40 + CLIENTS)
            assert load.names(start + CLIENTS) == {b"b"}
            a1.healthy = True
            a1.wait_checks(True, 3)  # rise 2
            start = load.wait_more(60)
            assert b"a1" in load.names(start)

            # 3. deploy a new a, coordinated: HAProxy stops sending, rr drains, the new one comes in
            lb.command("set server rr/a state drain")
            start = load.wait_more(20 + CLIENTS)
            assert load.names(start + CLIENTS) == {b"b"}
            result = rr.drain(srv_a.name, timeout=5.0)
            assert result["killed"] == 0
            serve(a2, port=srv_a.port, proxy_protocol=True)
            a2.wait_checks(True, 2)
            lb.command("set server rr/a state ready")
            while b"a2" not in load.names(load.wait_more(20)):
                pass

            # 4. drain b without telling HAProxy (what SIGTERM does under the rr command)
            result = rr.drain(srv_b.name, timeout=5.0)
            assert result["killed"] == 0
            start = load.wait_more(60 + CLIENTS)
            assert load.names(start + CLIENTS) == {b"a2"}
        finally:
            load.finish()
    assert not load.errors, load.errors
    assert load.results and all(status == 200 for status, _ in load.results), \
        [r for r in load.results if r[0] != 200][:5]
