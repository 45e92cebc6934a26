"""The HTTP/1.1 connection process over real loopback sockets."""

from __future__ import annotations

import os
import re
import socket
import time

import gevent
import gevent.event
import gevent.socket
import pytest

import rr
import supervisors
from rr import resp
from tests.rr.conftest import in_thread, read_response, read_until_close, wait_processes_gone


def hello(req: rr.Request) -> resp.Response:
    return resp.text(200, "hello")


def echo(req: rr.Request) -> resp.Response:
    body = req.read_body()
    return resp.Response(200, [("content-type", "application/octet-stream")], body)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_hello_round_trip_has_status_date_length_and_body(serve):
    srv = serve(hello)
    with srv.connect() as sock:
        sock.sendall(GET)
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\ndate: " in head
    assert b"\r\ncontent-length: 5" in head
    assert b"content-type: text/plain; charset=utf-8" in head
    assert body == b"hello"


def test_keep_alive_serves_many_requests_on_one_connection(serve):
    srv = serve(hello)
    with srv.connect() as sock:
        for _ in range(5):
            sock.sendall(GET)
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200") and body == b"hello"
    assert srv.info()["requests_served"] == 5


def test_a_client_that_half_closes_after_its_requests_gets_every_answer_then_the_close(serve):
    """RFC 9112 §9.6: a client may close its sending side once its requests are out;
    rr answers what it read, then sees the EOF and closes."""
    def path_echo(req):
        return resp.text(200, req.path)

    srv = serve(path_echo)
    data = srv.exchange(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)), timeout=5)
    assert data.count(b"HTTP/1.1 200 OK") == 3 and data.endswith(b"/2"), data


def test_pipelined_requests_are_answered_in_order(serve):
    def path_echo(req):
        return resp.text(200, req.path)

    srv = serve(path_echo)
    with srv.connect() as sock:
        sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10)))
        bodies = [read_response(sock)[1] for _ in range(10)]
    assert bodies == [b"/%d" % i for i in range(10)]


def test_a_mixed_pipeline_is_answered_in_order_and_closed_after_the_last(serve):
    """Held-back pipelined answers come out in order around every shape, and the
    connection: close request at the end ends the connection after its answer."""

    def handler(req):
        if req.path == "/stream":
            def fn(send):
                send(b"st")
                send(b"ream", fin=True)
            return resp.Stream(200, [("content-type", "text/plain")], fn)
        if req.path == "/echo":
            return resp.text(200, req.read_body())
        if req.path == "/missing":
            return resp.not_found()
        return resp.text(200, req.path)

    srv = serve(handler)
    pipeline = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = srv.request(pipeline)
    statuses = re.findall(rb"HTTP/1.1 (\d{3})", data)
    assert statuses == [b"200", b"200", b"200", b"200", b"404", b"200"]
    for piece in (b"\r\n\r\n/a", b"2\r\nst\r\n4\r\nream\r\n0\r\n\r\n", b"hello", b"/last"):
        assert piece in data
    assert data.index(b"/a") < data.index(b"ream") < data.index(b"hello") < data.index(b"/last")
    assert data.endswith(b"/last")


def test_held_back_answers_go_out_before_waiting_for_a_pipelined_body(serve):
    """The second request's head is buffered but its body is not: the first answer must
    reach the client before the conn waits for that body (the client sends the body only
    after reading the first answer)."""
    srv = serve(lambda req: resp.text(200, req.read_body() or req.path))
    with srv.connect() as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        head, body = read_response(sock, timeout=5)
        assert body == b"/first"
        sock.sendall(b"body")
        head, body = read_response(sock, timeout=5)
        assert body == b"body"


def test_connection_close_request_gets_close_and_the_socket_closes(serve):
    srv = serve(hello)
    data = srv.request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in data
    assert data.endswith(b"hello")


def test_http10_without_keep_alive_closes_after_the_response(serve):
    srv = serve(hello)
    data = srv.request(b"GET / HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data


def test_http10_with_keep_alive_token_stays_open(serve):
    srv = serve(hello)
    with srv.connect() as sock:
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head, body = read_response(sock)
            assert b"connection: close" not in head and body == b"hello"


def test_connection_header_tokens_are_matched_as_a_list_not_by_substring(serve):
    srv = serve(hello)
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: xclose, upgradey\r\n\r\n")
        head, _ = read_response(sock)
        assert b"connection: close" not in head
        sock.sendall(GET)
        assert read_response(sock)[1] == b"hello"


def test_last_request_under_max_keep_alive_requests_is_marked_close(serve):
    srv = serve(hello, max_keep_alive_requests=3)
    with srv.connect() as sock:
        heads = []
        for _ in range(3):
            sock.sendall(GET)
            heads.append(read_response(sock)[0])
        assert b"connection: close" not in heads[1]
        assert b"connection: close" in heads[2]
        assert read_until_close(sock) == b""


def test_head_sends_no_body_but_keeps_content_length(serve):
    srv = serve(hello)
    with srv.connect() as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        assert b"content-length: 5" in data and data.endswith(b"\r\n\r\n")
        sock.sendall(GET)  # the connection is still framed correctly
        assert read_response(sock)[1] == b"hello"


@pytest.mark.parametrize("code", [204, 304])
def test_204_and_304_carry_no_body_and_no_content_length(serve, code):
    srv = serve(lambda req: resp.Response(code, [], b"ignored"))
    with srv.connect() as sock:
        sock.sendall(GET)
        head, body = read_response(sock)
        assert b"content-length" not in head and body == b""
        sock.sendall(GET)
        assert read_response(sock)[0].startswith(b"HTTP/1.1 %d" % code)


def test_unregistered_status_still_gets_a_reason_phrase(serve):
    srv = serve(lambda req: resp.status(299))
    with srv.connect() as sock:
        sock.sendall(GET)
        head, _ = read_response(sock)
    status_line = head.split(b"\r\n")[0]
    assert status_line.startswith(b"HTTP/1.1 299 ") and len(status_line) > len(b"HTTP/1.1 299 ")


def test_handler_crash_answers_500_and_the_connection_stays_usable(serve):
    calls = []

    def flaky(req):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return resp.text(200, "ok")

    srv = serve(flaky)
    with srv.connect() as sock:
        sock.sendall(GET)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 500 Internal Server Error")
        sock.sendall(GET)
        assert read_response(sock)[1] == b"ok"


@pytest.mark.parametrize(
    "headers",
    [
        [("x-evil", "a\r\nset-cookie: pwned=1")],
        [("x-evil", "a\nb")],
        [("x-nul", "a\0b")],
        [("x-latin", "caf\u00e9 \u2603")],
        [("bad name", "v")],
        [("x:y", "v")],
    ],
    ids=["crlf-in-value", "lf-in-value", "nul-in-value", "not-latin-1", "space-in-name", "colon-in-name"],
)
def test_header_injection_in_a_response_becomes_a_500_never_a_split_header(serve, headers):
    srv = serve(lambda req: resp.Response(200, headers, b"x"))
    with srv.connect() as sock:
        sock.sendall(GET)
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 500")
        assert b"pwned" not in head
        sock.sendall(GET)  # slot not leaked, connection still usable
        assert read_response(sock)[0].startswith(b"HTTP/1.1 500")


def test_a_mixed_case_response_header_name_goes_out_lowercased(serve):
    srv = serve(lambda req: resp.Response(200, [("X-Upper", "v"), ("Content-Type", "text/x")], b"x"))
    with srv.connect() as sock:
        sock.sendall(GET)
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and body == b"x"
    assert b"\r\nx-upper: v" in head and b"\r\ncontent-type: text/x" in head
    assert b"X-Upper" not in head


def test_handler_returning_an_interim_1xx_status_gets_a_500(serve):
    srv = serve(lambda req: resp.status(103))
    with srv.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[0].startswith(b"HTTP/1.1 500")


def test_handler_returning_a_non_response_gets_a_500(serve):
    srv = serve(lambda req: "not a response")
    with srv.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[0].startswith(b"HTTP/1.1 500")


def test_websocket_shape_for_a_request_that_is_no_upgrade_answers_426(serve):
    # The WebSocket sessions themselves are tested in tests/rr/ws/.
    srv = serve(lambda req: resp.WebSocket(object()))
    with srv.connect() as sock:
        sock.sendall(GET)
        head = read_response(sock)[0]
        assert head.startswith(b"HTTP/1.1 426") and b"sec-websocket-version: 13" in head.lower()


# -- request bodies -----------------------------------------------------------


def test_content_length_body_is_buffered_for_the_handler(serve):
    srv = serve(echo)
    with srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
        assert read_response(sock)[1] == b"hello world"


def test_chunked_body_with_trailers_is_decoded(serve):
    srv = serve(echo)
    with srv.connect() as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\n"
        )
        assert read_response(sock)[1] == b"hello world"
        sock.sendall(GET.replace(b"GET", b"POST").replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nok"))
        assert read_response(sock)[1] == b"ok"


def test_body_over_max_content_length_is_413_and_closes(serve):
    srv = serve(echo, max_content_length=10)
    data = srv.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
    assert data.startswith(b"HTTP/1.1 413") and b"connection: close" in data


def test_chunked_body_over_max_content_length_is_judged_by_declared_size(serve):
    srv = serve(echo, max_content_length=100)
    data = srv.request(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7fffffff\r\n")
    assert data.startswith(b"HTTP/1.1 413")


def test_expect_100_continue_is_sent_only_when_the_handler_reads(serve):
    srv = serve(echo, body_buffering="manual")
    with srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        sock.settimeout(5)
        interim = sock.recv(4096)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        assert read_response(sock)[1] == b"ok"


def test_expect_100_continue_is_not_sent_when_the_handler_ignores_the_body(serve):
    srv = serve(hello, body_buffering="manual")
    with srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello"
        assert b"connection: close" in head or read_until_close(sock, 5) == b""


def test_manual_mode_streams_a_large_body_with_bounded_reads(serve):
    seen = []

    def count(req):
        total = 0
        for chunk in req.iter_body(4096):
            assert len(chunk) <= 4096
            total += len(chunk)
        seen.append(total)
        return resp.text(200, str(total))

    srv = serve(count, body_buffering="manual", max_content_length=8 * 1024 * 1024)
    size = 5 * 1024 * 1024
    with srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"x" * 65536
        for _ in range(size // len(block)):
            sock.sendall(block)
        assert read_response(sock)[1] == str(size).encode()


def test_manual_mode_unread_small_body_is_drained_and_the_connection_reused(serve):
    srv = serve(hello, body_buffering="manual")
    with srv.connect() as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde" + GET)
        assert read_response(sock)[1] == b"hello"
        assert read_response(sock)[1] == b"hello"


# -- response shapes ------------------------------------------------------------


def test_stream_is_chunked_with_trailers_and_keeps_the_connection(serve):
    def streamer(req):
        def produce(send):
            send(b"one ")
            send(b"two", fin=True, trailers=[("x-checksum", "abc")])

        return resp.Stream(200, [("content-type", "text/plain")], produce)

    srv = serve(streamer)
    with srv.connect() as sock:
        sock.sendall(GET)
        data = b""
        sock.settimeout(5)
        while not data.endswith(b"x-checksum: abc\r\n\r\n"):
            data += sock.recv(4096)
        assert b"transfer-encoding: chunked" in data
        assert b"4\r\none \r\n3\r\ntwo\r\n0\r\nx-checksum: abc\r\n\r\n" in data
        sock.sendall(GET)
        assert b"4\r\none " in sock.recv(4096)


def test_stream_for_http10_is_unframed_and_closes(serve):
    srv = serve(lambda req: resp.Stream(200, [], lambda send: (send(b"a"), send(b"b"))))
    data = srv.request(b"GET / HTTP/1.0\r\n\r\n")
    assert data.endswith(b"\r\n\r\nab") and b"chunked" not in data


def test_stream_crash_before_sending_is_a_500(serve):
    def bad(send):
        raise RuntimeError("nope")

    srv = serve(lambda req: resp.Stream(200, [], bad))
    with srv.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[0].startswith(b"HTTP/1.1 500")


def test_stream_crash_after_sending_closes_without_a_last_chunk(serve):
    def bad(send):
        send(b"partial")
        raise RuntimeError("nope")

    srv = serve(lambda req: resp.Stream(200, [], bad))
    data = srv.request(GET)
    assert b"7\r\npartial\r\n" in data and not data.endswith(b"0\r\n\r\n")


def test_loop_pushes_chunks_for_messages_until_stop(serve):
    def on_info(msg, push, state):
        if msg == "stop":
            return resp.STOP
        push(msg.encode())
        return state + 1

    def looper(req):
        me = supervisors.self()
        for word in ("a", "bb", "stop"):
            supervisors.send(me, word)
        return resp.Loop(200, [("content-type", "text/plain")], 0, on_info)

    srv = serve(looper)
    with srv.connect() as sock:
        sock.sendall(GET)
        data = b""
        sock.settimeout(5)
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(4096)
    assert b"1\r\na\r\n2\r\nbb\r\n0\r\n\r\n" in data


def test_a_keep_alive_request_after_a_loop_response_is_answered(serve):
    """The Loop's close watcher (which waits on the socket) is gone before the conn waits
    for the next request on the same socket."""
    conn = []

    def handler(req):
        if req.path == "/loop":
            conn.append(supervisors.self())
            return resp.Loop(200, [("content-type", "text/plain")], None, lambda msg, push, state: resp.STOP)
        return resp.text(200, "after")

    srv = serve(handler)
    with srv.connect() as sock:
        sock.settimeout(5)
        sock.sendall(b"GET /loop HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(4096)  # the head: the loop now waits, its close watcher on the socket
        supervisors.send(conn[0], "stop")
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(4096)
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[1] == b"after"


def test_loop_is_told_once_when_the_client_goes_away(serve):
    seen = []
    done = gevent.event.Event()

    def on_info(msg, push, state):
        seen.append(msg)
        if msg == (resp.CLOSED,):
            done.set()
        return state

    srv = serve(lambda req: resp.Loop(200, [], None, on_info))
    sock = srv.connect()
    sock.sendall(GET)
    sock.recv(4096)
    sock.close()
    assert done.wait(5)
    wait_processes_gone("rr.conn")  # once the conn process is gone no second CLOSED can come
    assert seen.count((resp.CLOSED,)) == 1


def test_sendfile_sends_a_range_of_a_file(serve, tmp_path):
    path = tmp_path / "data.bin"
    payload = os.urandom(200_000)
    path.write_bytes(payload)
    srv = serve(lambda req: resp.Sendfile(200, [("content-type", "application/octet-stream")],
                                          str(path), 1000, 150_000))
    with srv.connect() as sock:
        sock.sendall(GET)
        head, body = read_response(sock)
    assert b"content-length: 150000" in head
    assert body == payload[1000:151_000]


def test_sendfile_of_a_missing_file_is_a_500(serve, tmp_path):
    srv = serve(lambda req: resp.Sendfile(200, [], str(tmp_path / "nope")))
    with srv.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[0].startswith(b"HTTP/1.1 500")


# -- timeouts and limits ----------------------------------------------------------


def test_first_request_timeout_answers_408_and_closes(serve):
    srv = serve(hello, request_timeout=0.3)
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost:")  # begun, never finished
        data = read_until_close(sock)
    assert data.startswith(b"HTTP/1.1 408")


def _tls_connect_and_listen(port: int, cafile: str) -> bytes:
    import ssl

    ctx = ssl.create_default_context(cafile=cafile)
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
          ctx.wrap_socket(raw, server_hostname="localhost") as tls):
        try:
            return tls.recv(100)
        except ssl.SSLError:
            return b""


@pytest.mark.parametrize("tls", [False, True])
def test_a_connection_that_sends_nothing_is_closed_silently_at_first_byte_timeout(serve, tmp_path, tls):
    """Zero-byte connections must not hold a slot for request_timeout (issue 13, defect 2)."""
    opts = {"first_byte_timeout": 0.3, "request_timeout": 30.0}
    if tls:
        from tests.rr.certs import make_cert

        certfile, keyfile = make_cert(tmp_path)
        opts["tls"] = {"certfile": certfile, "keyfile": keyfile}
    srv = serve(hello, **opts)
    closes = []
    done = gevent.event.Event()
    rr.telemetry.attach("fbt", ("rr", "conn", "close"),
                        lambda e, m, md, c: (closes.append((md["reason"], m["duration"])), done.set()))
    try:
        if tls:  # handshake done, then silence: the server closes after first_byte_timeout
            assert in_thread(_tls_connect_and_listen, srv.port, opts["tls"]["certfile"]) == b""
        else:
            with srv.connect() as sock:
                assert read_until_close(sock) == b""
        assert done.wait(10)
    finally:
        rr.telemetry.detach("fbt")
    reason, duration = closes[0]
    assert reason == "first_byte_timeout" and duration < 5, closes
    assert srv.info()["active_clients"] == 0


def test_idle_keep_alive_connection_closes_silently(serve):
    srv = serve(hello, keep_alive_timeout=0.3)
    with srv.connect() as sock:
        sock.sendall(GET)
        read_response(sock)
        assert read_until_close(sock) == b""


def test_slowloris_is_closed_silently(serve):
    srv = serve(hello, min_bytes_per_second=1000, request_timeout=20)
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for _ in range(40):
            gevent.sleep(0.1)
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
        data = b"" if closed else read_until_close(sock, 5)
    assert not data.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("before", ["first request", "keep-alive"])
def test_the_slowloris_rule_starts_at_a_requests_first_byte(serve, tls_files, tls, before):
    """Time before a request's first byte (an idle keep-alive connection, or a new one that
    has not spoken yet) is not the request's: a head that then comes in two pieces is served.
    Counted before, the second piece found the rate budget spent and the connection closed
    without an answer (with the default 100 B/s, any idle second sufficed)."""
    opts = {"min_bytes_per_second": 1000, "first_byte_timeout": 30, "keep_alive_timeout": 30}
    if tls:
        opts["tls"] = {"certfile": tls_files[0], "keyfile": tls_files[1]}
    srv = serve(hello, **opts)
    sock = srv.connect()
    if tls:
        from tests.rr.wire import client_context

        sock = client_context(tls_files[0]).wrap_socket(sock, server_hostname="127.0.0.1")
    with sock:
        if before == "keep-alive":
            sock.sendall(GET)
            assert read_response(sock)[0].startswith(b"HTTP/1.1 200")
        gevent.sleep(1.3)  # the client idles past the rule's 1 s grace (the input of this test)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        gevent.sleep(0.05)
        sock.sendall(b"Host: x\r\n\r\n")
        assert read_response(sock)[0].startswith(b"HTTP/1.1 200")


def test_connections_over_max_clients_get_503_at_accept_and_are_counted(serve):
    srv = serve(hello, max_clients=2)
    held = [srv.connect() for _ in range(2)]
    for sock in held:  # both accepted and mid-request: no idle connection to make room
        sock.sendall(GET)
        read_response(sock)
        sock.sendall(b"GET / HTTP/1.1\r\n")
    extra = srv.connect()
    answer = read_until_close(extra, 5)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer
    assert srv.info()["rejected"] == 1 and srv.info()["evicted"] == 0
    for sock in held + [extra]:
        sock.close()


def test_active_clients_returns_to_zero_after_connections_end(serve):
    srv = serve(hello)
    socks = [srv.connect() for _ in range(5)]
    for sock in socks:
        sock.sendall(GET)
        read_response(sock)
    assert srv.info()["active_clients"] == 5
    for sock in socks:
        sock.close()
    wait_processes_gone("rr.conn")
    assert srv.info()["active_clients"] == 0  # the connection supervisor gave each slot back


def test_a_peer_resetting_mid_request_does_not_disturb_other_connections(serve):
    srv = serve(echo)
    bad = srv.connect()
    bad.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    bad.close()
    with srv.connect() as sock:
        sock.sendall(GET)
        assert read_response(sock)[0].startswith(b"HTTP/1.1 200")


def test_a_body_over_the_handler_max_heap_kills_only_that_connection(serve):
    srv = serve(echo, handler_spawn={"max_heap": 64 * 1024}, max_content_length=1024 * 1024)
    other = srv.connect()
    other.sendall(GET.replace(b"GET", b"POST").replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nok"))
    assert read_response(other)[1] == b"ok"
    big = 200 * 1024
    data = srv.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big)
    assert data == b""  # the process died with reason max_heap: no response
    other.sendall(GET.replace(b"GET", b"POST").replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nok"))
    assert read_response(other)[1] == b"ok"  # the sibling connection is untouched
    other.close()


def test_graceful_drain_false_kills_in_flight_requests_at_once(serve):
    block = gevent.event.Event()
    entered = gevent.event.Event()

    def stuck(req):
        entered.set()
        block.wait(30)
        return resp.text(200, "late")

    srv = serve(stuck, graceful_drain=False)
    sock = srv.connect()
    sock.sendall(GET)
    assert entered.wait(10)
    began = time.monotonic()
    assert rr.drain(srv.name, 20) == {"drained": 0, "killed": 1}
    assert time.monotonic() - began < 2, "the drain waited for the handler instead of killing it"
    assert read_until_close(sock, 5) == b""  # killed mid-request: no response at all
    sock.close()


def test_a_large_body_is_written_whole_behind_held_answers_to_a_slow_reader(serve):
    """A body of 4 KiB or more goes out next to its head (``sendmsg``, no copy): held
    pipelined answers first, and all of it even when the client's small receive buffer
    makes the first write partial (8 MiB against 64 KiB)."""
    big = bytes(range(256)) * 32768  # 8 MiB, every byte value: a reordered piece shows

    def handler(req):
        return resp.Response(200, [("content-type", "application/octet-stream")],
                             big if req.path == "/big" else req.path.encode())

    srv = serve(handler)
    with gevent.socket.socket() as sock:  # cooperative: the server runs in this process
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", srv.port))
        # /a is held (the next request is already buffered), then written with /big's gather.
        sock.sendall(b"".join(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"a", b"big", b"c")))
        assert read_response(sock)[1] == b"/a"
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 8388608" in head
        assert body == big
        assert read_response(sock)[1] == b"/c"


def test_a_quick_keep_alive_client_does_not_delay_a_request_waiting_for_the_poll(serve):
    """After a request, a plain-TCP conn with nothing buffered waits for its next request
    through the loop's I/O poll, not with a read first: a client whose next request is
    already in the kernel when its answer goes out is served in turn with the others,
    not up to UNPOLLED_MAX times before a request that arrived meanwhile is seen."""
    order = []
    srv_box = {}

    def handler(req):
        order.append(req.path)
        a, b = srv_box["a"], srv_box["b"]
        if len(order) == 1:
            b.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # B's request arrives now
        if req.path == "/a" and order.count("/a") < 40:
            a.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # A's next is there before its answer
        return resp.text(200, "k")

    srv = serve(handler)
    a = srv_box["a"] = srv.connect()
    b = srv_box["b"] = srv.connect()
    try:
        a.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(b)[1] == b"k"
        for _ in range(order.count("/a")):
            assert read_response(a)[1] == b"k"
        # One poll sees both A's next request and B's: B is served within a request or two.
        assert order.index("/b") <= 3, order.index("/b")
    finally:
        a.close()
        b.close()


def test_over_tls_a_quick_keep_alive_client_does_not_delay_a_request_waiting_for_the_poll(serve, tmp_path):
    """TLS has the served-order wait too when its stream holds nothing to decrypt
    (``TlsStream.drained``): a client whose next request is always in the kernel before its
    answer goes out is served in turn with the others, so a request that arrived meanwhile
    on another connection is seen within a request or two (before this wait: 17th, after
    UNPOLLED_MAX reads that found bytes; when every TLS read counted as a poll: 60th, last)."""
    from tests.rr.certs import make_cert
    from tests.rr.wire import client_context

    certfile, keyfile = make_cert(tmp_path)
    order = []
    socks = {}

    def handler(req):
        order.append(req.path)
        if len(order) == 5:
            socks["b"].sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # B's request arrives now
        if req.path == "/a" and order.count("/a") < 60:
            socks["a"].sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # A's next, before its answer
        return resp.text(200, "k")

    srv = serve(handler, tls={"certfile": certfile, "keyfile": keyfile})
    ctx = client_context(certfile)
    for name in ("a", "b"):
        socks[name] = ctx.wrap_socket(srv.connect(), server_hostname="127.0.0.1")
    a, b = socks["a"], socks["b"]
    try:
        a.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(b)[1] == b"k"
        for _ in range(order.count("/a")):
            assert read_response(a)[1] == b"k"
        assert order.index("/b") <= 5 + 2, order.index("/b")
    finally:
        a.close()
        b.close()


def test_a_client_that_always_leaves_half_a_request_buffered_lets_the_loop_poll(serve):
    """Every read finds the rest of a request and the start of the next one, so the conn
    never waits on its socket: it still lets the loop poll every UNPOLLED_MAX requests
    (a read that found bytes is not a poll), and another connection's request is seen."""
    order = []
    socks = {}
    rest = b"T /a HTTP/1.1\r\nHost: x\r\n\r\n"

    def handler(req):
        order.append(req.path)
        if len(order) == 1:
            socks["b"].sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        if req.path == "/a" and order.count("/a") < 60:
            socks["a"].sendall(rest + (b"GE" if order.count("/a") < 59 else b""))
        return resp.text(200, "k")

    srv = serve(handler)
    a = socks["a"] = srv.connect()
    b = socks["b"] = srv.connect()
    try:
        a.sendall(b"GE" + rest + b"GE")
        assert read_response(b)[1] == b"k"
        for _ in range(order.count("/a")):
            assert read_response(a)[1] == b"k"
        assert order.index("/b") <= 20, order.index("/b")  # UNPOLLED_MAX is 16
    finally:
        a.close()
        b.close()


def test_a_pipelining_client_does_not_starve_another_connection(serve):
    """A connection with 500 requests already buffered yields between requests: a
    request on another connection is handled long before the pipeline is done."""
    order = []
    first = gevent.event.Event()

    def handler(req):
        order.append(req.path)
        first.set()
        return resp.text(200, "k")

    srv = serve(handler)
    a = srv.connect()
    b = srv.connect()
    try:
        a.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 500)
        assert first.wait(10)  # runs only once A's process yields
        b.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_response(b)
        assert head.startswith(b"HTTP/1.1 200") and body == b"k"
        # A lets the loop poll I/O at least every UNPOLLED_MAX requests: B's request is seen
        # within a few of those turns, not after A's whole pipeline (and not after however
        # many requests fit gevent's 5 ms callback interval on a fast machine).
        assert order.index("/b") <= 48, order.index("/b")  # UNPOLLED_MAX is 16
    finally:
        a.close()
        b.close()


def test_an_h2_preface_on_an_http1_only_port_gets_505_and_the_close(serve):
    """The h2 preface is an HTTP/1.1 request line with version HTTP/2.0: an h1-only port
    answers it with an HTTP/1.1 error status (not an h2 frame, not silence) and closes."""
    srv = serve(hello, protocols=["http1"])
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    data = srv.request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings, timeout=5)
    assert data.startswith(b"HTTP/1.1 505 "), data
    assert b"\r\nconnection: close\r\n" in data.lower()


def _waiting_frames(pid: supervisors.Pid) -> list[str]:
    frame = pid._proc.greenlet.gr_frame  # type: ignore[union-attr]
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_an_idle_keep_alive_connection_holds_neither_its_last_request_nor_an_exception(serve):
    import gc

    from rr.log import current_request

    srv = serve(hello)
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(sock)[1] == b"hello"
        (pid,) = rr._runtimes[srv.name].conns
        deadline = time.monotonic() + 10  # safety net: the conn parks on its read watcher at once
        while not {"_wait_io", "recv_polled"} & set(_waiting_frames(pid)):  # parked on the socket
            assert time.monotonic() < deadline
            gevent.sleep(0)
        context = pid._proc.greenlet.gr_context  # type: ignore[union-attr]
        assert context is None or context.get(current_request) is None
        held = [e for e in gc.get_objects() if isinstance(e, BlockingIOError)
                and any(f.name == "recv" and f.filename.endswith("conn.py")
                        for f in __import__("traceback").extract_tb(e.__traceback__))]
        assert held == []


def test_each_request_on_a_connection_sees_its_own_headers(serve):
    """The conn reuses the previous request's Headers only for the very same cached head:
    repeated heads, a changed value, a new field and a repeat of an earlier head each read
    their own."""
    srv = serve(lambda req: resp.text(200, f"{req.headers.get('x-n')}|{req.headers.get('x-extra')}"))
    sent = [("1", None), ("1", None), ("2", None), ("2", "e"), ("1", None)]
    with srv.connect() as sock:
        for n, extra in sent:
            more = b"x-extra: %s\r\n" % extra.encode() if extra else b""
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nx-n: %s\r\n%s\r\n" % (n.encode(), more))
            assert read_response(sock)[1] == f"{n}|{extra}".encode()
