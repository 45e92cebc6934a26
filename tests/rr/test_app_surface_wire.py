"""The application surface over a real listener: request API, middleware on every
response shape, reload_routes under load, url_for."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import gevent
import gevent.event
import httpx
import pytest

import rr
import supervisors
from rr import resp
from tests.rr.conftest import in_thread, read_response


def request(srv, raw: bytes):
    with srv.connect() as sock:
        sock.sendall(raw)
        return read_response(sock)


def test_request_api_over_the_wire(serve):
    def inspect(req: rr.Request):
        return resp.json(200, {
            "method": req.method, "path": req.path, "decoded": req.decoded_path, "qs": req.query_string,
            "query": req.query(), "version": req.version, "host": req.host, "scheme": req.scheme,
            "cookies": req.cookies(), "ua": req.header("user-agent"), "multi": req.headers.get_all("x-m"),
            "joined": req.header("x-m"), "fwd": req.forwarded_for(), "id": len(req.request_id),
            "peer": req.peer[0], "listener": req.listener,
        })

    srv = serve(inspect)
    _, body = request(srv, b"GET /a%20b?x=1&x=2&y=%zz HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n"
                            b"Cookie: a=1; b=2\r\ncookie: c=3\r\nX-M: one\r\nx-m: two\r\n"
                            b"X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n")
    data = json.loads(body)
    assert data["path"] == "/a%20b" and data["decoded"] == "/a b" and data["qs"] == "x=1&x=2&y=%zz"
    assert data["query"] == {"x": ["1", "2"], "y": ["%zz"]}
    assert data["host"] == "example.com" and data["scheme"] == "http" and data["version"] == "HTTP/1.1"
    assert data["cookies"] == {"a": "1", "b": "2", "c": "3"}
    assert data["multi"] == ["one", "two"] and data["joined"] == "one, two" and data["ua"] == "t"
    assert data["fwd"] == ["10.0.0.1", "10.0.0.2"] and data["id"] == 16 and data["peer"] == "127.0.0.1"


@pytest.mark.parametrize(("fields", "claimed"), [
    # RFC 7239 §4: elements separated by ",", pairs by ";", names case-insensitive
    (b"Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43\r\n", ["192.0.2.60"]),
    (b"Forwarded: For=192.0.2.43, for=198.51.100.17\r\n", ["192.0.2.43", "198.51.100.17"]),
    # §6: an IPv6 node (and any with a port) is a quoted string; "unknown" and obfuscated names stay as given
    (b'Forwarded: for="[2001:db8:cafe::17]:4711"\r\n', ["[2001:db8:cafe::17]:4711"]),
    (b"Forwarded: for=unknown, for=_hidden\r\n", ["unknown", "_hidden"]),
    # several Forwarded fields are one list, in order (§4); by= and proto= alone claim no client
    (b"Forwarded: for=192.0.2.1\r\nForwarded: by=10.1.1.1, for=192.0.2.2\r\n", ["192.0.2.1", "192.0.2.2"]),
    # Forwarded wins over the older X-Forwarded-For; X-Forwarded-For is used without it
    (b"Forwarded: for=192.0.2.9\r\nX-Forwarded-For: 10.0.0.1\r\n", ["192.0.2.9"]),
    (b"Forwarded: proto=https\r\nX-Forwarded-For: 10.0.0.1,10.0.0.2\r\n", ["10.0.0.1", "10.0.0.2"]),
    (b"", []),
])
def test_forwarded_for_reads_rfc_7239_forwarded_then_x_forwarded_for(serve, fields, claimed):
    srv = serve(lambda req: resp.json(200, req.forwarded_for()))
    _, body = request(srv, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert json.loads(body) == claimed


def test_read_form_urlencoded_and_json_body(serve):
    def form(req):
        if req.header("content-type") == "application/json":
            return resp.json(200, req.json())
        with req.read_form() as data:
            files = {name: [(f.filename, f.read().decode()) for f in uploads] for name, uploads in data.files.items()}
            return resp.json(200, {"type": type(data).__name__, "fields": data.fields, "first_a": data.get("a"),
                                   "files": files})

    srv = serve(form)
    body = b"a=1&b=x+y&a=2"
    _, out = request(srv, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert json.loads(out) == {"type": "FormData", "fields": {"a": ["1", "2"], "b": ["x y"]}, "first_a": "1",
                               "files": {}}

    def post_multipart() -> bytes:  # the same fields, and a file, as multipart/form-data from httpx
        with httpx.Client() as client:
            return client.post(srv.url + "/", data={"a": ["1", "2"], "b": "x y"}, files={"f": ("n.txt", b"hi")}).content

    out = in_thread(post_multipart)
    assert json.loads(out) == {"type": "FormData", "fields": {"a": ["1", "2"], "b": ["x y"]}, "first_a": "1",
                               "files": {"f": [["n.txt", "hi"]]}}
    _, out = request(srv, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n[1,2,3 ]")
    assert json.loads(out) == [1, 2, 3]


# The post_4kb_form bench body (tools/bench_apps/bench_common.form_request_body), then the same with
# a + or an escape in the last pair only, an empty piece, a bare name and repeated names: rr.qs's
# one-pass path must still agree with the stdlib on each.
_BENCH_FORM = "&".join(f"k{i:03d}=abcdefghijklmnopqrstuvwxyz0" for i in range(128))
_FORMS = [_BENCH_FORM, _BENCH_FORM + "&z=a+b", _BENCH_FORM + "&z=%41%e2%82%ac", _BENCH_FORM + "&&flag&k001=again",
          "x+y=%3D%26&" + _BENCH_FORM]


@pytest.mark.parametrize("body", _FORMS, ids=["bench", "plus-last", "escape-last", "empty-bare-repeat",
                                              "escaped-separators"])
def test_read_form_agrees_with_parse_qsl_on_the_bench_body(serve, body):
    def form(req):
        with req.read_form() as data:
            return resp.json(200, data.fields)

    srv = serve(form)

    def post() -> bytes:  # httpx sends the body as given, with the browser's form content type
        with httpx.Client() as client:
            return client.post(srv.url + "/", content=body.encode(),
                               headers={"content-type": "application/x-www-form-urlencoded"}).content

    expected: dict[str, list[str]] = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        expected.setdefault(name, []).append(value)
    assert json.loads(in_thread(post)) == expected


def test_read_form_decodes_escapes_and_raw_utf8_together(serve):
    # WHATWG decodes the percent-escapes to bytes and then reads the bytes as UTF-8: a raw lead
    # byte and an escaped continuation byte are one character; invalid bytes are U+FFFD.
    def form(req):
        with req.read_form() as data:
            return resp.json(200, data.fields)

    srv = serve(form)
    body = b"e=\xc3%A9&bad=\xff%FF&k=v"
    _, out = request(srv, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert json.loads(out) == {"e": ["\u00e9"], "bad": ["\ufffd\ufffd"], "k": ["v"]}


def _tag(label):
    def mw(req, nxt, state):
        r = nxt(req)
        return resp.with_header(r, "x-mw", f"{label}") if not isinstance(r, resp.WebSocket) else r

    return mw


@pytest.mark.parametrize("shape", ["response", "stream", "loop", "sendfile"])
def test_middleware_wraps_every_response_shape(serve, tmp_path, shape):
    path = tmp_path / "f.txt"
    path.write_text("file!")

    def on_info(msg, push, state):
        push(b"looped")
        return resp.STOP

    def handler(req):
        if shape == "response":
            return resp.text(200, "plain")
        if shape == "stream":
            return resp.Stream(200, [], lambda send: send(b"streamed", fin=True))
        if shape == "loop":
            supervisors.send(supervisors.self(), "go")
            return resp.Loop(200, [], None, on_info)
        return resp.Sendfile(200, [], str(path))

    srv = serve(handler, middlewares=[_tag("outer")])
    with srv.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        data = b""
        while not (data.endswith(b"\r\n0\r\n\r\n") or data.endswith((b"plain", b"file!"))):
            data += sock.recv(4096)
    assert b"x-mw: outer" in data


def test_middleware_short_circuits_before_the_handler(serve):
    calls = []

    def deny(req, nxt, state):
        if req.header("authorization") != "Bearer ok":
            return resp.text(401, "no", {"www-authenticate": "Bearer"})
        return nxt(req)

    srv = serve([("/", lambda req: calls.append(1) or resp.text(200, "in"))], middlewares=[deny])
    head, _ = request(srv, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401") and not calls
    head, body = request(srv, b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ok\r\n\r\n")
    assert body == b"in" and calls == [1]


def test_405_and_404_on_the_wire(serve):
    srv = serve([{"path": "/x", "handler": lambda r: resp.text(200, "x"), "methods": ["POST", "GET"]}])
    head, _ = request(srv, b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405") and b"allow: GET, HEAD, POST" in head
    assert request(srv, b"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")[0].startswith(b"HTTP/1.1 404")


def test_url_for_through_the_listener(serve):
    srv = serve([{"path": "/users/:id", "handler": lambda r: resp.text(200, ""), "name": "user"}])
    assert rr.url_for(srv.name, "user", id="a b") == "/users/a%20b"


def test_reload_routes_under_load_swaps_atomically(serve):
    """Clients hammer the listener while the table is swapped 20 times. Every response
    names the table version twice -- once from the route's handler and once from the
    listener middleware, whose ``init`` re-runs on each reload and waits there until
    clients have been answered -- so a request served by a half-installed table (new routes with the old
    or no middleware, or the reverse) shows two different versions."""
    current = {"version": "v1"}

    def stamp(req, nxt, version):
        return resp.text(200, f"{version}|{nxt(req).body.decode()}")

    def stamp_init(_config):
        if current["version"] != "v1" or seen:  # a reload: let clients be answered mid-build
            progress.clear()
            assert progress.wait(5)
        return current["version"]

    stamp.init = stamp_init

    def table(version):
        return [("/a", lambda r: resp.text(200, f"{version}-a")), ("/b", lambda r: resp.text(200, f"{version}-b"))]

    seen: list[bytes] = []
    stop = gevent.event.Event()
    progress = gevent.event.Event()
    srv = serve(table("v1"), middlewares=[stamp])

    def client(path):
        with srv.connect() as sock:
            while not stop.is_set():
                sock.sendall(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
                head, body = read_response(sock)
                assert head.startswith(b"HTTP/1.1 200"), head
                seen.append(body)
                progress.set()

    clients = [gevent.spawn(client, p) for p in (b"a", b"b") * 5]
    for i in range(20):
        progress.clear()
        assert progress.wait(5)  # clients got answers since the last swap
        current["version"] = "v2" if i % 2 == 0 else "v1"
        rr.reload_routes(srv.name, table(current["version"]))
    stop.set()
    gevent.joinall(clients, timeout=10, raise_error=True)
    mixed = [body for body in seen if body.split(b"|")[0] != body.split(b"|")[-1].split(b"-")[0]]
    assert not mixed, mixed[:5]
    assert {b"v1|v1-a", b"v2|v2-a", b"v1|v1-b", b"v2|v2-b"} <= set(seen)
    assert request(srv, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")[1] == b"v1|v1-a"  # the last table serves


def test_reload_routes_refuses_a_bad_table_and_keeps_the_old_one(serve):
    srv = serve([("/a", lambda r: resp.text(200, "old"))])
    with pytest.raises(ValueError, match="routes"):
        rr.reload_routes(srv.name, [("no-slash", lambda r: resp.text(200, "new"))])
    assert request(srv, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")[1] == b"old"
