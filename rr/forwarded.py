"""Who the client is behind proxies rr trusts: trusted address sets, and the
forwarding headers (``Forwarded``, RFC 7239; ``X-Forwarded-For/-Proto/-Host``)
applied to a request.

What it owns: ``Trusted`` (a set of networks, or everyone, as the listener
options ``forwarded_allow_ips`` and ``proxy_protocol.trusted`` give it; an
IPv4 peer on a dual-stack socket, ``::ffff:a.b.c.d``, is matched as the IPv4
address) and ``apply(req, trusted)``, which rewrites ``req.peer``,
``req.scheme`` and ``req.host`` from the headers — only when the immediate
peer is trusted. ``rr.exchange`` calls it once per request, on every
protocol, before anything (telemetry, access log, middlewares such as
``rr.contrib.rate_limit``) looks at the peer.

What it must never do: believe a header from an untrusted peer, touch a
socket, or fail a request: a header it cannot read leaves the request as it
was from that hop on.

The client address: the ``for=`` list (``Forwarded`` elements, or the
comma-separated ``X-Forwarded-For`` entries when no ``Forwarded`` field is
present) is walked from the right, nearest hop first. A trusted address is a
proxy of ours: keep walking; the first untrusted address is the client (the
"rightmost untrusted" rule: everything left of it was written by the client
itself and proves nothing). A hop that is not an address (``unknown``, an
obfuscated ``_name``, a malformed element) ends the walk at the last address
read; when every hop is trusted, the leftmost is the client.

Scheme and host: from ``Forwarded``, the ``proto=``/``host=`` of the element
that named the client (written by the proxy that received the client's
connection); from ``X-Forwarded-Proto``/``-Host``, the rightmost value (the
one our trusted peer passed on). ``proto`` must be ``http`` or ``https``
(``ws``/``wss`` are taken as ``http``/``https``); ``host`` must be a plain
``host[:port]``. Anything else is ignored. When ``Forwarded`` is present
the ``X-Forwarded-*`` fields are not read at all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
# host = IP-literal / IPv4address / reg-name, then [ ":" port ] (RFC 3986 §3.2.2): no
# userinfo, path, query, fragment, space or control character.
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%")
_HOST_MAX = 255 + 6


@dataclass(frozen=True, slots=True)
class Trusted:
    """A set of trusted networks (or everyone): ``"10.1.2.3" in trusted``."""

    networks: tuple[_Network, ...] = ()
    everyone: bool = False

    @classmethod
    def parse(cls, raw: Any) -> Trusted:
        """From a list of addresses / CIDRs (or a comma-separated string); ``"*"`` trusts everyone.

        Raises ``ValueError`` naming the entry that is not an address or network.
        """
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not items:
            raise ValueError("a non-empty list of IP addresses or CIDR networks, or '*'")
        networks: list[_Network] = []
        everyone = False
        for item in items:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not an IP address or CIDR network")
            text = item.strip()
            if text == "*":
                everyone = True
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return cls(tuple(networks), everyone)

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        address = ip(host)
        return address is not None and any(address in net for net in self.networks)


def ip(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address (an IPv4-mapped IPv6 address as its IPv4 one; a scope id dropped)."""
    if not isinstance(host, str):
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def apply(req: Any, trusted: Trusted) -> None:
    """Rewrite ``req.peer``/``scheme``/``host`` from forwarding headers if the peer is trusted."""
    peer = req.peer
    if not peer or peer[0] not in trusted:
        return
    headers = req.headers
    forwarded = headers.get_all("forwarded")
    if forwarded:
        elements = [element for line in forwarded for element in _split(line, ",")]
        chosen = _walk([_pairs(element) for element in elements], trusted)
        if chosen is None:
            return
        client, pairs = chosen
        req.peer = client
        _set_scheme(req, pairs.get("proto"))
        _set_host(req, pairs.get("host"))
        return
    hops = [entry.strip() for line in headers.get_all("x-forwarded-for") for entry in line.split(",")]
    found = _walk([{"for": hop} for hop in hops], trusted) if hops else None
    if found is not None:
        req.peer = found[0]
    _set_scheme(req, _rightmost(headers.get_all("x-forwarded-proto")))
    _set_host(req, _rightmost(headers.get_all("x-forwarded-host")))


def _walk(elements: list[dict[str, str] | None], trusted: Trusted) -> tuple[tuple[str, int], dict[str, str]] | None:
    """The rightmost untrusted ``for=`` (or the last one read) and its element's pairs."""
    chosen: tuple[tuple[str, int], dict[str, str]] | None = None
    for pairs in reversed(elements):
        node = _node(pairs.get("for")) if pairs is not None else None
        if node is None or pairs is None:
            break
        chosen = node, pairs
        if node[0] not in trusted:
            break
    return chosen


def _node(value: str | None) -> tuple[str, int] | None:
    """A ``for=`` node (RFC 7239 §6) or an X-Forwarded-For entry as ``(ip, port)``; None if not an address."""
    if not value:
        return None
    host, port = value, "0"
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or "0"
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    if not port.isdigit() or len(port) > 5 or int(port) > 65535:
        return None
    address = ip(host)
    if address is None or "%" in host:
        return None
    return str(address), int(port)


def _pairs(element: str) -> dict[str, str] | None:
    """One ``Forwarded`` element's ``name=value`` pairs (names lowercased); None if malformed."""
    pairs: dict[str, str] = {}
    for pair in _split(element, ";"):
        name, sep, value = pair.strip().partition("=")
        name = name.strip().lower()
        if not sep or not name or name in pairs:
            return None
        value = value.strip()
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                return None
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        pairs[name] = value
    return pairs


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside quoted strings (empty pieces dropped)."""
    out: list[str] = []
    start = 0
    quoted = escaped = False
    for at, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            out.append(text[start:at])
            start = at + 1
    out.append(text[start:])
    if quoted:  # an unterminated quote must not swallow the elements after it (our proxy's)
        out = text.split(sep)
    return [piece for piece in out if piece.strip()]


def _rightmost(lines: list[str]) -> str | None:
    values = [v.strip() for line in lines for v in line.split(",") if v.strip()]
    return values[-1] if values else None


def _set_scheme(req: Any, value: str | None) -> None:
    scheme = _SCHEMES.get((value or "").lower())
    if scheme is not None:
        req.scheme = scheme


def _set_host(req: Any, value: str | None) -> None:
    if value and len(value) <= _HOST_MAX and _HOST_CHARS.issuperset(value):
        req.host = value
