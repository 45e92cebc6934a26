"""The exchange: request → shape → response, written once for every protocol.

What it is: the one place a request's response is decided and driven. The
h1 conn process and the protocol-neutral stream worker (``rr.stream``, for h2
and h3) each build a ``Request`` and a ``Sink`` and call ``run``; this
module calls the application (through ``rr.dispatch``), checks what came
back, and drives the sink: ``respond`` for a whole buffered response,
``head`` / ``data`` / ``trailers`` / ``sendfile`` / ``abort`` for the others.
A protocol only encodes (status line or HPACK, chunks or DATA frames).

What it must never do: touch a socket or know a protocol. Anything a
protocol must decide for itself (h1 keep-alive and chunking, h2 flow
control) lives behind the sink.

The rules, one each (the cross-protocol matrix, ``tests/rr/test_matrix.py``,
holds every protocol to them):

- **Status**: a handler's status must be 200–599. 100–199 (interim answers
  are rr's to send, not a handler's) and anything outside 100–599 → 500,
  logged as a handler crash with the request id.
- **Header names** are tokens (RFC 9110 §5.1) and go out lowercased on every
  protocol (h2 and h3 require lowercase; h1 is case-insensitive, so
  ``Content-Type`` from a WSGI-minded handler just works). A non-token name →
  500.
- **Header values**: CR, LF or NUL (response splitting), or a character
  outside latin-1 (not an octet on any wire) → 500.
- **Framing fields are rr's**: ``content-length``, ``transfer-encoding`` and
  the connection-specific fields (``connection``, ``keep-alive``,
  ``upgrade``, ``proxy-connection``; RFC 9113 §8.2.2) are dropped from a
  handler's headers; ``connection: close`` is honoured as a wish to close
  (h1). A declared ``content-length`` still counts where it means something:
  HEAD of an empty ``Response`` announces it, and a ``Stream`` that declares
  one must send exactly that many bytes (more or fewer → the response is
  aborted). ``date`` is added unless the handler set one. These checks run
  once per distinct section: a handler's headers, checked, are kept by value
  (``_sections``, bounded), so the same headers on the next request cost one
  lookup.
- **No body** on HEAD, 204 and 304 (204/304 carry no content-length either).
- **Crashes**: before the head is sent → 500 with a body; after it → the
  response is aborted (h1: the connection closes before the last chunk; h2:
  ``RST_STREAM(INTERNAL_ERROR)``), never a half-truthful end.
- **Client gone**: ``send`` (``Stream``) and ``push`` (``Loop``) raise
  ``rr.ClientGone`` on every protocol; the handler may catch it to clean up.
- **Bodies**: in ``auto`` mode (the listener's ``body_buffering``, or the
  matched route's own: ``app.body_buffering(req)``) the body is read here
  before the handler runs, charged to the process's ``max_heap`` (all of it,
  except a body of at most ``UNCHARGED_BODY`` bytes that came in one read: it
  holds less than the read buffer, which no path charges); a body over
  ``max_content_length`` → 413, one that stalls past ``request_timeout`` →
  408, a malformed one → 400 (``BodyError``, raised by the protocol's body
  source; a manual-mode handler that lets it propagate gets the same answer).
- **WebSocket**: the handshake is checked here (``rr.ws.handshake``: 400 with a
  reason, 426 naming version 13, a plain request → 426) and the sink's
  ``websocket`` answers it and runs the session; a sink without one → 501.
  The exchange's status is 101 (h1) or 200 (an extended CONNECT, h2 and h3)
  and it ends with the session.
- **WebTransport** (``resp.WebTransport``): served by a sink with
  ``webtransport`` (h3 with the ``webtransport`` option) for an extended
  CONNECT with ``:protocol: webtransport``; a plain request to it → 400, a
  protocol that cannot carry it (h1, h2) → 501. Status 200; the exchange ends
  with the session (``rr.webtransport``).
- **Request id** (``request_id_header``, e.g. ``x-request-id``): a trusted
  proxy's id (1-128 of ``A-Za-z0-9._:-``) is reused as the request's id, and
  every response carries the request's id under that header (``with_request_id``;
  also the 500 a multiplexed conn answers for a stream worker that died before
  its head).
- **Header block size**: a head (or trailer section) whose fields, sized as
  RFC 9113 §6.5.2 sizes them (name + value + 32 octets per field, ``date`` and
  the request id included), exceed ``max_response_header_size`` — or the peer's
  own limit where the protocol has one (``Sink.field_limit``: h2's
  ``SETTINGS_MAX_HEADER_LIST_SIZE``, less ``PROTOCOL_FIELDS`` for what the
  protocol adds) — → 500, logged as a handler crash with
  the route; over it in trailers → the response is aborted.
- **Early Hints** (``req.early_hints(headers)``, RFC 8297): an interim ``103``
  with the handler's fields (checked like any head's, no ``date``), only
  before the head, at most ``MAX_EARLY_HINTS`` per request (``RuntimeError``
  otherwise; invalid fields raise ``InvalidResponse``). The sink says whether
  it went out (``interim``): h1 skips it for an HTTP/1.0 client.
- **Forwarding** (``forwarded_allow_ips``): when the immediate peer is a
  trusted proxy, ``req.peer``/``scheme``/``host`` are rewritten from
  ``Forwarded`` / ``X-Forwarded-*`` (``rr.forwarded``) before anything else
  sees the request — telemetry, the access log, middlewares.
- **Load shedding** (``shed_concurrent_requests``): a request that finds that
  many exchanges running on the listener (every protocol; the runtime's
  ``in_flight``) is answered ``503`` + ``retry-after: 1`` without the
  application, counted in ``shed`` (``rr.listener_info``).
- **Access log** (``access_log: true``): one ``rr.access`` event per request
  on every protocol with method, path, status, bytes (response body),
  duration, version, user_agent, request_id and peer.

Telemetry (``start``/``stop``/``exception``) is ``rr.dispatch``'s; this
module calls it at the same points for every protocol.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import supervisors
from rr import dispatch, forwarded, telemetry
from rr import response as resp
from rr.httpdate import date_field
from rr.log import get_logger
from rr.request import NO_BODY, Request
from rr.ws import handshake

_access = get_logger("rr.access")

# Bytes one read of a request body asks for in auto mode.
READ_SIZE = 65536
# A body at most this long that came whole in one read is not charged to max_heap (the
# WebSocket fast path's rule for a message): it holds less than the 64 KiB read buffer.
UNCHARGED_BODY = 4096
# Bytes one Sendfile read takes where the protocol copies (h2, h3, TLS).
FILE_CHUNK = 65536

NO_BODY_STATUS = frozenset({204, 304})

# What a protocol adds to a head beyond the exchange's fields, as RFC 9113 §6.5.2 sizes it
# (``:status`` 42, ``content-length`` up to 66): kept free under a peer's own limit.
PROTOCOL_FIELDS = 108

# Interim 103 responses one request may send (``Request.early_hints``): a handler that sends
# more has a bug (one or two carry every preload a page needs), and each costs the client a parse.
MAX_EARLY_HINTS = 4

_TEXT = [("content-type", "text/plain; charset=utf-8")]
BAD_REQUEST = resp.Response(400, _TEXT, b"Bad Request")
REQUEST_TIMEOUT = resp.Response(408, _TEXT, b"Request Timeout")
PAYLOAD_TOO_LARGE = resp.Response(413, _TEXT, b"Payload Too Large")
# Load shedding (``shed_concurrent_requests``): the answer to a request admitted over the threshold.
SERVICE_UNAVAILABLE = resp.Response(503, [*_TEXT, ("retry-after", "1")], b"Service Unavailable")
_SHED = ("rr", "request", "shed")
_BY_STATUS = {400: BAD_REQUEST, 408: REQUEST_TIMEOUT, 413: PAYLOAD_TOO_LARGE}


class ClientGone(ConnectionError):
    """The client is gone: raised by ``send``/``push`` (and body reads) on every protocol."""


class BodyError(Exception):
    """The request body cannot be read: ``status`` says why (400, 408, 413)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Aborted(Exception):
    """The response cannot be completed; the sink has been told (``abort``)."""


class InvalidResponse(ValueError):
    """A response head that cannot go on any wire (status, header name or value)."""


_PASSTHROUGH = (BodyError, ClientGone)

# -- response fields ------------------------------------------------------------------

# Fields a handler may not set: framing and connection-specific (RFC 9113 §8.2.2).
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                      "proxy-connection"})
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_BAD_VALUE = frozenset("\r\n\0")

# (name, value) pairs already checked -> the lowercased pair, or None for a dropped framing field.
# Bounded, so a handler echoing unique values cannot grow it.
_checked: dict[tuple[str, str], tuple[str, str] | None] = {}
_CHECKED_MAX = 4096
_CHECKED_VALUE_MAX = 256


def _check(name: Any, value: Any) -> tuple[str, str] | None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise InvalidResponse(f"header {name!r} is not a pair of str")
    lname = name.lower()
    # ASCII first: str.lower() maps U+212A KELVIN SIGN to "k" (found by tools/fuzz).
    if not lname or not name.isascii() or not _TCHAR.issuperset(lname):
        raise InvalidResponse(f"response header name {name!r} is not a token")
    if not _BAD_VALUE.isdisjoint(value):
        raise InvalidResponse(f"the value of response header {name!r} contains CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidResponse(f"the value of response header {name!r} is not latin-1") from None
    return None if lname in _FRAMING else (lname, value)


# Header lists already checked whole, as tuples -> _section's answer: a handler answering with
# the same headers (a module constant, or equal pairs) skips the pass pair by pair. Bounded: at
# most _SECTIONS_MAX sections of at most _SECTION_PAIRS_MAX pairs, each value short enough for
# _checked (a section with a longer one is checked every time).
Section = tuple[tuple[tuple[str, str], ...], bool, bool, int]
_sections: dict[tuple[Any, ...], Section] = {}
_SECTIONS_MAX = 256  # full of 16 pairs of 256-character values: 2.4 MB with _checked (tracemalloc)
_SECTION_PAIRS_MAX = 16


def _section(headers: Any) -> Section:
    """A handler's headers checked: (fields, close, has_date, size) — the validated,
    lowercased fields without framing ones, whether it asked to close, whether it set
    ``date``, and the fields' size as RFC 9113 §6.5.2 counts it. Raises ``InvalidResponse``."""
    kind = type(headers)
    key = None
    if (kind is list or kind is tuple) and len(headers) <= _SECTION_PAIRS_MAX:
        key = headers if kind is tuple else tuple(headers)
        try:
            hit = _sections.get(key)
        except TypeError:  # an unhashable pair: refused below
            key = hit = None
        if hit is not None:
            return hit
    out = []
    close = False
    has_date = False
    checked = _checked
    for pair in headers:
        try:
            field = checked[pair]
        except KeyError:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidResponse(f"header {pair!r} is not a (name, value) pair") from None
            field = _check(*pair)
            if len(pair[1]) <= _CHECKED_VALUE_MAX:
                if len(checked) >= _CHECKED_MAX:
                    checked.clear()
                checked[pair] = field
            else:
                key = None
        except TypeError:  # unhashable: not a pair of str
            raise InvalidResponse(f"header {pair!r} is not a (name, value) pair") from None
        if field is None:
            if pair[0].lower() == "connection" and "close" in pair[1].lower():
                close = True
            continue
        if field[0] == "date":
            has_date = True
        out.append(field)
    found = (tuple(out), close, has_date, fields_size(out))
    if key is not None:
        if len(_sections) >= _SECTIONS_MAX:
            _sections.clear()
        _sections[key] = found
    return found


def response_fields(headers: Any, add_date: bool = True) -> tuple[list[tuple[str, str]], bool]:
    """Validated, lowercased fields without framing ones, plus ``date`` (unless the
    handler set one, or ``add_date`` is false: trailers); and whether the handler
    asked to close (``connection: close``). Raises ``InvalidResponse``."""
    fields, close, has_date, _ = _section(headers)
    out = list(fields)
    if add_date and not has_date:
        out.append(date_field())
    return out, close


_REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def adopt_request_id(req: Request, header: str) -> None:
    """Reuse a proxy's request id (``request_id_header``) when it is 1-128 safe characters."""
    value = req.headers.get(header)
    if value and len(value) <= 128 and _REQUEST_ID_CHARS.issuperset(value):
        req._request_id = value


def with_request_id(fields: list[tuple[str, str]], req: Request, config: Any) -> list[tuple[str, str]]:
    """``fields`` plus the request id under ``request_id_header``, when that is set.

    For every answer to a request, the exchange's and a protocol's own (h2's 500 for a
    worker that died before its head): a proxy's id is adopted first if nobody did yet.
    """
    header = config.request_id_header
    if header:
        if req._request_id is None:
            adopt_request_id(req, header)
        fields.append((header, req.request_id))
    return fields


def fields_size(fields: Any) -> int:
    """A field section's size as RFC 9113 §6.5.2 (and RFC 9114's field section) count it."""
    size = 32 * len(fields)
    for name, value in fields:
        size += len(name) + len(value)
    return size


def check_status(status: Any) -> None:
    if type(status) is not int or not 200 <= status <= 599:
        if isinstance(status, int) and 100 <= status <= 199:
            raise InvalidResponse(f"a handler may not return the interim status {status}")
        raise InvalidResponse(f"status {status!r} is outside 200..599")


def declared_length(shape: Any) -> int | None:
    value = resp.get_header(shape, "content-length")
    return int(value) if value is not None and value.isdigit() else None


# -- the sink ---------------------------------------------------------------------------


class Sink(Protocol):
    """What a protocol implements so the exchange can drive a response.

    Fields are already validated and lowercased (``response_fields``); the
    sink adds only its own framing. ``close`` is the handler's wish to end the
    connection after this response (h1 honours it; multiplexed protocols
    ignore it). ``data``/``trailers``/``sendfile`` raise ``ClientGone`` when
    the peer is gone.
    """

    def respond(self, status: int, fields: list[tuple[str, str]], length: int | None,
                body: bytes, close: bool) -> None:
        """A whole response; ``body`` is what goes on the wire (``b""`` for HEAD/204/304)."""

    def head(self, status: int, fields: list[tuple[str, str]], length: int | None, close: bool,
             end: bool) -> None:
        """The head of a response whose body follows (``end``: none follows)."""

    def data(self, data: bytes, end: bool) -> None:
        """Body bytes; ``end`` ends the response (``data`` may then be empty)."""

    def trailers(self, fields: list[tuple[str, str]]) -> None:
        """Trailer fields; ends the response."""

    def sendfile(self, fd: int, offset: int, length: int) -> None:
        """``length`` bytes of ``fd`` from ``offset`` as the body, then the end."""

    def abort(self) -> None:
        """The response cannot be completed: end it so the client can tell."""

    def interim(self, status: int, fields: list[tuple[str, str]]) -> bool:
        """An informational (1xx) head before the final one; whether it went out
        (h1 sends none to an HTTP/1.0 client)."""

    def loop_enter(self) -> Callable[[Any], bool] | None:
        """A ``Loop`` starts in this process; returns which messages are the loop's."""

    def loop_exit(self) -> None:
        """The ``Loop`` ended."""

    # Optional: ``field_limit`` — the largest field section the peer accepts (RFC 9113
    # §6.5.2 sizing), e.g. h2's SETTINGS_MAX_HEADER_LIST_SIZE; absent or None: no limit
    # beyond the listener's ``max_response_header_size``.
    #
    # Optional: ``loop_own(msg) -> bool`` — while a ``Loop`` runs, ``match`` may select
    # messages of the sink's own protocol too; the exchange hands each to ``loop_own``
    # first, and a message it takes never reaches the loop's ``on_info``.

    # Optional: ``websocket(accepted, shape, req)`` — send the handshake's answer with
    # ``accepted.fields`` and run the session (``rr.ws.session``) over the protocol's
    # byte stream until it ends. A sink without it answers the ``WebSocket`` shape 501.
    #
    # Optional: ``webtransport(shape, req)`` — answer a WebTransport CONNECT and run the
    # session (``rr.webtransport``), with ``serves_webtransport`` true where the connection
    # can carry one. A sink without both answers ``WebTransport`` 501.


# -- one exchange -------------------------------------------------------------------------


class Exchange:
    """One request's response on one sink: counts what it sent, for the access log."""

    __slots__ = ("req", "sink", "config", "runtime", "started", "status", "sent", "head_sent", "hints",
                 "field_limit", "peer_limit")

    def __init__(self, req: Request, sink: Sink, config: Any, runtime: Any = None) -> None:
        self.req = req
        self.sink = sink
        self.config = config
        self.runtime = runtime  # the listener's ListenerRuntime: in-flight count, shedding
        self.started = 0.0
        self.status = 0
        self.sent = 0
        self.head_sent = False
        self.hints = 0  # 103s sent
        self.peer_limit = peer = getattr(sink, "field_limit", None)
        limit = config.max_response_header_size
        self.field_limit = limit if peer is None else min(limit, max(0, peer - PROTOCOL_FIELDS))
        req._interim = self  # Request.early_hints calls our early_hints (no bound method per request)

    def run(self, app: Any, answer: resp.Response | None = None) -> None:
        """Serve the request; returns once the response is complete or aborted.

        ``answer``: a response the protocol decided before the application
        could run (e.g. 413 for a declared body over ``max_content_length``).
        Raises ``ClientGone`` when the peer went away mid-response, ``Aborted``
        when the response had to be cut short (the sink already knows both).

        Admission: with ``shed_concurrent_requests`` set, a request that finds
        that many exchanges already running on the listener is answered
        ``503`` + ``retry-after: 1`` without the application (counted in the
        runtime's ``shed``).
        """
        req = self.req
        config = self.config
        if config.forwarded_allow_ips is not None:
            forwarded.apply(req, config.forwarded_allow_ips)
        runtime = self.runtime
        if config.request_id_header:
            adopt_request_id(req, config.request_id_header)
        self.started = started = dispatch.begin(req)
        charged = 0
        outcome = "ok"
        if runtime is not None:
            soft = config.shed_concurrent_requests
            if answer is None and soft is not None and runtime.in_flight >= soft:
                answer = self._shed(runtime)
            runtime.in_flight += 1
        try:
            result: Any = answer
            buffering = config.body_buffering
            per_route = getattr(app, "body_buffering", None)
            if per_route is not None and result is None:
                buffering = per_route(req) or buffering  # a route's own body_buffering wins
            if result is None and req._source is not NO_BODY and req._body is None \
                    and buffering == "auto":
                try:
                    charged = self._read_body()
                except BodyError as exc:
                    result = _BY_STATUS.get(exc.status, BAD_REQUEST)
            if result is None:
                try:
                    result = dispatch.call(app, req, started, _PASSTHROUGH)
                except BodyError as exc:  # a manual-mode read failed and the handler let it go
                    result = _BY_STATUS.get(exc.status, BAD_REQUEST)
            if type(result) is resp.Response:
                self.send_response(result)
            else:
                self._send(result)
        except ClientGone:
            outcome = "client_gone"
            raise
        except Aborted:
            outcome = "aborted"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            if runtime is not None:
                runtime.in_flight -= 1
            if charged:
                supervisors.release(charged)
            req._interim = None  # the request no longer holds this exchange: no cycle for the GC
            dispatch.finish(req, self.status, started, self.sent, outcome)
            if config.access_log:
                self._log_access()

    def _shed(self, runtime: Any) -> resp.Response:
        runtime.shed += 1
        if telemetry.enabled(_SHED):
            telemetry.execute(_SHED, {"system_time": time.time(), "in_flight": runtime.in_flight},
                              {"listener": runtime.name, "request_id": self.req.request_id})
        return SERVICE_UNAVAILABLE

    def _read_body(self) -> int:
        """The whole body into ``req._body``, charged to this process's heap budget."""
        req = self.req
        read = req._source.read
        charged = 0
        try:
            # The common case, a body that comes in one read (already buffered): no list, no join.
            first = read(READ_SIZE)
            if not first:
                req._body = b""
                return 0
            if len(first) > UNCHARGED_BODY:
                supervisors.charge(len(first))
                charged = len(first)
            chunk = read(READ_SIZE)
            if not chunk:
                req._body = first
                return charged
            if not charged:  # more follows: a small first read counts after all
                supervisors.charge(len(first))
                charged = len(first)
            parts = [first]
            while chunk:
                supervisors.charge(len(chunk))
                charged += len(chunk)
                parts.append(chunk)
                chunk = read(READ_SIZE)
        except BaseException:
            if charged:
                supervisors.release(charged)
            raise
        req._body = b"".join(parts)
        return charged

    def _log_access(self) -> None:
        req = self.req
        # The logger's name travels in the event (structlog's default factory drops it; a
        # bind() here would freeze the configuration of the moment).
        _access.info(
            "request", logger="rr.access", method=req.method, path=req.target, status=self.status, bytes=self.sent,
            duration=round(time.monotonic() - self.started, 6), version=req.version,
            user_agent=req.headers.get("user-agent"), request_id=req.request_id, peer=req.peer,
        )

    # -- shapes ------------------------------------------------------------------------

    def _send(self, result: Any) -> None:
        if isinstance(result, resp.Response):
            self.send_response(result)
        elif isinstance(result, resp.Stream):
            self.send_stream(result)
        elif isinstance(result, resp.Loop):
            self.send_loop(result)
        elif isinstance(result, resp.Sendfile):
            self.send_file(result)
        elif isinstance(result, resp.WebTransport):
            self.send_webtransport(result)
        else:
            self.send_websocket(result)

    def _fields(self, status: int, headers: Any) -> tuple[list[tuple[str, str]], bool] | None:
        """The head's fields, or None after answering 500 in its place."""
        try:
            if type(status) is not int or not 200 <= status <= 599:
                check_status(status)
            section, close, has_date, size = _section(headers)
            fields = list(section)
            if not has_date:  # the section's size is known: what is appended is counted here
                date = date_field()
                fields.append(date)
                size += 36 + len(date[1])  # 32 + len("date") + the value
            if self.config.request_id_header:
                with_request_id(fields, self.req, self.config)
                name, value = fields[-1]
                size += 32 + len(name) + len(value)
            self._check_size(size, "response header")
        except InvalidResponse as exc:
            self.crashed(exc)
            return None
        return fields, close

    def _check_size(self, size: int, what: str) -> None:
        """``InvalidResponse`` when fields of ``size`` (``fields_size``) exceed the listener's
        or the peer's limit."""
        limit = self.field_limit
        if size > limit:
            if limit < self.config.max_response_header_size:
                raise InvalidResponse(f"the {what} fields take {size} bytes, over the client's limit of "
                                      f"{self.peer_limit} ({limit} once the protocol's own fields are counted)"
                                      f" (route {self.req.route or self.req.path!r})")
            raise InvalidResponse(f"the {what} fields take {size} bytes, over max_response_header_size {limit}"
                                  f" (route {self.req.route or self.req.path!r})")

    def early_hints(self, headers: Any) -> bool:
        """``Request.early_hints``: an interim 103 with ``headers`` before the head."""
        if self.head_sent:
            raise RuntimeError("early_hints() after the response head was sent")
        if self.hints >= MAX_EARLY_HINTS:
            raise RuntimeError(f"early_hints(): at most {MAX_EARLY_HINTS} per request")
        fields, _ = response_fields(resp.header_list(headers), add_date=False)
        if not fields:
            raise InvalidResponse("early_hints() needs at least one field (a link)")
        self._check_size(fields_size(fields), "early hints")
        self.hints += 1
        return self.sink.interim(103, fields)

    def crashed(self, exc: BaseException) -> None:
        """A failure before the head went out: log it, answer 500."""
        error = dispatch.crashed(self.req, self.started, exc)
        fields, _ = response_fields(error.headers)
        self._respond(error.status, with_request_id(fields, self.req, self.config), len(error.body), error.body, False)

    def _respond(self, status: int, fields: list[tuple[str, str]], length: int | None, body: bytes,
                 close: bool) -> None:
        self.status = status
        self.head_sent = True
        if self.req.method == "HEAD":
            body = b""
        self.sent += len(body)
        self.sink.respond(status, fields, length, body, close)

    def _head(self, status: int, fields: list[tuple[str, str]], length: int | None, close: bool,
              end: bool) -> None:
        self.status = status
        self.head_sent = True
        self.sink.head(status, fields, length, close, end)

    def abort(self) -> None:
        self.sink.abort()
        raise Aborted()

    def send_response(self, result: resp.Response) -> None:
        status = result.status
        checked = self._fields(status, result.headers)
        if checked is None:
            return
        fields, close = checked
        if status in NO_BODY_STATUS:
            self._respond(status, fields, None, b"", close)
            return
        body = result.body
        length = len(body)
        if not body and self.req.method == "HEAD":
            declared = declared_length(result)
            if declared is not None:
                length = declared
        self._respond(status, fields, length, body, close)

    def send_stream(self, result: resp.Stream) -> None:
        out = _StreamOut(self, result)
        try:
            result.fn(out.send)
        except ClientGone:
            raise  # the sink saw the peer go; nothing more can be sent
        except Aborted:
            if out.answered:
                return  # an invalid head was answered 500 in its place
            raise
        except BodyError as exc:
            if out.head:
                self.abort()
            self.send_response(_BY_STATUS.get(exc.status, BAD_REQUEST))
            return
        except Exception as exc:
            if out.answered:
                return
            if not out.head:
                self.crashed(exc)
                return
            dispatch.crashed(self.req, self.started, exc)
            self.abort()
        if out.answered:
            return
        if not out.ended:
            out.send(b"", fin=True)

    def send_loop(self, result: resp.Loop) -> None:
        status = result.status
        checked = self._fields(status, result.headers)
        if checked is None:
            return
        no_body = self.req.method == "HEAD" or status in NO_BODY_STATUS
        self._head(status, checked[0], None, checked[1], no_body)
        if no_body:
            return
        sink = self.sink

        def push(chunk: bytes) -> None:
            if chunk:
                self.sent += len(chunk)
                sink.data(bytes(chunk), False)

        match = sink.loop_enter()
        try:
            outcome = run_loop(self.req, self.started, result, push, match,
                               getattr(sink, "loop_own", None))
        finally:
            sink.loop_exit()
        if outcome == "crashed":
            self.abort()
        if outcome == "closed":
            raise ClientGone()
        sink.data(b"", True)

    def send_websocket(self, result: resp.WebSocket) -> None:
        """The handshake is checked here for every protocol; the sink answers it and runs
        the session (h1: 101 and the socket; h2: 200 and the stream). A sink without
        ``websocket`` → 501."""
        serve = getattr(self.sink, "websocket", None)
        if serve is None:
            self.send_response(dispatch.NOT_IMPLEMENTED)
            return
        answer = handshake.answer(self.req, result.handler, self.config.ws)
        if isinstance(answer, resp.Response):
            self.send_response(answer)
            return
        self.status = 200 if "rr.protocol" in self.req.private else 101  # extended CONNECT: 200
        self.head_sent = True
        serve(answer, result, self.req)

    def send_webtransport(self, result: resp.WebTransport) -> None:
        serve = getattr(self.sink, "webtransport", None)
        if serve is None or not getattr(self.sink, "serves_webtransport", False):
            self.send_response(dispatch.NOT_IMPLEMENTED)
            return
        if self.req.private.get("rr.protocol") != "webtransport":
            self.send_response(resp.bad_request("this resource is a WebTransport endpoint: "
                                                "open a session with an extended CONNECT\n"))
            return
        self.status = 200
        self.head_sent = True
        serve(result, self.req)

    def send_file(self, result: resp.Sendfile) -> None:
        try:
            fd = os.open(result.path, os.O_RDONLY)
        except OSError as exc:
            self.crashed(exc)
            return
        try:
            size = os.fstat(fd).st_size
            offset = result.offset
            length = result.length if result.length is not None else max(0, size - offset)
            if offset < 0 or length < 0 or offset + length > size:
                self.crashed(ValueError(f"sendfile range {offset}+{length} outside the file ({size} bytes)"))
                return
            status = result.status
            checked = self._fields(status, result.headers)
            if checked is None:
                return
            fields, close = checked
            if status in NO_BODY_STATUS:
                self._respond(status, fields, None, b"", close)
                return
            if self.req.method == "HEAD" or not length:
                self._respond(status, fields, length, b"", close)
                return
            self._head(status, fields, length, close, False)
            self.sent += length
            self.sink.sendfile(fd, offset, length)
        finally:
            os.close(fd)


def run_loop(req: Request, started: float, loop: resp.Loop, push: Callable[[bytes], None],
             match: Callable[[Any], bool] | None = None,
             own: Callable[[Any], bool] | None = None) -> str:
    """Drive a ``Loop`` in the calling process.

    Each message (``match`` selects which; default: all) goes to
    ``loop.on_info(msg, push, state)``, except those ``own`` takes (the sink's
    own protocol, e.g. h2 credit that lets gathered bytes go out). Returns ``"stop"`` when it returns
    ``rr.resp.STOP``, ``"closed"`` after it has seen ``(rr.resp.CLOSED,)``
    (the client is gone), ``"crashed"`` when it raised (already logged).
    ``ClientGone`` from ``push`` propagates unless ``on_info`` catches it.
    """
    state = loop.state
    receive = supervisors.receive
    while True:
        msg = receive(match) if match is not None else receive()
        if own is not None and own(msg):
            continue
        closed = isinstance(msg, tuple) and msg[:1] == (resp.CLOSED,)
        try:
            state = loop.on_info(msg, push, state)
        except ClientGone:
            raise
        except Exception as exc:
            dispatch.crashed(req, started, exc)
            return "crashed"
        if closed:
            return "closed"
        if state is resp.STOP:
            return "stop"


def copy_file(fd: int, offset: int, length: int, write: Callable[[bytes, bool], None],
              chunk: int = FILE_CHUNK) -> None:
    """Read ``length`` bytes of ``fd`` from ``offset`` into ``write(data, end)``.

    For sinks that cannot hand the file to the kernel (TLS, h2, h3). A file
    that shrank under us cannot keep the promised length: ``Aborted``.
    """
    while length > 0:
        data = os.pread(fd, min(chunk, length), offset)
        if not data:
            raise FileTruncated()
        offset += len(data)
        length -= len(data)
        write(data, length == 0)


class _StreamOut:
    """The ``send`` of one ``Stream`` response: head on first use, then body and end."""

    __slots__ = ("ex", "result", "no_body", "length", "head", "ended", "answered", "count")

    def __init__(self, ex: Exchange, result: resp.Stream) -> None:
        self.ex = ex
        self.result = result
        status = result.status
        self.no_body = ex.req.method == "HEAD" or status in NO_BODY_STATUS
        self.length = None if status in NO_BODY_STATUS else declared_length(result)
        self.head = False  # the head went out
        self.ended = False  # fin was sent (or the response is over)
        self.answered = False  # a 500 went out in place of an invalid head
        self.count = 0

    def send(self, data: bytes = b"", fin: bool = False, trailers: Any = None) -> None:
        ex = self.ex
        if self.ended or self.answered:
            raise RuntimeError("send() after fin")
        if not self.head:
            checked = ex._fields(self.result.status, self.result.headers)
            if checked is None:
                self.answered = True
                raise Aborted()
            self.head = True
            ex._head(self.result.status, checked[0], self.length, checked[1], self.no_body)
        if self.no_body:
            self.ended = self.ended or fin
            return
        length = self.length
        if data:
            self.count += len(data)
            if length is not None and self.count > length:
                self.ended = True
                ex.abort()  # more than the declared content-length
            ex.sent += len(data)
        sink = ex.sink
        if not fin:
            if data:
                sink.data(bytes(data), False)
            return
        self.ended = True
        if length is not None and self.count != length:
            ex.abort()  # fewer bytes than the declared content-length
        if trailers:
            try:
                tfields, _ = response_fields(resp.header_list(trailers), add_date=False)
                ex._check_size(fields_size(tfields), "trailer")
            except InvalidResponse as exc:
                dispatch.crashed(ex.req, ex.started, exc)
                ex.abort()
            if data:
                sink.data(bytes(data), False)
            sink.trailers(tfields)
        else:
            sink.data(bytes(data), True)


class FileTruncated(Exception):
    """The file shrank while it was being sent: the declared length cannot be met."""
