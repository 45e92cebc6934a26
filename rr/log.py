"""Logging: structlog wired to a per-request ``request_id``, and one output for everything.

What it owns: the ``current_request`` context variable and the structlog
processor that adds its ``request_id`` to every event. Greenlets carry their
own ``contextvars`` context, so the request bound in the process running a
handler is seen by every log call that handler (or its middlewares) makes,
and by no other process.

``configure(json=..., level=...)`` is the application's one call to set up
logging: structlog events *and* standard-library records (rr's ``supervisors``
crash reports, Django, Flask, urllib3, any library that logs) are rendered by
the same processors — JSON lines, or console lines — on one stream, each with
the ``request_id`` of the request being served where it was logged. It takes
over the root logger (its handlers are replaced) and Python warnings.

What it must never do: cost anything per request when no log call is made.
Binding is one ``ContextVar.set`` of the request itself; the id is only
generated when something (a log line, telemetry, the handler) asks for it.

Under ``rr.workers`` each worker process has an id (1..N, its slot: a
replacement takes the id of the worker it replaces); ``add_worker`` adds it
as ``worker`` to every event of that process (``worker_id()`` says it, None
outside workers).

``configure_default()`` is what ``rr.start_listener`` calls: it configures
structlog (console lines on stderr, like ``configure``'s, so a program's own
stdout stays its own) only when nothing has (neither the
application nor ``configure``), and leaves the standard library alone, so an
app keeps full control of its own logging pipeline; it just adds
``add_request_id`` to its processors to get the id.
"""

from __future__ import annotations

import contextvars
import logging
import random
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

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


def configure_default(level: int = logging.INFO) -> None:
    """Configure structlog for rr's defaults unless the app (or ``configure``) already did."""
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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        # Not cached, so a later configure() reaches the loggers already used (rr logs
        # only on error paths and in the access log, where the ~µs of a lookup is noise).
        cache_logger_on_first_use=False,
    )


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


class _Writer(structlog.WriteLogger):
    """structlog's line writer, carrying the logger's name for ``add_logger_name``."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name


class _Handler(logging.StreamHandler[TextIO]):
    """The root logger's handler that ``configure`` installs (and replaces on a second call)."""


def _add_logger_name(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``logger``: the structlog logger's name, or the stdlib record's."""
    if "logger" not in event_dict:
        record = event_dict.get("_record")
        name = record.name if record is not None else getattr(logger, "name", None)
        if name:
            event_dict["logger"] = name
    return event_dict


def configure(json: bool = False, level: int | str = "info", *, stream: TextIO | None = None) -> None:
    """Log structlog events and stdlib records alike: JSON lines (``json=True``) or console
    lines, at ``level`` (a name or a ``logging`` level) and above, on ``stream`` (stderr).

    Every line has ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` and,
    when logged while a request is served, ``request_id``; an exception adds
    ``exception`` (the traceback). Call it again to change any of it.
    """
    if isinstance(level, str):
        if level.lower() not in _LEVELS:
            raise ValueError(f"level must be one of {', '.join(_LEVELS)} or a logging level, got {level!r}")
        number = _LEVELS[level.lower()]
    elif isinstance(level, int) and not isinstance(level, bool):
        number = level
    else:
        raise ValueError(f"level must be a level name or a logging level, got {level!r}")
    out = stream if stream is not None else sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        add_worker,
        _add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        finish: list[Any] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        finish = [renderer]  # it lays out the traceback itself
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *finish],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=lambda *args: _Writer(out, args[0] if args else None),
        # Not cached: a module's logger used before a later configure() must follow it.
        cache_logger_on_first_use=False,
    )
    handler = _Handler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    logging.captureWarnings(True)


def get_logger(name: str = "rr") -> Any:
    return structlog.get_logger(name)
