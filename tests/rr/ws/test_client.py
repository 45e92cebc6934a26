"""rr's WebSocket sessions against the ``websockets`` client (sync API, in a real thread).

The client is a library rr did not write; it runs in an OS thread
(``in_thread``) while the server keeps running in this process's hub.
Server-side facts (terminate reasons) are waited for with gevent events, never sleeps.
"""

from __future__ import annotations

import gevent.event
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import supervisors
from rr import resp
from tests import peers
from tests.rr.conftest import in_thread


@pytest.fixture(autouse=True)
def _websockets() -> None:
    peers.require("websockets")


class Recorder:
    """Echo, plus a few commands; records how the session ended."""

    subprotocols = ["chat.v2", "chat.v1"]
    control_frames = True

    def __init__(self) -> None:
        self.ended = gevent.event.AsyncResult()
        self.inited = gevent.event.AsyncResult()

    def init(self, req, state):
        self.inited.set((req.path, supervisors.self()))
        return {"count": 0, "path": req.path}

    def handle_frame(self, frame, state):
        state["count"] += 1
        kind, data = frame
        if kind == "pong":
            return [("text", f"pong:{data.decode()}")], state
        if kind == "ping":
            return [], state
        if data == "bye":
            return [("text", "so long"), ("close", 4001, "done")], state
        if data == "crash":
            raise RuntimeError("handler bug")
        if data == "count":
            return [("text", str(state["count"]))], state
        return [frame], state

    def handle_info(self, msg, state):
        return [("text", f"info:{msg}")], state

    def terminate(self, reason, state):
        self.ended.set(reason)


@pytest.fixture
def ws(serve):
    def start(**ws_opts):
        rec = Recorder()
        srv = serve(lambda req: resp.WebSocket(rec, None), ws=ws_opts or None)
        return rec, f"ws://127.0.0.1:{srv.port}"

    return start


def client(url, fn, **kw):
    kw.setdefault("proxy", None)

    def run():
        with connect(url, **kw) as c:
            return fn(c)

    return in_thread(run)


@pytest.mark.parametrize("compression", ["deflate", None])
def test_text_binary_and_a_70000_byte_message(ws, compression):
    rec, url = ws()
    big = (bytes(range(256)) * 274)[:70000]
    assert len(big) == 70000

    def talk(c):
        c.send("héllo")
        out = [c.recv()]
        c.send(b"\x00\xffbin")
        out.append(c.recv())
        c.send(big)
        out.append(c.recv())
        c.send("ü" * 35000)  # 70,000 bytes of UTF-8 text
        out.append(c.recv())
        return out, c.response.headers.get("sec-websocket-extensions")

    out, ext = client(url + "/chat", talk, compression=compression)
    assert out == ["héllo", b"\x00\xffbin", big, "ü" * 35000]
    assert (ext is not None) == (compression == "deflate")
    assert rec.ended.get(timeout=10)[0] == "remote"


def test_ping_from_the_client_gets_a_pong(ws):
    rec, url = ws()

    def talk(c):
        assert c.ping(b"are you there").wait(5)
        c.send("count")  # the ping reached the handler too (control_frames = True)
        return c.recv()

    assert client(url, talk) == "2"


def test_the_server_pings_on_its_interval_and_the_handler_sees_the_pong(ws):
    rec, url = ws(ping_interval=0.2)
    assert client(url, lambda c: c.recv(timeout=10)) == "pong:rr"


def test_the_handler_closes_with_its_code_and_reason(ws):
    rec, url = ws()

    def talk(c):
        c.send("bye")
        first = c.recv()
        try:
            c.recv()
        except ConnectionClosed as exc:
            return first, exc.rcvd.code, exc.rcvd.reason
        return first, None, None

    assert client(url, talk) == ("so long", 4001, "done")
    assert rec.ended.get(timeout=10) == ("local", 4001, "done")


@pytest.mark.parametrize("code", [1000, 3001, 4999])
def test_the_client_close_code_reaches_terminate(ws, code):
    rec, url = ws()

    def talk(c):
        c.send("x")
        c.recv()
        c.close(code, "client says bye")
        return c.close_code

    assert client(url, talk) == code  # the server echoed the code
    assert rec.ended.get(timeout=10) == ("remote", code, "client says bye")


def test_the_subprotocol_is_the_servers_first_choice_the_client_offers(ws):
    rec, url = ws()
    assert client(url, lambda c: c.subprotocol, subprotocols=["chat.v1", "chat.v2"]) == "chat.v2"
    assert client(url, lambda c: c.subprotocol, subprotocols=["chat.v1"]) == "chat.v1"
    assert client(url, lambda c: c.subprotocol) is None


def test_a_crashing_handler_closes_1011(ws):
    rec, url = ws()

    def talk(c):
        c.send("crash")
        try:
            c.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code
        return None

    assert client(url, talk) == 1011
    assert rec.ended.get(timeout=10)[:2] == ("error", 1011)


def test_handle_info_from_another_process(ws):
    rec, url = ws()

    def talk(c):
        return c.recv(timeout=10)  # nothing sent: the only message is the one from afar

    def poke():
        path, pid = rec.inited.get(timeout=10)
        supervisors.spawn(lambda: supervisors.send(pid, "hello from afar"), label="test.poker")

    gevent.spawn(poke)
    assert client(url, talk) == "info:hello from afar"


def test_the_idle_timeout_closes_1001(ws):
    rec, url = ws(idle_timeout=0.3)

    def talk(c):
        try:
            c.recv(timeout=10)
        except ConnectionClosed as exc:
            return exc.rcvd.code, exc.rcvd.reason
        return None

    assert client(url, talk, ping_interval=None) == (1001, "idle timeout")
    assert rec.ended.get(timeout=10) == ("local", 1001, "idle timeout")


@pytest.mark.parametrize("protocols", [["http1"], ["http2", "http1"]])
def test_wss_on_a_tls_listener(serve, tmp_path, protocols):
    """Over TLS the session reads and writes one SSL socket (reads when it is readable).
    A listener preferring h2 still serves a client that asks for no ALPN over HTTP/1.1."""
    import ssl

    from tests.rr.certs import make_cert

    certfile, keyfile = make_cert(tmp_path)
    rec = Recorder()
    srv = serve(lambda req: resp.WebSocket(rec), tls={"certfile": certfile, "keyfile": keyfile},
                protocols=protocols)
    ctx = ssl.create_default_context(cafile=certfile)
    ctx.check_hostname = False
    big = bytes(200_000)

    def talk(c):
        c.send(big)  # larger than the TLS and socket buffers: reads and writes interleave
        got = c.recv(timeout=10)
        c.send("done")
        return len(got), c.recv(timeout=10)

    assert client(f"wss://127.0.0.1:{srv.port}/", talk, ssl=ctx, max_size=None) == (200_000, "done")
    assert rec.ended.get(timeout=10)[0] == "remote"


def test_wss_reads_decrypted_bytes_no_readiness_reports(serve, tmp_path, monkeypatch):
    """With reads smaller than a TLS record, a read leaves decrypted bytes inside the SSL
    object that the socket's readiness never reports: the session must take them before it
    waits for the socket again, or it stalls with the message half read."""
    import ssl

    from rr.ws import session as ws_session
    from tests.rr.certs import make_cert

    monkeypatch.setattr(ws_session, "READ_SIZE", 1000)
    certfile, keyfile = make_cert(tmp_path)
    rec = Recorder()
    srv = serve(lambda req: resp.WebSocket(rec), tls={"certfile": certfile, "keyfile": keyfile},
                protocols=["http1"])
    ctx = ssl.create_default_context(cafile=certfile)
    ctx.check_hostname = False

    def talk(c):
        c.send(bytes(range(256)) * 40)  # 10,240 bytes: one TLS record, eleven reads
        return len(c.recv(timeout=10))

    assert client(f"wss://127.0.0.1:{srv.port}/", talk, ssl=ctx, compression=None) == 10_240
