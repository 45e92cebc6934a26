"""Logging: structlog wired to a per-request ``request_id``.

What it owns: the ``current_request`` context variable and the structlog
processor that adds its ``request_id`` to every event. Greenlets carry their
own ``contextvars`` context, so the request bound in the process running a
handler is seen by every log call that handler (or its middlewares) makes,
and by no other process.

What it must never do: cost anything per request when no log call is made.
Binding is one ``ContextVar.set`` of the request itself; the id is only
generated when something (a log line, telemetry, the handler) asks for it.

Under ``rr.workers`` each worker process has an id (1..N, its slot: a
replacement takes the id of the worker it replaces); ``add_worker`` adds it
as ``worker`` to every event of that process (``worker_id()`` says it, None
outside workers).

``configure()`` is called by ``rr.start_listener`` only when the application
has not configured structlog itself (``structlog.is_configured()``), so an app
keeps full control of its own logging pipeline; it just adds
``add_request_id`` to its processors to get the id.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections.abc import MutableMapping
from typing import Any

import structlog

current_request: contextvars.ContextVar[Any] = contextvars.ContextVar("rr_request", default=None)

_getrandbits = random.SystemRandom().getrandbits
# A process-wide random prefix plus a counter would be cheaper, but ids must be
# unguessable across restarts and unique across processes: 64 random bits each.
_rng = random.Random(_getrandbits(64))


_worker: int | None = None


def set_worker(worker: int | None) -> None:
    """Mark this OS process as worker ``worker`` (rr.workers does, right after the fork)."""
    global _worker
    _worker = worker


def worker_id() -> int | None:
    """This process's worker id under ``rr.workers``; None in a single-process server."""
    return _worker


def add_worker(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: add ``worker`` (the worker id) in a worker process."""
    if _worker is not None:
        event_dict.setdefault("worker", _worker)
    return event_dict


def new_request_id() -> str:
    """A 16-hex-character id, unique per request with overwhelming probability."""
    return f"{_rng.getrandbits(64):016x}"


def add_request_id(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add ``request_id`` when one is bound in this greenlet."""
    req = current_request.get()
    if req is not None and "request_id" not in event_dict:
        event_dict["request_id"] = req.request_id
    return event_dict


def configure(level: int = logging.INFO) -> None:
    """Configure structlog for rr's defaults unless the app already did."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            add_worker,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str = "rr") -> Any:
    return structlog.get_logger(name)
