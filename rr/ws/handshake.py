"""The WebSocket opening handshake: validate a request, compute the answer.

What it owns: the checks of RFC 6455 §4.2.1 on an HTTP/1.1 upgrade request
(``GET``, ``Upgrade: websocket``, an ``upgrade`` token in ``Connection``,
``Sec-WebSocket-Key`` of 16 base64 bytes, ``Sec-WebSocket-Version: 13``), the
``Sec-WebSocket-Accept`` value, subprotocol choice (the handler's
``subprotocols``, in the server's order of preference) and the
permessage-deflate negotiation (RFC 7692). ``answer`` returns either an
``Accepted`` (the response fields and the extensions the session runs) or a
``resp.Response`` to send instead (400 with a reason, 426 with
``Sec-WebSocket-Version: 13``).

The negotiation half (``negotiate``) knows nothing of HTTP/1.1. An extended
CONNECT (RFC 8441 on h2, RFC 9220 on h3 once it lands) reaches ``answer`` as
a GET whose ``req.private["rr.protocol"]`` is ``"websocket"`` (the conn
checked ``:method CONNECT``, ``:scheme``, ``:path``): ``answer_connect``
checks ``Sec-WebSocket-Version: 13`` only (no key, no accept value) and
negotiates the same way; the answer is a 200 without ``connection`` or
``upgrade``. On h2 the ``upgrade`` field of a 426 is dropped by the exchange
(connection-specific, RFC 9113 §8.2.2); ``Sec-WebSocket-Version`` stays.

What it must never do: touch a socket or send anything. The protocol's sink
sends the 101 (h1) or 200 without END_STREAM (h2, h3) with ``Accepted.fields``.

Choice: the ``WebSocket`` shape returned for a request that is not a
WebSocket upgrade at all (no ``Upgrade: websocket``) is answered **426
Upgrade Required** with ``Upgrade: websocket`` and
``Sec-WebSocket-Version: 13`` (RFC 9110 §15.5.22: the resource needs another
protocol); a request that tries and gets it wrong is answered 400 with the
reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

from rr import response as resp
from rr.config import WsOptions
from rr.request import Request

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT = ("content-type", "text/plain; charset=utf-8")
_WS_FIELDS = ("sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol",
              "sec-websocket-extensions")


@dataclass(slots=True)
class Accepted:
    """A handshake rr accepts: the answer's fields and what the session runs with."""

    fields: list[tuple[str, str]]
    subprotocol: str | None = None
    extensions: list[Any] = field(default_factory=list)


def accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def bad_request(reason: str) -> resp.Response:
    return resp.Response(400, [_TEXT], f"Bad WebSocket handshake: {reason}\n".encode())


def upgrade_required(reason: str) -> resp.Response:
    return resp.Response(426, [_TEXT, ("upgrade", "websocket"), ("sec-websocket-version", "13")],
                         f"Upgrade Required: {reason}\n".encode())


def _tokens(req: Request, name: str) -> set[str]:
    return {t.strip().lower() for v in req.headers.get_all(name) for t in v.split(",") if t.strip()}


def answer(req: Request, handler: Any, options: WsOptions) -> Accepted | resp.Response:
    """Validate an HTTP/1.1 upgrade request (or an extended CONNECT); the answer's fields, or
    the error answer."""
    if req.private.get("rr.protocol") == "websocket":
        return answer_connect(req, handler, options)
    if "websocket" not in _tokens(req, "upgrade"):
        return upgrade_required("this resource is a WebSocket endpoint")
    if req.method != "GET":
        return bad_request(f"the method must be GET, not {req.method}")
    if req.version != "HTTP/1.1":
        return bad_request(f"a WebSocket upgrade needs HTTP/1.1, not {req.version}")
    if "upgrade" not in _tokens(req, "connection"):
        return bad_request("Connection does not list upgrade")
    if (req.headers.get("content-length") or "0").strip() != "0" or "transfer-encoding" in req.headers:
        return bad_request("the handshake request carries a body")
    versions = req.headers.get_all("sec-websocket-version")
    if len(versions) != 1:
        return upgrade_required("exactly one Sec-WebSocket-Version is needed")
    if versions[0].strip() != "13":
        return upgrade_required(f"Sec-WebSocket-Version {versions[0].strip()!r} is not supported")
    keys = req.headers.get_all("sec-websocket-key")
    if len(keys) != 1:
        return bad_request("exactly one Sec-WebSocket-Key is needed")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return bad_request("Sec-WebSocket-Key is not base64")
    if len(raw) != 16:
        return bad_request("Sec-WebSocket-Key must be 16 bytes, base64-encoded")
    accepted = negotiate(req, handler, options)
    accepted.fields[:0] = [("upgrade", "websocket"), ("connection", "Upgrade"),
                           ("sec-websocket-accept", accept_value(key))]
    return accepted


def answer_connect(req: Request, handler: Any, options: WsOptions) -> Accepted | resp.Response:
    """An extended CONNECT with ``:protocol: websocket`` (RFC 8441 on h2; RFC 9220 on h3).

    The conn already checked the pseudo-fields and routed it as a GET of ``:path``. Only
    ``Sec-WebSocket-Version: 13`` is checked here: no key, no accept value, no
    ``connection``/``upgrade`` fields; the answer is a 200 that leaves the stream open.
    """
    versions = req.headers.get_all("sec-websocket-version")
    if len(versions) != 1:
        return upgrade_required("exactly one Sec-WebSocket-Version is needed")
    if versions[0].strip() != "13":
        return upgrade_required(f"Sec-WebSocket-Version {versions[0].strip()!r} is not supported")
    if (req.headers.get("content-length") or "0").strip() != "0":
        return bad_request("the extended CONNECT declares a body length")
    return negotiate(req, handler, options)


def negotiate(req: Request, handler: Any, options: WsOptions) -> Accepted:
    """Subprotocol and extensions, from the request fields every transport shares."""
    fields: list[tuple[str, str]] = []
    chosen = None
    offered = [t.strip() for v in req.headers.get_all("sec-websocket-protocol") for t in v.split(",")]
    for proto in getattr(handler, "subprotocols", None) or ():
        if proto in offered:
            chosen = proto
            fields.append(("sec-websocket-protocol", proto))
            break
    extensions: list[Any] = []
    if options.compress:
        from rr.ws.session import BoundedDeflate

        for value in req.headers.get_all("sec-websocket-extensions"):
            for offer in value.split(","):
                name = offer.split(";", 1)[0].strip().lower()
                if name != "permessage-deflate" or extensions:
                    continue
                ext = BoundedDeflate(options.max_message_size)
                try:
                    params = ext.accept(offer)
                except ValueError:  # a malformed parameter: decline this offer
                    continue
                if params is None or params is False:
                    continue
                extensions.append(ext)
                value_out = "permessage-deflate" + (f"; {params}" if params else "")
                fields.append(("sec-websocket-extensions", value_out))
    return Accepted(fields, chosen, extensions)
