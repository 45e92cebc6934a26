"""WebSocket (RFC 6455) for rr: one session implementation over any byte stream.

``rr.ws.handshake`` validates an upgrade and computes the answer;
``rr.ws.session`` runs wsproto over a ``ByteStream`` and drives the handler
(its docstring is the handler API). Served over HTTP/1.1 (upgrade) and h2
(RFC 8441 extended CONNECT, ``rr.stream.WsStream``); h3 (RFC 9220) answers
501 for the ``WebSocket`` shape until its transport provides a stream.

What this package must never do: import a protocol folder (``rr/http1``,
``rr/http2``); they import it.
"""
