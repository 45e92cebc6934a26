"""gRPC on rr: services from grpcio-tools' generated modules, served by rr's HTTP/2 streams.

What it is: a ``Server`` object that the generated ``add_XServicer_to_server``
functions accept in place of a ``grpc.Server``, so grpcio-style servicer
classes run unchanged, each call in the process rr runs its request in. Its
``routes()`` go into a listener's routes; every RPC kind is served (unary,
server-, client- and bidi-streaming), with deadlines, cancellation, gzip and
deflate message compression, metadata (``-bin`` included) and trailers-only
errors; grpcio's health and reflection servicers are opt-in.

What it must never do: depend on rr's internals. It is built on the public
handler API alone: a route handler, ``req.read_body(n)`` for the request
stream and the ``Stream(status, headers, fn)`` shape, whose
``send(data, fin, trailers)`` carries the messages and the status.

Modules: ``wire`` (the pure wire format), ``call`` (one call: the servicer
context and the run of a servicer), ``server`` (registration, HTTP-level
checks, routes). Needs the ``grpc`` extra (``pip install rr[grpc]``). See
docs/guide.md ("gRPC") and docs/contrib.md for the listener options that
streaming calls need.
"""

from rr.contrib.grpc.call import DeadlineExceeded, ServicerContext
from rr.contrib.grpc.server import Server, trailers_only
from rr.contrib.grpc.wire import Metadatum

__all__ = ["DeadlineExceeded", "Metadatum", "Server", "ServicerContext", "trailers_only"]
