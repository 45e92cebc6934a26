"""Header-field helpers shared by the edge middlewares (compress, cors, security_headers, etag, rate_limit).

What it owns: checking a configured header name or value once, when a
middleware is built (so a bad option is a ``ValueError`` naming it, never a
split header at request time), and the small list edits every edge
middleware makes on a response's header list (merge a ``vary`` token, drop
fields).

What it must never do: run per-request validation of the handler's own
headers (the protocol layer does that where it encodes), or touch sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rr import response as resp

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: field-value is visible ASCII, SP, HTAB and obs-text; a CR, LF or NUL
# (or any other control) would end the field early or be refused by a peer.
_FIELD_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def is_token(value: str) -> bool:
    return _TOKEN_RE.fullmatch(value) is not None


def check_token(option: str, value: object) -> str:
    """``value`` as an RFC 9110 token (a field name, a method, a coding), or ``ValueError`` naming ``option``."""
    if not isinstance(value, str) or _TOKEN_RE.fullmatch(value) is None:
        raise ValueError(f"invalid option {option!r}: {value!r} is not an HTTP token")
    return value


def check_value(option: str, value: object) -> str:
    """``value`` as a field value free of CR, LF, NUL and other controls, or ``ValueError`` naming ``option``."""
    if not isinstance(value, str):
        raise ValueError(f"invalid option {option!r}: {value!r} is not a str")
    if _FIELD_VALUE_RE.fullmatch(value) is None:
        raise ValueError(f"invalid option {option!r}: {value!r} contains CR, LF, NUL or another control character")
    if value != value.strip(" \t"):
        raise ValueError(f"invalid option {option!r}: {value!r} has leading or trailing whitespace")
    return value


def check_tokens(option: str, values: object) -> tuple[str, ...]:
    """A list of tokens (a str is refused: ``"GET"`` is not ``["G", "E", "T"]``)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValueError(f"invalid option {option!r}: a list of tokens, got {values!r}")
    return tuple(check_token(option, v) for v in values)


def list_members(value: str | None) -> list[str]:
    """The lowercased members of a comma-separated list field (RFC 9110 §5.6.1)."""
    if not value:
        return []
    return [m.strip().lower() for m in value.split(",") if m.strip()]


def merge_vary(headers: list[tuple[str, str]], token: str) -> list[tuple[str, str]]:
    """``headers`` with ``token`` in ``vary``: added to an existing field, never replacing it.

    A ``vary: *`` already says everything; a token already present is not repeated.
    """
    for i, (name, value) in enumerate(headers):
        if name == "vary":
            members = list_members(value)
            if "*" in members or token in members:
                return headers
            out = list(headers)
            out[i] = ("vary", f"{value}, {token}" if value.strip() else token)
            return out
    return [*headers, ("vary", token)]


def has_field(headers: list[tuple[str, str]], name: str) -> bool:
    return any(k == name for k, _ in headers)


def without(headers: list[tuple[str, str]], names: frozenset[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k not in names]


def headers_of(result: resp.Shape) -> list[tuple[str, str]]:
    """The header list of any shape but ``WebSocket`` (which has none)."""
    assert not isinstance(result, resp.WebSocket | resp.WebTransport)
    return resp.header_list(result.headers)
