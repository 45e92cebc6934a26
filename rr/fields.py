"""Request field sections as HTTP/2 and HTTP/3 carry them: one validation for both.

What it is: the rules RFC 9113 §8 and RFC 9114 §4.2-4.3 share for a decoded
request field section (pseudo-header fields first, lowercase token names, no
connection-specific fields, ``te: trailers`` only, one ``content-length``,
``:authority`` agreeing with ``host``, cookie crumbs joined) and for request
trailers. The h2 machine and the h3 connection both call ``validate_request``
on what their header decoder (HPACK, QPACK) produced, so a request is judged
the same on both.

What it must never do: decode or encode a header block, or know a protocol's
framing; it sees ``(name, value)`` byte pairs and raises only ``Malformed``.
"""

from __future__ import annotations

from typing import Any

from rr.http1.codec import valid_host


class Malformed(Exception):
    """A malformed request (RFC 9113 §8.1.1, RFC 9114 §4.1.2): a stream error (h2 PROTOCOL_ERROR,
    h3 H3_MESSAGE_ERROR)."""


_REQUEST_PSEUDO = frozenset({":method", ":scheme", ":authority", ":path", ":protocol"})
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                  "upgrade"})
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_BAD_VALUE = ("\r", "\n", "\0")
_METHOD = TOKEN | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def field_list_size(fields: Any) -> int:
    """RFC 9113 §6.5.2: the sum of name + value lengths plus 32 per field."""
    return sum(len(n) + len(v) + 32 for n, v in fields)


def validate_request(decoded: list[Any], connect_protocol: bool = False
                     ) -> tuple[dict[str, str], list[tuple[str, str]], int | None]:
    """Split a decoded request header list into (pseudo, fields, content_length).

    ``decoded`` holds ``(bytes, bytes)`` pairs. Raises ``Malformed`` for anything
    §8.1.1/§8.2/§8.3 calls malformed. Cookie crumbs are joined with ``"; "``
    (§8.2.3); ``:authority`` becomes ``host`` when the client sent none.
    """
    pseudo: dict[str, str] = {}
    fields: list[tuple[str, str]] = []
    cookies: list[str] = []
    regular = False
    length: int | None = None
    for raw_name, raw_value in decoded:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name[:1] == ":":
            if regular:
                raise Malformed("pseudo-header after a regular field")
            if name not in _REQUEST_PSEUDO or name in pseudo:
                raise Malformed(f"unknown or repeated pseudo-header {name}")
            # §8.2.1: no field value, pseudo-headers included, may hold CR, LF or NUL
            # (:authority becomes the request's host; found by tools/fuzz, h2_hpack).
            if any(c in value for c in _BAD_VALUE):
                raise Malformed(f"invalid value of {name}")
            pseudo[name] = value
            continue
        regular = True
        if not name or not TOKEN.issuperset(name):
            raise Malformed(f"invalid field name {name!r}")
        if name in _CONNECTION_SPECIFIC:
            raise Malformed(f"connection-specific field {name}")
        if value and (value[0] in " \t" or value[-1] in " \t" or any(c in value for c in _BAD_VALUE)):
            raise Malformed(f"invalid value of {name}")
        if name == "te" and value != "trailers":
            raise Malformed("te other than trailers")
        if name == "cookie":
            cookies.append(value)
            continue
        if name == "content-length":
            if not value.isdigit() or not value.isascii():
                raise Malformed("invalid content-length")
            n = int(value)
            if length is not None and n != length:
                raise Malformed("conflicting content-length")
            length = n
        fields.append((name, value))
    method = pseudo.get(":method")
    if not method:
        raise Malformed("no :method")
    if not _METHOD.issuperset(method):
        raise Malformed("a :method that is not a token")  # RFC 9110 §9.1: method = token
    if ":protocol" in pseudo and (not connect_protocol or method != "CONNECT"):
        raise Malformed(":protocol outside an extended CONNECT")
    if method == "CONNECT" and ":protocol" not in pseudo:
        if ":scheme" in pseudo or ":path" in pseudo or not pseudo.get(":authority"):
            raise Malformed("CONNECT with :scheme/:path or without :authority")
    else:
        path = pseudo.get(":path")
        if not path or ":scheme" not in pseudo:
            raise Malformed("missing :path or :scheme")
        if path[0] != "/" and not (path == "*" and method == "OPTIONS"):
            raise Malformed("invalid :path")
    authority = pseudo.get(":authority")
    if authority is not None:
        # The request's host on every protocol: the Host grammar h1 holds Host to (RFC 9113
        # §8.3.1: no userinfo; RFC 3986 §3.2.2 reg-name / IP-literal, §3.2.3 port).
        if not valid_host(authority):
            raise Malformed("invalid :authority")
        host = next((v for n, v in fields if n == "host"), None)
        if host is None:
            fields.insert(0, ("host", authority))
        elif host != authority:
            raise Malformed("host differs from :authority")
    else:
        host = next((v for n, v in fields if n == "host"), None)
        if host is not None and not valid_host(host):
            raise Malformed("invalid host")  # without :authority, host is the request's host
    if cookies:
        fields.append(("cookie", "; ".join(cookies)))
    return pseudo, fields, length


def validate_trailers(decoded: list[Any]) -> list[tuple[str, str]]:
    """Request trailers: no pseudo-headers, the same name/value rules (§8.1)."""
    out = []
    for raw_name, raw_value in decoded:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if not name or not TOKEN.issuperset(name) or name in _CONNECTION_SPECIFIC:
            raise Malformed(f"invalid trailer {name!r}")
        if any(c in value for c in _BAD_VALUE):
            raise Malformed(f"invalid value of trailer {name}")
        out.append((name, value))
    return out
