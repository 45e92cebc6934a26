"""ETag and conditional-request middleware for buffered responses (RFC 9110 §8.8.3, §13).

``etag.middleware(**options)`` returns a middleware that gives every ``200``
``Response`` an entity tag — the handler's own ``etag`` when it set one, else a
weak one hashed from the body — and answers the preconditions with it:

- ``If-None-Match`` on ``GET``/``HEAD`` that matches (weak comparison, or
  ``*``) → ``304`` carrying the 200's ``etag``, ``vary``, ``cache-control``,
  ``content-location`` and ``expires`` only (RFC 9110 §15.4.5);
- ``If-Match`` on ``GET``/``HEAD`` that does not match (strong comparison,
  §13.1.1) → ``412``.

Unsafe methods (anything but GET, HEAD, OPTIONS, TRACE) must be refused
*before* the handler changes anything, when the body it would answer with
does not exist yet. So they are checked only with a ``current`` function,
``current(req) -> str | None`` (the target's current ETag, ``None`` when it
has none, e.g. from a version column; ``etag.of(body)`` computes the same tag
this middleware gives a body): ``If-Match`` that does not match, or
``If-None-Match`` that does, → ``412`` without calling the handler (§13.2.2).

What it owns: hashing a buffered body, comparing entity tags, building the
304/412 answers.

What it must never do: buffer a streaming shape (``Stream``, ``Loop``,
``Sendfile`` — static files carry their own validators), or turn anything but
a 200 into a 304.

Order with ``compress``: list ``compress`` first (outer) and ``etag`` after
it. The tag is then the identity body's, shared by the coded variants as a
weak tag may be (RFC 9110 §8.8.1; compress weakens a strong tag it codes), a
304 costs no compression, and a conditional request gets the same status
whatever it accepts. The other order tags each coded variant apart, so an
``If-None-Match`` from one variant answers 200 to a client accepting another
(REDbot warns about exactly that).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from rr import response as resp
from rr.contrib import _fields

__all__ = ["ETag", "matches_strong", "matches_weak", "middleware", "of"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_304_FIELDS = frozenset({"etag", "vary", "cache-control", "content-location", "expires"})
# An If-None-Match/If-Match list longer than this is a client's mistake or an attack: the
# comparison stops there (unmatched), so a 100 KB header costs no more than 64 tags.
MAX_TAGS = 64


def of(body: bytes, weak: bool = True) -> str:
    """The entity tag this middleware gives ``body``: 128 bits of BLAKE2b, hex, quoted."""
    tag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    return "W/" + tag if weak else tag


def _tags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",", MAX_TAGS)[:MAX_TAGS] if t.strip()]


def matches_weak(header: str, etag: str) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison of ``etag`` against an If-None-Match list (``*`` matches)."""
    opaque = etag.removeprefix("W/")
    return any(t == "*" or t.removeprefix("W/") == opaque for t in _tags(header))


def matches_strong(header: str, etag: str | None) -> bool:
    """Strong comparison for If-Match: ``*`` matches any current tag; weak tags never match."""
    if etag is None:
        return False
    return any(t == "*" or (t == etag and not etag.startswith("W/")) for t in _tags(header))


class ETag:
    """The middleware ``etag.middleware`` builds; call it as ``mw(req, next, state)``."""

    def __init__(self, *, weak: bool = True, current: Callable[[Any], str | None] | None = None) -> None:
        if not isinstance(weak, bool):
            raise ValueError(f"invalid option 'weak': a bool, got {weak!r}")
        if current is not None and not callable(current):
            raise ValueError(f"invalid option 'current': a function (req) -> str | None, got {current!r}")
        self.weak = weak
        self.current = current

    def __call__(self, req: Any, nxt: Callable[[Any], Any], state: Any = None) -> Any:
        method = req.method
        if method not in _SAFE:
            refused = self._unsafe_precondition(req)
            return refused if refused is not None else nxt(req)
        result = nxt(req)
        if not isinstance(result, resp.Response) or result.status != 200 or method not in ("GET", "HEAD"):
            return result
        headers = _fields.headers_of(result)
        tag = resp.get_header(result, "etag")
        if tag is None:
            if method == "HEAD" and not result.body:
                return result  # a HEAD answered without its body: nothing to hash
            tag = of(result.body, self.weak)
            headers = [*headers, ("etag", tag)]
        if_match = req.headers.get("if-match")
        if if_match is not None and not matches_strong(if_match, tag):
            return _precondition_failed()
        if_none_match = req.headers.get("if-none-match")
        if if_none_match is not None and matches_weak(if_none_match, tag):
            return resp.Response(304, [(n, v) for n, v in headers if n in _304_FIELDS], b"")
        if headers is result.headers:
            return result
        return resp.Response(result.status, headers, result.body)

    def _unsafe_precondition(self, req: Any) -> resp.Response | None:
        if self.current is None:
            return None
        if_match = req.headers.get("if-match")
        if_none_match = req.headers.get("if-none-match")
        if if_match is None and if_none_match is None:
            return None
        tag = self.current(req)
        if if_match is not None and not matches_strong(if_match, tag):
            return _precondition_failed()
        if if_none_match is not None and tag is not None and matches_weak(if_none_match, tag):
            return _precondition_failed()
        return None


def _precondition_failed() -> resp.Response:
    return resp.text(412, "Precondition Failed")


def middleware(**options: Any) -> ETag:
    """An ETag middleware: ``weak`` (default True), ``current`` (for unsafe methods, see the module doc)."""
    return ETag(**options)
