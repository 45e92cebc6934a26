"""Telemetry: named events, attached handlers, zero cost when nobody listens.

What it is: the rr analogue of Erlang's ``telemetry`` library. An event is a
tuple of strings such as ``("rr", "request", "stop")``; ``execute(event,
measurements, metadata)`` calls every handler attached to that exact event.

What it owns: the handler table. It is a plain dict swapped as a whole on
attach/detach (copy-on-write), so ``execute`` never sees a half-updated table
and needs no lock in a cooperative (greenlet) world.

What it must never do: let a subscriber break a request. A handler that
raises is detached and logged once; the request goes on. And it must cost
nothing on the hot path when nothing is attached: callers guard the building
of measurement/metadata dicts with ``enabled(event)`` (a dict lookup).

Events rr emits: ``EVENTS`` below, one ``EventSpec`` each (name, measurements
with units, metadata keys, when it fires); ``markdown()`` renders it for
docs/guide.md, and ``tests/rr/test_telemetry_events.py`` holds both the guide
and what a run over h1 and h2 really emits to it. Add an event or a key here
first. During the request events, ``rr.log.current_request.get()`` is the
``Request`` itself (headers included) for a handler that needs more than the
metadata (``rr.contrib.otel`` reads ``traceparent`` that way).

Under ``rr.workers`` every event's metadata also carries ``worker``, the
worker process's id (1..N).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rr import log as _log_mod

Event = tuple[str, ...]
HandlerFn = Callable[[Event, Mapping[str, Any], Mapping[str, Any], Any], None]

_log = logging.getLogger("rr.telemetry")


@dataclass(frozen=True)
class EventSpec:
    """One event rr emits: its measurements (name -> unit) and metadata keys."""

    event: Event
    measurements: tuple[tuple[str, str], ...]
    metadata: tuple[str, ...]
    when: str


_SYSTEM_TIME = ("system_time", "s, Unix time")
_DURATION = ("duration", "s, monotonic")
_REQUEST_META = ("request_id", "listener", "method", "path", "route", "route_name", "protocol", "scheme", "peer")

EVENTS: tuple[EventSpec, ...] = (
    EventSpec(("rr", "request", "start"), (_SYSTEM_TIME,), _REQUEST_META,
              "a request's head is parsed, before its body is read and before routing "
              "(so `route` and `route_name` are still None)"),
    EventSpec(("rr", "request", "stop"), (_DURATION, ("bytes", "bytes")), _REQUEST_META + ("status", "outcome"),
              "the response is complete or failed (after the whole Stream, Loop, file or WebSocket "
              "session); `bytes` is the response body sent"),
    EventSpec(("rr", "request", "exception"), (_DURATION,), _REQUEST_META + ("kind", "reason"),
              "the handler raised or returned something unsendable (answered 500, or the response "
              "aborted); `stop` follows"),
    EventSpec(("rr", "request", "rejected"), (), ("listener", "peer", "status", "reason"),
              "HTTP/1.1: a request rr could not parse (or that timed out) was answered and the "
              "connection closed"),
    EventSpec(("rr", "request", "throttled"), (_SYSTEM_TIME,), ("listener", "reason"),
              "HTTP/2 and HTTP/3: a stream refused (REFUSED_STREAM, H3_REQUEST_REJECTED) over "
              "`max_concurrent_requests`"),
    EventSpec(("rr", "request", "shed"), (_SYSTEM_TIME, ("in_flight", "count")), ("listener", "request_id"),
              "a request answered 503 + retry-after: 1 because `shed_concurrent_requests` exchanges "
              "were already running (every protocol)"),
    EventSpec(("rr", "listener", "accept"), (), ("listener", "peer"),
              "a connection was accepted and given a slot"),
    EventSpec(("rr", "listener", "conn_rejected"), (), ("listener", "peer", "reason"),
              "a connection was refused at `max_clients`"),
    EventSpec(("rr", "conn", "close"), (_DURATION, ("requests", "count")), ("listener", "peer", "reason", "protocol"),
              "a connection ended (every protocol)"),
    EventSpec(("rr", "http2", "goaway"), (), ("listener", "peer", "error", "reason"),
              "rr ended an HTTP/2 connection for a connection error: GOAWAY with `error` "
              "(`ENHANCE_YOUR_CALM` for a flood: resets, pings, settings, CONTINUATION...)"),
    EventSpec(("rr", "http2", "reset"), (), ("listener", "peer", "by", "error"),
              "an HTTP/2 stream was reset: by the `peer` (RST_STREAM received) or by `rr` "
              "(refused, stalled, aborted, or the peer's stream error)"),
    EventSpec(("rr", "drain", "start"), (), ("listener", "deadline", "backlog"),
              "`rr.drain` stopped accepting"),
    EventSpec(("rr", "drain", "stop"), (_DURATION, ("drained", "count"), ("killed", "count")), ("listener",),
              "the drain ended"),
)

# What each metadata key holds.
METADATA: dict[str, str] = {
    "request_id": "the request's id (16 hex characters, or a trusted proxy's `request_id_header`)",
    "listener": "the listener's name",
    "method": "the request method as sent (an extended CONNECT for WebSocket is `GET`)",
    "path": "the request path, without the query (unbounded: never a metric label)",
    "route": "the matched route's pattern, e.g. `/users/:id` (group prefixes included); None before "
             "routing, on a 404/405, and on a listener serving a single handler",
    "route_name": "the matched route's `name`, or None",
    "protocol": "`HTTP/1.1`, `HTTP/1.0`, `HTTP/2` or `HTTP/3`: the request's version; on conn close the "
                "connection's (`HTTP/1.1` for HTTP/1.x), None when it ended before one was chosen",
    "scheme": "`http` or `https`",
    "peer": "the client's (address, port) — the PROXY header's client or a trusted forwarder's once read; "
            "on `listener` events, which come before any of that is read, the socket's peer",
    "status": "the response status sent (0 when none was)",
    "outcome": "`ok`, `client_gone` (the peer left mid-response), `aborted` (cut short: a crash after "
               "the head, a wrong content-length) or `error` (the process was stopped)",
    "kind": "the exception's class name",
    "reason": "why: an exception (request exception), a short text (rejected, goaway), "
              "or a word (`max_clients`, `max_concurrent_requests`; conn close: `normal`, `drain`, "
              "`idle_timeout`, `first_byte_timeout`, `tls_handshake`, `proxy_protocol`, `peer_closed`, "
              "`connection_error: ...`; QUIC also `bad_initial`, `protocol_error`)",
    "error": "an HTTP/2 error code's name (`ENHANCE_YOUR_CALM`, `CANCEL`, `REFUSED_STREAM`...)",
    "by": "`peer` or `rr`",
    "deadline": "when the drain ends, in `time.monotonic()` seconds",
    "backlog": "connections taken from the accept queue when the drain started",
}


def markdown() -> str:
    """``EVENTS`` and ``METADATA`` as the Markdown tables of docs/guide.md."""
    lines = ["| event | measurements | metadata | when |", "|---|---|---|---|"]
    for spec in EVENTS:
        meas = ", ".join(f"`{name}` ({unit})" for name, unit in spec.measurements) or "none"
        meta = ", ".join(f"`{key}`" for key in spec.metadata)
        name = "(" + ", ".join(f'"{part}"' for part in spec.event) + ")"
        lines.append(f"| `{name}` | {meas} | {meta} | {spec.when} |")
    lines += ["", "| metadata key | meaning |", "|---|---|"]
    lines += [f"| `{key}` | {meaning} |" for key, meaning in METADATA.items()]
    return "\n".join(lines) + "\n"

# event -> tuple of (handler_id, fn, config); replaced whole on every change.
_table: dict[Event, tuple[tuple[str, HandlerFn, Any], ...]] = {}


def attach(handler_id: str, event: Event, fn: HandlerFn, config: Any = None) -> None:
    """Attach ``fn(event, measurements, metadata, config)`` to ``event``.

    Raises ``ValueError`` if ``handler_id`` is already attached anywhere.
    """
    attach_many(handler_id, [event], fn, config)


def attach_many(handler_id: str, events: Iterable[Event], fn: HandlerFn, config: Any = None) -> None:
    global _table
    if any(hid == handler_id for entries in _table.values() for hid, _, _ in entries):
        raise ValueError(f"telemetry handler {handler_id!r} is already attached")
    table = dict(_table)
    for event in events:
        event = tuple(event)
        table[event] = table.get(event, ()) + ((handler_id, fn, config),)
    _table = table


def detach(handler_id: str) -> bool:
    """Detach ``handler_id`` from every event; returns whether it was attached."""
    global _table
    found = False
    table: dict[Event, tuple[tuple[str, HandlerFn, Any], ...]] = {}
    for event, entries in _table.items():
        kept = tuple(e for e in entries if e[0] != handler_id)
        found = found or len(kept) != len(entries)
        if kept:
            table[event] = kept
    _table = table
    return found


def list_handlers(prefix: Event = ()) -> list[tuple[str, Event]]:
    """(handler_id, event) pairs whose event starts with ``prefix``."""
    return [
        (hid, event)
        for event, entries in _table.items()
        if event[: len(prefix)] == prefix
        for hid, _, _ in entries
    ]


def enabled(event: Event) -> bool:
    """True when at least one handler listens to ``event``: guard dict building with it."""
    return event in _table


def execute(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    entries = _table.get(event)
    if not entries:
        return
    if _log_mod.worker_id() is not None and "worker" not in metadata:
        metadata = {**metadata, "worker": _log_mod.worker_id()}
    for handler_id, fn, config in entries:
        try:
            fn(event, measurements, metadata, config)
        except Exception:
            detach(handler_id)
            _log.exception("telemetry handler %r failed on %r and was detached", handler_id, event)


@contextmanager
def span(prefix: Event, metadata: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Emit ``prefix + ("start",)`` then ``("stop",)`` or ``("exception",)``.

    The yielded dict is the metadata; the body may add keys to it (a status,
    say) before the stop event is emitted with the duration.
    """
    start = time.monotonic()
    execute(prefix + ("start",), {"system_time": time.time()}, metadata)
    try:
        yield metadata
    except BaseException as exc:
        execute(
            prefix + ("exception",),
            {"duration": time.monotonic() - start},
            {**metadata, "kind": type(exc).__name__, "reason": exc},
        )
        raise
    execute(prefix + ("stop",), {"duration": time.monotonic() - start}, metadata)
