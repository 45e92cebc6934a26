"""One gRPC call inside rr's handler process: the servicer context and the run of a servicer.

What it owns: everything between a routed ``Request`` and the response
shape: reading request messages (``wire.MessageReader`` over
``req.read_body``), calling a grpcio-style method handler, the
``ServicerContext`` it gets, the deadline, and the status a call ends with.

What it must never do: touch a socket or know which HTTP version carries it
(the server checks that before a call starts), or swallow rr's own
"this process is being stopped" signals.

How a call runs. The handler process (an h2 stream worker) runs it in two
phases, so that the response head is always a value rr is *given*, never one
patched in afterwards:

1. in the route handler: read the request (unary) or hand the servicer a
   request iterator (client streaming), call it, and advance it to its first
   response message. Ending with no message (an error, or an empty stream)
   returns a *trailers-only* ``Response``: ``grpc-status`` in the head, no
   body. Otherwise the initial metadata is known now, and a ``Stream`` goes
   back with it as its head;
2. in the ``Stream``'s ``fn(send)``: the first message, then each next one
   as the servicer yields it, then the trailers (``grpc-status``,
   ``grpc-message`` percent-encoded, trailing metadata).

``send_initial_metadata`` therefore rides with the first message (or the
final status): a servicer that sends metadata and then works long before its
first message makes the client wait that long for the head.

Deadlines (``grpc-timeout``): each step of the servicer (the call into it,
each ``next()`` of its response iterator, and so each request read it makes
inside them) runs under a ``gevent.Timeout`` for the time left, which throws
``DeadlineExceeded`` (a ``BaseException``, like ``gevent.Timeout``) into it at
its next switch; a servicer suspended at a ``yield`` when the time is up gets
it there. The call ends ``DEADLINE_EXCEEDED``; ``is_active()`` and
``time_remaining()`` tell a servicer that polls. ``send`` itself is not under
the timer: a message half-written when a timer fires would break the framing.
A servicer that never yields is not interrupted (cooperative scheduling).

Cancellation: a client's ``RST_STREAM`` tells the stream's worker the client
is gone: its next request read or ``send`` raises ``rr.ClientGone`` (on every
protocol), so the servicer sees it as an exception at its next read, send or
``yield``; one that does not end within rr's close grace (1 s) is killed
(``supervisors.Exit`` at its next switch). Both pass through here untouched
after the ``add_callback`` callbacks ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import gevent
import gevent.queue
import grpc

import rr
from rr import resp
from rr.contrib.grpc import wire
from rr.exchange import BodyError
from rr.log import get_logger


class Server(Protocol):
    """What a call needs of its ``rr.contrib.grpc.server.Server`` (named here, not imported:
    the server imports this module)."""

    compression: str | None
    max_receive_message_length: int
    max_send_message_length: int | None

_log = get_logger("rr.contrib.grpc")

_END = object()
_COMPRESSION_NAMES = {grpc.Compression.NoCompression: "identity", grpc.Compression.Deflate: "deflate",
                      grpc.Compression.Gzip: "gzip"}


class DeadlineExceeded(BaseException):
    """Thrown into a servicer when the call's ``grpc-timeout`` has passed (a BaseException, so
    ``except Exception`` does not swallow it)."""


class _Abort(Exception):
    """Raised by ``ServicerContext.abort``: the call ends with the status given there."""


def _body_error(exc: Exception) -> wire.StatusError:
    """A failure of ``req.read_body`` as a status (``rr.exchange.BodyError`` carries the HTTP one)."""
    if isinstance(exc, BodyError):
        if exc.status == 413:
            return wire.StatusError(wire.RESOURCE_EXHAUSTED,
                                    "request stream longer than the listener's max_content_length")
        if exc.status == 408:
            return wire.StatusError(wire.UNAVAILABLE, "no request data within the listener's request_timeout")
    return wire.StatusError(wire.INTERNAL, f"reading the request failed ({type(exc).__name__})")


def compression_name(value: Any, option: str) -> str | None:
    """A response encoding from ``grpc.Compression`` or its name; ``ValueError`` names ``option``."""
    if value is None:
        return None
    name = _COMPRESSION_NAMES.get(value, value)
    if name not in wire.ENCODINGS:
        raise ValueError(f"invalid option {option!r}: {value!r} (accepted: None, grpc.Compression "
                         f"members or one of {', '.join(wire.ENCODINGS)})")
    return None if name == "identity" else str(name)


class ServicerContext(grpc.ServicerContext):
    """grpcio's ``ServicerContext`` for a call served by rr.

    Differences from grpcio's: ``is_active()`` turns False on the deadline,
    ``cancel()`` and the call's end, but a client's cancellation arrives as an
    exception in the servicer (see the module text), and the callbacks of
    ``add_callback`` run then; ``auth_context()`` only says whether TLS carried
    the call; ``send_initial_metadata`` goes out with the first message.
    """

    def __init__(self, call: Call) -> None:
        self._call = call
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._initial: tuple[tuple[str, str | bytes], ...] | None = None
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self._aborted = False
        self._cancelled = False
        self._callbacks: list[Callable[[], Any]] | None = []
        self._compression: str | None = call.server.compression
        self._skip_compression = False

    # -- the call -----------------------------------------------------------

    def is_active(self) -> bool:
        call = self._call
        return (self._callbacks is not None and not self._cancelled
                and (call.deadline is None or time.monotonic() < call.deadline))

    def time_remaining(self) -> float | None:
        deadline = self._call.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def cancel(self) -> None:
        """End the call with CANCELLED once the servicer next yields or returns."""
        if not self._cancelled and self._callbacks is not None:
            self._cancelled = True
            self._code, self._details = grpc.StatusCode.CANCELLED, "cancelled by the server"

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        """Run ``callback`` when the call ends (whatever the reason); False if it already ended."""
        if self._callbacks is None:
            return False
        self._callbacks.append(callback)
        return True

    def invocation_metadata(self) -> tuple[wire.Metadatum, ...]:
        return self._call.metadata

    def peer(self) -> str:
        peer = self._call.req.peer
        if not peer:
            return "unknown"
        host, port = peer[0], peer[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        secure = self._call.req.scheme == "https"
        return {"transport_security_type": [b"ssl" if secure else b"insecure"]}

    # -- metadata, status ---------------------------------------------------

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        if self._initial is not None or self._call.head_fixed:
            raise ValueError("initial metadata was already sent")
        self._initial = tuple(initial_metadata or ())

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = tuple(trailing_metadata or ())

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        if code == grpc.StatusCode.OK:
            _log.error("abort() called with StatusCode.OK; sending UNKNOWN", rpc=self._call.path)
            code = grpc.StatusCode.UNKNOWN
        self._code, self._details, self._aborted = code, details, True
        raise _Abort(details)

    def abort_with_status(self, status: grpc.Status) -> None:
        self.set_trailing_metadata(status.trailing_metadata)
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str | None:
        return self._details

    def set_compression(self, compression: grpc.Compression) -> None:
        if self._call.head_fixed:
            raise RuntimeError("set_compression() after the first response message")
        self._compression = compression_name(compression, "compression")

    def disable_next_message_compression(self) -> None:
        self._skip_compression = True

    # -- rr's side ----------------------------------------------------------

    def _finish(self) -> None:
        """The call ended: run the callbacks, once, each isolated from the others."""
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception as exc:
                _log.error("grpc call callback failed", rpc=self._call.path, exc_info=exc)


class _Requests(Iterator[Any]):
    """The request iterator a client-streaming servicer consumes (in its own process only)."""

    def __init__(self, call: Call) -> None:
        self.call = call

    def __iter__(self) -> _Requests:
        return self

    def __next__(self) -> Any:
        message = self.call.read_message()
        if message is None:
            raise StopIteration
        return message


class Call:
    """One RPC: request reading, the servicer run, the head and the trailers."""

    def __init__(self, server: Server, method: grpc.RpcMethodHandler, req: rr.Request, path: str,
                 deadline: float | None, request_encoding: str | None, response_encodings: frozenset[str],
                 content_type: str, metadata: tuple[wire.Metadatum, ...]) -> None:
        self.server = server
        self.method = method
        self.req = req
        self.path = path
        self.deadline = deadline
        self.content_type = content_type
        self.metadata = metadata
        self.accepted = response_encodings
        self.reader = wire.MessageReader(self._read, server.max_receive_message_length, request_encoding)
        self.context = ServicerContext(self)
        self.failure: wire.StatusError | None = None  # a request-side error, even if the servicer caught it
        self.head_fixed = False  # the first message is framed: head fields (encoding, metadata) are final
        self.encoding: str | None = None
        self.responses: Iterator[Any] | None = None
        self.unary_result: Any = None

    # -- requests -----------------------------------------------------------

    def _read(self, n: int) -> bytes:
        try:
            return self.req.read_body(n)
        except Exception as exc:
            if isinstance(exc, rr.ClientGone):
                raise
            raise _body_error(exc) from exc

    def read_message(self) -> Any:
        """The next request message, deserialized; None at the end of the request stream."""
        try:
            raw = self.reader.next()
            if raw is None:
                return None
            deserialize = self.method.request_deserializer
            if deserialize is None:
                return raw
            try:
                return deserialize(raw)
            except Exception:
                raise wire.StatusError(wire.INTERNAL, "failed to deserialize the request message") from None
        except wire.StatusError as exc:
            self.failure = self.failure or exc
            raise

    def _single_request(self) -> Any:
        request = self.read_message()
        if request is None:
            self.failure = wire.StatusError(wire.INTERNAL, "a unary call needs one request message, got none")
            raise self.failure
        if self.reader.next() is not None:
            self.failure = wire.StatusError(wire.INTERNAL, "a unary call needs one request message, got more")
            raise self.failure
        return request

    # -- running the servicer ------------------------------------------------

    def _step(self, fn: Callable[[], Any]) -> Any:
        """Run one step of the servicer under the time left before the deadline."""
        if self.deadline is None:
            return fn()
        left = self.deadline - time.monotonic()
        if left <= 0:
            self._tell_servicer(DeadlineExceeded())
            raise DeadlineExceeded()
        timer = gevent.Timeout(left, DeadlineExceeded())
        timer.start()
        try:
            return fn()
        finally:
            timer.close()

    def _tell_servicer(self, exc: BaseException) -> None:
        """Raise ``exc`` in a servicer generator suspended at a ``yield``, then close it.

        The deadline can pass, and the client can go, while the servicer waits
        for its next ``next()``; it learns it the same way as when it is running.
        """
        throw = getattr(self.responses, "throw", None)
        if throw is None:
            return
        try:
            throw(exc)
            self.responses.close()  # type: ignore[union-attr]
        except BaseException:  # noqa: S110 - its answer to the news does not matter any more
            pass

    def _invoke(self) -> Any:
        """Call the servicer; for streaming responses, keep its iterator. Returns the first message."""
        method, ctx = self.method, self.context
        if method.request_streaming:
            request: Any = _Requests(self)
            behavior = method.stream_stream if method.response_streaming else method.stream_unary
        else:
            request = self._single_request()
            behavior = method.unary_stream if method.response_streaming else method.unary_unary
        if not method.response_streaming:
            self.unary_result = behavior(request, ctx)
            return self._unary_message()
        if getattr(behavior, "experimental_non_blocking", False):
            queue: gevent.queue.Queue[Any] = gevent.queue.Queue()
            result = behavior(request, ctx, queue.put_nowait)
            self.responses = result if result is not None else iter(queue.get, None)
        else:
            result = behavior(request, ctx)
            self.responses = iter(result) if result is not None else iter(())
        return self._next_message()

    def _unary_message(self) -> Any:
        ctx = self.context
        if ctx._code not in (None, grpc.StatusCode.OK):
            return _END
        if self.unary_result is None:
            raise wire.StatusError(wire.INTERNAL, "the servicer returned no response message")
        return self._frame(self.unary_result)

    def _next_message(self) -> Any:
        if self.context._cancelled or self.responses is None:
            return _END
        try:
            message = next(self.responses)
        except StopIteration:
            return _END
        if self.context._cancelled:  # cancel() during this step: nothing more goes out
            return _END
        return self._frame(message)

    def _frame(self, message: Any) -> bytes:
        serialize = self.method.response_serializer
        try:
            payload = serialize(message) if serialize is not None else bytes(message)
        except Exception:
            raise wire.StatusError(wire.INTERNAL, "failed to serialize the response message") from None
        limit = self.server.max_send_message_length
        if limit is not None and len(payload) > limit:
            raise wire.StatusError(wire.RESOURCE_EXHAUSTED,
                                   f"response message larger than max ({len(payload)} vs. {limit})")
        if not self.head_fixed:
            self.head_fixed = True
            chosen = self.context._compression
            self.encoding = chosen if chosen in self.accepted else None
        ctx = self.context
        if self.encoding is not None and not ctx._skip_compression:
            return wire.frame(wire.compress(payload, self.encoding), True)
        ctx._skip_compression = False
        return wire.frame(payload)

    # -- outcomes ------------------------------------------------------------

    def _status_of(self, exc: BaseException) -> tuple[int, str]:
        """The status a servicer's exception ends the call with; rr's stop signals re-raised."""
        ctx = self.context
        if isinstance(exc, DeadlineExceeded):
            return wire.DEADLINE_EXCEEDED, "Deadline Exceeded"
        if not isinstance(exc, Exception) or isinstance(exc, rr.ClientGone):
            raise exc  # the process is being stopped (client reset, drain, kill): let it
        if self.failure is not None:
            return self.failure.code, self.failure.details
        if isinstance(exc, wire.StatusError):
            return exc.code, exc.details
        if ctx._aborted or ctx._code not in (None, grpc.StatusCode.OK):
            code = ctx._code or grpc.StatusCode.UNKNOWN
            return code.value[0], ctx._details or ""
        req = self.req
        _log.error("grpc handler crashed", rpc=self.path, request_id=req.request_id, exc_info=exc)
        return wire.INTERNAL, f"handler crashed (request_id {req.request_id})"

    def _final_status(self) -> tuple[int, str]:
        """The status of a call whose servicer finished without raising."""
        if self.failure is not None:
            return self.failure.code, self.failure.details
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return wire.DEADLINE_EXCEEDED, "Deadline Exceeded"
        code = self.context._code
        if code is None:
            return wire.OK, self.context._details or ""
        return code.value[0], self.context._details or ""

    def _head(self) -> list[tuple[str, str]]:
        head = [("content-type", self.content_type), ("grpc-accept-encoding", wire.ACCEPT_ENCODING)]
        if self.encoding is not None:
            head.append(("grpc-encoding", self.encoding))
        initial = self.context._initial
        if initial:
            head += wire.encode_metadata(initial)
        return head

    def _trailers(self, status: tuple[int, str]) -> list[tuple[str, str]]:
        code, details = status
        fields = [("grpc-status", str(code))]
        if details:
            fields.append(("grpc-message", wire.percent_encode(details)))
        try:
            fields += wire.encode_metadata(self.context._trailing)
        except ValueError as exc:
            _log.error("invalid trailing metadata dropped", rpc=self.path, request_id=self.req.request_id,
                       error=str(exc))
        return fields

    # -- the two phases ------------------------------------------------------

    def start(self) -> resp.Response | resp.Stream:
        """Phase 1 (in the route handler): run the servicer up to its first message."""
        try:
            first = self._step(self._invoke)
            status = self._final_status() if first is _END else None
        except BaseException as exc:
            try:
                status = self._status_of(exc)
            except BaseException:
                self.context._finish()
                raise
            first = _END
        if first is _END:
            assert status is not None
            return self._end_without_messages(status)
        try:
            head = self._head()
        except ValueError as exc:
            return self._end_without_messages(self._status_of(exc))
        return resp.Stream(200, head, lambda send: self.stream(first, send))

    def _end_without_messages(self, status: tuple[int, str]) -> resp.Response | resp.Stream:
        """Trailers-only (the status in the head), or head then trailers if metadata was sent."""
        if self.context._initial is None:
            self.context._finish()
            fields = [("content-type", self.content_type), ("grpc-accept-encoding", wire.ACCEPT_ENCODING)]
            return resp.Response(200, fields + self._trailers(status), b"")
        try:
            head = self._head()
        except ValueError as exc:
            self.context._initial = None
            return self._end_without_messages(self._status_of(exc))
        return resp.Stream(200, head, lambda send: self._send_status(send, status))

    def _send_status(self, send: Callable[..., None], status: tuple[int, str]) -> None:
        try:
            send(b"", fin=True, trailers=self._trailers(status))
        finally:
            self.context._finish()

    def stream(self, first: bytes, send: Callable[..., None]) -> None:
        """Phase 2 (the Stream's fn): the messages, then the trailers."""
        try:
            if not self.method.response_streaming:
                send(first, fin=True, trailers=self._trailers(self._final_status()))
                return
            send(first)
            while True:
                try:
                    item = self._step(self._next_message)
                except BaseException as exc:
                    status = self._status_of(exc)
                    break
                if item is _END:
                    status = self._final_status()
                    break
                send(item)
            send(b"", fin=True, trailers=self._trailers(status))
        except BaseException as exc:  # send failed: the client is gone, or this process is being ended
            self._tell_servicer(exc)
            raise
        finally:
            self.context._finish()
