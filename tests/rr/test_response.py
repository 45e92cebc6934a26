"""Response builders: shapes, headers, helpers."""

from __future__ import annotations

import dataclasses

import pytest

from rr import resp


def test_text_html_json_builders_set_content_type_and_body():
    assert resp.text(200, "hi") == resp.Response(200, [("content-type", "text/plain; charset=utf-8")], b"hi")
    assert resp.html(201, "<b>").headers[0] == ("content-type", "text/html; charset=utf-8")
    r = resp.json(200, {"a": [1, "é"]}, {"x-extra": "1"})
    assert r.body == '{"a":[1,"é"]}'.encode() and ("x-extra", "1") in r.headers


def test_ndjson_frames_one_document_per_line():
    r = resp.ndjson(200, [{"a": 1}, "line\nbreak"])
    assert r.body == b'{"a":1}\n"line\\nbreak"\n'
    assert resp.get_header(r, "content-type") == "application/x-ndjson"


def test_redirect_refuses_header_injection():
    assert resp.get_header(resp.redirect("/next"), "location") == "/next"
    with pytest.raises(ValueError):
        resp.redirect("/x\r\nset-cookie: a=b")


def test_status_helpers():
    assert resp.no_content().status == 204 and resp.not_modified().status == 304
    assert resp.not_found().status == 404 and resp.bad_request().status == 400


def test_with_header_returns_a_new_response_on_every_shape():
    base = resp.text(200, "x")
    r = resp.with_header(base, "X-Trace", "1")
    assert ("x-trace", "1") in r.headers and ("x-trace", "1") not in base.headers
    s = resp.with_header(resp.Stream(200, [], lambda send: None), "x-a", "b")
    assert s.headers == [("x-a", "b")]
    with pytest.raises(TypeError):
        resp.with_header(resp.WebSocket(object()), "x", "y")


def test_set_cookie_serialises_and_rejects_injection():
    r = resp.set_cookie(resp.text(200, "x"), "sid", "abc", http_only=True, secure=True, same_site="Lax")
    value = resp.get_header(r, "set-cookie")
    assert value is not None and value.startswith("sid=abc") and "HttpOnly" in value and "Secure" in value
    with pytest.raises(ValueError):
        resp.set_cookie(resp.text(200, "x"), "sid", "a;b")
    with pytest.raises(ValueError):
        resp.set_cookie(resp.text(200, "x"), "sid", "a", path="/\r\nx: y")


def test_shapes_are_frozen():
    r = resp.text(200, "x")
    with pytest.raises(AttributeError):
        r.status = 500  # type: ignore[misc]


def test_response_and_stream_construct_as_dataclasses_do():
    # Their __init__ is written by hand (slot descriptors, for speed): positional and
    # keyword forms, the defaults, a fresh header list per response, replace() and
    # match all behave as the generated one did.
    a, b = resp.Response(200), resp.Response(200)
    assert (a.status, a.headers, a.body) == (200, [], b"")
    assert a.headers is not b.headers
    r = resp.Response(status=201, body=b"q", headers=[("x-a", "1")])
    assert (r.status, r.headers, r.body) == (201, [("x-a", "1")], b"q")
    assert resp.Response(204, None).headers == []
    assert dataclasses.replace(r, body=b"z") == resp.Response(201, [("x-a", "1")], b"z")
    match r:
        case resp.Response(201, [("x-a", "1")], b"q"):
            pass
        case _:
            raise AssertionError(r)
    s = resp.Stream(200, [("content-type", "text/plain")], print)
    assert (s.status, s.headers, s.fn) == (200, [("content-type", "text/plain")], print)
    assert dataclasses.replace(s, status=206).status == 206
    with pytest.raises(AttributeError):
        s.fn = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        resp.Response()  # type: ignore[call-arg]
