"""rr.http2.machine without sockets or processes: bytes and worker output in, frames and events out.

The state machine is driven here exactly as the process shell drives it; the
frames it writes are parsed with hyperframe and its header blocks decoded with
hpack, neither of which rr uses to write them.
"""

from __future__ import annotations

import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

from rr import config
from rr import response as resp
from rr import stream as sw
from rr.http2.machine import CLOSE_GRACE, KILL, START, TELL, ConnectionEnded, H2Machine
from rr.runtime import ListenerRuntime
from tests.rr.http2.frames import PREFACE, data, rst, settings, window_update


def _runtime(**http2) -> ListenerRuntime:
    opts = {"port": 0, "protocols": [("http2", http2)] if http2 else ["http2"]}
    return ListenerRuntime("machine", config.load(opts), lambda req: resp.text(200, "x"))


def _headers(sid: int, path: str = "/", method: str = "GET", end: bool = True) -> bytes:
    block = hpack.Encoder().encode([(":method", method), (":scheme", "http"), (":path", path),
                             (":authority", "x")])
    f = HeadersFrame(sid, block)
    f.flags.add("END_HEADERS")
    if end:
        f.flags.add("END_STREAM")
    return f.serialize()


def _frames(raw: bytes) -> list[Frame]:
    out = []
    while raw:
        f, length = Frame.parse_frame_header(memoryview(raw[:9]))
        f.parse_body(memoryview(raw[9:9 + length]))
        out.append(f)
        raw = raw[9 + length:]
    return out


def _open(**http2) -> tuple[H2Machine, ListenerRuntime]:
    runtime = _runtime(**http2)
    m = H2Machine(("127.0.0.1", 1), runtime, "http")
    m.start()
    m.feed(PREFACE + settings())
    m.data_to_send()
    return m, runtime


def test_a_request_starts_a_worker_and_its_response_is_framed():
    m, runtime = _open()
    m.feed(_headers(1, "/hello"))
    events = m.take_events()
    assert [(e[0], e[1]) for e in events] == [(START, 1)]
    req = events[0][2]
    assert (req.method, req.path, req.version, events[0][3]) == ("GET", "/hello", "HTTP/2", True)
    assert runtime.live_streams == 1 and runtime.requests_served == 1
    m.on_response(1, 200, [("content-type", "text/plain")], 5, b"hello")
    frames = _frames(m.data_to_send())
    assert isinstance(frames[0], HeadersFrame) and isinstance(frames[1], DataFrame)
    fields = dict(hpack.Decoder().decode(frames[0].data))
    assert fields[":status"] == "200" and fields["content-length"] == "5"
    assert frames[1].data == b"hello" and "END_STREAM" in frames[1].flags
    m.worker_down(1, "normal")
    assert not m.streams and runtime.live_streams == 0


def test_body_is_told_to_the_worker_and_credited_back_only_when_consumed():
    m, _ = _open(window_refill_threshold=1024)
    m.feed(_headers(1, method="POST", end=False))
    m.take_events()
    m.feed(data(1, b"x" * 16000) + data(1, b"x" * 16000) + data(1, b"", end_stream=True))
    assert m.take_events() == [(TELL, 1, (sw.BODY, b"x" * 16000))] * 2 + [(TELL, 1, (sw.BODY_END,))]
    assert m.data_to_send() == b""  # nothing consumed yet: no WINDOW_UPDATE
    m.credit(1, 32000)
    updates = [f for f in _frames(m.data_to_send()) if f.type == 0x8]
    assert [u.stream_id for u in updates] == [0]  # the stream ended: only the connection's window
    assert updates[0].window_increment == 32000


def test_a_client_reset_tells_the_worker_then_kills_it_after_the_grace():
    m, runtime = _open()
    m.feed(_headers(1))
    m.take_events()
    m.on_worker_headers(1, 200, [], None, False)
    m.feed(rst(1))
    assert m.take_events() == [(TELL, 1, (resp.CLOSED,))]
    assert m.timed
    m.tick(0.0)  # before the grace: nothing
    assert m.take_events() == []
    import time

    m.tick(time.monotonic() + CLOSE_GRACE + 0.01)
    assert m.take_events() == [(KILL, 1)]
    assert runtime.live_streams == 0 and not m.streams


def test_a_stream_without_window_is_reset_cancel_after_stall_timeout():
    m, _ = _open(stall_timeout=1.0)
    m.feed(settings((0x4, 0)) + _headers(1))  # INITIAL_WINDOW_SIZE 0
    m.take_events()
    m.data_to_send()
    m.on_worker_headers(1, 200, [], None, False)
    m.on_worker_data(1, b"y" * 100, True)
    assert not any(isinstance(f, DataFrame) for f in _frames(m.data_to_send()))
    assert m.flow.stalled
    import time

    m.tick(time.monotonic() + 2.0)
    resets = [f for f in _frames(m.data_to_send()) if isinstance(f, RstStreamFrame)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(1, 0x8)]  # CANCEL


def test_window_update_lets_a_stalled_stream_finish():
    m, _ = _open()
    m.feed(settings((0x4, 10)) + _headers(1))
    m.take_events()
    m.data_to_send()
    m.on_worker_headers(1, 200, [], None, False)
    m.on_worker_data(1, b"z" * 25, True)
    got = [f.data for f in _frames(m.data_to_send()) if isinstance(f, DataFrame)]
    assert got == [b"z" * 10]
    m.feed(window_update(1, 100))
    rest = [f for f in _frames(m.data_to_send()) if isinstance(f, DataFrame)]
    assert [f.data for f in rest] == [b"z" * 15] and "END_STREAM" in rest[0].flags


def test_a_bad_preface_ends_the_connection_with_goaway_protocol_error():
    m = H2Machine(None, _runtime(), "http")
    m.start()
    with pytest.raises(ConnectionEnded):
        m.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    goaways = [f for f in _frames(m.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == 0x1


def test_a_ping_flood_ends_the_connection_enhance_your_calm():
    m, _ = _open(max_pings=10)
    from tests.rr.http2.frames import ping

    with pytest.raises(ConnectionEnded):
        for _ in range(11):
            m.feed(ping())
    goaways = [f for f in _frames(m.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert goaways[-1].error_code == 0xB


def test_drain_sends_goaway_and_tells_loop_workers():
    m, _ = _open()
    m.feed(_headers(1))
    m.take_events()
    m.loop_started(1, False, 0.0)
    m.drain(123.0)
    assert m.take_events() == [(TELL, 1, (resp.DRAIN, 123.0))]
    frames = _frames(m.data_to_send())
    assert any(isinstance(f, GoAwayFrame) and f.error_code == 0 for f in frames)
    m.feed(_headers(3))  # after GOAWAY: refused, no worker
    assert m.take_events() == []
    assert [(f.stream_id, f.error_code) for f in _frames(m.data_to_send())
            if isinstance(f, RstStreamFrame)] == [(3, 0x7)]


def test_a_worker_that_dies_before_answering_gets_a_500_from_the_machine():
    m, _ = _open()
    m.feed(_headers(1))
    m.take_events()
    m.worker_down(1, "max_heap")
    frames = _frames(m.data_to_send())
    assert dict(hpack.Decoder().decode(frames[0].data))[":status"] == "500"
    assert isinstance(frames[-1], DataFrame) and "END_STREAM" in frames[-1].flags


def test_settings_frame_is_acknowledged():
    m = H2Machine(None, _runtime(), "http")
    m.start()
    first = _frames(m.data_to_send())
    assert isinstance(first[0], SettingsFrame)
    m.feed(PREFACE + settings())
    acks = [f for f in _frames(m.data_to_send()) if isinstance(f, SettingsFrame) and "ACK" in f.flags]
    assert len(acks) == 1


def test_resets_the_peer_makes_rr_send_count_as_a_reset_flood():
    """MadeYouReset (CVE-2025-8671): each stream opened then broken by a zero WINDOW_UPDATE
    makes rr reset it; past max_resets such resets the connection ends ENHANCE_YOUR_CALM."""
    m, runtime = _open(max_resets=20)
    started = []
    with pytest.raises(ConnectionEnded):
        for i in range(21):
            sid = 2 * i + 1
            m.feed(_headers(sid, end=False) + window_update(sid, 0))
            started += [e for e in m.take_events() if e[0] == START]
    # Reset in the same read that opened them: no worker was ever started for them.
    assert started == []
    m.end_workers()  # what the shell does when the connection ends (the last stream's start unused)
    assert runtime.live_streams == 0
    frames = _frames(m.data_to_send())
    assert sum(isinstance(f, RstStreamFrame) for f in frames) == 20
    assert isinstance(frames[-1], GoAwayFrame) and frames[-1].error_code == 0xB


def test_a_worker_gets_a_chunked_responses_credit_unasked_while_under_half_the_budget_is_out():
    """Unasked credit at a worker's start: up to what the peer lets it send plus a chunk
    (64 KiB) while less than half of ``send_budget`` is out, then the fair share
    (``send_budget / (2 × max_concurrent_streams)``); never past the budget."""
    budget = 256 * 1024
    m, _ = _open(send_budget=budget, max_concurrent_streams=100)
    credits = []
    for i in range(8):
        m.feed(_headers(2 * i + 1))
        credits += [e[4] for e in m.take_events() if e[0] == START]
    share = budget // 200
    assert credits[:2] == [65536, 65536]  # 128 KiB out: half the budget
    assert credits[2:] == [share] * 6
    assert m.credited == sum(credits) <= budget
