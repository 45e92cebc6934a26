"""rr.tlsio: TLS over ssl.SSLObject and memory BIOs on the raw socket.

The first tests drive a ``TlsStream`` directly over a socket pair, with the
client a stdlib ``SSLObject`` whose records the test writes to the socket
itself — so a record can be cut in two, or the connection closed without
``close_notify``, at a byte the test chooses. The others go through a real
listener with stdlib and OpenSSL clients: the handshake timeout, ALPN, the
``close_notify`` rr now says, a client that never reads, a context's SNI
callback (it sees an ``SSLObject``), and TLS's own
messages (a TLS 1.3 key update, a TLS 1.2 renegotiation) in mid-connection.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time

import gevent
import gevent.event
import pytest
from gevent import socket as gsocket

from rr import resp
from rr.tlsio import WRITE_CHUNK, TlsStream
from tests.rr.certs import make_cert
from tests.rr.conftest import in_thread
from tests.rr.wire import client_context, tls_socket


def _server_context(tls_files) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls_files)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


class BioClient:
    """A stdlib TLS client whose records the test moves by hand (``seal`` → bytes to send)."""

    def __init__(self, sock, cafile: str) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = client_context(cafile).wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self, then: bytes = b"") -> None:
        """The client's side; ``then`` is sealed and sent in one write with its last flight."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            self.sock.sendall(self.outgoing.read())
            data = self.sock.recv(65536)
            assert data, "server closed during the handshake"
            self.incoming.write(data)
        last = self.outgoing.read()
        self.sock.sendall(last + self.seal(then) if then else last)

    def seal(self, plaintext: bytes) -> bytes:
        self.obj.write(plaintext)
        return self.outgoing.read()

    def read_at_least(self, n: int) -> bytes:
        """Plaintext from the socket until at least ``n`` bytes have been decrypted."""
        got = b""
        while len(got) < n:
            data = self.sock.recv(65536)
            assert data
            self.incoming.write(data)
            try:
                while True:
                    got += self.obj.read(65536)
            except ssl.SSLWantReadError:
                pass
        return got


@pytest.fixture
def pair(tls_files):
    """(server TlsStream, client BioClient, client socket) after a completed handshake."""
    a, b = gsocket.socketpair()
    b.settimeout(10)
    server = TlsStream(a, _server_context(tls_files))
    server.settimeout(10)
    client = BioClient(b, tls_files[0])
    shaking = gevent.spawn(server.do_handshake)
    client.handshake()
    shaking.get(timeout=10)
    yield server, client, b
    server.close()
    b.close()


def test_a_record_split_across_reads_is_decrypted_once_whole(pair):
    server, client, sock = pair
    record = client.seal(b"x" * 1000)
    sock.sendall(record[:7])  # the record header and two bytes of it
    server.settimeout(0.0)
    with pytest.raises(ssl.SSLWantReadError):
        server.recv(65536)
    sock.sendall(record[7:])
    server.settimeout(10)
    assert server.recv(65536) == b"x" * 1000


def test_every_whole_record_available_is_read_in_one_call(pair):
    server, client, sock = pair
    sock.sendall(client.seal(b"a" * 100) + client.seal(b"b" * 20000) + client.seal(b"c" * 5))
    assert server.recv(65536) == b"a" * 100 + b"b" * 20000 + b"c" * 5
    server.settimeout(0.0)
    with pytest.raises(ssl.SSLWantReadError):
        server.recv(65536)


def test_a_read_that_fills_its_size_leaves_the_rest_for_the_next_without_the_socket(pair):
    """recv_nowait's one-attempt path reads the socket only when nothing is left to decrypt:
    after a result of exactly ``n`` bytes the rest comes from the stream, the socket empty."""
    server, client, sock = pair
    sock.sendall(client.seal(b"p" * 10000) + client.seal(b"q" * 3000))
    got = [server.recv_nowait(4000) for _ in range(4)]
    assert got == [b"p" * 4000, b"p" * 4000, b"p" * 2000 + b"q" * 2000, b"q" * 1000]
    assert server.recv_nowait(4000) is None  # all read: now the socket, which has nothing
    sock.sendall(client.seal(b"r" * 10))
    assert server.recv_nowait(4000) == b"r" * 10


def test_records_behind_the_handshakes_last_flight_are_read_without_the_socket(tls_files):
    """A client's first request can come in the same segment as its Finished: the handshake's
    last read took it from the socket, so the first read must decrypt it from the stream."""
    a, b = gsocket.socketpair()
    b.settimeout(10)
    server = TlsStream(a, _server_context(tls_files))
    server.settimeout(10)
    client = BioClient(b, tls_files[0])
    shaking = gevent.spawn(server.do_handshake)
    try:
        client.handshake(then=b"GET / HTTP/1.1\r\n\r\n")
        shaking.get(timeout=10)
        assert server.recv_nowait(65536) == b"GET / HTTP/1.1\r\n\r\n"
    finally:
        server.close()
        b.close()


def test_writes_the_kernel_takes_in_part_go_out_whole_and_in_order(pair):
    """Writes of at most WRITE_CHUNK each to a client that reads late: once the socket's buffer
    is full a write waits for the rest of its records, none lost, none sent twice."""
    server, client, sock = pair
    pieces = [bytes([65 + i]) * (WRITE_CHUNK // 2) for i in range(16)]
    writer = gevent.spawn(lambda: [server.sendall(p) for p in pieces])
    want = b"".join(pieces)
    got = client.read_at_least(len(want))
    writer.get(timeout=10)
    assert got == want
    assert server.waits  # the kernel did take only part of some write


@pytest.mark.parametrize("notify", [False, True])
def test_a_peer_close_reads_as_eof_with_or_without_close_notify(pair, notify):
    server, client, sock = pair
    sock.sendall(client.seal(b"last words"))
    if notify:
        with pytest.raises(ssl.SSLWantReadError):
            client.obj.unwrap()  # close_notify made; ours not awaited
        sock.sendall(client.outgoing.read())
    sock.shutdown(socket.SHUT_WR)
    assert server.recv(65536) == b"last words"
    assert server.recv(65536) == b""
    assert server.recv(65536) == b""


def test_a_reader_that_never_reads_holds_the_writer_at_one_chunk(pair):
    server, client, sock = pair
    server.settimeout(0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        server.sendall(b"z" * (16 * 1024 * 1024))
    assert 0.4 < time.monotonic() - started < 5
    # at most one chunk's records are held, not the 16 MiB
    assert 0 < len(server.out) - server.out_pos <= WRITE_CHUNK + 4096
    assert server.incoming.pending == 0


def test_the_handshake_is_bounded_by_tls_handshake_timeout(serve, tls_files, closes):
    srv = serve(lambda req: resp.text(200, "ok"), tls={"certfile": tls_files[0], "keyfile": tls_files[1]},
                tls_handshake_timeout=0.3)
    events, arrived = closes
    hello = BioClient(None, tls_files[0])
    with pytest.raises(ssl.SSLWantReadError):
        hello.obj.do_handshake()
    first_flight = hello.outgoing.read()
    with srv.connect() as sock:
        sock.sendall(first_flight[:20])  # half a ClientHello, then nothing
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(100) == b""  # closed by the server, not by our timeout
        waited = time.monotonic() - started
    assert arrived.wait(10)
    assert events[0]["reason"] == "tls_handshake"
    assert 0.2 < waited < 5


@pytest.mark.parametrize(("offered", "chosen", "first"), [
    (["h2", "http/1.1"], "h2", b"\x04"),  # the server's SETTINGS frame type
    (["http/1.1"], "http/1.1", b"HTTP/1.1 200"),
])
def test_alpn_picks_the_protocol(serve, tls_files, offered, chosen, first):
    srv = serve(lambda req: resp.text(200, "ok"), tls={"certfile": tls_files[0], "keyfile": tls_files[1]},
                protocols=["http2", "http1"])
    with tls_socket(srv.port, tls_files[0], offered) as sock:
        assert sock.selected_alpn_protocol() == chosen
        if chosen == "h2":
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            head = sock.recv(9)
            assert head[3:4] == first
        else:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(first)


def test_the_server_says_close_notify_when_it_closes(serve, tls_files):
    srv = serve(lambda req: resp.text(200, "ok"), tls={"certfile": tls_files[0], "keyfile": tls_files[1]})
    ctx = client_context(tls_files[0])
    raw = gsocket.create_connection(("127.0.0.1", srv.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            chunk = sock.recv(65536)  # an EOF without close_notify raises SSLEOFError here
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"ok")


def test_a_client_that_never_reads_a_big_response_is_closed_at_the_timeout(serve, tls_files, closes):
    big = b"y" * (32 * 1024 * 1024)
    srv = serve(lambda req: resp.body(200, "application/octet-stream", big), tls={"certfile": tls_files[0], "keyfile": tls_files[1]},
                request_timeout=0.5)
    events, arrived = closes
    with tls_socket(srv.port, tls_files[0], ["http/1.1"]) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert arrived.wait(10)  # never read: the server gave up on the write
    assert events[0]["reason"] == "peer_error"
    assert srv.info()["active_clients"] == 0


def _s_client(port: int, cafile: str, version: str, command: str, said: str) -> str:
    """``openssl s_client`` acting on ``command`` (K: key update, R: renegotiate), then a request.

    The request is written only once s_client reports the command done (``said`` on
    its stderr): it reads its input in chunks and drops the rest of a command's chunk.
    """
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", cafile, "-crlf",
         "-alpn", "http/1.1", version],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    killer = threading.Timer(20, proc.kill)  # a safety net only
    killer.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        for line in proc.stderr:
            if said in line:
                break
        proc.stdin.write("GET / HTTP/1.1\nHost: x\nConnection: close\n\n")
        proc.stdin.flush()
        out = proc.stdout.read()  # until the server closes (after its answer)
        proc.stdin.close()
        proc.wait()
        return out
    finally:
        killer.cancel()
        proc.kill()
        proc.wait()


# OpenSSL 3 refuses a client's renegotiation unless the context allows it
# (SSL_OP_ALLOW_CLIENT_RENEGOTIATION, which the ssl module does not name).
_ALLOW_CLIENT_RENEGOTIATION = 1 << 8


@pytest.mark.peers("openssl")
@pytest.mark.parametrize(("version", "command", "said"), [
    ("-tls1_3", "K", "KEYUPDATE"),  # a key update that asks for ours
    ("-tls1_2", "R", "RENEGOTIATING"),
])
def test_tls_messages_in_mid_connection_are_answered(serve, tls_files, version, command, said):
    ctx = _server_context(tls_files)
    ctx.options |= _ALLOW_CLIENT_RENEGOTIATION
    srv = serve(lambda req: resp.text(200, "after"), tls=ctx)
    out = in_thread(_s_client, srv.port, tls_files[0], version, command, said)
    assert "HTTP/1.1 200" in out and "after" in out


@pytest.mark.parametrize("notify", [False, True])
def test_a_client_gone_mid_request_is_a_peer_close(serve, tls_files, closes, notify):
    srv = serve(lambda req: resp.text(200, "ok"), tls={"certfile": tls_files[0], "keyfile": tls_files[1]})
    events, arrived = closes
    sock = srv.connect()
    client = BioClient(sock, tls_files[0])
    client.handshake()
    sock.sendall(client.seal(b"GET / HTTP/1.1\r\nHost: x\r\n"))  # half a head
    if notify:
        with pytest.raises(ssl.SSLWantReadError):
            client.obj.unwrap()
        sock.sendall(client.outgoing.read())
    sock.close()  # without close_notify unless notify
    assert arrived.wait(10)
    assert events[0]["reason"] == "peer_closed"
    assert srv.info()["active_clients"] == 0


def test_a_contexts_sni_callback_sees_the_name_and_can_switch_context(serve, tls_files, tmp_path):
    (tmp_path / "other").mkdir()
    other_files = make_cert(tmp_path / "other")  # the client trusts only this one
    other = _server_context(other_files)
    seen: list[str | None] = []

    def on_sni(sslobj, name, ctx):
        seen.append(name)
        sslobj.context = other  # the certificate of the name asked for

    ctx = _server_context(tls_files)
    ctx.sni_callback = on_sni
    srv = serve(lambda req: resp.text(200, "ok"), tls=ctx)
    raw = gsocket.create_connection(("127.0.0.1", srv.port), timeout=10)
    with client_context(other_files[0]).wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert seen == ["localhost"]


def test_a_second_writer_waits_its_turn_and_records_keep_their_order(pair):
    server, client, sock = pair
    big = b"A" * (3 * WRITE_CHUNK)
    first = gevent.spawn(server.sendall, big)  # blocks: nobody reads yet
    gevent.idle()
    assert server.sending
    second = gevent.spawn(server.sendall, b"B" * 10)
    gevent.idle()
    assert not second.dead  # waiting for its turn, not piling records behind the first
    assert len(server.out) - server.out_pos <= WRITE_CHUNK + 4096
    got = client.read_at_least(len(big) + 10)
    first.get(timeout=10)
    second.get(timeout=10)
    assert got == big + b"B" * 10


def test_a_forged_record_after_the_handshake_ends_the_connection_quietly(serve, tls_files, closes, caplog):
    srv = serve(lambda req: resp.text(200, "ok"), tls={"certfile": tls_files[0], "keyfile": tls_files[1]})
    events, arrived = closes
    with srv.connect() as sock:
        client = BioClient(sock, tls_files[0])
        client.handshake()
        sock.sendall(b"\x17\x03\x03\x00\x20" + bytes(range(32)))  # application data that fails its MAC
        assert arrived.wait(10)
    assert events[0]["reason"] == "peer_error"
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
    assert srv.info()["active_clients"] == 0
