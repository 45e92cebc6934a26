"""rr.contrib.etag without sockets: tags, If-None-Match → 304, If-Match → 412, streaming skipped."""

from __future__ import annotations

import pytest

from rr import resp
from rr.contrib import etag
from tests.rr.contrib.edge import call, headers, request, run

BODY = b"representation"
TAG = etag.of(BODY)
OK = resp.Response(200, [("content-type", "text/plain"), ("cache-control", "max-age=60"), ("vary", "origin")], BODY)


def test_weak_tag_from_the_body():
    out = run(etag.middleware(), request(), OK)
    assert headers(out)["etag"] == TAG and TAG.startswith('W/"') and out.body == BODY
    assert etag.of(BODY) != etag.of(BODY + b"!")


def test_strong_option():
    assert headers(run(etag.middleware(weak=False), request(), OK))["etag"] == etag.of(BODY, weak=False)
    assert not etag.of(BODY, weak=False).startswith("W/")


def test_handlers_own_tag_is_kept_and_used():
    mine = resp.text(200, BODY, {"etag": '"v7"'})
    out = run(etag.middleware(), request(), mine)
    assert [v for k, v in out.headers if k == "etag"] == ['"v7"']
    out = run(etag.middleware(), request("GET", "/", [("if-none-match", 'W/"v7"')]), mine)
    assert out.status == 304


@pytest.mark.parametrize("inm", [TAG, TAG.removeprefix("W/"), f'"other", {TAG}', "*"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_gives_304_with_only_cache_fields(inm, method):
    out = run(etag.middleware(), request(method, "/", [("if-none-match", inm)]), OK)
    assert out.status == 304 and out.body == b""
    assert headers(out) == {"etag": TAG, "cache-control": "max-age=60", "vary": "origin"}


def test_if_none_match_other_tag_gives_200():
    out = run(etag.middleware(), request("GET", "/", [("if-none-match", '"nope"')]), OK)
    assert out.status == 200 and out.body == BODY


def test_only_200_is_tagged_or_turned_into_304():
    for status in (201, 404, 500):
        result = resp.Response(status, [], BODY)
        assert run(etag.middleware(), request("GET", "/", [("if-none-match", "*")]), result) is result


@pytest.mark.parametrize("result", [
    resp.Stream(200, [], lambda send: None),
    resp.Loop(200, [], None, lambda msg, push, state: resp.STOP),
    resp.Sendfile(200, [], "/etc/hostname"),
    resp.WebSocket(handler=object()),
])
def test_streaming_shapes_are_skipped(result):
    assert run(etag.middleware(), request("GET", "/", [("if-none-match", "*")]), result) is result


def test_if_match_on_get_uses_strong_comparison():
    strong = resp.text(200, BODY, {"etag": '"v1"'})
    assert run(etag.middleware(), request("GET", "/", [("if-match", '"v1"')]), strong).status == 200
    assert run(etag.middleware(), request("GET", "/", [("if-match", '"v2"')]), strong).status == 412
    assert run(etag.middleware(), request("GET", "/", [("if-match", 'W/"v1"')]), strong).status == 412
    # a weak tag never matches If-Match (RFC 9110 §13.1.1)
    assert run(etag.middleware(), request("GET", "/", [("if-match", TAG)]), OK).status == 412


def test_unsafe_if_match_mismatch_is_412_before_the_handler():
    mw = etag.middleware(current=lambda req: '"v2"')
    out, called = call(mw, request("PUT", "/doc", [("if-match", '"v1"')]), resp.text(200, "saved"))
    assert out.status == 412 and not called
    out, called = call(mw, request("PUT", "/doc", [("if-match", '"v2"')]), resp.text(200, "saved"))
    assert out.status == 200 and called


def test_unsafe_if_match_star_needs_a_current_representation():
    absent = etag.middleware(current=lambda req: None)
    present = etag.middleware(current=lambda req: '"v1"')
    assert call(absent, request("DELETE", "/", [("if-match", "*")]), OK)[0].status == 412
    assert call(present, request("DELETE", "/", [("if-match", "*")]), OK)[0].status == 200


def test_unsafe_if_none_match_star_is_create_only():
    present = etag.middleware(current=lambda req: '"v1"')
    absent = etag.middleware(current=lambda req: None)
    out, called = call(present, request("PUT", "/", [("if-none-match", "*")]), OK)
    assert out.status == 412 and not called
    assert call(absent, request("PUT", "/", [("if-none-match", "*")]), OK)[0].status == 200


def test_unsafe_without_current_or_conditions_passes_through():
    assert call(etag.middleware(), request("POST", "/", [("if-match", '"x"')]), OK)[0] is OK
    seen = []
    mw = etag.middleware(current=lambda req: seen.append(req) or '"v"')
    assert call(mw, request("POST", "/"), OK)[0] is OK and seen == []  # no precondition: no lookup


def test_a_huge_if_none_match_is_bounded():
    header = ", ".join(f'"t{i}"' for i in range(20_000)) + f", {TAG}"
    out = run(etag.middleware(), request("GET", "/", [("if-none-match", header)]), OK)
    assert out.status == 200  # the match sits past MAX_TAGS


@pytest.mark.parametrize("options, option", [
    ({"weak": "yes"}, "weak"),
    ({"current": "v1"}, "current"),
])
def test_bad_options(options, option):
    with pytest.raises(ValueError, match=repr(option)):
        etag.middleware(**options)
