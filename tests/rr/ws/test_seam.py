"""The session over a byte stream that is not a socket: the seam h3 (RFC 9220) will use (h2 uses
its message-fed variant, ``rr.stream.WsStream``: tests/rr/ws/test_h2.py).

``rr.ws.session.run`` gets an in-memory ``ByteStream`` (two gevent queues) and
must behave as it does over the h1 socket: frames in, frames out, the close
handshake, then ``close`` on the stream. No listener, no socket.
"""

from __future__ import annotations

import gevent.event
import gevent.queue

import supervisors
from rr.config import WsOptions
from rr.request import Headers, Request
from rr.ws import session
from tests.rr.ws.wire import CLOSE, TEXT, close_payload, frame


class MemoryStream:
    def __init__(self) -> None:
        self.inbox: gevent.queue.Queue[bytes] = gevent.queue.Queue()
        self.out: gevent.queue.Queue[bytes] = gevent.queue.Queue()
        self.closed = gevent.event.Event()

    def read(self, max_bytes: int) -> bytes:
        return self.inbox.get()

    def write(self, data: bytes) -> None:
        self.out.put(bytes(data))

    def close(self) -> None:
        self.closed.set()


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


def test_a_session_runs_over_any_byte_stream():
    stream = MemoryStream()
    req = Request("GET", "/", "/", "", "HTTP/2", Headers([]))
    result = gevent.event.AsyncResult()
    supervisors.spawn(lambda: result.set(session.run(stream, req, Echo, None, WsOptions())),
                      label="test.session")
    stream.inbox.put(frame(TEXT, b"over h2 one day"))
    assert stream.out.get(timeout=5) == b"\x81\x0fover h2 one day"
    stream.inbox.put(frame(CLOSE, close_payload(1000, b"ok")))
    assert stream.out.get(timeout=5) == b"\x88\x04" + close_payload(1000, b"ok")
    assert result.get(timeout=5) == ("remote", 1000, "ok")
    assert stream.closed.is_set()


def test_the_end_of_the_stream_without_a_close_frame_is_1006():
    stream = MemoryStream()
    req = Request("GET", "/", "/", "", "HTTP/2", Headers([]))
    result = gevent.event.AsyncResult()
    supervisors.spawn(lambda: result.set(session.run(stream, req, Echo, None, WsOptions())),
                      label="test.session")
    stream.inbox.put(b"")
    assert result.get(timeout=5) == ("error", 1006, "connection lost")
    assert stream.closed.is_set()
