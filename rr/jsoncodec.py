"""JSON for rr's helpers (``resp.json``, ``resp.ndjson``, ``Request.json``): one set of rules.

What it owns: the bytes a JSON response carries and how a request body is
parsed. Output rules, the same whichever encoder runs: compact separators
(``,`` and ``:``), UTF-8 text (nothing escaped as ``\\uXXXX`` that UTF-8 can
carry), and no ``NaN``/``Infinity`` (not JSON: ``ValueError``). Input: the
stdlib's ``json.loads`` rules; an invalid body raises ``ValueError``.

When ``orjson`` is importable (the ``speed`` extra) it is the fast path and
the stdlib the reference: anything orjson handles differently is handed to
the stdlib, so the result is the stdlib's — values orjson would not refuse
but the stdlib treats otherwise (subclasses of str/int/dict/list such as
``IntEnum``, dataclasses, datetimes, non-str dict keys, integers beyond 64
bits; on input, a body with a run of 19 or more digits, which orjson could
read as a float) fall back, and so does any output containing ``null``, because orjson
writes ``null`` for ``NaN`` where the rule is to refuse it. Known remaining
differences under orjson: some floats are written in another notation that
decodes to the same number (``1e-7`` for the stdlib's ``1e-07``, ``0.00001``
for ``1e-05``); and orjson also encodes ``enum.Enum`` members and
``uuid.UUID`` values, which the stdlib refuses (``TypeError``).

What it must never do: emit bytes that differ in meaning between the two
paths, or import orjson anywhere else.
"""

from __future__ import annotations

import json as _json
import re
from typing import Any

_stdlib_encode = _json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_stdlib_loads = _json.loads


def encode_stdlib(obj: Any) -> bytes:
    """The reference encoder (also the fallback)."""
    return _stdlib_encode(obj).encode()


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by the tests with orjson hidden
    _orjson = None  # type: ignore[assignment]


def _refuse(obj: Any) -> Any:
    raise TypeError


if _orjson is not None:
    _dumps = _orjson.dumps
    _loads = _orjson.loads
    _OPTIONS = (_orjson.OPT_PASSTHROUGH_SUBCLASS | _orjson.OPT_PASSTHROUGH_DATACLASS
                | _orjson.OPT_PASSTHROUGH_DATETIME)
    _EncodeError = _orjson.JSONEncodeError
    _DecodeError = _orjson.JSONDecodeError
    # orjson reads an integer outside 64 bits as a float, the stdlib exactly.
    _LONG_DIGITS = re.compile(rb"[0-9]{19}").search

    def encode(obj: Any) -> bytes:
        """``obj`` as compact UTF-8 JSON bytes (``ValueError`` for NaN/Infinity)."""
        try:
            out: bytes = _dumps(obj, _refuse, _OPTIONS)
        except _EncodeError:
            return encode_stdlib(obj)
        # (find, not ``in``: CPython's bytes ``in`` first tries the needle as an int, ~50 ns)
        if out.find(b"null") >= 0:  # maybe a NaN orjson wrote as null: the stdlib decides
            return encode_stdlib(obj)
        return out

    def loads(data: bytes) -> Any:
        """Parse a JSON document (``ValueError`` when it is not valid JSON)."""
        if _LONG_DIGITS(data) is not None:  # maybe an integer orjson would turn into a float
            return _stdlib_loads(data)
        try:
            return _loads(data)
        except _DecodeError:
            return _stdlib_loads(data)

else:
    encode = encode_stdlib
    loads = _stdlib_loads

FAST = _orjson is not None
