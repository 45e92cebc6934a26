"""HTTP/2 limits and flood guards, crossed on raw connections (``tests.rr.http2.frames``).

Every option under ``protocols=[("http2", {...})]`` that bounds what a client
can make rr hold or do, plus the listener-wide ``max_concurrent_requests``:
each test goes just past the limit and checks the answer (REFUSED_STREAM, 431,
GOAWAY(ENHANCE_YOUR_CALM), RST_STREAM(CANCEL)) and, where it matters, that the
connection still serves.

Flood tests use the *default* budgets and send at least ``FLOOD`` frames (far
over any budget) from a background greenlet while the test reads: the GOAWAY
must come within ``FLOOD_DEADLINE`` of the flood's start, and the process's
resident memory (the server runs in this process) must not grow by more than
``RSS_SLACK``.
"""

from __future__ import annotations

import time

import gevent
import gevent.event
import pytest

import rr
import supervisors
from rr import resp, telemetry
from tests.rr.conftest import wait_processes_gone
from tests.rr.http2 import frames as fr
from tests.rr.http2.frames import Peer

FLOOD = 10_000
FLOOD_DEADLINE = 1.0
RSS_SLACK = 48 * 1024 * 1024


class Gate:
    """Handlers on ``/hold`` wait here; ``entered`` counts the ones waiting."""

    def __init__(self) -> None:
        self.event = gevent.event.Event()
        self.arrived = gevent.event.Event()
        self.entered = 0

    def hold(self) -> None:
        self.entered += 1
        self.arrived.set()
        self.event.wait(20)

    def wait_entered(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.entered < n:
            self.arrived.clear()
            left = deadline - time.monotonic()
            assert left > 0 and self.arrived.wait(left), f"{self.entered} of {n} handlers started"


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.event.set()


def make_app(gate: Gate):
    def app(req):
        if req.path == "/hold":
            gate.hold()
        elif req.path.startswith("/bytes/"):
            return resp.Response(200, [("content-type", "application/octet-stream")],
                                 b"x" * int(req.path[7:]))
        elif req.path == "/loop":  # two 10 KiB pushes at once, then it waits for messages
            supervisors.send(supervisors.self(), "go")
            def on_info(msg, push, state):
                if msg == "go":
                    push(b"a" * 10240)
                    push(b"b" * 10240)
                return state
            return resp.Loop(200, [("content-type", "text/event-stream")], None, on_info)
        elif req.path == "/empty":
            return resp.Response(204, [], b"")
        elif req.path == "/endless":
            def fn(send):
                chunk = b"e" * 65536
                for _ in range(4096):  # 256 MiB if anyone read it all
                    send(chunk)
                send(b"", fin=True)
            return resp.Stream(200, [("content-type", "application/octet-stream")], fn)
        return resp.text(200, "ok")
    return app


@pytest.fixture
def h2(serve, gate):
    """``h2(**http2_options)`` → a served h2c listener running ``make_app(gate)``."""
    def start(listener_opts=None, **http2_opts):
        protocols = [("http2", http2_opts)] if http2_opts else ["http2"]
        return serve(make_app(gate), protocols=protocols, **(listener_opts or {}))
    return start


def connect(srv, **kw) -> Peer:
    p = Peer(srv.port, **kw)
    p.handshake()
    return p


# -- max_concurrent_streams -------------------------------------------------------------


def test_max_concurrent_streams_is_advertised_and_the_excess_stream_refused(h2, gate):
    srv = h2(max_concurrent_streams=3)
    with connect(srv) as p:
        assert p.server_settings[fr.MAX_CONCURRENT_STREAMS] == 3
        for sid in (1, 3, 5):
            p.request(sid, "/hold")
        p.request(7, "/hold")
        p.expect_rst(7, fr.REFUSED_STREAM)
        assert all(p.responses.get(s) is None for s in (1, 3, 5))
        gate.event.set()
        for sid in (1, 3, 5):
            assert p.response(sid).status == 200
        assert p.expect_alive(9).body == b"ok"
    assert gate.entered == 3


def test_max_concurrent_streams_default_is_100(h2):
    srv = h2()
    with connect(srv) as p:
        assert p.server_settings[fr.MAX_CONCURRENT_STREAMS] == 100


# -- max_header_block -----------------------------------------------------------------------


def split_block(p: Peer, sid: int, block: bytes, size: int = 8192) -> list[bytes]:
    """HEADERS + CONTINUATIONs carrying ``block`` in fragments of ``size``."""
    parts = [block[i:i + size] for i in range(0, len(block), size)]
    wire = [p.headers(sid, parts[0], end_headers=len(parts) == 1)]
    for i, part in enumerate(parts[1:], 1):
        wire.append(fr.frame(fr.CONTINUATION, fr.END_HEADERS if i == len(parts) - 1 else 0, sid, part))
    return wire


def raw_block(p: Peer, extra_value_len: int) -> bytes:
    """A request block with one header whose value is ``extra_value_len`` raw octets (no Huffman)."""
    fields = [(k.encode(), v.encode()) for k, v in p.request_fields()]
    return p.encoder.encode([*fields, (b"x-pad", b"p" * extra_value_len)], huffman=False)


def test_header_block_at_max_header_block_is_served(h2):
    srv = h2()
    with connect(srv) as p:
        block = raw_block(p, 16000)
        assert 16000 < len(block) <= 16384
        p.send(*split_block(p, 1, block))
        assert p.response(1).status == 200


def test_header_block_over_max_header_block_is_enhance_your_calm(h2):
    srv = h2()
    with connect(srv) as p:
        block = raw_block(p, 17000)
        assert len(block) > 16384
        p.send(*split_block(p, 1, block))
        p.expect_goaway(fr.ENHANCE_YOUR_CALM)


def test_continuation_flood_is_enhance_your_calm_within_a_second(h2):
    srv = h2()
    with connect(srv) as p:
        block = p.block(p.request_fields())
        wire = p.headers(1, block[:4], end_headers=False) + fr.frame(fr.CONTINUATION, 0, 1, b"") * FLOOD
        flood(p, wire)


# -- max_header_list_size --------------------------------------------------------------------


def big_list(p: Peer, copies: int, value_len: int = 3000) -> list[tuple[str, str]]:
    """A request whose decoded list is large but whose block is small (the dynamic table repeats it)."""
    return p.request_fields(extra=[("x-big", "v" * value_len)] * copies)


def list_size(fields: list[tuple[str, str]]) -> int:
    return sum(len(k) + len(v) + 32 for k, v in fields)


def test_max_header_list_size_is_advertised_and_a_bigger_request_is_431(h2):
    srv = h2()
    with connect(srv) as p:
        assert p.server_settings[fr.MAX_HEADER_LIST_SIZE] == 32768
        fields = big_list(p, 11)
        assert list_size(fields) > 32768
        block = p.block(fields)
        assert len(block) < 16384  # within max_header_block: only the decoded size is over
        p.send(p.headers(1, block))
        res = p.response(1)
        assert res.status == 431 and res.reset is None
        assert len(res.body) < 1024
        assert p.goaway is None
        fields = big_list(p, 9)
        assert list_size(fields) < 32768
        p.send(p.headers(3, fields))
        assert p.response(3).status == 200
        assert p.expect_alive(5).body == b"ok"


# -- max_concurrent_requests (listener-wide) ---------------------------------------------------


def test_max_concurrent_requests_refuses_the_excess_stream_across_connections(h2, gate):
    seen = []
    telemetry.attach("t-h2-throttled", ("rr", "request", "throttled"),
                     lambda event, meas, meta, cfg: seen.append(dict(meta)))
    try:
        srv = h2({"max_concurrent_requests": 2})
        with connect(srv) as a, connect(srv) as b:
            a.request(1, "/hold")
            b.request(1, "/hold")
            gate.wait_entered(2)
            a.request(3, "/hold")
            a.expect_rst(3, fr.REFUSED_STREAM)
            b.request(3, "/")
            b.expect_rst(3, fr.REFUSED_STREAM)
            assert rr.listener_info(srv.name)["throttled"] == 2
            assert gate.entered == 2
            gate.event.set()
            assert a.response(1).status == 200 and b.response(1).status == 200
            # the workers end just after their responses: then the listener has room again
            wait_processes_gone("rr.h2.stream")
            assert a.expect_alive(5).body == b"ok"
    finally:
        telemetry.detach("t-h2-throttled")
    assert len(seen) == 2
    assert all(m["listener"] == srv.name and m["reason"] == "max_concurrent_requests" for m in seen)


# -- floods ----------------------------------------------------------------------------------


def flood(p: Peer, wire: bytes) -> None:
    """Send ``wire`` in the background; GOAWAY(ENHANCE_YOUR_CALM) within the deadline, bounded memory."""
    p.auto_ack = False  # only the sender greenlet writes from now on
    before = fr.rss()
    started = time.monotonic()
    sender = fr.send_in_background(p, wire)
    try:
        p.wait(lambda: p.goaway is not None, timeout=FLOOD_DEADLINE + 4, what="GOAWAY")
        elapsed = time.monotonic() - started
        assert p.goaway.error_code == fr.ENHANCE_YOUR_CALM, p.describe()
        assert elapsed < FLOOD_DEADLINE, f"GOAWAY after {elapsed:.2f}s"
        p.expect_closed()
    finally:
        sender.kill()
    grown = fr.rss() - before
    assert grown < RSS_SLACK, f"RSS grew by {grown / 2**20:.1f} MiB"


def test_rapid_reset_flood_is_enhance_your_calm(h2):
    srv = h2()
    with connect(srv) as p:
        block = p.block(p.request_fields())  # the encoder state is the same for every copy after the first
        again = p.block(p.request_fields())
        wire = [fr.frame(fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, 1, block), fr.rst(1)]
        for i in range(1, FLOOD):
            sid = 2 * i + 1
            wire += [fr.frame(fr.HEADERS, fr.END_HEADERS | fr.END_STREAM, sid, again), fr.rst(sid)]
        flood(p, b"".join(wire))


def test_ping_flood_is_enhance_your_calm(h2):
    srv = h2()
    with connect(srv) as p:
        flood(p, b"".join(fr.ping(i.to_bytes(8, "big")) for i in range(FLOOD)))
        assert 0 < len(p.pings) <= 101  # the budget's worth answered, not the flood


def test_settings_flood_is_enhance_your_calm(h2):
    srv = h2()
    with connect(srv) as p:
        flood(p, fr.settings((fr.HEADER_TABLE_SIZE, 4096)) * FLOOD)


def test_priority_flood_is_enhance_your_calm(h2):
    srv = h2()
    with connect(srv) as p:
        flood(p, b"".join(fr.priority(2 * (i % 50) + 1, depends_on=0, weight=1 + i % 256)
                          for i in range(FLOOD)))


def test_window_update_flood_is_enhance_your_calm(h2):
    srv = h2()
    with connect(srv) as p:
        flood(p, fr.window_update(0, 1) * FLOOD)


def test_empty_data_flood_is_enhance_your_calm(h2, gate):
    srv = h2()
    with connect(srv) as p:
        p.request(1, "/hold", "POST", end_stream=False)
        flood(p, fr.data(1, b"") * FLOOD)


def test_a_window_update_after_every_data_frame_is_not_a_flood(h2):
    """5 MB in 4 KiB DATA frames (the client's stream window): over 1000 WINDOW_UPDATEs, all legit."""
    srv = h2()
    size = 5 * 1024 * 1024
    with connect(srv, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, 4096))) as p:
        p.send(fr.window_update(0, fr.WINDOW_MAX - 65535))  # the connection window once, wide open
        p.request(1, f"/bytes/{size}")
        updates = 0
        deadline = time.monotonic() + 30
        while not p.responses.get(1, fr.Response()).done:
            f = p.read_frame(max(0.0, deadline - time.monotonic()))
            assert f is not None and not isinstance(f, fr.GoAwayFrame), p.describe()
            if isinstance(f, fr.DataFrame) and f.stream_id == 1 and f.data and "END_STREAM" not in f.flags:
                p.send(fr.window_update(1, len(f.data)))
                updates += 1
        res = p.responses[1]
        assert res.status == 200 and res.reset is None and len(res.body) == size
        assert updates > 1000  # more than max_window_updates on its own
        assert p.expect_alive(3).body == b"ok"
        assert p.goaway is None


# -- stall_timeout ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["zero_initial_window", "exhausted_window"])
def test_stream_stalled_on_flow_control_is_cancelled_after_stall_timeout(h2, how):
    srv = h2(stall_timeout=0.5)
    initial = 0 if how == "zero_initial_window" else 65535
    with connect(srv, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, initial))) as p:
        started = time.monotonic()
        p.request(1, "/bytes/200000")
        p.expect_rst(1, fr.CANCEL, timeout=10)
        waited = time.monotonic() - started
        assert 0.45 <= waited < 5, f"reset after {waited:.2f}s"
        assert len(p.responses[1].body) == min(initial, 200000)
        # other streams are still served (a bodiless answer needs no window)
        p.request(3, "/empty")
        res = p.response(3)
        assert res.status == 204 and res.reset is None
        assert p.goaway is None


# -- a client that never reads -------------------------------------------------------------------


def test_client_that_never_reads_is_closed_by_the_write_timeout_with_bounded_memory(h2):
    srv = h2({"request_timeout": 1.0})
    before = fr.rss()
    wide = fr.settings((fr.INITIAL_WINDOW_SIZE, fr.WINDOW_MAX))
    with connect(srv, settings_frame=wide) as p:
        p.send(fr.window_update(0, fr.WINDOW_MAX - 65535))
        for sid in (1, 3, 5, 7):
            p.request(sid, "/endless")
        # and now never read: the server's writes block once the socket buffers are full
        try:
            wait_processes_gone("rr.conn", "rr.h2.reader", "rr.h2.stream", timeout=15)
        except supervisors.Timeout:
            pytest.fail("the connection is still open 15 s later")
        assert srv.info()["active_clients"] == 0
        assert srv.info()["live_streams"] == 0
        grown = fr.rss() - before
        assert grown < RSS_SLACK, f"RSS grew by {grown / 2**20:.1f} MiB"
        p.expect_closed(timeout=10)  # what was buffered, then the end


# -- stalled streams hold no more than the peer's window plus a chunk (issue 13, defect 3) --------


def _queued_per_stream(srv) -> list[int]:
    """Response body bytes each stream's worker has queued at its conn (sent, not yet framed)."""
    runtime = rr._runtimes[srv.name]
    out = []
    for conn in runtime.conns.values():
        machine = getattr(conn, "machine", None)
        for st in (machine.streams.values() if machine is not None else ()):
            out.append(sum(len(item[1]) for item in st.pending if item[0] == "data"))
    return out


@pytest.mark.parametrize("window", [0, 1000])
def test_a_stalled_stream_queues_at_most_its_window_plus_a_chunk(h2, window):
    """Before: every worker queued 64 KiB + 16 KiB whatever the peer's window (200 connections x
    100 streams held +1.3 GiB). Now a worker keeps min(64 KiB, window + 16 KiB) queued, plus
    the one chunk it may gather before it yields."""
    from rr.stream import CHUNK

    srv = h2()
    streams = 20
    with connect(srv, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, window))) as p:
        for i in range(streams):
            p.request(2 * i + 1, "/endless")
        deadline = time.monotonic() + 10
        while True:  # every worker has produced all it may and waits for acknowledgements
            queued = _queued_per_stream(srv)
            if len(queued) == streams and all(q > 0 for q in queued):
                gevent.sleep(0.2)  # had they room left, they would use it now
                queued = _queued_per_stream(srv)
                break
            assert time.monotonic() < deadline, queued
            gevent.sleep(0.02)
    assert max(queued) <= window + 2 * CHUNK, queued  # 80 KiB each before the fix


# -- send_budget: what one connection's workers may queue, all streams together (issue 13) -----


def _machines(srv) -> list:
    runtime = rr._runtimes[srv.name]
    return [m for m in (getattr(c, "machine", None) for c in runtime.conns.values()) if m is not None]


def test_send_budget_bounds_what_all_streams_of_a_zero_window_connection_queue(h2):
    """40 streams of 64 KiB to a peer that opens no window: each worker alone may queue 16 KiB
    (640 KiB together, what every stream held before); the connection holds at most
    ``send_budget`` (each worker a share of it unasked, more when it asks, while budget
    lasts), the other workers wait for credit, and once the peer opens its windows every
    stream is answered in full (the waiting workers get their credit)."""
    from rr.stream import CHUNK

    budget = 4 * CHUNK
    srv = h2(send_budget=budget)
    streams = 40
    with connect(srv, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, 0))) as p:
        for i in range(streams):
            p.request(2 * i + 1, "/bytes/65536")
        deadline = time.monotonic() + 10
        peak = 0
        while True:  # the budget fills; sample it all the while
            queued = _queued_per_stream(srv)
            (machine,) = _machines(srv)
            peak = max(peak, sum(queued), machine.credited)
            if machine.credited > budget - CHUNK and srv.info()["live_streams"] == streams:
                break
            assert time.monotonic() < deadline, (queued, machine.credited)
            gevent.sleep(0.02)
        for _ in range(10):  # workers with room left would use it now; none has any
            gevent.sleep(0.02)
            peak = max(peak, sum(_queued_per_stream(srv)), machine.credited)
        assert peak <= budget, f"{peak} bytes queued on one connection, budget {budget}"
        assert sum(_queued_per_stream(srv)) > budget // 2  # the budget is what binds
        # The peer opens its windows: every stream completes, none waits forever.
        p.send(fr.settings((fr.INITIAL_WINDOW_SIZE, 1 << 20)), fr.window_update(0, streams * 65536))
        for i in range(streams):
            res = p.response(2 * i + 1, timeout=20)
            assert res.status == 200 and len(res.body) == 65536, (i, res.status, res.reset)
        assert machine.credited == 0


def test_budget_freed_by_a_worker_that_ends_goes_to_the_stream_waiting_for_it(h2, gate):
    """A worker waits for budget (``WANT``, none left) while the peer opens no window; a
    sibling that held half the budget unasked ends, sending 2 bytes: what it never used
    comes back with its end (a ``DOWN``, no frame, no other event) and must reach the
    waiting worker then, not when something else happens on the connection."""
    srv = h2(send_budget=16384, max_concurrent_streams=2)  # share 4 KiB, unasked up to 8 KiB
    with connect(srv, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, 0))) as p:
        p.request(1, "/hold")
        gate.wait_entered(1)
        p.request(3, "/bytes/65536")

        def queued_by_3() -> int:
            (machine,) = _machines(srv)
            st = machine.streams.get(3)
            return sum(len(i[1]) for i in st.pending if i[0] == "data") if st is not None else -1

        deadline = time.monotonic() + 10
        while queued_by_3() != 8192:  # its share, then what the budget had left
            assert time.monotonic() < deadline, queued_by_3()
            gevent.sleep(0.02)
        gate.event.set()  # stream 1 answers "ok" (queued: no window) and its worker ends
        while queued_by_3() <= 8192:
            assert time.monotonic() < deadline, "the freed budget never reached stream 3"
            gevent.sleep(0.02)
        assert queued_by_3() == 16384 - 2  # all the budget but stream 1's queued "ok"
        p.send(fr.settings((fr.INITIAL_WINDOW_SIZE, 1 << 20)), fr.window_update(0, 1 << 20))
        assert p.response(1, timeout=10).body == b"ok"
        res = p.response(3, timeout=10)
        assert res.status == 200 and len(res.body) == 65536


def test_send_budget_is_validated(h2):
    for bad in (0, 16383, "1M"):
        with pytest.raises(ValueError, match="send_budget"):
            h2(send_budget=bad)


def test_a_loop_out_of_credit_sends_what_it_gathered_when_credit_comes(h2):
    """A Loop's second push is gathered and finds too little credit against a zero window
    (16 KiB in all); the Loop then waits for messages. When the peer opens its window,
    the credit that comes back must let those bytes go out, not wait for another push."""
    srv = h2()
    with connect(srv, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, 0))) as p:
        p.request(1, "/loop")
        deadline = time.monotonic() + 10
        # what a zero window allows is queued (a window's worth plus a chunk); the rest is held
        while _queued_per_stream(srv) != [16384]:
            assert time.monotonic() < deadline, _queued_per_stream(srv)
            gevent.sleep(0.02)
        p.send(fr.settings((fr.INITIAL_WINDOW_SIZE, 1 << 20)))
        p.wait(lambda: 1 in p.responses and len(p.responses[1].body) >= 20480, timeout=10, what="both pushes")
        assert p.responses[1].body == b"a" * 10240 + b"b" * 10240


def test_streams_that_send_nothing_do_not_hold_the_send_budget_from_one_that_sends(h2, gate):
    """30 handlers waiting (a slow backend, a long poll) hold only a share of the budget each,
    so a stream that sends 256 KiB on the same connection is served meanwhile."""
    from rr.stream import CHUNK

    srv = h2(send_budget=4 * CHUNK)
    with connect(srv, settings_frame=fr.settings((fr.INITIAL_WINDOW_SIZE, 1 << 20))) as p:
        for i in range(30):
            p.request(2 * i + 1, "/hold")
        gate.wait_entered(30)
        p.send(fr.window_update(0, 1 << 20))
        p.request(61, "/bytes/262144")
        res = p.response(61, timeout=10)
        assert res.status == 200 and len(res.body) == 262144
        gate.event.set()
        for i in range(30):
            assert p.response(2 * i + 1).status == 200
