"""The opening handshake: what is accepted (101) and what is refused (400 / 426), and why.

Refusals carry the reason in the body; a refused handshake is a normal HTTP
response, so the connection stays usable for the next request.
"""

from __future__ import annotations

import httpx
import pytest

from rr import resp
from rr.ws.handshake import accept_value
from tests.rr.conftest import in_thread, read_response
from tests.rr.ws.wire import Client, handshake_request


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


@pytest.fixture
def srv(serve):
    def app(req):
        if req.path == "/plain":
            return resp.text(200, "plain")
        return resp.WebSocket(Echo)

    return serve(app)


def test_accept_value_is_rfc_6455s_example():
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_handshake_gets_101_with_the_accept_value(srv):
    c = Client.open(srv.port, handshake_request(key="dGhlIHNhbXBsZSBub25jZQ=="))
    head = c.head.decode().lower()
    assert head.startswith("http/1.1 101 ")
    assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head
    assert "upgrade: websocket" in head and "connection: upgrade" in head


def test_connection_may_list_other_tokens_and_upgrade_any_case(srv):
    request = handshake_request().replace(b"Upgrade: websocket", b"Upgrade: WebSocket").replace(
        b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")
    assert Client.open(srv.port, request).status == 101


def _answer(srv, request: bytes) -> tuple[int, bytes, bytes]:
    with srv.connect() as sock:
        sock.sendall(request)
        head, body = read_response(sock)
        # the connection is still HTTP: the next request is served
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
        _, follow = read_response(sock)
        assert follow == b"plain"
    return int(head.split(b" ")[1]), head.lower(), body


@pytest.mark.parametrize("key, reason", [
    ("not base64!", b"not base64"),
    ("c2hvcnQ=", b"16 bytes"),  # "short"
    ("", b"16 bytes"),
])
def test_a_bad_key_is_400_with_a_reason(srv, key, reason):
    status, _, body = _answer(srv, handshake_request(key=key))
    assert status == 400 and reason in body, body


def test_a_missing_key_is_400(srv):
    request = b"\r\n".join(line for line in handshake_request().split(b"\r\n")
                           if not line.startswith(b"Sec-WebSocket-Key"))
    status, _, body = _answer(srv, request)
    assert status == 400 and b"Sec-WebSocket-Key" in body


def test_connection_without_upgrade_is_400(srv):
    status, _, body = _answer(srv, handshake_request().replace(b"Connection: Upgrade", b"Connection: keep-alive"))
    assert status == 400 and b"Connection" in body


def test_another_version_is_426_naming_13(srv):
    status, head, body = _answer(srv, handshake_request(version="8"))
    assert status == 426 and b"sec-websocket-version: 13" in head, head


def test_a_post_upgrade_is_400(srv):
    status, _, body = _answer(srv, handshake_request().replace(b"GET ", b"POST ", 1))
    assert status == 400 and b"GET" in body


def test_a_plain_request_to_a_websocket_endpoint_is_426(srv):
    r = in_thread(httpx.get, srv.url + "/ws")
    assert r.status_code == 426
    assert r.headers["sec-websocket-version"] == "13"


def test_a_plain_h2_get_to_a_websocket_endpoint_is_426(serve):
    """h2 serves WebSocket by extended CONNECT (tests/rr/ws/test_h2.py); a plain GET is
    answered as on h1, without the connection-specific ``upgrade`` field."""
    srv = serve(lambda req: resp.WebSocket(Echo), protocols=["http2"])
    def get():
        with httpx.Client(http1=False, http2=True) as c:
            return c.get(srv.url + "/ws")

    r = in_thread(get)
    assert r.http_version == "HTTP/2" and r.status_code == 426
    assert r.headers["sec-websocket-version"] == "13" and "upgrade" not in r.headers


def test_an_empty_declared_body_is_allowed_a_real_one_is_400(srv):
    request = handshake_request(extra=["Content-Length: 0"])
    assert Client.open(srv.port, request).status == 101
    status, _, body = _answer(srv, handshake_request(extra=["Content-Length: 2"]) + b"hi")
    assert status == 400 and b"body" in body
