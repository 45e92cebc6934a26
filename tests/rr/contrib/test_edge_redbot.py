"""The edge middlewares checked by REDbot: no BAD or WARN notes on a compressed
response, a conditional (ETag/304) response, a CORS preflight and a 429.

REDbot runs in a subprocess through its ``HttpResource`` API
(``tests/rr/contrib/redbot.py``, shared with test_static_redbot.py), with a
method argument so that it can send the ``OPTIONS`` preflight. The notes of
REDbot's own follow-up requests (its conditional 304s and its gzip
negotiation, which compares the coded and the identity answer) count too.
"""

from __future__ import annotations

import pytest

from rr import resp
from rr.contrib import compress, cors, etag, rate_limit, security_headers
from tests.rr.contrib import redbot

pytestmark = pytest.mark.peers("redbot")


ORIGIN = "https://app.example"
PAGE = "".join(f"<p>paragraph {i}: the quick brown fox jumps over the lazy dog</p>\n" for i in range(300))


def _etag_of(report):
    return {k.lower(): v.strip() for k, v in report["headers"]}["etag"]


def _redbot(url, method="GET", headers=()):
    return redbot.api(url, headers, method)


@pytest.fixture
def srv(serve):
    limiter = rate_limit.middleware(rate=0.001, burst=1)
    page = lambda req: resp.html(200, PAGE, {"cache-control": "max-age=60"})  # noqa: E731
    return serve([
        ("/page", page),
        {"path": "/api", "handler": lambda req: resp.json(200, {"ok": True}, {"cache-control": "max-age=60"}),
         "methods": ["GET", "PUT"]},
        {"path": "/limited", "handler": page, "middlewares": [limiter]},
    ], middlewares=[
        cors.middleware(origins=[ORIGIN], allow_methods=["GET", "PUT"], allow_headers=["content-type"],
                        max_age=600),
        security_headers.middleware(),
        compress.middleware(),
        etag.middleware(),
    ])


def test_compressed_and_conditional_responses_have_no_bad_or_warn_notes(srv):
    results = redbot.check_all([
        ("gzip", _redbot, f"{srv.url}/page", "GET", [("Accept-Encoding", "gzip")]),
        ("no Accept-Encoding", _redbot, f"{srv.url}/page"),
        ("br", _redbot, f"{srv.url}/page", "GET", [("Accept-Encoding", "br")]),
    ])
    redbot.assert_clean(results, 200)
    # REDbot's own follow-ups: gzip negotiation compared with identity, and an If-None-Match 304.
    assert {"CONNEG_GZIP_GOOD", "INM_304"} <= redbot.ids(results)


def test_304_from_if_none_match_has_no_bad_or_warn_notes(srv):
    # compress outside etag: one weak tag for the identity and the coded variants
    tag = _etag_of(_redbot(f"{srv.url}/page"))
    assert tag.startswith('W/"') and _etag_of(_redbot(f"{srv.url}/page", "GET", [("Accept-Encoding", "gzip")])) == tag
    results = redbot.check_all([
        ("If-None-Match", _redbot, f"{srv.url}/page", "GET", [("If-None-Match", tag)]),
        ("If-None-Match, gzip", _redbot, f"{srv.url}/page", "GET", [("If-None-Match", tag), ("Accept-Encoding", "gzip")]),
    ])
    redbot.assert_clean(results, 304)
    # RFC 9110 §15.4.5: the 304 repeats the 200's etag, vary and cache-control (REDbot does not
    # compare them when the main answer is the 304 itself, so the test does).
    fields = ("etag", "vary", "cache-control")
    page = {k.lower(): v.strip() for k, v in _redbot(f"{srv.url}/page")["headers"]}
    for _, report in results:
        got = {k.lower(): v.strip() for k, v in report["headers"]}
        assert {f: got.get(f) for f in fields} == {f: page[f] for f in fields}


def test_cors_preflight_has_no_bad_or_warn_notes(srv):
    results = redbot.check_all([
        ("preflight", _redbot, f"{srv.url}/api", "OPTIONS",
         [("Origin", ORIGIN), ("Access-Control-Request-Method", "PUT"),
          ("Access-Control-Request-Headers", "content-type")]),
    ])
    redbot.assert_clean(results, 204)
    headers = {k.lower(): v.strip() for k, v in results[0][1]["headers"]}
    assert headers["access-control-allow-origin"] == ORIGIN


def test_rate_limited_answer_has_no_bad_or_warn_notes(srv):
    first = _redbot(f"{srv.url}/limited")  # takes the one token (REDbot's follow-ups are 429 too)
    assert first["status"] == 200
    results = redbot.check_all([("429", _redbot, f"{srv.url}/limited")])
    redbot.assert_clean(results, 429)
    headers = {k.lower(): v.strip() for k, v in results[0][1]["headers"]}
    assert int(headers["retry-after"]) >= 1 and headers["ratelimit-remaining"] == "0"
