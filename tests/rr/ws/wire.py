"""A hand-made WebSocket client for hostile inputs: frames built byte by byte.

The well-behaved side of the tests is the ``websockets`` client (rr did not
write it); this one exists to send what no library would (unmasked frames,
bad lengths, invalid UTF-8 split across fragments) and to read the server's
frames exactly as they arrive.
"""

from __future__ import annotations

import base64
import os
import struct

from gevent import socket as gsocket

KEY = base64.b64encode(b"0123456789abcdef").decode()
TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def handshake_request(path: str = "/", extra: list[str] | None = None, key: str = KEY,
                      version: str = "13") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: t", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {version}", *(extra or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv1: bool = False,
          length: int | None = None) -> bytes:
    """One frame; ``length`` overrides the declared payload length (hostile headers)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Client:
    """A raw socket after a successful handshake, reading unmasked server frames."""

    def __init__(self, sock: gsocket.socket, head: bytes, rest: bytes) -> None:
        self.sock = sock
        self.head = head
        self.buf = rest

    @classmethod
    def open(cls, port: int, request: bytes | None = None, after: bytes = b"",
             timeout: float = 10.0) -> Client:
        sock = gsocket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.sendall((request or handshake_request()) + after)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {buf!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        return cls(sock, head, rest)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed with {len(self.buf)} of {n} bytes")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame(self) -> tuple[int, bool, bytes]:
        """(opcode, fin, payload) of the next server frame (never masked)."""
        b0, b1 = self._need(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        return b0 & 0x0F, bool(b0 & 0x80), self._need(n)

    def read_close(self) -> tuple[int | None, bytes]:
        """Skip data frames up to the server's close frame: (code, reason)."""
        while True:
            opcode, _, payload = self.read_frame()
            if opcode == CLOSE:
                if not payload:
                    return None, b""
                return struct.unpack("!H", payload[:2])[0], payload[2:]

    def closed_by_server(self) -> bool:
        """True when the server closes the TCP connection (EOF) after its close frame."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
