"""The edge middlewares checked by REDbot: no BAD or WARN notes on a compressed
response, a conditional (ETag/304) response, a CORS preflight and a 429.

REDbot runs in a subprocess through its ``HttpResource`` API (the listener
lives in this process's gevent hub), as in test_static_redbot.py, here with a
method argument so that it can send the ``OPTIONS`` preflight. The notes of
REDbot's own follow-up requests (its conditional 304s and its gzip
negotiation, which compares the coded and the identity answer) count too.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from rr import resp
from rr.contrib import compress, cors, etag, rate_limit, security_headers
from tests.rr.contrib.test_static_redbot import _assert_clean, _check_all, _ids, _run

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("redbot") is None or importlib.util.find_spec("httplint") is None,
    reason="REDbot is not installed (pip install redbot)",
)

DRIVER = r"""
import json, sys
from configparser import ConfigParser
import thor
from redbot.resource import HttpResource
from redbot.resource.fetch import RedFetcher

# REDbot builds each response linter without the request it answers, so httplint
# cannot tell a preflight's answer from any other (and calls its
# access-control-allow-methods/-headers/max-age misplaced). Tell it, for the main
# request and REDbot's follow-ups alike.
_set_request = RedFetcher.set_request
def set_request(self, *args, **kwargs):
    _set_request(self, *args, **kwargs)
    self.response.request = self.request
RedFetcher.set_request = set_request

def flat(notes, where):
    out = []
    for n in notes:
        out.append({"where": where, "id": type(n).__name__, "level": n.level.name,
                    "subject": n.subject, "summary": str(n.summary)})
        out += flat(n.subnotes or [], where)
    return out

url, method, headers = json.loads(sys.argv[1])
config = ConfigParser()
config.read_dict({"redbot": {"enable_local_access": "True"}})
res = HttpResource(config["redbot"])
res.set_request(url, method=method, headers=[tuple(h) for h in headers])

@thor.events.on(res)
def check_done():
    thor.stop()

res.check()
thor.run()
report = {"status": res.response.status_code,
          "error": str(res.fetch_error.desc) if res.fetch_error else None,
          "headers": res.response.headers.text,
          "notes": flat(res.response.notes, "main")}
for check_id, sub in res.subreqs.items():
    if sub.fetch_started and sub.response.complete:
        report["notes"] += flat(sub.response.notes, f"{check_id}:{sub.response.status_code}")
print(json.dumps(report))
"""

ORIGIN = "https://app.example"
PAGE = "".join(f"<p>paragraph {i}: the quick brown fox jumps over the lazy dog</p>\n" for i in range(300))


def _etag_of(report):
    return {k.lower(): v.strip() for k, v in report["headers"]}["etag"]


def _redbot(url, method="GET", headers=()):
    return _run([sys.executable, "-c", DRIVER, json.dumps([url, method, list(headers)])])


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
    results = _check_all([
        ("gzip", _redbot, f"{srv.url}/page", "GET", [("Accept-Encoding", "gzip")]),
        ("no Accept-Encoding", _redbot, f"{srv.url}/page"),
        ("br", _redbot, f"{srv.url}/page", "GET", [("Accept-Encoding", "br")]),
    ])
    _assert_clean(results, 200)
    # REDbot's own follow-ups: gzip negotiation compared with identity, and an If-None-Match 304.
    assert {"CONNEG_GZIP_GOOD", "INM_304"} <= _ids(results)


def test_304_from_if_none_match_has_no_bad_or_warn_notes(srv):
    # compress outside etag: one weak tag for the identity and the coded variants
    tag = _etag_of(_redbot(f"{srv.url}/page"))
    assert tag.startswith('W/"') and _etag_of(_redbot(f"{srv.url}/page", "GET", [("Accept-Encoding", "gzip")])) == tag
    results = _check_all([
        ("If-None-Match", _redbot, f"{srv.url}/page", "GET", [("If-None-Match", tag)]),
        ("If-None-Match, gzip", _redbot, f"{srv.url}/page", "GET", [("If-None-Match", tag), ("Accept-Encoding", "gzip")]),
    ])
    _assert_clean(results, 304)
    # RFC 9110 §15.4.5: the 304 repeats the 200's etag, vary and cache-control (REDbot does not
    # compare them when the main answer is the 304 itself, so the test does).
    fields = ("etag", "vary", "cache-control")
    page = {k.lower(): v.strip() for k, v in _redbot(f"{srv.url}/page")["headers"]}
    for _, report in results:
        got = {k.lower(): v.strip() for k, v in report["headers"]}
        assert {f: got.get(f) for f in fields} == {f: page[f] for f in fields}


def test_cors_preflight_has_no_bad_or_warn_notes(srv):
    results = _check_all([
        ("preflight", _redbot, f"{srv.url}/api", "OPTIONS",
         [("Origin", ORIGIN), ("Access-Control-Request-Method", "PUT"),
          ("Access-Control-Request-Headers", "content-type")]),
    ])
    _assert_clean(results, 204)
    headers = {k.lower(): v.strip() for k, v in results[0][1]["headers"]}
    assert headers["access-control-allow-origin"] == ORIGIN


def test_rate_limited_answer_has_no_bad_or_warn_notes(srv):
    first = _redbot(f"{srv.url}/limited")  # takes the one token (REDbot's follow-ups are 429 too)
    assert first["status"] == 200
    results = _check_all([("429", _redbot, f"{srv.url}/limited")])
    _assert_clean(results, 429)
    headers = {k.lower(): v.strip() for k, v in results[0][1]["headers"]}
    assert int(headers["retry-after"]) >= 1 and headers["ratelimit-remaining"] == "0"
