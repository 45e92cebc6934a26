"""An h1-WebSocket → h2-extended-CONNECT byte bridge, so an h1-only WebSocket client
(kosoku's Autobahn cases) can exercise rr's WebSocket over HTTP/2 (RFC 8441).

Per accepted connection: read the client's HTTP/1.1 upgrade request, open one
h2 connection to rr (the ``h2`` library) and an extended CONNECT stream on it
forwarding ``Sec-WebSocket-Protocol``/``-Extensions``, answer the client 101
with rr's negotiated fields, then move bytes unchanged both ways (the frames,
masking included, are the client's own: the bridge never parses them). The
client's TCP end → END_STREAM; the stream's end or reset → the TCP close.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import gevent
import gevent.server
import h2.config
import h2.connection
import h2.events
import h2.exceptions
from gevent import socket as gsocket

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Bridge:
    def __init__(self, rr_port: int, port: int = 0) -> None:
        self.rr_port = rr_port
        self.server = gevent.server.StreamServer(("127.0.0.1", port), self.handle)
        self.server.start()
        self.port = self.server.server_port

    def stop(self) -> None:
        self.server.stop()

    def handle(self, client: Any, _addr: Any) -> None:
        try:
            self.bridge(client)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            client.close()

    def bridge(self, client: Any) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        up = gsocket.create_connection(("127.0.0.1", self.rr_port))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.increment_flow_control_window(2**30)
        up.sendall(conn.data_to_send())
        settings_seen = False
        while not settings_seen:
            data = up.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                settings_seen |= isinstance(event, h2.events.RemoteSettingsChanged)
        sid = conn.get_next_available_stream_id()
        extra = [(k, fields[k]) for k in ("sec-websocket-protocol", "sec-websocket-extensions") if k in fields]
        conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                (":path", path), (":authority", f"127.0.0.1:{self.rr_port}"),
                                ("sec-websocket-version", "13"), *extra])
        conn.increment_flow_control_window(2**30, sid)
        up.sendall(conn.data_to_send())
        state = {"answered": False, "done": False}
        pending = bytearray()  # client bytes waiting for the stream's window
        ended = False

        def to_client(events: list[Any]) -> None:
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    hdrs = dict(event.headers)
                    if hdrs.get(":status") != "200":
                        state["done"] = True
                        return
                    accept = base64.b64encode(hashlib.sha1(fields["sec-websocket-key"].encode() + _GUID)
                                              .digest()).decode()
                    out = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                           f"Sec-WebSocket-Accept: {accept}"]
                    out += [f"{k}: {v}" for k, v in hdrs.items() if k.startswith("sec-websocket-")]
                    client.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
                    state["answered"] = True
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                    client.sendall(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset,
                                        h2.events.ConnectionTerminated)) \
                        and getattr(event, "stream_id", sid) in (sid, 0, None):
                    state["done"] = True

        def push() -> None:
            nonlocal ended
            while pending:
                n = min(len(pending), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if n <= 0:
                    break
                conn.send_data(sid, bytes(pending[:n]))
                del pending[:n]
            if ended and not pending and not state["done"]:
                conn.end_stream(sid)
                state["done_sent"] = True

        def upstream() -> None:
            while not state["done"]:
                data = up.recv(65536)
                if not data:
                    state["done"] = True
                    break
                to_client(conn.receive_data(data))
                if state["answered"]:
                    push()
                out = conn.data_to_send()
                if out:
                    up.sendall(out)
            client.shutdown(gsocket.SHUT_RDWR)

        reader = gevent.spawn(upstream)
        try:
            if rest:
                pending.extend(rest)
            while not state["done"]:
                data = client.recv(65536)
                if not data:
                    ended = True
                else:
                    pending.extend(data)
                if state["answered"] and not state.get("done_sent"):
                    push()
                    out = conn.data_to_send()
                    if out:
                        up.sendall(out)
                if ended:
                    break
            reader.join(timeout=30)
        finally:
            reader.kill()
            up.close()
