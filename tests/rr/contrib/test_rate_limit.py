"""rr.contrib.rate_limit without sockets: the bucket, the 429, the headers, the bounded store."""

from __future__ import annotations

import pytest

from rr import resp
from rr.contrib import rate_limit
from tests.rr.contrib.edge import call, headers, request

OK = resp.text(200, "ok")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**options):
    clock = Clock()
    options.setdefault("rate", 1.0)
    options.setdefault("burst", 3)
    return rate_limit.middleware(clock=clock, **options), clock


def hit(mw, peer="192.0.2.1", hdrs=None):
    return call(mw, request("GET", "/", hdrs, peer=(peer, 5555)), OK)


def test_burst_then_429_with_retry_after_and_draft_headers():
    mw, _ = limiter(rate=0.5, burst=3)
    statuses = []
    for _ in range(3):
        out, called = hit(mw)
        statuses.append(out.status)
        assert called
    out, called = hit(mw)
    assert statuses == [200, 200, 200] and out.status == 429 and not called
    h = headers(out)
    assert h["retry-after"] == "2"  # one token at 0.5/s
    assert h["ratelimit-limit"] == "3" and h["ratelimit-remaining"] == "0" and h["ratelimit-reset"] == "6"
    assert h["cache-control"] == "no-store"


def test_allowed_answers_carry_remaining():
    mw, _ = limiter()
    assert [headers(hit(mw)[0])["ratelimit-remaining"] for _ in range(3)] == ["2", "1", "0"]


def test_headers_option_off_leaves_allowed_answers_alone():
    mw, _ = limiter(headers=False)
    assert hit(mw)[0] is OK


def test_tokens_refill_at_rate():
    mw, clock = limiter(rate=2.0, burst=1)
    assert hit(mw)[0].status == 200
    assert hit(mw)[0].status == 429
    clock.now += 0.5
    assert hit(mw)[0].status == 200
    clock.now += 100
    assert headers(hit(mw)[0])["ratelimit-remaining"] == "0"  # never above burst


def test_peers_have_separate_buckets():
    mw, _ = limiter(burst=1)
    assert hit(mw, "192.0.2.1")[0].status == 200
    assert hit(mw, "192.0.2.2")[0].status == 200
    assert hit(mw, "192.0.2.1")[0].status == 429


def test_ipv6_peers_share_their_64():
    mw, _ = limiter(burst=1)
    assert hit(mw, "2001:db8:1:2::1")[0].status == 200
    assert hit(mw, "2001:db8:1:2:ffff::9")[0].status == 429
    assert hit(mw, "2001:db8:1:3::1")[0].status == 200
    assert rate_limit.peer_key(request(peer=("2001:db8::1", 1)), 128) == "2001:db8::1"


def test_key_function_for_api_keys_and_none_exempts():
    mw, _ = limiter(burst=1, key=lambda req: req.headers.get("x-api-key"))
    assert hit(mw, "192.0.2.1", [("x-api-key", "k1")])[0].status == 200
    assert hit(mw, "192.0.2.2", [("x-api-key", "k1")])[0].status == 429  # same key, other peer
    assert hit(mw, "192.0.2.1", [("x-api-key", "k2")])[0].status == 200
    for _ in range(5):
        assert hit(mw, "192.0.2.1")[0] is OK  # no key: exempt


def test_ten_thousand_peers_keep_the_store_bounded():
    mw, clock = limiter(max_keys=1000)
    for i in range(10_000):
        hit(mw, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(mw.buckets) == 1000
    # least recently used went first: the newest peer is there, the first is not
    assert "10.0.39.15" in mw.buckets and "10.0.0.0" not in mw.buckets


def test_refilled_buckets_are_swept():
    mw, clock = limiter(rate=1.0, burst=3)
    for i in range(50):
        hit(mw, f"10.0.0.{i}")
    assert len(mw.buckets) == 50
    clock.now += 3.0  # every bucket is full again: the same as no bucket
    hit(mw, "10.0.1.1")
    assert list(mw.buckets) == ["10.0.1.1"]


def test_one_object_one_budget_for_every_route_it_is_on():
    mw, _ = limiter(burst=2)
    assert hit(mw)[0].status == 200  # route A
    assert hit(mw)[0].status == 200  # route B, same object
    assert hit(mw)[0].status == 429


def test_websocket_upgrade_is_counted_but_not_edited():
    mw, _ = limiter(burst=1)
    ws = resp.WebSocket(handler=object())
    assert call(mw, request(), ws)[0] is ws
    assert call(mw, request(), ws)[0].status == 429


@pytest.mark.parametrize("options, option", [
    ({"rate": 0, "burst": 1}, "rate"),
    ({"rate": float("inf"), "burst": 1}, "rate"),
    ({"rate": "10", "burst": 1}, "rate"),
    ({"rate": 1, "burst": 0}, "burst"),
    ({"rate": 1, "burst": 1.5}, "burst"),
    ({"rate": 1, "burst": 1, "key": "x-api-key"}, "key"),
    ({"rate": 1, "burst": 1, "max_keys": 0}, "max_keys"),
    ({"rate": 1, "burst": 1, "ipv6_prefix": 129}, "ipv6_prefix"),
    ({"rate": 1, "burst": 1, "headers": 1}, "headers"),
    ({"rate": 1, "burst": 1, "clock": 5}, "clock"),
])
def test_bad_options(options, option):
    with pytest.raises(ValueError, match=repr(option)):
        rate_limit.middleware(**options)


def test_eviction_is_least_recently_used_not_oldest_created():
    mw, _ = limiter(max_keys=2, burst=5)
    hit(mw, "192.0.2.1")
    hit(mw, "192.0.2.2")
    hit(mw, "192.0.2.1")  # .1 is now the most recently used
    hit(mw, "192.0.2.3")
    assert list(mw.buckets) == ["192.0.2.1", "192.0.2.3"]
