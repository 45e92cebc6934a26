"""Response shapes and builders (``from rr import resp``).

What it is: the five values a handler may return, as frozen dataclasses, and
small builders for the common cases. Every shape works the same on every
protocol: the protocol layers (``rr/http1``, later ``rr/http2`` and
``rr/http3``) turn a shape into frames; nothing here knows about sockets.

Headers are a list of ``(name, value)`` string pairs with lowercase names,
in the order they are sent. Builders also accept a mapping. Names and values
are validated where they are encoded (CR, LF or NUL anywhere, or an invalid
or uppercase name, turns the response into a 500 rather than a split header).

=============  ===========================================================
shape          meaning
=============  ===========================================================
``Response``   buffered: ``body`` bytes sent with a ``content-length``
``Stream``     ``fn(send)``; ``send(data, fin=False, trailers=None)``
``Loop``       message-driven push: the handler's process receives messages,
               ``on_info(msg, push, state)`` returns the next state or ``STOP``
``Sendfile``   ``path`` from ``offset`` for ``length`` bytes (``None``: to EOF)
``WebSocket``  upgrade to a WebSocket session run by ``handler`` from ``state``
               (HTTP/1.1 upgrade; h2 extended CONNECT, RFC 8441)
=============  ===========================================================

``WebSocket(handler, state)``: ``handler`` is an object or module with any of
``init(req, state) -> state``, ``handle_frame(frame, state) -> (replies,
state)`` (frame: ``("text", str)`` / ``("binary", bytes)``; pings and pongs
too when it sets ``control_frames = True``), ``handle_info(msg, state) ->
(replies, state)`` (messages sent to the session process),
``handle_drain(state) -> (replies, state)``, ``terminate(reason, state)``, and
``subprotocols`` (a list, server preference). Replies: ``("text", s)``,
``("binary", b)``, ``("ping", b)``, ``("close", code, reason)``. The full
contract is ``rr.ws.session``'s docstring; a request that is not a WebSocket
upgrade gets 426.

``Loop`` messages rr itself delivers to ``on_info``: ``(DRAIN, deadline)`` when
the listener drains (finish soon), and ``(CLOSED,)`` once when the client went
away (the loop ends after that call whatever it returns).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from rr import cookie
from rr.jsoncodec import encode as _encode_json

HeaderList = list[tuple[str, str]]
HeadersLike = HeaderList | Mapping[str, str] | Iterable[tuple[str, str]] | None

DRAIN: Final = "rr.drain"
CLOSED: Final = "rr.closed"


class _Stop:
    __slots__ = ()

    def __repr__(self) -> str:
        return "rr.resp.STOP"


STOP: Final = _Stop()


@dataclass(frozen=True, slots=True, init=False)
class Response:
    status: int
    headers: HeaderList = field(default_factory=list)
    body: bytes = b""

    # The two shapes made on every request set their slots through the slot
    # descriptors (below the classes): a frozen dataclass's generated __init__
    # goes through object.__setattr__ by name per field, twice the cost of a
    # three-field init (~0.26 us a response). The instances are the same frozen ones.
    def __init__(self, status: int, headers: HeaderList | None = None, body: bytes = b"") -> None:
        _response_status(self, status)
        _response_headers(self, [] if headers is None else headers)
        _response_body(self, body)


@dataclass(frozen=True, slots=True, init=False)
class Stream:
    status: int
    headers: HeaderList
    fn: Callable[[Callable[..., None]], None]

    def __init__(self, status: int, headers: HeaderList, fn: Callable[[Callable[..., None]], None]) -> None:
        _stream_status(self, status)
        _stream_headers(self, headers)
        _stream_fn(self, fn)


_response_status = Response.__dict__["status"].__set__
_response_headers = Response.__dict__["headers"].__set__
_response_body = Response.__dict__["body"].__set__
_stream_status = Stream.__dict__["status"].__set__
_stream_headers = Stream.__dict__["headers"].__set__
_stream_fn = Stream.__dict__["fn"].__set__


@dataclass(frozen=True, slots=True)
class Loop:
    status: int
    headers: HeaderList
    state: Any
    on_info: Callable[[Any, Callable[[bytes], None], Any], Any]


@dataclass(frozen=True, slots=True)
class Sendfile:
    status: int
    headers: HeaderList
    path: str
    offset: int = 0
    length: int | None = None


@dataclass(frozen=True, slots=True)
class WebSocket:
    handler: Any
    state: Any = None


@dataclass(frozen=True, slots=True)
class WebTransport:
    """Serve a WebTransport session (HTTP/3 only, listener option ``webtransport``):
    ``handler`` as ``rr.webtransport`` describes."""

    handler: Any
    state: Any = None


Shape = Response | Stream | Loop | Sendfile | WebSocket | WebTransport


def header_list(headers: HeadersLike) -> HeaderList:
    if headers is None:
        return []
    if isinstance(headers, list):
        return headers
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def body(status: int, content_type: str, data: bytes | str, headers: HeadersLike = None) -> Response:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return Response(status, [("content-type", content_type), *header_list(headers)], raw)


def text(status: int, data: bytes | str, headers: HeadersLike = None) -> Response:
    return body(status, "text/plain; charset=utf-8", data, headers)


def html(status: int, data: bytes | str, headers: HeadersLike = None) -> Response:
    return body(status, "text/html; charset=utf-8", data, headers)


def json(status: int, obj: Any, headers: HeadersLike = None) -> Response:
    """A compact UTF-8 JSON body (``rr.jsoncodec``: orjson when installed, same bytes)."""
    return Response(
        status,
        [("content-type", "application/json"), *header_list(headers)],
        _encode_json(obj),
    )


def ndjson(status: int, items: Iterable[Any], headers: HeadersLike = None) -> Response:
    """A buffered newline-delimited JSON body: one compact document per line."""
    data = b"".join(_encode_json(item) + b"\n" for item in items)
    return Response(status, [("content-type", "application/x-ndjson"), *header_list(headers)], data)


def status(code: int, headers: HeadersLike = None) -> Response:
    return Response(code, header_list(headers), b"")


def redirect(location: str, status: int = 302, headers: HeadersLike = None) -> Response:
    if any(c in location for c in "\r\n\0"):
        raise ValueError("redirect location contains CR, LF or NUL")
    return Response(status, [("location", location), *header_list(headers)], b"")


def no_content(headers: HeadersLike = None) -> Response:
    return status(204, headers)


def not_modified(headers: HeadersLike = None) -> Response:
    return status(304, headers)


def not_found(headers: HeadersLike = None) -> Response:
    return text(404, "Not Found", headers)


def bad_request(message: str = "Bad Request", headers: HeadersLike = None) -> Response:
    return text(400, message, headers)


def with_header(response: Shape, name: str, value: str) -> Shape:
    """A copy of ``response`` with one more header (not for ``WebSocket``/``WebTransport``)."""
    if isinstance(response, WebSocket | WebTransport):
        raise TypeError("a WebSocket or WebTransport session carries no response headers")
    return replace(response, headers=[*response.headers, (name.lower(), value)])


def set_cookie(response: Shape, name: str, value: str, **attributes: Any) -> Shape:
    """A copy of ``response`` with a ``set-cookie`` header.

    ``attributes`` are ``rr.cookie.serialize``'s (``max_age``, ``expires``,
    ``domain``, ``path``, ``secure``, ``http_only``, ``same_site``, ``partitioned``);
    a name, value or attribute that could inject a header raises ``ValueError``.
    """
    return with_header(response, "set-cookie", cookie.serialize(name, value, **attributes))


def get_header(response: Shape, name: str) -> str | None:
    if isinstance(response, WebSocket | WebTransport):
        return None
    name = name.lower()
    for k, v in response.headers:
        if k == name:
            return v
    return None
