"""The ``Date`` header value (RFC 9110 §6.6.1), cached per second, for every protocol.

What it is: ``http_date()`` (the IMF-fixdate string), ``date_field()`` (the
``("date", value)`` pair the exchange adds to a response's fields) and
``date_line()`` (``date: ...\\r\\n`` pre-encoded). All are recomputed at most
once per second.
"""

from __future__ import annotations

import time
from email.utils import formatdate

_date_second = 0
_date_value = ""
_date_line = b""
_date_field = ("date", "")


def http_date() -> str:
    """The IMF-fixdate for now, recomputed at most once per second."""
    global _date_second, _date_value, _date_line, _date_field
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_value = formatdate(now, usegmt=True)
        _date_line = f"date: {_date_value}\r\n".encode()
        _date_field = ("date", _date_value)
    return _date_value


def date_field() -> tuple[str, str]:
    """``("date", value)``: one tuple object per second (cheap to hash and cache by)."""
    if int(time.time()) != _date_second:
        http_date()
    return _date_field


def date_line() -> bytes:
    """``date: ...\\r\\n``, pre-encoded once per second."""
    if int(time.time()) != _date_second:
        http_date()
    return _date_line
