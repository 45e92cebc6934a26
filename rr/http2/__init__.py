"""HTTP/2 for rr: frames (``codec``), the sans-IO connection state machine
(``machine``) with its outbound scheduler (``flow``), and the process shell
(``conn``).

``conn.serve_h2`` runs in the connection process once the front door
(``rr.transport``) chose h2: TLS ALPN ``h2``, h2c prior knowledge on an
h2-only plain port, or a sniffed preface / ``Upgrade: h2c`` on a port shared
with HTTP/1.1. Each request runs in a monitored stream worker
(``rr.stream``). Guide: ``docs/http2.md``.
"""
