"""A small h2c test client on gevent sockets (runs in the test's hub, next to the server).

It speaks prior-knowledge HTTP/2 with the ``h2`` library, can open many streams
at once, send bodies under flow control, and reports per stream: status,
headers, body, trailers, and whether the stream was reset.
"""

from __future__ import annotations

import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from gevent import socket as gsocket


class Result:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.trailers: list[tuple[str, str]] = []
        self.interim: list[list[tuple[str, str]]] = []  # informational (1xx) heads, in order
        self.reset: int | None = None
        self.done = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class H2Client:
    def __init__(self, port: int, timeout: float = 10.0, settings: dict[int, int] | None = None) -> None:
        self.sock = gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.port = port
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.conn.increment_flow_control_window(2**24)
        self.results: dict[int, Result] = {}
        self.bodies: dict[int, bytes] = {}
        self.goaway: Any = None
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, body: bytes = b"",
                headers: list[tuple[str, str]] | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "http"),
                  (":authority", f"127.0.0.1:{self.port}"), *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=not body)
        self.results[sid] = Result()
        if body:
            self.bodies[sid] = body
            self.pump(sid)
        self.flush()
        return sid

    def pump(self, sid: int) -> None:
        body = self.bodies.get(sid)
        if body is None or self.results[sid].done:
            self.bodies.pop(sid, None)
            return
        while body:
            n = min(len(body), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n <= 0:
                self.bodies[sid] = body
                return
            try:
                self.conn.send_data(sid, body[:n], end_stream=n == len(body))
            except h2.exceptions.StreamClosedError:  # the server answered (or reset) early
                break
            body = body[n:]
        self.bodies.pop(sid, None)

    def run(self, sids: list[int] | None = None, timeout: float | None = None) -> dict[int, Result]:
        """Read until every stream in ``sids`` (default: all) has ended or been reset."""
        wanted = list(self.results) if sids is None else sids
        deadline = time.monotonic() + (timeout or self.timeout)
        while not all(self.results[s].done for s in wanted):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("streams did not finish")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for event in self.conn.receive_data(data):
                self.on_event(event)
            self.flush()
        return {s: self.results[s] for s in wanted}

    def on_event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        res = self.results.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and res:
            res.headers = [(str(k), str(v)) for k, v in event.headers or []]
            res.status = int(dict(res.headers)[":status"])
        elif isinstance(event, h2.events.InformationalResponseReceived) and res:
            res.interim.append([(str(k), str(v)) for k, v in event.headers or []])
        elif isinstance(event, h2.events.DataReceived):
            if res:
                res.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived) and res:
            res.trailers = [(str(k), str(v)) for k, v in event.headers or []]
        elif isinstance(event, h2.events.StreamEnded) and res:
            res.done = True
        elif isinstance(event, h2.events.StreamReset) and res:
            if not res.done:
                res.reset = event.error_code
            res.done = True
        elif isinstance(event, h2.events.WindowUpdated):
            for s in list(self.bodies):
                self.pump(s)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def close(self) -> None:
        self.sock.close()
