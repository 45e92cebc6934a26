"""The ``Date`` header value (RFC 9110 §6.6.1), cached per second, for every protocol.

What it is: ``http_date()`` (the IMF-fixdate string, for h2/h3 field lists and
builders) and ``date_line()`` (``date: ...\\r\\n`` pre-encoded, for the h1 head
encoder). Both are recomputed at most once per second.
"""

from __future__ import annotations

import time
from email.utils import formatdate

_date_second = 0
_date_value = ""
_date_line = b""


def http_date() -> str:
    """The IMF-fixdate for now, recomputed at most once per second."""
    global _date_second, _date_value, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_value = formatdate(now, usegmt=True)
        _date_line = f"date: {_date_value}\r\n".encode()
    return _date_value


def date_line() -> bytes:
    """``date: ...\\r\\n``, pre-encoded once per second."""
    if int(time.time()) != _date_second:
        http_date()
    return _date_line
