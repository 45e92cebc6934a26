"""Structured frame fuzzing of the h2 connection process over the wire.

Random sequences of well-framed HTTP/2 frames (any type, flags, stream id and
payload, with real HPACK blocks mixed in) after a valid preface. Whatever the
peer sends, the conn process must end through its own error handling — never
crash with an unexpected exception (a crash is logged on the ``supervisors``
logger), close the connection once the peer has sent EOF (a hang fails), and
leave no process behind (the autouse leak fixture checks that).
"""

from __future__ import annotations

import logging
import socket

import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rr import resp
from rr.http2 import codec
from tests.rr.conftest import read_until_close

PREFACE = codec.PREFACE + codec.settings_frame({})

_header_lists = st.lists(
    st.tuples(
        st.sampled_from([":method", ":path", ":scheme", ":authority", ":status", "content-length", "te",
                         "cookie", "Upper", "x-a", "connection", "host", ""]),
        st.sampled_from(["GET", "POST", "/", "/x?y=1", "http", "localhost", "0", "5", "trailers", "a=b",
                         " pad ", "", "\x00", "x" * 40]),
    ),
    max_size=8,
)


@st.composite
def frames(draw):
    ftype = draw(st.integers(0, 11))
    flags = draw(st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0x2D, 0xFF]))
    sid = draw(st.sampled_from([0, 1, 2, 3, 5, 7, 9, 0x7FFFFFFF]))
    if ftype == codec.HEADERS and draw(st.booleans()):
        enc = hpack.Encoder()
        payload = enc.encode(draw(_header_lists))
        if flags & codec.PRIORITY_FLAG:
            payload = draw(st.binary(min_size=5, max_size=5)) + payload
    elif ftype == codec.SETTINGS and draw(st.booleans()):
        payload = b"".join(draw(st.lists(
            st.tuples(st.integers(0, 9), st.sampled_from([0, 1, 2, 100, 65535, 16384, 2**24, 2**31 - 1, 2**32 - 1]))
            .map(lambda kv: kv[0].to_bytes(2, "big") + kv[1].to_bytes(4, "big")), max_size=4)))
    elif ftype == codec.WINDOW_UPDATE and draw(st.booleans()):
        payload = draw(st.sampled_from([0, 1, 65535, 2**31 - 1])).to_bytes(4, "big")
    else:
        # the lengths the fixed-size frames need (RST_STREAM/WINDOW_UPDATE 4, PRIORITY 5,
        # PING/GOAWAY 8), else anything
        size = draw(st.sampled_from([0, 4, 5, 8, 9, None]))
        payload = draw(st.binary(max_size=40) if size is None else st.binary(min_size=size, max_size=size))
    return codec.frame(ftype, flags, sid, payload)


def app(req):
    if req.path == "/":
        return resp.text(200, "ok")
    return resp.Response(200, [], req.read_body())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(frames(), min_size=1, max_size=12))
def test_random_frame_sequences_never_crash_the_conn_process(serve_once, sequence):
    srv, records = serve_once
    records.clear()
    with srv.connect(5) as sock:
        try:
            sock.sendall(PREFACE + b"".join(sequence))
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed first (a connection error): what it sent is still readable
        try:
            read_until_close(sock, 5)  # a reset counts as closed; a timeout is a hang and fails
        except TimeoutError:
            pytest.fail("the conn process neither closed nor finished within 5 s of the peer's EOF")
    crashes = [r.getMessage() for r in records if "crashed" in r.getMessage()]
    assert crashes == []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def serve_once(serve):
    handler = _Collect()
    logger = logging.getLogger("supervisors")
    logger.addHandler(handler)
    try:
        yield serve(app, protocols=["http2"]), handler.records
    finally:
        logger.removeHandler(handler)
