"""Listener API: options, lifecycle, embedding, drain, telemetry, logging."""

from __future__ import annotations

import socket

import gevent
import gevent.event
import pytest
import structlog
from gevent import socket as gsocket

import rr
import supervisors
from rr import resp, telemetry
from tests.rr.conftest import read_response, read_until_close
from tests.rr.http2.client import H2Client

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def hello(req):
    return resp.text(200, "hello")


# -- options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "named"),
    [
        ({"port": 0, "bogus": 1}, "bogus"),
        ({}, "port"),
        ({"port": -1}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "80"}, "port"),
        ({"port": 0, "ip": "not-an-ip"}, "ip"),
        ({"port": 0, "max_clients": 0}, "max_clients"),
        ({"port": 0, "request_timeout": 0}, "request_timeout"),
        ({"port": 0, "keep_alive_timeout": "1"}, "keep_alive_timeout"),
        ({"port": 0, "body_buffering": "lazy"}, "body_buffering"),
        ({"port": 0, "protocols": []}, "protocols"),
        ({"port": 0, "protocols": ["spdy"]}, "protocols"),
        ({"port": 0, "protocols": ["http1", "http1"]}, "protocols"),
        ({"port": 0, "protocols": [("http1", {"max_request_line": 0})]}, "max_request_line"),
        ({"port": 0, "protocols": [("http1", {"nope": 1})]}, "protocols.http1.nope"),
        ({"port": 0, "tls": {"certfile": "/nonexistent.pem"}}, "tls"),
        ({"port": 0, "tls": {"keyfile": "k"}}, "tls"),
        ({"port": 0, "handler_spawn": {"link": True}}, "handler_spawn.link"),
        ({"port": 0, "handler_spawn": {"max_heap": -5}}, "handler_spawn.max_heap"),
        ({"port": 0, "graceful_drain": "yes"}, "graceful_drain"),
        ({"port": 0, "routes": 42}, "routes"),
        ({"port": 0, "num_acceptors": 0}, "num_acceptors"),
        ({"port": 0, "min_bytes_per_second": -1}, "min_bytes_per_second"),
    ],
)
def test_bad_option_fails_start_listener_with_a_message_naming_it(opts, named):
    with pytest.raises(ValueError, match=named):
        rr.start_listener("bad", opts)
    assert "bad" not in rr.listeners()


def test_http2_options_are_validated_and_http3_is_refused():
    with pytest.raises(ValueError, match="http3"):
        rr.start_listener("h3", {"port": 0, "protocols": ["http1", "http3"]})
    with pytest.raises(ValueError, match="protocols.http2.max_concurrent_streams"):
        rr.start_listener("h2", {"port": 0, "protocols": [("http2", {"max_concurrent_streams": 0})]})
    with pytest.raises(ValueError, match="protocols.http2.bogus"):
        rr.start_listener("h2", {"port": 0, "protocols": [("http2", {"bogus": 1})]})
    with pytest.raises(ValueError, match="window_refill_threshold"):
        rr.start_listener("h2", {"port": 0, "protocols": [
            ("http2", {"stream_window": 65535, "window_refill_threshold": 70000})]})
    with pytest.raises(ValueError, match="protocols.http2.stall_timeout"):
        rr.start_listener("h2", {"port": 0, "protocols": [("http2", {"stall_timeout": 0})]})
    with pytest.raises(ValueError, match="protocols.http2.max_resets"):
        rr.start_listener("h2", {"port": 0, "protocols": [("http2", {"max_resets": "many"})]})
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        rr.start_listener("h2", {"port": 0, "max_concurrent_requests": 0})


def test_alpn_is_derived_from_protocols_in_order():
    from rr.config import alpn_protocols

    assert alpn_protocols(("http2", "http1")) == ["h2", "http/1.1"]
    assert alpn_protocols(("http1", "http3")) == ["http/1.1"]


def test_binding_a_port_in_use_fails_with_oserror(serve):
    srv = serve(hello)
    with pytest.raises(OSError):
        rr.start_listener("dup", {"port": srv.port, "ip": "127.0.0.1", "routes": hello})
    assert "dup" not in rr.listeners()


def test_duplicate_listener_name_is_refused(serve):
    srv = serve(hello)
    with pytest.raises(ValueError, match="already running"):
        rr.start_listener(srv.name, {"port": 0, "routes": hello})


# -- lifecycle ----------------------------------------------------------------------


def test_listener_port_info_and_listeners(serve):
    srv = serve(hello)
    assert srv.name in rr.listeners()
    info = rr.listener_info(srv.name)
    assert info["port"] == srv.port > 0
    assert info["max_clients"] == 150 and info["active_clients"] == 0
    assert info["status"] == "accepting"


def test_stop_listener_closes_the_port_and_is_not_restarted(serve):
    srv = serve(hello)
    rr.stop_listener(srv.name)
    assert srv.name not in rr.listeners()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def _host_has_ipv6_loopback() -> bool:
    """Asked of the host, not of rr: can anyone bind ::1 here?"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _get_over(family: socket.AddressFamily, address: str, port: int) -> bytes:
    with gsocket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect((address, port))
        sock.sendall(GET)
        return read_response(sock)[1]


def test_default_listen_address_serves_ipv4_and_ipv6_loopback(serve):
    srv = serve(hello, ip=None)
    assert _get_over(socket.AF_INET, "127.0.0.1", srv.port) == b"hello"
    if not _host_has_ipv6_loopback():
        pytest.skip("this host cannot bind ::1 at all (no IPv6 loopback): only IPv4 was checked")
    # The host has ::1, so rr's dual-stack socket must answer there too: a failure is rr's.
    assert _get_over(socket.AF_INET6, "::1", srv.port) == b"hello"


def test_a_crashed_acceptor_is_restarted_and_serving_continues(serve):
    srv = serve(hello, num_acceptors=1)
    acceptors = [p for p in supervisors.processes() if p.label == f"rr.acceptor.{srv.name}"]
    assert len(acceptors) == 1
    ref = supervisors.monitor(acceptors[0].pid)
    supervisors.exit(acceptors[0].pid, RuntimeError("injected"))
    supervisors.receive(lambda m: type(m) is tuple and len(m) == 4 and m[0] == "DOWN" and m[1] is ref, 5)
    # The only acceptor is dead: this connection waits in the backlog until its replacement runs.
    with srv.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[1] == b"hello"
    now = [p for p in supervisors.processes() if p.label == f"rr.acceptor.{srv.name}"]
    assert len(now) == 1 and now[0].pid != acceptors[0].pid


def test_child_spec_embeds_a_listener_in_the_applications_supervisor():
    spec = rr.child_spec("embedded", {"port": 0, "ip": "127.0.0.1", "routes": hello})
    sup = supervisors.start_supervisor([spec], strategy="one_for_one")
    try:
        port = rr.listener_port("embedded")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            pass
        from gevent import socket as gsocket

        with gsocket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(GET)
            assert read_response(sock)[1] == b"hello"
        assert raw is not None
    finally:
        supervisors.stop_supervisor(sup)
        rr._runtimes.pop("embedded", None)


def test_child_spec_validates_options_immediately():
    with pytest.raises(ValueError, match="max_clients"):
        rr.child_spec("x", {"port": 0, "max_clients": -1})


# -- drain --------------------------------------------------------------------------


def test_drain_closes_idle_connections_and_finishes_in_flight_requests(serve):
    release = gevent.event.Event()
    entered = gevent.event.Event()

    def slow(req):
        entered.set()
        release.wait(10)
        return resp.text(200, "finished")

    srv = serve(slow)
    idle = srv.connect()
    busy = srv.connect()
    busy.sendall(GET)
    assert entered.wait(5)
    result: dict = {}
    drainer = gevent.spawn(lambda: result.update(rr.drain(srv.name, 10)))
    assert read_until_close(idle, 5) == b""  # the idle connection is closed at once
    release.set()
    data = read_until_close(busy, 5)
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data and data.endswith(b"finished")
    drainer.join(10)
    assert result == {"drained": 2, "killed": 0}
    assert srv.name not in rr.listeners()


def test_drain_kills_what_is_left_at_the_deadline(serve):
    block = gevent.event.Event()
    entered = gevent.event.Event()

    def stuck(req):
        entered.set()
        block.wait(30)
        return resp.text(200, "late")

    srv = serve(stuck)
    sock = srv.connect()
    sock.sendall(GET)
    assert entered.wait(5)
    assert rr.drain(srv.name, 0.3) == {"drained": 0, "killed": 1}
    assert read_until_close(sock, 5) == b""


def test_drain_tells_a_loop_handler(serve):
    def on_info(msg, push, state):
        if isinstance(msg, tuple) and msg[0] == resp.DRAIN:
            push(b"bye")
            return resp.STOP
        return state

    srv = serve(lambda req: resp.Loop(200, [], None, on_info))
    sock = srv.connect()
    sock.sendall(GET)
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert rr.drain(srv.name, 5) == {"drained": 1, "killed": 0}
    rest = read_until_close(sock, 5)
    assert b"3\r\nbye\r\n0\r\n\r\n" in rest


def test_drain_refuses_new_connections_while_it_waits_for_in_flight_ones(serve):
    release = gevent.event.Event()
    entered = gevent.event.Event()
    draining = gevent.event.Event()

    def slow(req):
        entered.set()
        release.wait(10)
        return resp.text(200, "finished")

    srv = serve(slow)
    busy = srv.connect()
    busy.sendall(GET)
    assert entered.wait(5)
    telemetry.attach("t-drain-refuses", ("rr", "drain", "start"), lambda *_: draining.set())
    try:
        drainer = gevent.spawn(rr.drain, srv.name, 10)
        assert draining.wait(5)
        # The drain stops the acceptors and closes the socket without waiting on any timer;
        # once the hub is idle it is blocked on the in-flight connection only.
        gevent.idle()
        assert srv.name in rr.listeners() and not drainer.ready()  # still draining: the request is in flight
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    finally:
        telemetry.detach("t-drain-refuses")
        release.set()
    assert read_until_close(busy, 5).endswith(b"finished")
    assert drainer.get(10) == {"drained": 1, "killed": 0}


# -- telemetry and logging --------------------------------------------------------------


def test_request_start_and_stop_share_a_request_id(serve):
    events = []
    telemetry.attach_many(
        "t-share",
        [("rr", "request", "start"), ("rr", "request", "stop")],
        lambda ev, meas, meta, cfg: events.append((ev[-1], meta["request_id"], meta.get("status"))),
    )
    try:
        srv = serve(hello)
        with srv.connect() as sock:
            sock.sendall(GET)
            read_response(sock)
    finally:
        telemetry.detach("t-share")
    assert [e[0] for e in events] == ["start", "stop"]
    assert events[0][1] == events[1][1] and len(events[0][1]) == 16
    assert events[1][2] == 200


def test_a_telemetry_subscriber_that_raises_is_detached_and_the_request_succeeds(serve):
    def bad(*_):
        raise RuntimeError("subscriber bug")

    telemetry.attach("t-bad", ("rr", "request", "start"), bad)
    srv = serve(hello)
    with srv.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[1] == b"hello"
    assert ("t-bad", ("rr", "request", "start")) not in telemetry.list_handlers()


def test_rejected_request_and_conn_close_events(serve):
    events = []
    closed = gevent.event.Event()

    def record(ev, meas, meta, cfg):
        events.append((ev, dict(meta)))
        if ev == ("rr", "conn", "close"):
            closed.set()

    telemetry.attach_many("t-rej", [("rr", "request", "rejected"), ("rr", "conn", "close")], record)
    try:
        srv = serve(hello)
        srv.request(b"GET / HTTP/1.1\r\n\r\n")
        assert closed.wait(5)
    finally:
        telemetry.detach("t-rej")
    assert events[0][0] == ("rr", "request", "rejected")
    assert events[0][1]["status"] == 400 and events[0][1]["reason"] == "missing_host"
    assert events[1][0] == ("rr", "conn", "close")


def test_handler_log_lines_carry_the_request_id(serve):
    seen = []
    ids = []

    def logging_handler(req):
        ids.append(req.request_id)
        structlog.get_logger("app").info("inside handler")
        return resp.text(200, "ok")

    with structlog.testing.capture_logs(processors=[rr.log.add_request_id]) as logs:
        srv = serve(logging_handler)
        with srv.connect() as sock:
            sock.sendall(GET)
            read_response(sock)
        seen = [entry for entry in logs if entry.get("event") == "inside handler"]
    assert seen and seen[0]["request_id"] == ids[0]


def test_handler_crash_is_logged_with_its_request_id(serve):
    ids = []

    def crash(req):
        ids.append(req.request_id)
        raise ValueError("kaput")

    with structlog.testing.capture_logs(processors=[rr.log.add_request_id]) as logs:
        srv = serve(crash)
        with srv.connect() as sock:
            sock.sendall(GET)
            read_response(sock)
    errors = [e for e in logs if e.get("log_level") == "error"]
    assert errors and errors[0]["request_id"] == ids[0]


def _access_logged(serve, protocol: str, access_log: bool) -> list[dict]:
    """One GET /logged?q=1 over ``protocol``; returns the access-log entries seen."""
    logged = gevent.event.Event()

    def notice(_logger, _name, entry):
        if entry.get("event") == "request":
            logged.set()
        return entry

    with structlog.testing.capture_logs(processors=[notice]) as logs:
        if protocol == "http1":
            srv = serve(hello, access_log=access_log)
            data = srv.request(b"GET /logged?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 200")
        else:
            srv = serve(hello, access_log=access_log, protocols=["http2"])
            client = H2Client(srv.port)
            try:
                sid = client.request("GET", "/logged?q=1")
                assert client.run([sid])[sid].status == 200
            finally:
                client.close()
        if access_log:
            assert logged.wait(5), f"no access-log line on {protocol}"
    return [entry for entry in logs if entry.get("event") == "request"]


@pytest.mark.parametrize("protocol", ["http1", "http2"])
def test_access_log_writes_one_line_per_request_on_every_protocol(serve, protocol):
    entries = _access_logged(serve, protocol, access_log=True)
    assert len(entries) == 1, entries
    entry = entries[0]
    assert entry["method"] == "GET" and entry["path"] == "/logged?q=1" and entry["status"] == 200
    assert entry["peer"][0] == "127.0.0.1"


def test_access_log_is_off_by_default(serve):
    # Connection: close, and the answer read to EOF: the conn has finished logging by then.
    assert _access_logged(serve, "http1", access_log=False) == []


def test_a_listener_without_routes_answers_404_saying_it_has_no_routes_yet():
    rr.start_listener("no-routes", {"port": 0, "ip": "127.0.0.1"})
    try:
        port = rr.listener_port("no-routes")
        for path in (b"/", b"/anything?q=1"):
            with gsocket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 404 "), head
            assert body == b"rr is running, but this listener has no routes yet.\n"
    finally:
        rr.stop_listener("no-routes")


def _burst(port: int, n: int) -> list[gsocket.socket]:
    """``n`` connections completed by the kernel before the acceptor runs again (blocking
    stdlib connects on loopback do not yield), then handed to gevent for reading."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    return [gsocket.socket(fileno=s.detach()) for s in socks]


@pytest.mark.parametrize("max_clients, n", [(100, 20), (5, 8)])
def test_a_burst_of_connections_is_taken_in_batches_and_each_gets_a_slot_or_a_503(serve, monkeypatch,
                                                                                   max_clients, n):
    batches: list[int] = []
    start_children = supervisors.start_children

    def spy(sup, batch):
        batches.append(len(batch))
        return start_children(sup, batch)

    monkeypatch.setattr(supervisors, "start_children", spy)
    srv = serve(lambda req: resp.text(200, "ok"), max_clients=max_clients)
    socks = _burst(srv.port, n)
    statuses = []
    for s in socks:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head, body = read_response(s)
        statuses.append(int(head.split(b" ", 2)[1]))
    assert statuses == [200] * min(n, max_clients) + [503] * max(0, n - max_clients)
    assert max(batches) > 1 and sum(batches) == min(n, max_clients)
    info = srv.info()
    assert info["active_clients"] == min(n, max_clients) and info["rejected"] == max(0, n - max_clients)
    for s in socks:
        s.close()
