"""CORS middleware (WHATWG Fetch §3.2, "CORS protocol").

``cors.middleware(origins=..., **options)`` returns a middleware. Put it in
the listener's ``middlewares`` so that it also sees the router's 404 and 405
answers (a browser can only read those, and a preflight for a method the
route does not take, with the CORS headers on them); on a single route it
answers preflights only when the route accepts ``OPTIONS``.

What it owns: deciding whether an ``Origin`` may read a response, answering a
preflight (``OPTIONS`` with ``Access-Control-Request-Method``) by itself with
204 when the requested method and headers are allowed and 403 when not,
and adding ``access-control-*`` headers plus ``vary: origin`` (merged into
the handler's ``vary``) to actual responses.

What it must never do: send ``access-control-allow-origin: *`` together with
``access-control-allow-credentials`` (browsers refuse it, Fetch §3.2.5): with
credentials the request's origin is echoed, and ``origins="*"`` with
``allow_credentials=True`` is refused at construction — a credentialed "any
origin" is what a predicate that returns True spells, on purpose. It never
overrides an ``access-control-allow-origin`` the handler set itself.

Preflight bounds: at most ``MAX_REQUEST_HEADERS`` names in
``Access-Control-Request-Headers`` are considered; more is a rejection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from rr import response as resp
from rr.contrib import _fields

__all__ = ["MAX_REQUEST_HEADERS", "REFLECT", "Cors", "middleware"]

REFLECT = "reflect"
MAX_REQUEST_HEADERS = 64

# Fetch §2.2.1: methods a browser never preflights.
_SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
# An origin is scheme "://" host [":" port] (RFC 6454 §6.2), or the opaque "null".
_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.\-]*://(?:\[[0-9a-f:.]+\]|[a-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{1,5})?")


def _check_origin(value: object) -> str:
    if not isinstance(value, str) or (value != "null" and _ORIGIN_RE.fullmatch(value.lower()) is None):
        raise ValueError(f"invalid option 'origins': {value!r} is not an origin (scheme://host[:port], no path)")
    return value.lower()


class Cors:
    """The middleware ``cors.middleware`` builds; call it as ``mw(req, next, state)``."""

    def __init__(
        self,
        *,
        origins: str | Iterable[str] | Callable[[str], bool],
        allow_methods: Iterable[str] = ("GET", "HEAD", "POST"),
        allow_headers: str | Iterable[str] = (),
        expose_headers: Iterable[str] = (),
        allow_credentials: bool = False,
        max_age: int | None = 600,
    ) -> None:
        self.any_origin = origins == "*"
        self.predicate: Callable[[str], bool] | None = None
        self.allowed: frozenset[str] = frozenset()
        if self.any_origin:
            pass
        elif callable(origins):
            self.predicate = origins
        elif isinstance(origins, str) or not isinstance(origins, Iterable):
            raise ValueError(f"invalid option 'origins': \"*\", a list of origins or a predicate, got {origins!r}")
        else:
            self.allowed = frozenset(_check_origin(o) for o in origins)
        if not isinstance(allow_credentials, bool):
            raise ValueError(f"invalid option 'allow_credentials': a bool, got {allow_credentials!r}")
        if allow_credentials and self.any_origin:
            raise ValueError("invalid option 'origins': \"*\" cannot be combined with allow_credentials "
                             "(list the origins, or pass a predicate)")
        self.credentials = allow_credentials
        methods = tuple(m.upper() for m in _fields.check_tokens("allow_methods", allow_methods))
        self.methods = frozenset(methods)
        self.methods_value = ", ".join(dict.fromkeys(methods))
        self.reflect_headers = allow_headers == REFLECT
        if self.reflect_headers:
            self.allow_headers: frozenset[str] = frozenset()
        else:
            self.allow_headers = frozenset(h.lower() for h in _fields.check_tokens("allow_headers", allow_headers))
        expose = tuple(h.lower() for h in _fields.check_tokens("expose_headers", expose_headers))
        self.expose_value = ", ".join(dict.fromkeys(expose))
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0):
            raise ValueError(f"invalid option 'max_age': None or a non-negative int of seconds, got {max_age!r}")
        self.max_age = None if max_age is None else str(max_age)
        # The response depends on Origin unless every origin gets the same "*".
        self.varies = not self.any_origin

    def origin_allowed(self, origin: str) -> bool:
        if self.any_origin:
            return True
        if self.predicate is not None:
            return bool(self.predicate(origin))
        return origin.lower() in self.allowed

    def _allow_origin_value(self, origin: str) -> str:
        return "*" if self.any_origin else origin

    def __call__(self, req: Any, nxt: Callable[[Any], Any], state: Any = None) -> Any:
        origin = req.headers.get("origin")
        if req.method == "OPTIONS" and origin is not None:
            requested = req.headers.get("access-control-request-method")
            if requested is not None:
                return self._preflight(req, origin, requested)
        result = nxt(req)
        if isinstance(result, resp.WebSocket | resp.WebTransport):
            return result
        headers = _fields.headers_of(result)
        if self.varies:
            headers = _fields.merge_vary(headers, "origin")
        if origin is not None and not _fields.has_field(headers, "access-control-allow-origin") \
                and self.origin_allowed(origin):
            headers = [*headers, ("access-control-allow-origin", self._allow_origin_value(origin))]
            if self.credentials:
                headers.append(("access-control-allow-credentials", "true"))
            if self.expose_value:
                headers.append(("access-control-expose-headers", self.expose_value))
        if headers is result.headers:
            return result
        return replace(result, headers=headers)

    def _preflight(self, req: Any, origin: str, requested: str) -> resp.Response:
        vary = "origin, access-control-request-method, access-control-request-headers"
        rejected = resp.Response(403, [("content-type", "text/plain; charset=utf-8"), ("vary", vary)],
                                 b"CORS preflight rejected")
        if not self.origin_allowed(origin):
            return rejected
        method = requested.strip()
        if method not in _SAFELISTED_METHODS and method not in self.methods:
            return rejected
        # Split no further than one past the bound: a huge list costs no more than that.
        parts = (req.headers.get("access-control-request-headers") or "").split(",", MAX_REQUEST_HEADERS)
        if len(parts) > MAX_REQUEST_HEADERS:
            return rejected
        names = [p.strip().lower() for p in parts if p.strip()]
        if not self.reflect_headers and any(n not in self.allow_headers for n in names):
            return rejected
        if self.reflect_headers and not all(map(_fields.is_token, names)):
            return rejected
        headers = [("access-control-allow-origin", self._allow_origin_value(origin))]
        if self.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        headers.append(("access-control-allow-methods", self.methods_value or method))
        if names:
            headers.append(("access-control-allow-headers", ", ".join(names)))
        if self.max_age is not None:
            headers.append(("access-control-max-age", self.max_age))
        headers.append(("vary", vary))
        return resp.Response(204, headers, b"")


def middleware(**options: Any) -> Cors:
    """A CORS middleware; every option is checked now (``ValueError`` names a bad one).

    ``origins`` (required): ``"*"``, a list of origins (``"https://app.example"``)
    or a predicate ``fn(origin) -> bool``. ``allow_methods`` (default GET, HEAD,
    POST), ``allow_headers`` (a list, or ``cors.REFLECT`` to allow whatever a
    preflight asks for), ``expose_headers``, ``allow_credentials`` (default
    False), ``max_age`` (seconds a browser may cache a preflight, default 600;
    None omits it).
    """
    return Cors(**options)
