"""The gRPC server object: where services are registered and how rr routes to them.

What it owns: the table of method handlers (filled by the ``add_*Servicer_to_server``
functions grpcio-tools generates, which call ``add_generic_rpc_handlers`` and
``add_registered_method_handlers`` on whatever "server" they are given), the
HTTP-level checks of the gRPC HTTP/2 protocol, and the route entries rr
serves them under. Opt-in: grpcio's own health and reflection servicers.

What it must never do: run a servicer itself (``call.Call`` does), or accept
registrations that rr would never route (after ``routes()`` the table is
frozen, as grpcio freezes it at ``start()``).

HTTP-level failures, before any gRPC call starts (the gRPC HTTP/2 protocol
answers these with HTTP statuses, which clients map to gRPC codes):

=====================================  ===================================================
request                                answer
=====================================  ===================================================
HTTP/1.x                               505, text (gRPC needs HTTP/2 semantics: trailers,
                                       full duplex)
not POST                               405 with ``allow: POST`` (the router, or here)
content-type not application/grpc      415 (``+proto`` and parameters accepted)
unknown service or method              200, trailers-only ``UNIMPLEMENTED``
unsupported ``grpc-encoding``          200, trailers-only ``UNIMPLEMENTED`` with
                                       ``grpc-accept-encoding``
malformed ``grpc-timeout``             200, trailers-only ``INTERNAL``
=====================================  ===================================================
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

import rr
from rr import resp
from rr.contrib.grpc import wire
from rr.contrib.grpc.call import Call, compression_name

MiB = 1024 * 1024

_CONTENT_TYPES = frozenset({"application/grpc", "application/grpc+proto"})
_TEXT = [("content-type", "text/plain; charset=utf-8")]
_GRPC = [("content-type", "application/grpc"), ("grpc-accept-encoding", wire.ACCEPT_ENCODING)]


class _CallDetails:
    """grpc.HandlerCallDetails for generic handlers' ``service(details)``."""

    __slots__ = ("method", "invocation_metadata")

    def __init__(self, method: str, invocation_metadata: tuple[wire.Metadatum, ...]) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata


def trailers_only(code: int, details: str, extra: list[tuple[str, str]] | None = None) -> resp.Response:
    """A gRPC error as one HEADERS block: HTTP 200 with ``grpc-status`` and no body."""
    fields = [*_GRPC, ("grpc-status", str(code))]
    if details:
        fields.append(("grpc-message", wire.percent_encode(details)))
    return resp.Response(200, fields + (extra or []), b"")


def _content_type(value: str | None) -> str | None:
    """The request's gRPC content type (echoed in the response), None when it is not gRPC."""
    if value is None:
        return None
    if value in _CONTENT_TYPES:
        return value
    base = value.partition(";")[0].strip().lower()
    return base if base in _CONTENT_TYPES else None


def _accepted(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(part.strip() for part in value.split(",")) & frozenset(wire.ENCODINGS)


class Server:
    """A gRPC server for rr: register services on it as on a ``grpc.Server``, then route to it.

    >>> server = Server()
    >>> route_guide_pb2_grpc.add_RouteGuideServicer_to_server(RouteGuide(), server)
    >>> rr.start_listener("grpc", {"port": 50051, "protocols": ["http2"],
    ...                            "routes": server.routes(), "not_found": server.not_found})

    The routes read request messages as they arrive (``body_buffering: "manual"`` per
    route), beside other routes that keep the listener's mode. As the whole listener's
    handler (``"routes": server``) the listener itself must be in manual mode.

    Options (checked here, ``ValueError`` names the bad one):

    - ``max_receive_message_length`` (4 MiB, grpcio's default): a request
      message whose length prefix says more is refused RESOURCE_EXHAUSTED
      before its payload is read; also bounds a decompressed message;
    - ``max_send_message_length`` (None: unbounded, as grpcio): a larger
      response message ends the call RESOURCE_EXHAUSTED;
    - ``compression``: ``grpc.Compression.Gzip``/``Deflate`` (or ``"gzip"``/
      ``"deflate"``) compresses response messages for clients that accept it;
      ``context.set_compression`` chooses per call.
    """

    def __init__(self, *, max_receive_message_length: int = 4 * MiB,
                 max_send_message_length: int | None = None, compression: Any = None) -> None:
        if isinstance(max_receive_message_length, bool) or not isinstance(max_receive_message_length, int) \
                or not 0 <= max_receive_message_length <= 2**32 - 1:
            raise ValueError(f"invalid option 'max_receive_message_length': {max_receive_message_length!r} "
                             "(accepted: an integer in 0..2**32-1)")
        if max_send_message_length is not None and (
                isinstance(max_send_message_length, bool) or not isinstance(max_send_message_length, int)
                or not 0 <= max_send_message_length <= 2**32 - 1):
            raise ValueError(f"invalid option 'max_send_message_length': {max_send_message_length!r} "
                             "(accepted: None or an integer in 0..2**32-1)")
        self.max_receive_message_length = max_receive_message_length
        self.max_send_message_length = max_send_message_length
        self.compression = compression_name(compression, "compression")
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        self._services: dict[str, None] = {}  # insertion-ordered set of service names
        self._generic: list[grpc.GenericRpcHandler] = []
        self._frozen = False

    # -- the grpc.Server surface the generated code uses ---------------------

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._check_open()
        for handler in generic_rpc_handlers:
            name = getattr(handler, "service_name", None)
            if callable(name):
                self._services.setdefault(name(), None)
            self._generic.append(handler)

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self._check_open()
        self._services.setdefault(service_name, None)
        for method, handler in method_handlers.items():
            self._methods[f"/{service_name}/{method}"] = handler

    def _check_open(self) -> None:
        if self._frozen:
            raise RuntimeError("register services before calling routes(): rr has compiled its routes")

    # -- opt-in standard services --------------------------------------------

    def enable_health(self) -> Any:
        """Serve ``grpc.health.v1.Health`` (grpcio-health-checking's own servicer); returns it.

        The overall status ``""`` and every service registered so far start
        SERVING; call ``.set(name, status)`` on the returned servicer to change
        one. ``Watch`` streams run in rr's processes like any other call.
        """
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self)
        for name in self.service_names():
            servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return servicer

    def enable_reflection(self) -> None:
        """Serve ``grpc.reflection.v1alpha.ServerReflection`` (grpcio-reflection's servicer).

        It lists the services registered so far (register them first) and
        answers from protobuf's default descriptor pool, where the generated
        ``*_pb2`` modules put their descriptors.
        """
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection([*self.service_names(), reflection.SERVICE_NAME], self)

    def service_names(self) -> list[str]:
        return list(self._services)

    # -- routing -------------------------------------------------------------

    def routes(self) -> list[dict[str, Any]]:
        """Route entries for rr: one per method, one per service for unknown methods.

        Put them in a listener's ``routes`` (alone, or among other routes);
        set the listener's ``not_found`` to ``server.not_found`` so that a
        gRPC call to an unknown service gets UNIMPLEMENTED instead of a 404.
        """
        self._frozen = True
        # Every gRPC route reads its messages as they arrive (a stream may never end, and
        # max_receive_message_length is checked per message), whatever the listener's mode.
        manual = {"methods": ["POST"], "body_buffering": "manual"}
        routes: list[dict[str, Any]] = [
            {"path": path, "handler": _Route(self, path, handler), **manual}
            for path, handler in self._methods.items()
        ]
        routes += [{"path": f"/{name}/:method", "handler": self, **manual} for name in self._services]
        if any(not callable(getattr(h, "service_name", None)) for h in self._generic):
            routes.append({"path": "/:service/:method", "handler": self, **manual})
        return routes

    def not_found(self, req: rr.Request) -> resp.Response:
        """A listener's ``not_found``: UNIMPLEMENTED for a gRPC call, rr's 404 for anything else."""
        if req.method == "POST" and _content_type(req.headers.get("content-type")) is not None:
            return trailers_only(wire.UNIMPLEMENTED, f"unknown service or method {req.path}")
        return resp.text(404, "Not Found")

    def __call__(self, req: rr.Request) -> resp.Response | resp.Stream:
        """The server as a whole listener's handler (``"routes": server``)."""
        self._frozen = True
        handler = self._methods.get(req.path)
        if handler is None and self._generic:
            metadata = wire.decode_metadata(req.headers.items())
            details = _CallDetails(req.path, metadata)
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    break
        if handler is None:
            refused = _http_refusal(req)
            if refused is not None:
                return refused
            return trailers_only(wire.UNIMPLEMENTED, f"unknown service or method {req.path}")
        return self.serve(req, req.path, handler)

    def serve(self, req: rr.Request, path: str, method: grpc.RpcMethodHandler) -> resp.Response | resp.Stream:
        """Answer one request with method handler ``method``."""
        refused = _http_refusal(req)
        if refused is not None:
            return refused
        headers = req.headers
        deadline = None
        timeout = headers.get("grpc-timeout")
        if timeout is not None:
            try:
                deadline = time.monotonic() + wire.parse_timeout(timeout)
            except ValueError as exc:
                return trailers_only(wire.INTERNAL, str(exc))
        encoding = headers.get("grpc-encoding")
        if encoding is not None and encoding not in wire.ENCODINGS:
            return trailers_only(wire.UNIMPLEMENTED, f"message encoding {encoding!r} is not supported")
        try:
            metadata = wire.decode_metadata(headers.items())
        except wire.StatusError as exc:
            return trailers_only(exc.code, exc.details)
        content_type = _content_type(headers.get("content-type")) or "application/grpc"
        call = Call(self, method, req, path, deadline, encoding, _accepted(headers.get("grpc-accept-encoding")),
                    content_type, metadata)
        return call.start()


def _http_refusal(req: rr.Request) -> resp.Response | None:
    """The HTTP-level answer for a request that cannot be a gRPC call, or None."""
    if req.version.startswith("HTTP/1"):
        return resp.Response(505, _TEXT, b"gRPC needs HTTP/2\n")
    if req.method != "POST":
        return resp.Response(405, [*_TEXT, ("allow", "POST")], b"gRPC calls are POST\n")
    if _content_type(req.headers.get("content-type")) is None:
        return resp.Response(415, _TEXT, b"expected content-type application/grpc\n")
    return None


class _Route:
    """The route handler of one method (a callable the router can hold)."""

    __slots__ = ("server", "path", "method")

    def __init__(self, server: Server, path: str, method: grpc.RpcMethodHandler) -> None:
        self.server = server
        self.path = path
        self.method = method

    def __call__(self, req: rr.Request) -> resp.Response | resp.Stream:
        return self.server.serve(req, self.path, self.method)
