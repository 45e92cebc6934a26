"""rr.log.configure: structlog events and stdlib records (rr's, the supervisors' crash
reports, a third-party library's) as one stream of JSON (or console) lines, each with the
request_id of the request being served, over real h1 and h2 connections (httpx)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

import rr
from rr import resp
from tests.rr.conftest import in_thread


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()
    if was_configured:
        structlog.configure(**saved)


class Fatal(BaseException):
    """Not an Exception: rr's dispatch lets it through, so the connection process crashes."""


def app(req):
    if req.path == "/crash-process":
        raise Fatal("the connection process dies")
    if req.path == "/crash":
        raise RuntimeError("handler bug")
    structlog.get_logger("app").info("from structlog", user=7)
    logging.getLogger("thirdparty.lib").warning("from %s", "stdlib")
    logging.getLogger("thirdparty.lib").debug("too detailed")
    return resp.text(200, "ok")


def _get(url: str, http2: bool, path: str) -> httpx.Response:
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        return client.get(url + path)


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2c"])
def test_json_lines_from_structlog_stdlib_and_a_library_carry_the_request_id(serve, restore_logging, http2):
    buf = io.StringIO()
    rr.log.configure(json=True, level="info", stream=buf)
    srv = serve(app, protocols=["http1", "http2"], request_id_header="x-request-id")
    r = in_thread(_get, srv.url, http2, "/")
    rid = r.headers["x-request-id"]
    crashed = in_thread(_get, srv.url, http2, "/crash")
    assert crashed.status_code == 500
    logging.getLogger("outside").warning("no request here")
    found = lines(buf)  # every line is JSON
    by_event = {line["event"]: line for line in found}
    own = by_event["from structlog"]
    assert own["request_id"] == rid and own["user"] == 7 and own["level"] == "info" and own["logger"] == "app"
    lib = by_event["from stdlib"]
    assert lib["request_id"] == rid and lib["level"] == "warning" and lib["logger"] == "thirdparty.lib"
    assert lib["timestamp"].endswith("Z")
    assert "too detailed" not in by_event  # below the level
    crash = by_event["handler crashed"]
    assert crash["request_id"] == crashed.headers["x-request-id"] and crash["logger"] == "rr.dispatch"
    assert "RuntimeError: handler bug" in crash["exception"]
    assert "request_id" not in by_event["no request here"]


def test_a_supervisors_crash_report_is_a_json_line_with_the_request_id(serve, restore_logging):
    buf = io.StringIO()
    rr.log.configure(json=True, stream=buf)
    srv = serve(app, protocols=["http1"], request_id_header="x-request-id")
    with pytest.raises(httpx.HTTPError):
        in_thread(_get, srv.url, False, "/crash-process")
    (report,) = [line for line in lines(buf) if line["logger"] == "supervisors"]
    assert report["level"] == "error" and "crashed" in report["event"]
    assert len(report["request_id"]) == 16
    assert "Fatal: the connection process dies" in report["exception"]


def test_console_lines_and_a_second_configure_takes_over(serve, restore_logging):
    first, second = io.StringIO(), io.StringIO()
    rr.log.configure(json=True, stream=first)
    rr.log.configure(json=False, level=logging.WARNING, stream=second)
    srv = serve(app, protocols=["http1"])
    assert in_thread(_get, srv.url, False, "/").status_code == 200
    assert first.getvalue() == ""
    text = second.getvalue()
    assert "from stdlib" in text and "request_id=" in text and "[warning" in text
    assert "from structlog" not in text  # info, below WARNING
    assert len(logging.getLogger().handlers) == 1


def test_a_bad_level_is_a_value_error_naming_it(restore_logging):
    with pytest.raises(ValueError, match="level"):
        rr.log.configure(level="loud")


def test_start_listener_logs_its_name_address_and_protocols_once_at_info(serve, restore_logging):
    buf = io.StringIO()
    rr.log.configure(json=True, level="info", stream=buf)
    srv = serve(lambda req: resp.text(200, "ok"), protocols=["http1", "http2"])
    started = [line for line in lines(buf) if "listening on" in line["event"]]
    assert [(line["event"], line["level"], line["logger"]) for line in started] == [
        (f"listener {srv.name!r} listening on http://127.0.0.1:{srv.port}/ (http1, http2)", "info", "rr")]
    assert in_thread(_get, f"http://127.0.0.1:{srv.port}", False, "/").text == "ok"  # that address serves


def test_the_start_up_line_is_silenced_by_the_applications_logging_configuration(serve, restore_logging, caplog):
    # An application that routes structlog through the standard library: its logging
    # configuration decides, as for any other logger.
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(),
                        wrapper_class=structlog.stdlib.BoundLogger,
                        processors=[structlog.stdlib.render_to_log_kwargs])
    caplog.set_level(logging.INFO, logger="rr")
    first = serve(lambda req: resp.text(200, "ok"), protocols=["http1"])
    assert [r.getMessage() for r in caplog.records if r.name == "rr"] == [
        f"listener {first.name!r} listening on http://127.0.0.1:{first.port}/ (http1)"]
    caplog.clear()
    logging.getLogger("rr").setLevel(logging.WARNING)
    serve(lambda req: resp.text(200, "ok"))
    assert [r for r in caplog.records if r.name == "rr"] == []
