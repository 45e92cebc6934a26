"""Server-Sent Events framing (WHATWG HTML §9.2, "Server-sent events").

What it is: the encoder for ``text/event-stream`` frames. ``event(...)``
returns the bytes of one event, ready for a ``Stream`` or ``Loop`` response
to send; ``keepalive()`` is the comment frame that keeps idle proxies from
closing the stream.

What it owns: the line grammar of §9.2.5 ("Parsing an event stream") seen
from the sending side, and the guarantee that no argument can end a field
early or inject another field or event.

What it must never do: send anything (no sockets, no response objects), or
emit a frame that a spec-following client would parse differently from what
the caller passed.

The rules, all from §9.2.5 and §9.2.6 ("Interpreting an event stream"):

- a stream is UTF-8 and its lines end with CRLF, LF or CR; so ``data`` is
  split on each of those and goes out as one ``data:`` line per line. The
  client joins them with LF: line breaks survive as LF (a CRLF or CR in the
  data arrives as LF — the format cannot carry them apart);
- a field is ``name: value``; the client strips ONE space after the colon,
  so ``data: x`` carries ``x`` and a value starting with a space keeps it;
- ``event`` and ``id`` are single lines: a CR or LF would end the field and
  start another, so either raises :class:`InvalidEvent`; an ``id`` with NUL
  is ignored by clients (§9.2.6 "id"), so that raises too;
- ``retry`` is ASCII digits only (§9.2.6 "retry"): a non-negative int;
- a line starting with ``:`` is a comment; each line of a multi-line
  ``comment`` gets its own ``:`` (the same injection argument as ``data``);
- a blank line dispatches the event, so every frame ends with one. A frame
  with ``data=""`` dispatches an event with empty data; a frame without
  ``data`` only sets ``id``/``retry`` or carries a comment.

Roadrunner left headers to the handler; ``HEADERS`` holds the two every
stream wants (§9.2.4: ``text/event-stream``; ``no-cache`` so intermediaries
do not store a live stream).
"""

from __future__ import annotations

import re

__all__ = ["CONTENT_TYPE", "HEADERS", "InvalidEvent", "event", "keepalive"]

CONTENT_TYPE = "text/event-stream"
HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", CONTENT_TYPE),
    ("cache-control", "no-cache"),
)

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_KEEPALIVE = b":\n\n"


class InvalidEvent(ValueError):
    """``event`` refused an argument; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid SSE {field}: {reason}")
        self.field = field


def _utf8(field: str, value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise InvalidEvent(field, f"{value!r} is neither str nor bytes")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEvent(field, f"not encodable as UTF-8 ({exc.reason})")


def _single_line(field: str, value: str | bytes) -> bytes:
    raw = _utf8(field, value)
    # (find, not ``in``: CPython's bytes ``in`` first tries the needle as an int, ~50 ns)
    if raw.find(b"\r") >= 0 or raw.find(b"\n") >= 0:
        raise InvalidEvent(field, "contains CR or LF, which would start a new field")
    return raw


def event(
    data: str | bytes | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """One event frame: comment lines, ``event``, ``id``, ``retry``, ``data`` lines, blank line."""
    lines: list[bytes] = []
    if comment is not None:
        lines.extend(b":" + line for line in _LINE_BREAK.split(_utf8("comment", comment)))
    if event is not None:
        lines.append(b"event: " + _single_line("event", event))
    if id is not None:
        if isinstance(id, bool):
            raise InvalidEvent("id", f"{id!r} is not a str or int")
        raw_id = _single_line("id", str(id) if isinstance(id, int) else id)
        if raw_id.find(b"\x00") >= 0:
            raise InvalidEvent("id", "contains NUL, which makes clients ignore it")
        lines.append(b"id: " + raw_id)
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise InvalidEvent("retry", f"{retry!r} is not a non-negative int of milliseconds")
        lines.append(b"retry: %d" % retry)
    if data is not None:
        lines.extend(b"data: " + line for line in _LINE_BREAK.split(_utf8("data", data)))
    if not lines:
        raise InvalidEvent("event", "a frame needs at least one of data, event, id, retry, comment")
    lines.append(b"\n")
    return b"\n".join(lines)


def keepalive() -> bytes:
    """An empty comment frame: clients ignore it, proxies see traffic."""
    return _KEEPALIVE
