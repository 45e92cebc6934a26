"""Trusted forwarding headers (``forwarded_allow_ips``, rr.forwarded): the
rightmost-untrusted rule, RFC 7239 ``Forwarded`` and ``X-Forwarded-*``, and
what sees the result on the wire (handler, rate limiter, access log) on h1 and h2.
"""

from __future__ import annotations

import json

import pytest
import structlog
from gevent import subprocess
from gevent.queue import Queue

import rr
from rr import resp
from rr.contrib import rate_limit
from rr.forwarded import Trusted, apply
from rr.request import Headers, Request

PROXIES = Trusted.parse(["10.0.0.0/8", "2001:db8:ff::/48"])


def req(headers, peer=("10.0.0.1", 5000), scheme="http", host="rr.internal"):
    return Request("GET", "/", "/", "", "HTTP/1.1", Headers(list(headers)), peer=peer, scheme=scheme, host=host)


def applied(headers, **kw):
    r = req(headers, **kw)
    apply(r, PROXIES)
    return r.peer, r.scheme, r.host


# -- trust ---------------------------------------------------------------------------

def test_trusted_matches_networks_and_ipv4_mapped_peers_of_a_dual_stack_socket():
    assert "10.2.3.4" in PROXIES and "::ffff:10.2.3.4" in PROXIES and "2001:db8:ff::9" in PROXIES
    assert "11.0.0.1" not in PROXIES and "unknown" not in PROXIES and None not in PROXIES
    assert "203.0.113.1" in Trusted.parse("*") and "1.2.3.4" in Trusted.parse("127.0.0.1, 1.2.3.4")


@pytest.mark.parametrize("raw", [[], ["10.0.0.0/33"], ["example.com"], [10], "", None])
def test_trusted_refuses_what_is_not_an_address_or_network(raw):
    with pytest.raises(ValueError):
        Trusted.parse(raw)


# -- X-Forwarded-* ---------------------------------------------------------------------

def test_x_forwarded_for_from_a_trusted_peer_gives_the_rightmost_untrusted_address():
    peer, _, _ = applied([("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7")])
    assert peer == ("203.0.113.9", 0)  # 6.6.6.6 was written by the client itself


def test_x_forwarded_for_over_several_lines_is_one_list():
    peer, _, _ = applied([("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "203.0.113.9, 10.0.0.7")])
    assert peer == ("203.0.113.9", 0)


def test_when_every_hop_is_trusted_the_leftmost_is_the_client():
    assert applied([("x-forwarded-for", "10.9.9.9, 10.0.0.7")])[0] == ("10.9.9.9", 0)


@pytest.mark.parametrize("bad", ["unknown", "_hidden", "not an ip", "1.2.3.4:99999", "[::1"])
def test_a_hop_that_is_not_an_address_ends_the_walk_at_the_last_address_read(bad):
    assert applied([("x-forwarded-for", f"203.0.113.1, {bad}, 10.0.0.7")])[0] == ("10.0.0.7", 0)
    assert applied([("x-forwarded-for", bad)])[0] == ("10.0.0.1", 5000)  # unchanged


def test_x_forwarded_entries_with_ports_and_ipv6():
    assert applied([("x-forwarded-for", "203.0.113.5:4711")])[0] == ("203.0.113.5", 4711)
    assert applied([("x-forwarded-for", "[2001:db8::1]:80")])[0] == ("2001:db8::1", 80)
    assert applied([("x-forwarded-for", "2001:db8::1")])[0] == ("2001:db8::1", 0)


def test_x_forwarded_proto_and_host_take_the_rightmost_valid_value():
    _, scheme, host = applied([("x-forwarded-proto", "http, https"), ("x-forwarded-host", "example.com:8443")])
    assert (scheme, host) == ("https", "example.com:8443")


@pytest.mark.parametrize("proto, host", [("gopher", "a b"), ("", "evil.com/path"), ("https x", "x@evil.com")])
def test_invalid_proto_or_host_is_ignored(proto, host):
    assert applied([("x-forwarded-proto", proto), ("x-forwarded-host", host)])[1:] == ("http", "rr.internal")


def test_an_untrusted_peer_headers_are_ignored_entirely():
    headers = [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "evil"),
               ("forwarded", "for=1.1.1.1;proto=https;host=evil")]
    assert applied(headers, peer=("203.0.113.1", 1)) == (("203.0.113.1", 1), "http", "rr.internal")


# -- Forwarded (RFC 7239) ---------------------------------------------------------------

def test_forwarded_takes_for_proto_host_from_the_element_that_named_the_client():
    headers = [("forwarded", 'for=6.6.6.6;proto=http, for="[2001:db8::17]:4711";proto=https;host=example.com, '
                             "for=10.0.0.8;proto=http;host=lb.internal")]
    assert applied(headers) == (("2001:db8::17", 4711), "https", "example.com")


def test_forwarded_wins_over_x_forwarded_and_quoted_commas_do_not_split():
    headers = [("forwarded", 'for=203.0.113.4;host="a,b.example"'), ("x-forwarded-for", "198.51.100.1"),
               ("x-forwarded-proto", "https")]
    peer, scheme, host = applied(headers)
    assert peer == ("203.0.113.4", 0) and scheme == "http" and host == "a,b.example"


@pytest.mark.parametrize("element", ['for="unterminated', "for", "for=1.2.3.4;for=5.6.7.8", "=x", "by=10.0.0.1"])
def test_a_malformed_forwarded_element_ends_the_walk(element):
    assert applied([("forwarded", f"for=203.0.113.1, {element}, for=10.0.0.9")])[0] == ("10.0.0.9", 0)


# -- on the wire --------------------------------------------------------------------------

def whoami(req):
    return resp.json(200, {"peer": list(req.peer), "scheme": req.scheme, "host": req.host})


def curl(*args: str) -> dict:
    p = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


@pytest.mark.peers("curl")
@pytest.mark.parametrize("http", ["--http1.1", "--http2-prior-knowledge"])
def test_trusted_forwarding_on_h1_and_h2(serve, http):
    srv = serve(whoami, protocols=["http1", "http2"], forwarded_allow_ips=["127.0.0.1"])
    got = curl(http, "-H", "X-Forwarded-For: 6.6.6.6, 203.0.113.50", "-H", "X-Forwarded-Proto: https",
               "-H", "X-Forwarded-Host: shop.example", f"{srv.url}/")
    assert got == {"peer": ["203.0.113.50", 0], "scheme": "https", "host": "shop.example"}


@pytest.mark.peers("curl")
def test_without_the_option_or_from_an_untrusted_peer_nothing_changes(serve):
    for opts in ({}, {"forwarded_allow_ips": ["10.0.0.0/8"]}):
        srv = serve(whoami, **opts)
        got = curl("-H", "X-Forwarded-For: 203.0.113.50", "-H", "Forwarded: for=1.1.1.1;proto=https",
                   f"{srv.url}/")
        assert got["peer"][0] == "127.0.0.1" and got["scheme"] == "http", opts


@pytest.mark.peers("curl")
def test_rate_limit_and_access_log_see_the_forwarded_client(serve):
    limiter = rate_limit.middleware(rate=0.001, burst=1)
    srv = serve(whoami, middlewares=[limiter], forwarded_allow_ips="127.0.0.1", access_log=True)
    closed: Queue = Queue()

    def status(client: str) -> str:
        p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                            "-H", f"X-Forwarded-For: {client}", f"{srv.url}/"], capture_output=True, timeout=20)
        return p.stdout.decode()

    rr.telemetry.attach("t-fwd-close", ("rr", "conn", "close"), lambda ev, m, md, cfg: closed.put(md))
    try:
        with structlog.testing.capture_logs() as logs:
            assert [status("203.0.113.1"), status("203.0.113.1"), status("203.0.113.2")] == ["200", "429", "200"]
            for _ in range(3):  # each request's access line is written before its connection ends
                closed.get(timeout=10)
    finally:
        rr.telemetry.detach("t-fwd-close")
    assert [e["peer"][0] for e in logs if e.get("event") == "request"] == ["203.0.113.1", "203.0.113.1",
                                                                            "203.0.113.2"]


@pytest.mark.parametrize("value", [["nope"], "10.0.0.0/99", [], 42])
def test_bad_forwarded_allow_ips_fails_at_start_naming_the_option(value):
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        rr.start_listener("bad-fwd", {"port": 0, "routes": whoami, "forwarded_allow_ips": value})


@pytest.mark.peers("curl", "haproxy")
def test_haproxy_option_forwardfor_gives_the_real_client_and_a_spoofed_hop_is_ignored(serve, tmp_path):
    from tests.rr import haproxy

    srv = serve(whoami, protocols=["http1", "http2"], forwarded_allow_ips=["127.0.0.1"])
    config = f"""
frontend fe
    mode http
    bind {{fe0}}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host shop.example
    default_backend rr
backend rr
    mode http
    server rr 127.0.0.1:{srv.port}
"""
    with haproxy.start(config, tmp_path) as lb:
        got = curl("--interface", "127.0.0.5", "-H", "X-Forwarded-For: 6.6.6.6", f"http://127.0.0.1:{lb.ports[0]}/")
    assert got == {"peer": ["127.0.0.5", 0], "scheme": "https", "host": "shop.example"}
