"""Security response headers middleware: nosniff, frame options, referrer policy, HSTS, CSP.

``security_headers.middleware(**options)`` returns a middleware that adds the
headers below to every response (any shape but ``WebSocket``). Each option is
the header's value; ``None`` leaves the header out.

==========================  ==========================================  =================================
option                      header                                      default
==========================  ==========================================  =================================
``content_type_options``    ``x-content-type-options``                  ``nosniff``
``frame_options``           ``x-frame-options``                         ``DENY``
``referrer_policy``         ``referrer-policy``                         ``strict-origin-when-cross-origin``
``hsts``                    ``strict-transport-security`` (https only)  ``max-age=31536000``
``csp``                     ``content-security-policy``                 ``None`` (opt-in)
``csp_report_only``         ``content-security-policy-report-only``     ``None`` (opt-in)
==========================  ==========================================  =================================

What it owns: those six headers, checked once at construction (a CR, LF, NUL
or a value the header's grammar refuses is a ``ValueError`` naming the option).

What it must never do: replace a header the handler set (the handler knows
better, e.g. a page that must be framed), or send HSTS over plain HTTP (RFC
6797 §7.2: a UA ignores it there, and it would advertise a promise the
listener cannot keep). ``includeSubDomains`` and ``preload`` are not in the
default: they bind every subdomain, which only the deployer can promise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rr import response as resp
from rr.contrib import _fields

__all__ = ["SecurityHeaders", "middleware"]

# W3C Referrer Policy §3: the policy tokens; a comma list lets old browsers fall back.
_REFERRER_POLICIES = frozenset({
    "no-referrer", "no-referrer-when-downgrade", "same-origin", "origin", "strict-origin",
    "origin-when-cross-origin", "strict-origin-when-cross-origin", "unsafe-url",
})  # fmt: skip
# RFC 6797 §6.1: max-age is required; includeSubDomains and preload are the other directives seen.
_HSTS_RE = re.compile(r"max-age=(?:[0-9]+|\"[0-9]+\")(?:\s*;\s*(?:includesubdomains|preload))*", re.IGNORECASE)


class SecurityHeaders:
    """The middleware ``security_headers.middleware`` builds; call it as ``mw(req, next, state)``."""

    def __init__(
        self,
        *,
        content_type_options: str | None = "nosniff",
        frame_options: str | None = "DENY",
        referrer_policy: str | None = "strict-origin-when-cross-origin",
        hsts: str | None = "max-age=31536000",
        csp: str | None = None,
        csp_report_only: str | None = None,
    ) -> None:
        def value(option: str, given: str | None) -> str | None:
            return None if given is None else _fields.check_value(option, given)

        content_type_options = value("content_type_options", content_type_options)
        if content_type_options is not None and content_type_options.lower() != "nosniff":
            raise ValueError(f"invalid option 'content_type_options': only 'nosniff' exists, got {content_type_options!r}")
        frame_options = value("frame_options", frame_options)
        if frame_options is not None and frame_options.upper() not in ("DENY", "SAMEORIGIN"):
            raise ValueError(f"invalid option 'frame_options': 'DENY' or 'SAMEORIGIN', got {frame_options!r}")
        referrer_policy = value("referrer_policy", referrer_policy)
        if referrer_policy is not None and not all(
            p in _REFERRER_POLICIES for p in _fields.list_members(referrer_policy)
        ):
            raise ValueError(f"invalid option 'referrer_policy': {referrer_policy!r} is not a list of "
                             f"policies ({', '.join(sorted(_REFERRER_POLICIES))})")
        hsts = value("hsts", hsts)
        if hsts is not None and _HSTS_RE.fullmatch(hsts.strip()) is None:
            raise ValueError(f"invalid option 'hsts': {hsts!r} is not 'max-age=N[; includeSubDomains][; preload]'")
        csp = value("csp", csp)
        csp_report_only = value("csp_report_only", csp_report_only)
        always = (
            ("x-content-type-options", content_type_options),
            ("x-frame-options", frame_options),
            ("referrer-policy", referrer_policy),
            ("content-security-policy", csp),
            ("content-security-policy-report-only", csp_report_only),
        )
        self.plain: tuple[tuple[str, str], ...] = tuple((n, v) for n, v in always if v is not None)
        self.tls: tuple[tuple[str, str], ...] = self.plain + (
            (("strict-transport-security", hsts),) if hsts is not None else ()
        )

    def __call__(self, req: Any, nxt: Callable[[Any], Any], state: Any = None) -> Any:
        result = nxt(req)
        if isinstance(result, resp.WebSocket | resp.WebTransport):
            return result
        wanted = self.tls if req.scheme == "https" else self.plain
        headers = _fields.headers_of(result)
        present = {name for name, _ in headers}
        extra = [(n, v) for n, v in wanted if n not in present]
        if not extra:
            return result
        return replace(result, headers=[*headers, *extra])


def middleware(**options: Any) -> SecurityHeaders:
    """A security-headers middleware; every value is checked now (``ValueError`` names a bad one)."""
    return SecurityHeaders(**options)
