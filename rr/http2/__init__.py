"""HTTP/2 for rr: the h2 connection process (``conn``) and the per-stream worker (``stream``).

``conn.serve_h2`` runs in the conn process once TLS ALPN selected ``h2`` (or on a
plain-TCP listener whose only protocol is ``http2``: h2c prior knowledge). It owns
the socket and the ``h2`` state machine; each request runs in a monitored stream
worker. Guide: ``docs/http2.md``.
"""
