"""Newline-delimited JSON framing (``application/x-ndjson``).

What it is: the encoder for streams of JSON documents, one per line — the
JSON sibling of :mod:`rr.contrib.sse`, for streaming list endpoints and
token-by-token responses (the roadmap's "NDJSON streaming response builder").

What it owns: the one rule that makes the format work — each document is a
single line, terminated by exactly one LF (ndjson spec 1.0 §3; JSON Lines
says the same) — and the JSON settings that keep it so.

What it must never do: emit a raw LF or CR inside a document, emit anything
that is not JSON (``NaN`` and ``Infinity`` are refused, RFC 8259 §6 has no
such numbers), or do I/O.

Why a document cannot contain a raw newline: RFC 8259 §7 requires control
characters inside strings to be escaped, and ``json.dumps`` always escapes
them (``\\n``, ``\\r``, ``\\u2028`` is legal raw JSON and is not a line
break for ndjson readers, which split on LF). The only other place
``json.dumps`` writes a newline is ``indent``, which is never set; the
separators ``(",", ":")`` make the line compact. The test suite asserts the
no-newline property over generated documents.

The output is UTF-8 (RFC 8259 §8.1) with non-ASCII characters kept raw
(``ensure_ascii=False``: smaller than ``\\uXXXX`` escapes). A ``str`` holding
a lone surrogate cannot be UTF-8: ``UnicodeEncodeError`` (a ``ValueError``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["CONTENT_TYPE", "frame", "frames"]

CONTENT_TYPE = "application/x-ndjson"


def frame(obj: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """``obj`` as one compact JSON document followed by ``b"\\n"``.

    ``default`` is ``json.dumps``'s hook for objects it cannot serialise.
    Raises ``TypeError`` for such objects without a hook, ``ValueError`` for
    NaN/Infinity and for text that is not valid Unicode.
    """
    text = json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
    )
    return text.encode("utf-8") + b"\n"


def frames(
    iterable: Iterable[Any], *, default: Callable[[Any], Any] | None = None
) -> Iterator[bytes]:
    """One ``frame`` per item, lazily: pass it to a streaming response as it is produced."""
    for obj in iterable:
        yield frame(obj, default=default)
