"""The Request a handler receives: one class for h1, h2 and h3.

What it owns: the parsed request (method, target, headers...), per-request
scratch space (``private``), the route's ``bindings`` and ``state``, and a
*body source* handed in by the protocol layer.

What it must never do: touch a socket. Body bytes come from the body source
(``BodySource.read``), which the conn process implements for its protocol;
in ``auto`` buffering mode the body is already in memory.

Headers keep wire order and multiple values; names are lowercase (every
protocol delivers them so), lookups are case-insensitive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import unquote

from rr import cookie, multipart, qs
from rr.jsoncodec import loads as _json_loads
from rr.log import new_request_id
from rr.proxy_protocol import ProxyHeader


class BodySource(Protocol):
    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of body; ``b""`` once the body is complete."""
        ...


class Headers:
    """Case-insensitive, multi-valued, ordered request headers."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._index: dict[str, str] | None = None

    def _lookup(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for name, value in self._items:
            # RFC 9110 §5.3: repeated fields combine as a comma-separated list
            # (cookie is the exception, joined with "; " by cookies()).
            index[name] = f"{index[name]}, {value}" if name in index else value
        self._index = index
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        index = self._index if self._index is not None else self._lookup()
        return index.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self._items))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class _NoBody:
    def read(self, max_bytes: int) -> bytes:
        return b""


NO_BODY: BodySource = _NoBody()


class Request:
    """One request, whichever protocol carried it.

    The protocols' per-request paths build it as ``req = new_request(Request)``
    then ``init_request(req, ...)``: calling the class with keyword arguments
    makes CPython pack them into a dict for ``__init__`` (its generic slot),
    while ``__init__`` called directly takes them without one (~0.3 µs a
    request). That is the same object only while Request has no ``__new__``
    and no metaclass of its own (tests/rr/test_request.py holds it to that).
    """

    __slots__ = (
        "method", "target", "path", "query_string", "version", "headers", "scheme", "host",
        "peer", "listener", "_request_id", "bindings", "state", "private", "route",
        "route_name", "_body", "_source", "_decoded_path", "_interim", "proxy", "peer_cert",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query_string: str,
        version: str,
        headers: Headers,
        *,
        scheme: str = "http",
        host: str | None = None,
        peer: tuple[str, int] | None = None,
        listener: str = "",
        request_id: str | None = None,
        body: bytes | None = None,
        source: BodySource = NO_BODY,
        proxy: ProxyHeader | None = None,
        peer_cert: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query_string = query_string
        self.version = version
        self.headers = headers
        self.scheme = scheme
        self.host = host
        self.peer = peer
        self.listener = listener
        self._request_id = request_id
        self.bindings: dict[str, str] = {}
        self.state: Any = None
        self.private: dict[str, Any] = {}
        # The matched route's pattern (``/users/:id``) and name, set by the router.
        self.route: str | None = None
        self.route_name: str | None = None
        self._body = body
        self._source = source
        self._decoded_path: str | None = None
        self._interim: Any = None  # the exchange serving it (its ``early_hints``)
        # The connection's PROXY protocol header (rr.proxy_protocol.ProxyHeader) when the
        # listener reads one: v2 TLVs such as the client's SNI (``authority``) and TLS details.
        self.proxy = proxy
        # The client's verified TLS certificate (ssl.SSLObject.getpeercert()) on a listener
        # with tls.verify_client; None otherwise.
        self.peer_cert = peer_cert

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version} id={self.request_id}>"

    # -- head ---------------------------------------------------------------

    @property
    def request_id(self) -> str:
        """16 hex characters naming this request in logs and telemetry (made on first use)."""
        rid = self._request_id
        if rid is None:
            rid = self._request_id = new_request_id()
        return rid

    @property
    def decoded_path(self) -> str:
        """The path with %-escapes decoded as UTF-8 (invalid sequences replaced)."""
        if self._decoded_path is None:
            self._decoded_path = unquote(self.path, errors="replace")
        return self._decoded_path

    @property
    def body_buffered(self) -> bool:
        """Whether the rest of the body is already in memory (``auto`` buffering mode): then
        ``read_body()`` hands it over without reading the connection. False in ``manual`` mode,
        where each read may wait for the peer."""
        return self._body is not None

    @property
    def has_body(self) -> bool:
        """False when the request has no body at all: nothing buffered and no body source
        (h1 without ``content-length`` or chunked framing, h2/h3 whose HEADERS ended the
        stream); ``read_body()`` is then ``b""`` without reading anything."""
        return self._body is not None or self._source is not NO_BODY

    def early_hints(self, headers: Any) -> bool:
        """Send an interim ``103 Early Hints`` response (RFC 8297) before the final one.

        ``headers``: ``(name, value)`` pairs or a mapping, typically ``link`` fields such as
        ``("link", "</style.css>; rel=preload; as=style")``, checked like a response's
        (a bad name or value raises ``ValueError``; framing fields are dropped).
        Returns whether it went out: HTTP/1.0 clients get none (``False``). Only before
        the response head is sent (a ``Stream`` may call it before its first ``send``),
        from the handler's own process, at most ``rr.exchange.MAX_EARLY_HINTS`` (4)
        times per request; otherwise ``RuntimeError``.
        """
        interim = self._interim
        if interim is None:
            return False  # not being served (a handler called directly, e.g. in a unit test)
        result: bool = interim.early_hints(headers)
        return result

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def query(self) -> dict[str, list[str]]:
        """The query string parsed with form rules, every value kept, wire order kept."""
        return qs.parse_dict(self.query_string)

    def cookies(self) -> dict[str, str]:
        """Cookies from every ``cookie`` field (h2/h3 clients split them into crumbs)."""
        return cookie.parse(self.headers.get_all("cookie"))

    def forwarded_for(self) -> list[str]:
        """Client addresses claimed by proxies, nearest last (``Forwarded``, then ``X-Forwarded-For``).

        These are claims any client can make: trust them only behind a proxy you run.
        """
        out: list[str] = []
        for value in self.headers.get_all("forwarded"):
            for element in value.split(","):
                for pair in element.split(";"):
                    key, _, val = pair.strip().partition("=")
                    if key.lower() == "for" and val:
                        out.append(val.strip('"'))
        if not out:
            for value in self.headers.get_all("x-forwarded-for"):
                out.extend(p.strip() for p in value.split(",") if p.strip())
        return out

    # -- body ---------------------------------------------------------------

    def read_body(self, length: int | None = None) -> bytes:
        """The whole body, or (``length=n``) the next chunk of at most n bytes (``b""`` at the end).

        In ``auto`` buffering mode the body is already in memory. In ``manual``
        mode the whole-body form still obeys ``max_content_length``; stream a
        large body with ``length=`` or ``iter_body()`` to keep memory bounded.
        """
        if self._body is not None:
            if length is None:
                data, self._body = self._body, b""
                return data
            data, self._body = self._body[:length], self._body[length:]
            return data
        if length is not None:
            return self._source.read(length)
        parts = []
        while chunk := self._source.read(65536):
            parts.append(chunk)
        return b"".join(parts)

    def iter_body(self, chunk_size: int = 65536) -> Iterator[bytes]:
        while chunk := self.read_body(chunk_size):
            yield chunk

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not valid JSON)."""
        return _json_loads(self.read_body())

    def read_form(self) -> multipart.FormData:
        """Parse an urlencoded or multipart/form-data body into one type, ``rr.multipart.FormData``.

        ``fields`` maps names to their values in wire order (``form.get("a")``
        is the first one); ``files`` maps names to uploads (always empty for an
        urlencoded body). Close it (or use ``with``) to remove spooled files.
        """
        ctype = (self.headers.get("content-type") or "").lower()
        if ctype.startswith("multipart/form-data"):
            boundary = multipart.parse_boundary(self.headers.get("content-type") or "")
            return multipart.parse_form(self.iter_body(), boundary)
        # The raw bytes: rr.qs decodes them once, escapes and UTF-8 together (WHATWG order).
        return multipart.FormData(qs.parse_dict(self.read_body()), {})


#: The two halves of ``Request(...)`` for the protocols' per-request paths (see Request).
new_request = object.__new__
init_request = Request.__init__
