"""rr.contrib.cors without sockets: origins, preflights, credentials, vary, configuration."""

from __future__ import annotations

import pytest

from rr import resp
from rr.contrib import cors
from tests.rr.contrib.edge import call, headers, request, run

APP = "https://app.example"
EVIL = "https://evil.example"
OK = resp.text(200, "ok")


def actual(mw, origin=APP, method="GET", result=OK):
    hdrs = [("origin", origin)] if origin is not None else []
    return run(mw, request(method, "/", hdrs), result)


def preflight(mw, origin=APP, method="PUT", req_headers=None):
    hdrs = [("origin", origin), ("access-control-request-method", method)]
    if req_headers is not None:
        hdrs.append(("access-control-request-headers", req_headers))
    return call(mw, request("OPTIONS", "/", hdrs), OK)


# -- actual requests ---------------------------------------------------------------


def test_listed_origin_is_echoed_with_vary_origin():
    mw = cors.middleware(origins=[APP])
    h = headers(actual(mw))
    assert h["access-control-allow-origin"] == APP and h["vary"] == "origin"
    assert "access-control-allow-credentials" not in h


def test_origin_comparison_ignores_case_of_configured_origin():
    mw = cors.middleware(origins=["HTTPS://App.Example"])
    assert headers(actual(mw))["access-control-allow-origin"] == APP


def test_unlisted_origin_gets_no_cors_headers_but_still_vary():
    mw = cors.middleware(origins=[APP])
    h = headers(actual(mw, EVIL))
    assert "access-control-allow-origin" not in h and h["vary"] == "origin"


def test_no_origin_same_origin_request_gets_only_vary():
    h = headers(actual(cors.middleware(origins=[APP]), origin=None))
    assert h == {"content-type": "text/plain; charset=utf-8", "vary": "origin"}


def test_any_origin_is_star_without_vary():
    h = headers(actual(cors.middleware(origins="*")))
    assert h["access-control-allow-origin"] == "*" and "vary" not in h


def test_predicate_decides():
    mw = cors.middleware(origins=lambda o: o.endswith(".example.org"))
    assert headers(actual(mw, "https://a.example.org"))["access-control-allow-origin"] == "https://a.example.org"
    assert "access-control-allow-origin" not in headers(actual(mw, EVIL))


def test_credentials_echo_the_origin_never_star():
    mw = cors.middleware(origins=lambda o: True, allow_credentials=True)
    h = headers(actual(mw, EVIL))
    assert h["access-control-allow-origin"] == EVIL and h["access-control-allow-credentials"] == "true"


def test_star_with_credentials_is_refused_at_construction():
    with pytest.raises(ValueError, match="'origins'"):
        cors.middleware(origins="*", allow_credentials=True)


def test_expose_headers():
    mw = cors.middleware(origins=[APP], expose_headers=["X-Request-Id", "ratelimit-remaining"])
    assert headers(actual(mw))["access-control-expose-headers"] == "x-request-id, ratelimit-remaining"


def test_vary_is_merged_never_replaced():
    mw = cors.middleware(origins=[APP])
    out = actual(mw, result=resp.text(200, "ok", {"vary": "accept-encoding"}))
    assert [v for k, v in out.headers if k == "vary"] == ["accept-encoding, origin"]


def test_vary_origin_already_there_is_not_repeated():
    mw = cors.middleware(origins=[APP])
    out = actual(mw, result=resp.text(200, "ok", {"vary": "Origin, Cookie"}))
    assert [v for k, v in out.headers if k == "vary"] == ["Origin, Cookie"]


def test_handlers_own_allow_origin_wins():
    mw = cors.middleware(origins=[APP])
    out = actual(mw, result=resp.text(200, "ok", {"access-control-allow-origin": "https://other.example"}))
    assert [v for k, v in out.headers if k == "access-control-allow-origin"] == ["https://other.example"]


@pytest.mark.parametrize("result", [
    resp.text(404, "Not Found"),
    resp.text(405, "Method Not Allowed", {"allow": "GET"}),
    resp.Stream(200, [("content-type", "text/plain")], lambda send: None),
    resp.Sendfile(200, [], "/etc/hostname"),
])
def test_every_status_and_shape_gets_the_headers(result):
    h = headers(actual(cors.middleware(origins=[APP]), result=result))
    assert h["access-control-allow-origin"] == APP


def test_websocket_is_passed_through():
    ws = resp.WebSocket(handler=object())
    assert actual(cors.middleware(origins=[APP]), result=ws) is ws


# -- preflight ------------------------------------------------------------------------


def test_preflight_is_answered_204_without_the_handler():
    mw = cors.middleware(origins=[APP], allow_methods=["GET", "PUT"], allow_headers=["content-type", "x-token"],
                         max_age=3600)
    out, called = preflight(mw, req_headers="Content-Type, X-Token")
    h = headers(out)
    assert out.status == 204 and not called
    assert h["access-control-allow-origin"] == APP
    assert h["access-control-allow-methods"] == "GET, PUT"
    assert h["access-control-allow-headers"] == "content-type, x-token"
    assert h["access-control-max-age"] == "3600"
    assert "origin" in h["vary"]


def test_preflight_method_not_allowed_is_rejected():
    out, called = preflight(cors.middleware(origins=[APP], allow_methods=["GET"]), method="DELETE")
    assert out.status == 403 and not called and "access-control-allow-origin" not in headers(out)


def test_preflight_safelisted_method_passes_without_listing():
    out, _ = preflight(cors.middleware(origins=[APP], allow_methods=[]), method="POST")
    assert out.status == 204 and headers(out)["access-control-allow-methods"] == "POST"


def test_preflight_header_not_allowed_is_rejected():
    mw = cors.middleware(origins=[APP], allow_methods=["PUT"], allow_headers=["content-type"])
    assert preflight(mw, req_headers="content-type, x-secret")[0].status == 403


def test_preflight_origin_not_allowed_is_rejected():
    assert preflight(cors.middleware(origins=[APP], allow_methods=["PUT"]), origin=EVIL)[0].status == 403


def test_preflight_reflect_allows_any_requested_token_header():
    mw = cors.middleware(origins=[APP], allow_methods=["PUT"], allow_headers=cors.REFLECT)
    out, _ = preflight(mw, req_headers="X-Anything, x-other")
    assert out.status == 204 and headers(out)["access-control-allow-headers"] == "x-anything, x-other"
    assert preflight(mw, req_headers="x-ok, bad name")[0].status == 403


def test_preflight_with_too_many_requested_headers_is_rejected():
    mw = cors.middleware(origins=[APP], allow_methods=["PUT"], allow_headers=cors.REFLECT)
    assert preflight(mw, req_headers=", ".join(f"x-h{i}" for i in range(cors.MAX_REQUEST_HEADERS)))[0].status == 204
    assert preflight(mw, req_headers=", ".join(f"x-h{i}" for i in range(cors.MAX_REQUEST_HEADERS + 1)))[0].status == 403


def test_preflight_with_credentials_and_no_max_age():
    mw = cors.middleware(origins=[APP], allow_methods=["PUT"], allow_credentials=True, max_age=None)
    h = headers(preflight(mw)[0])
    assert h["access-control-allow-credentials"] == "true" and "access-control-max-age" not in h


def test_options_without_request_method_is_not_a_preflight():
    out, called = call(cors.middleware(origins=[APP]), request("OPTIONS", "/", [("origin", APP)]), OK)
    assert called and out.status == 200 and headers(out)["access-control-allow-origin"] == APP


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize("options, option", [
    ({"origins": "https://app.example"}, "origins"),  # a str that is not "*": say a list
    ({"origins": ["https://app.example/path"]}, "origins"),
    ({"origins": ["https://app.example\r\nx-evil: 1"]}, "origins"),
    ({"origins": ["app.example"]}, "origins"),
    ({"origins": [APP, 5]}, "origins"),
    ({"origins": 5}, "origins"),
    ({"origins": [APP], "allow_methods": ["GET\r\n"]}, "allow_methods"),
    ({"origins": [APP], "allow_methods": "GET"}, "allow_methods"),
    ({"origins": [APP], "allow_headers": ["x-ok", "bad header"]}, "allow_headers"),
    ({"origins": [APP], "allow_headers": ["x\0"]}, "allow_headers"),
    ({"origins": [APP], "expose_headers": ["x\nset-cookie"]}, "expose_headers"),
    ({"origins": [APP], "allow_credentials": "yes"}, "allow_credentials"),
    ({"origins": [APP], "max_age": -1}, "max_age"),
    ({"origins": [APP], "max_age": "600\r\n"}, "max_age"),
])
def test_bad_options_fail_at_construction_naming_the_option(options, option):
    with pytest.raises(ValueError, match=repr(option)):
        cors.middleware(**options)


def test_origins_is_required():
    with pytest.raises(TypeError):
        cors.middleware()
