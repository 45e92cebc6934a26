"""WebSocket (RFC 6455) for rr: one session implementation over any byte stream.

``rr.ws.handshake`` validates an upgrade and computes the answer;
``rr.ws.session`` runs wsproto over a ``ByteStream`` and drives the handler
(its docstring is the handler API). Served today over HTTP/1.1; h2 (RFC 8441)
and h3 (RFC 9220) answer 501 for the ``WebSocket`` shape until their
transports provide a ``ByteStream``.

What this package must never do: import a protocol folder (``rr/http1``,
``rr/http2``); they import it.
"""
