"""The Date header (RFC 9110 §6.6.1): an IMF-fixdate of now on every protocol, built once a second."""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

import pytest

from rr import httpdate, resp
from tests.rr.http2.client import H2Client

# RFC 9110 §5.6.7: IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT
IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT"
)


def _assert_is_now(value: str, before: float, after: float) -> None:
    """``value`` is an IMF-fixdate of a moment between ``before`` and ``after``, to the second."""
    assert IMF_FIXDATE.fullmatch(value), value
    assert int(before) <= parsedate_to_datetime(value).timestamp() <= after, (value, before, after)


def test_date_on_http1_is_an_imf_fixdate_of_now(serve):
    from tests.rr.conftest import read_response

    srv = serve(lambda req: resp.text(200, "ok"))
    before = time.time()
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(sock)
    dates = [line[6:].decode() for line in head.split(b"\r\n") if line.lower().startswith(b"date: ")]
    assert len(dates) == 1, head
    _assert_is_now(dates[0], before, time.time())


def test_date_on_http2_is_an_imf_fixdate_of_now(serve):
    srv = serve(lambda req: resp.text(200, "ok"), protocols=["http2"])
    before = time.time()
    client = H2Client(srv.port)
    try:
        sid = client.request("GET", "/")
        result = client.run([sid])[sid]
    finally:
        client.close()
    dates = [value for name, value in result.headers if name == "date"]
    assert len(dates) == 1, result.headers
    _assert_is_now(dates[0], before, time.time())


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock(1_700_000_000.2)  # Tue, 14 Nov 2023 22:13:20 GMT
    monkeypatch.setattr(httpdate, "_time", fake.time)
    monkeypatch.setattr(httpdate, "_date_second", 0)
    monkeypatch.setattr(httpdate, "_date_until", 0.0)
    return fake


def test_the_value_is_built_once_per_second_and_shared_within_it(clock):
    first = httpdate.http_date()
    line = httpdate.date_line()
    assert first == "Tue, 14 Nov 2023 22:13:20 GMT" and line == f"date: {first}\r\n".encode()
    clock.now += 0.7  # still the same second
    assert httpdate.http_date() is first and httpdate.date_line() is line
    clock.now += 0.2  # the next second
    second = httpdate.date_line()
    assert second == b"date: Tue, 14 Nov 2023 22:13:21 GMT\r\n"
    assert httpdate.http_date() == "Tue, 14 Nov 2023 22:13:21 GMT"
    clock.now -= 5.0  # the clock stepped back: that second's date, not the cached later one
    assert httpdate.date_field() == ("date", "Tue, 14 Nov 2023 22:13:16 GMT")
