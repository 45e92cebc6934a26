"""tools/bench_ws/wsbench.c, the C WebSocket load client, against servers written here.

Each test starts a small threaded server on an ephemeral loopback port that
does one thing a real server may do (fragment its echo, ping in the middle of
a message, split frames over many sends) or one thing that is wrong (a bad
Sec-WebSocket-Accept, another status, other bytes back, silence, an early
close), runs the compiled client against it, and reads the client's
``BENCH_JSON`` line with tools/bench.py's own parser: the good cases must count
every echo and no error, the bad ones the right error and never hang. The run
against rr itself is tools/bench.py's end-to-end test in test_bench.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from tests.tools.test_bench import bench

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def wsbench() -> str:
    from tests import peers

    peers.require("cc")
    why = bench.wsbench_unavailable()  # compiles tools/bench_ws/wsbench.c when it is newer than the binary
    assert why is None, why
    return str(bench.WSBENCH_BIN)


class Peer:
    """The server side of one connection: buffered reads of the client's (masked) frames."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buf = b""
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(15)  # a safety net: every test ends long before

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.conn.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def handshake_key(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            data = self.conn.recv(4096)
            if not data:
                raise EOFError
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"GET /ws HTTP/1.1"), lines[0]
        fields = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines[1:])}
        assert fields[b"upgrade"].lower() == b"websocket" and fields[b"sec-websocket-version"] == b"13"
        assert b"sec-websocket-extensions" not in fields  # no permessage-deflate offered
        return fields[b"sec-websocket-key"]

    def accept(self, key: bytes, *, accept: bytes | None = None, status: bytes = b"101 Switching Protocols") -> None:
        accept = accept or base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.conn.sendall(b"HTTP/1.1 " + status + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")

    def read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._need(2)
        assert b1 & 0x80, "a client frame must be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        mask = self._need(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._need(n)))
        return bool(b0 & 0x80), b0 & 0x0F, data

    def wait_eof(self) -> None:
        try:
            while self.conn.recv(65536):
                pass
        except OSError:
            pass


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server frame: unmasked, minimal length encoding (RFC 6455 5.2)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def serve(handler: Callable[[Peer, int], None], connections: int) -> tuple[int, Callable[[], list[BaseException]]]:
    """A listener whose i-th accepted connection runs ``handler(peer, i)`` in its own thread;
    the returned ``join`` waits for them (bounded) and hands back what they raised."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(15)
    errors: list[BaseException] = []
    threads: list[threading.Thread] = []

    def run(conn: socket.socket, i: int) -> None:
        with conn:
            try:
                handler(Peer(conn), i)
            except BaseException as exc:  # noqa: BLE001 -- reported by join()
                errors.append(exc)

    def accept_all() -> None:
        with listener:
            for i in range(connections):
                try:
                    conn, _ = listener.accept()
                except OSError as exc:
                    errors.append(exc)
                    return
                t = threading.Thread(target=run, args=(conn, i), daemon=True)
                t.start()
                threads.append(t)

    acceptor = threading.Thread(target=accept_all, daemon=True)
    acceptor.start()

    def join() -> list[BaseException]:
        acceptor.join(20)
        for t in threads:
            t.join(20)
        assert not acceptor.is_alive() and not any(t.is_alive() for t in threads), "a server thread hung"
        return errors

    return listener.getsockname()[1], join


def run_client(exe: str, port: int, *, connections: int = 1, duration: float = 1, size: int = 1024,
               path: str = "/ws") -> tuple[int, object, float, str]:
    t0 = time.monotonic()
    out = subprocess.run([exe, "--url", f"ws://127.0.0.1:{port}{path}", "--connections", str(connections),
                          "--duration", str(duration), "--size", str(size)],
                         capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - t0
    assert out.stdout.splitlines()[-1].startswith("msg/s "), out.stdout + out.stderr
    return out.returncode, bench.parse_wrk_output(out.stdout), elapsed, out.stdout


# --------------------------------------------------------------------------- a correct but awkward server


def test_fragmented_split_echoes_with_pings_in_between_all_count(wsbench):
    """Each echo of a 70,000-byte message comes as three fragments (64-bit, empty, 16-bit
    lengths) with a ping between them, its first 40 bytes one per send: every echo counts,
    every ping gets its pong with the same payload, and the close at the end is 1000."""
    size = 70_000
    stats = {"echoed": 0, "pongs": 0, "close": None}

    def handler(peer: Peer, _i: int) -> None:
        peer.accept(peer.handshake_key())
        while True:
            fin, opcode, data = peer.read_frame()
            if opcode == 0x8:
                stats["close"] = struct.unpack("!H", data[:2])[0]
                peer.conn.sendall(frame(0x8, data[:2]))
                return
            assert (fin, opcode, data) == (True, 0x1, b"x" * size)
            nonce = os.urandom(4)
            out = frame(0x1, data[:65_600], fin=False) + frame(0x9, nonce) + frame(0x0, b"", fin=False) \
                + frame(0x0, data[65_600:])
            for b in out[:40]:
                peer.conn.sendall(bytes([b]))
            for i in range(40, len(out), 1000):
                peer.conn.sendall(out[i:i + 1000])
            stats["echoed"] += 1
            fin, opcode, pong = peer.read_frame()
            assert (fin, opcode, pong) == (True, 0xA, nonce)
            stats["pongs"] += 1

    port, join = serve(handler, 1)
    rc, result, elapsed, text = run_client(wsbench, port, size=size, duration=1)
    assert join() == []
    assert rc == 0 and result.error_count == 0, text
    assert result.requests == stats["echoed"] == stats["pongs"] > 0, (text, stats)
    assert stats["close"] == 1000
    assert result.p50_us and result.p50_us <= result.p99_us
    assert elapsed < 5


def test_many_connections_each_count_their_own_echoes(wsbench):
    """Ten connections against a plain echo server: the client's count is the server's."""
    echoed = [0] * 10

    def handler(peer: Peer, i: int) -> None:
        peer.accept(peer.handshake_key())
        while True:
            _fin, opcode, data = peer.read_frame()
            if opcode == 0x8:
                peer.conn.sendall(frame(0x8, data))
                return
            peer.conn.sendall(frame(0x1, data))
            echoed[i] += 1

    port, join = serve(handler, 10)
    rc, result, _elapsed, text = run_client(wsbench, port, connections=10, size=200, duration=1)
    assert join() == []
    assert rc == 0 and result.error_count == 0, text
    assert result.requests == sum(echoed) and all(echoed), (text, echoed)


# --------------------------------------------------------------------------- wrong servers: errors, no hang


@pytest.mark.parametrize("reply", [frame(0x1, b"wrong"), frame(0x1, b"y" * 1024), frame(0x1, b"x" * 1023),
                                   frame(0x2, b"x" * 1024), frame(0x1, b"x" * 1025),
                                   bytes([0xC1, 4]) + b"xxxx"],  # RSV1 set, no extension agreed
                         ids=["short-other", "other-bytes", "one-short", "binary", "one-long", "rsv1"])
def test_a_wrong_echo_is_a_status_error(wsbench, reply):
    def handler(peer: Peer, _i: int) -> None:
        peer.accept(peer.handshake_key())
        peer.read_frame()
        peer.conn.sendall(reply)
        peer.wait_eof()  # the client drops the connection

    port, join = serve(handler, 2)
    rc, result, elapsed, text = run_client(wsbench, port, connections=2, duration=1)
    assert join() == []
    assert rc == 1 and result.requests == 0, text
    assert result.errors == {"connect": 0, "read": 0, "write": 0, "status": 2, "timeout": 0}, text
    assert elapsed < 5


@pytest.mark.parametrize(("answer", "counted"), [
    ({"accept": base64.b64encode(b"\0" * 20)}, "connect"),   # a Sec-WebSocket-Accept for another key
    ({"status": b"403 Forbidden"}, "status"),
])
def test_a_bad_handshake_answer_is_counted_and_ends_the_connection(wsbench, answer, counted):
    def handler(peer: Peer, _i: int) -> None:
        peer.accept(peer.handshake_key(), **answer)
        peer.wait_eof()

    port, join = serve(handler, 3)
    rc, result, elapsed, text = run_client(wsbench, port, connections=3, duration=1)
    assert join() == []
    assert rc == 1 and result.requests == 0, text
    assert result.errors[counted] == 3 and result.error_count == 3, text
    assert elapsed < 5


def test_an_early_close_from_the_server_is_a_read_error(wsbench):
    def handler(peer: Peer, i: int) -> None:
        peer.accept(peer.handshake_key())
        for _ in range(3):
            peer.conn.sendall(frame(0x1, peer.read_frame()[2]))
        peer.read_frame()
        if i == 0:
            peer.conn.sendall(frame(0x8, struct.pack("!H", 1001)))
            peer.wait_eof()  # the client must end it on the close frame, not on an EOF
        # the other connection just goes away (EOF)

    port, join = serve(handler, 2)
    rc, result, elapsed, text = run_client(wsbench, port, connections=2, duration=3)
    assert join() == []
    assert rc == 0 and result.requests == 6, text
    assert result.errors == {"connect": 0, "read": 2, "write": 0, "status": 0, "timeout": 0}, text
    assert elapsed < 3  # both ended before the deadline: the client did not wait it out


def test_silent_servers_are_given_up_on_within_the_bounds(wsbench):
    """One connection never gets a handshake answer (a connect error 5 s after start), the
    other never gets its echo (a timeout 5 s after the deadline); the client still exits."""
    release = threading.Event()

    def handler(peer: Peer, i: int) -> None:
        key = peer.handshake_key()
        if i == 1:
            peer.accept(key)
            peer.read_frame()
        release.wait(15)

    port, join = serve(handler, 2)
    try:
        rc, result, elapsed, text = run_client(wsbench, port, connections=2, duration=0.2)
    finally:
        release.set()
    assert join() == []
    assert rc == 1 and result.requests == 0, text
    assert result.errors == {"connect": 1, "read": 0, "write": 0, "status": 0, "timeout": 1}, text
    assert 5 <= elapsed < 8, elapsed


def test_nothing_listening_is_a_connect_error_per_connection(wsbench):
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    rc, result, elapsed, text = run_client(wsbench, port, connections=4, duration=1)
    assert rc == 1 and result.errors["connect"] == 4 and result.requests == 0, text
    assert elapsed < 5


@pytest.mark.parametrize("argv", [["--url", "ws://192.0.2.1:80/ws"], ["--url", "http://127.0.0.1:80/"],
                                  ["--url", "ws://127.0.0.1:80/", "--connections", "0"],
                                  ["--url", "ws://127.0.0.1:80/", "--bogus", "1"]])
def test_bad_arguments_and_non_loopback_urls_are_refused(wsbench, argv):
    out = subprocess.run([wsbench, *argv], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "wsbench:" in out.stderr and not out.stdout
