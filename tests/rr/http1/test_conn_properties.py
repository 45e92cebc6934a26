"""Properties of the connection process under random scripts and under load."""

from __future__ import annotations

import gevent
import gevent.event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rr
import supervisors
from rr import resp, telemetry
from tests.rr.conftest import read_response

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
CHUNKED = b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"


def app(req):
    if req.path == "/slow":
        gevent.sleep(0.05)
    return resp.text(200, f"{len(req.read_body())}")


step = st.one_of(
    st.tuples(st.just("send"), st.sampled_from([GET, POST, CHUNKED, GET[:7], b"\r\n", b"garbage\r\n\r\n",
                                                 b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"])),
    st.tuples(st.just("bytes"), st.binary(max_size=40)),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.01, 0.05])),
    st.tuples(st.just("close"), st.none()),
    st.tuples(st.just("drain"), st.none()),
)


def _slots_free_within(runtime, timeout):
    deadline = gevent.get_hub().loop.now() + timeout
    while runtime.active or runtime.conns:
        if gevent.get_hub().loop.now() > deadline:
            return False
        gevent.sleep(0.01)
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(scripts=st.lists(st.lists(step, max_size=8), min_size=1, max_size=4))
def test_any_script_of_bytes_closes_timeouts_and_drain_ends_every_conn_and_frees_its_slot(scripts):
    events = []
    telemetry.attach_many(
        "prop", [("rr", "request", "start"), ("rr", "request", "stop")],
        lambda ev, m, meta, c: events.append((ev[-1], meta["request_id"])),
    )
    name = "prop"
    rr.start_listener(name, {"port": 0, "ip": "127.0.0.1", "routes": app, "request_timeout": 0.3,
                             "keep_alive_timeout": 0.3, "min_bytes_per_second": 0})
    port = rr.listener_port(name)
    runtime = rr._runtimes[name]
    drained = gevent.event.Event()

    def client(script):
        from gevent import socket as gsocket

        try:
            sock = gsocket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:  # another client's drain closed the listener first: never read
            return
        try:
            for kind, arg in script:
                if kind in ("send", "bytes"):
                    try:
                        sock.sendall(arg)
                    except OSError:
                        return
                elif kind == "wait":
                    gevent.sleep(arg)
                elif kind == "close":
                    return
                elif kind == "drain" and not drained.is_set():
                    drained.set()
                    rr.drain(name, 1.0)
        finally:
            sock.close()

    try:
        gevent.joinall([gevent.spawn(client, s) for s in scripts], timeout=30, raise_error=True)
        # A connection the client already closed may not even be accepted yet (no conn
        # process to wait on): poll the slot count, bounded.
        assert _slots_free_within(runtime, 5.0), (runtime.active, runtime.conns)
        assert not [p for p in supervisors.processes() if p.label == "rr.conn"]
    finally:
        telemetry.detach("prop")
        if name in rr.listeners():
            rr.stop_listener(name)
    starts = [rid for kind, rid in events if kind == "start"]
    stops = [rid for kind, rid in events if kind == "stop"]
    assert sorted(starts) == sorted(stops)


def test_drain_under_load_loses_no_request_that_was_read(serve):
    """50 busy keep-alive connections; drain mid-run. Every request the server
    read (requests_served) got a complete response; the rest were never read."""
    srv = serve(app, max_clients=100)
    completed = []
    partial = []
    stop = gevent.event.Event()
    under_load = gevent.event.Event()  # set once 200 requests completed

    def client():
        from gevent import socket as gsocket

        try:
            sock = gsocket.create_connection(("127.0.0.1", srv.port), timeout=10)
        except OSError:
            return
        with sock:
            for _ in range(200):
                if stop.is_set():
                    return
                try:
                    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    return
                try:
                    head, body = read_response(sock, 10)
                except ConnectionError as exc:
                    if "before a full head: b''" not in str(exc):
                        partial.append(str(exc))
                    return
                except OSError:
                    return
                completed.append(body)
                if len(completed) >= 200:
                    under_load.set()
                if b"connection: close" in head:
                    return

    runtime = rr._runtimes[srv.name]
    clients = [gevent.spawn(client) for _ in range(50)]
    assert under_load.wait(20)
    result = rr.drain(srv.name, 10)
    stop.set()
    gevent.joinall(clients, timeout=20)
    assert result["killed"] == 0
    assert partial == []
    assert all(body == b"0" for body in completed)
    assert len(completed) == runtime.requests_served
