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

Events rr emits (measurements / metadata):

=====================================  =============================================
``("rr", "request", "start")``         ``system_time`` / request_id, listener, method, path, peer
``("rr", "request", "stop")``          ``duration`` (s) / ... plus ``status``
``("rr", "request", "exception")``     ``duration`` / ... plus ``kind``, ``reason``
``("rr", "request", "rejected")``      ``{}`` / listener, peer, status, reason
``("rr", "request", "throttled")``     ``system_time`` / listener, reason (h2 stream over max_concurrent_requests)
``("rr", "request", "shed")``          ``system_time``, ``in_flight`` / listener, request_id (503 over shed_concurrent_requests)
``("rr", "listener", "accept")``       ``{}`` / listener, peer
``("rr", "listener", "conn_rejected")``  ``{}`` / listener, peer, reason
``("rr", "conn", "close")``            ``duration``, ``requests`` / listener, peer, reason (e.g. ``tls_handshake``, ``first_byte_timeout``, ``drain``)
``("rr", "drain", "start")``           ``{}`` / listener, deadline, backlog (connections taken from the accept queue)
``("rr", "drain", "stop")``            ``duration``, ``drained``, ``killed`` / listener
=====================================  =============================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

Event = tuple[str, ...]
HandlerFn = Callable[[Event, Mapping[str, Any], Mapping[str, Any], Any], None]

_log = logging.getLogger("rr.telemetry")

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
