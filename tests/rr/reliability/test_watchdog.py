"""The blocking watchdog names the request whose handler held the event loop (issue 13, defect 7)."""

from __future__ import annotations

import time

import gevent
import structlog

from rr import resp, watchdog
from tests.rr.conftest import read_response


def test_a_blocking_handler_is_logged_with_its_request_id(serve):
    ids = []

    def blocking(req):
        ids.append(req.request_id)
        time.sleep(0.5)  # not monkey-patched: holds every connection of the process
        return resp.text(200, "slept")

    srv = serve(blocking, blocking_monitor=0.1)
    assert watchdog.tracking
    try:
        _check(srv, ids)
    finally:
        watchdog.disable()  # process-wide: the rest of the suite runs without the tracer
    assert not watchdog.tracking


def _check(srv, ids) -> None:
    with structlog.testing.capture_logs() as logs:
        with srv.connect() as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_response(sock)
        assert body == b"slept"
        deadline = time.monotonic() + 10  # the monitor thread reports on its own schedule
        while not [e for e in logs if e["event"].startswith("a handler blocked")]:
            assert time.monotonic() < deadline, logs
            gevent.sleep(0.05)
    [entry] = [e for e in logs if e["event"].startswith("a handler blocked")][:1]
    assert entry["request_id"] == ids[0] and entry["path"] == "/slow" and entry["method"] == "GET"
    assert entry["log_level"] == "error"
