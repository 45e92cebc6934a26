"""The ``Date`` header value (RFC 9110 §6.6.1), cached per second, for every protocol.

What it is: ``http_date()`` (the IMF-fixdate string), ``date_field()`` (the
``("date", value)`` pair the exchange adds to a response's fields) and
``date_line()`` (``date: ...\\r\\n`` pre-encoded). All are recomputed at most
once per second: a call reads the clock once and compares it with the cached
second's bounds (a clock stepped back is a new second too).
"""

from __future__ import annotations

import time
from email.utils import formatdate

_time = time.time
_date_second = 0  # the second the cached values name: [_date_second, _date_until)
_date_until = 0.0
_date_value = ""
_date_line = b""
_date_field = ("date", "")


def _refresh(now: float) -> None:
    global _date_second, _date_until, _date_value, _date_line, _date_field
    second = int(now)
    _date_second = second
    _date_until = second + 1.0
    _date_value = formatdate(second, usegmt=True)
    _date_line = f"date: {_date_value}\r\n".encode()
    _date_field = ("date", _date_value)


def http_date() -> str:
    """The IMF-fixdate for now, recomputed at most once per second."""
    now = _time()
    if not _date_second <= now < _date_until:
        _refresh(now)
    return _date_value


def date_field() -> tuple[str, str]:
    """``("date", value)``: one tuple object per second (cheap to hash and cache by)."""
    now = _time()
    if not _date_second <= now < _date_until:
        _refresh(now)
    return _date_field


def date_line() -> bytes:
    """``date: ...\\r\\n``, pre-encoded once per second."""
    now = _time()
    if not _date_second <= now < _date_until:
        _refresh(now)
    return _date_line
