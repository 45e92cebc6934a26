"""rr.contrib.security_headers without sockets: defaults, HSTS on https only, overrides, handler wins."""

from __future__ import annotations

import pytest

from rr import resp
from rr.contrib import security_headers
from tests.rr.contrib.edge import headers, request, run

OK = resp.text(200, "ok")


def test_defaults_on_plain_http_have_no_hsts():
    h = headers(run(security_headers.middleware(), request(), OK))
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "strict-transport-security" not in h
    assert "content-security-policy" not in h and "content-security-policy-report-only" not in h


def test_hsts_only_over_https():
    h = headers(run(security_headers.middleware(), request(scheme="https"), OK))
    assert h["strict-transport-security"] == "max-age=31536000"


def test_every_value_is_overridable_and_csp_is_opt_in():
    mw = security_headers.middleware(
        frame_options="SAMEORIGIN", referrer_policy="no-referrer, strict-origin-when-cross-origin",
        hsts="max-age=63072000; includeSubDomains; preload",
        csp="default-src 'self'", csp_report_only="default-src 'none'; report-uri /csp",
    )
    h = headers(run(mw, request(scheme="https"), OK))
    assert h["x-frame-options"] == "SAMEORIGIN"
    assert h["referrer-policy"] == "no-referrer, strict-origin-when-cross-origin"
    assert h["strict-transport-security"] == "max-age=63072000; includeSubDomains; preload"
    assert h["content-security-policy"] == "default-src 'self'"
    assert h["content-security-policy-report-only"] == "default-src 'none'; report-uri /csp"


def test_none_leaves_a_header_out():
    mw = security_headers.middleware(content_type_options=None, frame_options=None, referrer_policy=None, hsts=None)
    out = run(mw, request(scheme="https"), OK)
    assert out is OK


def test_a_header_the_handler_set_wins():
    mine = resp.text(200, "ok", {"x-frame-options": "SAMEORIGIN", "content-security-policy": "img-src *"})
    out = run(security_headers.middleware(csp="default-src 'self'"), request(), mine)
    assert [v for k, v in out.headers if k == "x-frame-options"] == ["SAMEORIGIN"]
    assert [v for k, v in out.headers if k == "content-security-policy"] == ["img-src *"]
    assert headers(out)["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("result", [
    resp.text(404, "Not Found"),
    resp.Stream(200, [], lambda send: None),
    resp.Loop(200, [], None, lambda msg, push, state: resp.STOP),
    resp.Sendfile(200, [], "/etc/hostname"),
])
def test_every_shape_gets_them(result):
    assert headers(run(security_headers.middleware(), request(), result))["x-content-type-options"] == "nosniff"


def test_websocket_is_passed_through():
    ws = resp.WebSocket(handler=object())
    assert run(security_headers.middleware(), request(), ws) is ws


@pytest.mark.parametrize("option, value", [
    ("content_type_options", "nosniff\r\nset-cookie: a=b"),
    ("content_type_options", "sniff"),
    ("frame_options", "DENY\n"),
    ("frame_options", "ALLOW-FROM https://x"),
    ("referrer_policy", "no-referrer\0"),
    ("referrer_policy", "everything"),
    ("hsts", "max-age=1\r\nx: y"),
    ("hsts", "includeSubDomains"),
    ("hsts", "max-age=abc"),
    ("csp", "default-src 'self'\r\nset-cookie: a=b"),
    ("csp", "default-src\x7f"),
    ("csp_report_only", "default-src 'self'\n"),
    ("csp", 5),
])
def test_bad_values_fail_at_construction_naming_the_option(option, value):
    with pytest.raises(ValueError, match=repr(option)):
        security_headers.middleware(**{option: value})
