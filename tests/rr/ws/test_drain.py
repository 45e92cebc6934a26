"""Drain and the listener's ``ws`` option.

A drain sends every WebSocket session ``(DRAIN, deadline)``; the session
closes 1001 and waits (bounded by the deadline) for the client's close, so
the drain counts it as drained, not killed.
"""

from __future__ import annotations

import gevent
import gevent.event
import pytest

import rr
from rr import resp
from rr.config import load
from tests.rr.ws.wire import CLOSE, TEXT, Client, close_payload, frame


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


def test_drain_closes_1001_and_waits_for_the_clients_close(serve, caplog):
    srv = serve(lambda req: resp.WebSocket(Echo))
    c = Client.open(srv.port)
    c.send(frame(TEXT, b"before"))
    assert c.read_frame() == (TEXT, True, b"before")
    drain = gevent.spawn(rr.drain, srv.name, 10)
    code, reason = c.read_close()
    assert code == 1001 and reason == b"server shutting down"
    c.send(frame(CLOSE, close_payload(1001)))
    assert c.closed_by_server()
    assert drain.get(timeout=10) == {"drained": 1, "killed": 0}
    assert not [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]


def test_a_client_that_ignores_the_drain_close_is_ended_at_close_timeout(serve, caplog):
    srv = serve(lambda req: resp.WebSocket(Echo), ws={"close_timeout": 0.2})
    c = Client.open(srv.port)
    c.send(frame(TEXT, b"before"))  # the reader is back on the socket when the drain comes
    assert c.read_frame() == (TEXT, True, b"before")
    drain = gevent.spawn(rr.drain, srv.name, 10)
    assert c.read_close()[0] == 1001
    assert c.closed_by_server()  # no close from us: the session gave up after close_timeout
    assert drain.get(timeout=10) == {"drained": 1, "killed": 0}
    # The session ends its reader before the closing linger reads the socket itself.
    assert not [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]


@pytest.mark.parametrize("ws, needle", [
    ({"max_frame_size": 0}, "ws.max_frame_size"),
    ({"max_message_size": "big"}, "ws.max_message_size"),
    ({"idle_timeout": -1}, "ws.idle_timeout"),
    ({"ping_interval": 0}, "ws.ping_interval"),
    ({"compress": "yes"}, "ws.compress"),
    ({"close_timeout": None}, "ws.close_timeout"),
    ({"deflate": True}, "ws.deflate"),
    ("fast", "'ws'"),
])
def test_bad_ws_options_fail_at_start_naming_the_option(ws, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        load({"port": 0, "ws": ws})
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        rr.start_listener("bad-ws", {"port": 0, "ws": ws})


def test_ws_defaults():
    ws = load({"port": 0}).ws
    assert (ws.max_frame_size, ws.max_message_size) == (1024 * 1024, 16 * 1024 * 1024)
    assert ws.idle_timeout is None and ws.ping_interval is None and ws.compress is True


def test_a_session_killed_at_the_drain_deadline_takes_its_reader_along(serve):
    """A handler that will not let go (stuck in a long callback, so drain's message waits) is
    killed at the deadline, and its reader process goes with it (the autouse leak fixture
    fails the test if any process is left)."""
    started = gevent.event.Event()

    class Stuck:
        @staticmethod
        def handle_frame(frame, state):
            started.set()
            gevent.sleep(60)  # a handler stuck in work, not a test synchronisation
            return [], state

    srv = serve(lambda req: resp.WebSocket(Stuck))
    c = Client.open(srv.port)
    c.send(frame(TEXT, b"work"))
    assert started.wait(10)
    assert rr.drain(srv.name, 0.3) == {"drained": 0, "killed": 1}
    assert c.closed_by_server()
