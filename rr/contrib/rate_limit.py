"""Per-client rate limiting middleware: a token bucket per key, 429 when it is empty.

``rate_limit.middleware(rate=..., burst=..., **options)`` returns a middleware.
Each key (by default the peer's address, ``req.peer[0]``; an IPv6 peer by its
``/64``, since one host owns a whole /64) has a bucket of ``burst`` tokens
refilled at ``rate`` per second; a request takes one. An empty bucket answers
``429`` with ``Retry-After`` (RFC 9110 §10.2.3, whole seconds until a token is
back). Every answer also carries the IETF httpapi draft's fields
(draft-ietf-httpapi-ratelimit-headers, the ``RateLimit-*`` triple):
``ratelimit-limit`` (the burst), ``ratelimit-remaining`` (whole tokens left)
and ``ratelimit-reset`` (seconds until the bucket is full again).

What it owns: the bucket store, which is bounded: at most ``max_keys``
buckets, least recently used evicted first, and swept as it goes (each call
drops the least recently used buckets that have refilled completely — such a
bucket is the same as no bucket).

What it must never do: read the request body (the decision is made from the
head, before the handler runs: with ``body_buffering: "manual"`` no body byte
is read and no ``100 Continue`` is sent to a refused client), or read a
header for the key itself: the default key is ``req.peer``, which is the
real client behind a load balancer when the listener is told to believe it
(``proxy_protocol``, or ``forwarded_allow_ips`` for trusted forwarding
headers: both applied before any middleware runs). Pass ``key`` for
anything else (an API key).

One middleware object is one store: put the same object on several routes
(or in the listener's ``middlewares``) and they share the budget; build one
per route for separate budgets. A ``key`` function that returns ``None``
exempts the request.

Eviction caveat: a client that can spread its requests over more than
``max_keys`` keys (many addresses) always finds a fresh bucket; the bound
protects memory, not the budget. Keying IPv6 by prefix keeps one host from
doing that with its own /64.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rr import response as resp

__all__ = ["RateLimit", "middleware", "peer_key"]


def peer_key(req: Any, ipv6_prefix: int = 64) -> str | None:
    """The client address from the transport (``req.peer``); IPv6 as its ``/ipv6_prefix`` network."""
    peer = req.peer
    if not peer:
        return None
    host = str(peer[0])
    if ":" in host and ipv6_prefix < 128:
        try:
            return str(ipaddress.IPv6Network((host.split("%", 1)[0], ipv6_prefix), strict=False))
        except ValueError:
            return host
    return host


class RateLimit:
    """The middleware ``rate_limit.middleware`` builds; call it as ``mw(req, next, state)``."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        key: Callable[[Any], str | None] | None = None,
        max_keys: int = 10_000,
        ipv6_prefix: int = 64,
        headers: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
            raise ValueError(f"invalid option 'rate': a positive number of requests per second, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"invalid option 'burst': a positive int (the bucket size), got {burst!r}")
        if key is not None and not callable(key):
            raise ValueError(f"invalid option 'key': a function (req) -> str | None, got {key!r}")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"invalid option 'max_keys': a positive int, got {max_keys!r}")
        if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int) or not 0 <= ipv6_prefix <= 128:
            raise ValueError(f"invalid option 'ipv6_prefix': an int from 0 to 128, got {ipv6_prefix!r}")
        if not isinstance(headers, bool):
            raise ValueError(f"invalid option 'headers': a bool, got {headers!r}")
        if not callable(clock):
            raise ValueError(f"invalid option 'clock': a function () -> seconds, got {clock!r}")
        self.rate = float(rate)
        self.burst = burst
        self.key = key
        self.max_keys = max_keys
        self.ipv6_prefix = ipv6_prefix
        self.headers = headers
        self.clock = clock
        self.refill_time = burst / self.rate  # an idle bucket is full again after this long
        # key -> [tokens, last update]; ordered least recently used first.
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()
        self.limit_value = str(burst)

    def take(self, key: str) -> tuple[bool, float]:
        """Take a token for ``key``: (allowed, tokens left)."""
        now = self.clock()
        buckets = self.buckets
        self._sweep(now)
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            bucket = buckets[key] = [float(self.burst), now]
        else:
            buckets.move_to_end(key)
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True, bucket[0]
        return False, bucket[0]

    def _sweep(self, now: float) -> None:
        """Drop least-recently-used buckets that have refilled (each is popped once: amortised O(1))."""
        buckets = self.buckets
        while buckets:
            first = next(iter(buckets.values()))
            if now - first[1] < self.refill_time:
                return
            buckets.popitem(last=False)

    def _fields(self, tokens: float) -> list[tuple[str, str]]:
        reset = math.ceil((self.burst - tokens) / self.rate)
        return [("ratelimit-limit", self.limit_value), ("ratelimit-remaining", str(int(tokens))),
                ("ratelimit-reset", str(reset))]

    def __call__(self, req: Any, nxt: Callable[[Any], Any], state: Any = None) -> Any:
        key = self.key(req) if self.key is not None else peer_key(req, self.ipv6_prefix)
        if key is None:
            return nxt(req)
        allowed, tokens = self.take(key)
        if not allowed:
            retry_after = max(1, math.ceil((1.0 - tokens) / self.rate))
            return resp.Response(429, [
                ("content-type", "text/plain; charset=utf-8"),
                ("retry-after", str(retry_after)),
                ("cache-control", "no-store"),
                *self._fields(tokens),
            ], b"Too Many Requests")
        result = nxt(req)
        if not self.headers or isinstance(result, resp.WebSocket | resp.WebTransport):
            return result
        return replace(result, headers=[*resp.header_list(result.headers), *self._fields(tokens)])


def middleware(**options: Any) -> RateLimit:
    """A rate-limit middleware; every option is checked now (``ValueError`` names a bad one).

    ``rate`` (tokens per second) and ``burst`` (bucket size) are required;
    ``key`` (``fn(req) -> str | None``, default: the peer address), ``max_keys``
    (default 10,000), ``ipv6_prefix`` (default 64), ``headers`` (RateLimit-* on
    allowed answers too, default True), ``clock`` (for tests).
    """
    return RateLimit(**options)
