"""The blocking watchdog: name the request whose handler blocked every connection.

What it is: an opt-in use of gevent's own monitoring thread
(``gevent.config.max_blocking_time``, the hub's periodic monitor). rr runs
every connection in one OS thread; a handler that blocks it — ``time.sleep``,
a C call, a library that was not monkey-patched — stalls every connection of
the process. When the listener option ``blocking_monitor`` is set (seconds),
gevent's monitor thread notices the event loop did not switch for that long
and rr logs one ``error`` line naming the request that held it: its
``request_id``, method, path and route, and how long the limit was (gevent
also prints the stack to stderr).

What it owns: whether monitoring is on for this process (it is process-wide:
the shortest ``blocking_monitor`` of the listeners that ask for it wins) and
the ``rr_request`` attribute ``rr.dispatch`` sets on the greenlet running a
request while it is on (the monitor runs in another OS thread, which cannot
read a greenlet's context variables but can read that attribute).

What it must never do: cost anything when off. When on, gevent traces every
greenlet switch (a C-level callback per switch) — measure before enabling it
in production; it is meant for finding the blocking call, then turned off.
"""

from __future__ import annotations

import warnings
from typing import Any

import gevent
import gevent.events
import zope.event
from gevent._monitor import MonitorWarning

from rr.log import get_logger

_log = get_logger("rr.watchdog")

tracking = False  # read by rr.dispatch on every request: is a request to be attached?


def enable(max_blocking_time: float) -> None:
    """Start gevent's monitor thread (once) with a blocking limit of ``max_blocking_time`` s."""
    global tracking
    current = gevent.config.max_blocking_time
    if not tracking or max_blocking_time < current:
        gevent.config.max_blocking_time = max_blocking_time
    if not tracking:
        zope.event.subscribers.append(_on_event)
        tracking = True
    gevent.config.monitor_thread = True  # read by the hub when the thread is asked for
    with warnings.catch_warnings():  # its memory monitor wants psutil: not used here
        warnings.simplefilter("ignore", MonitorWarning)
        gevent.get_hub().start_periodic_monitoring_thread()


def _on_event(event: Any) -> None:
    if not isinstance(event, gevent.events.EventLoopBlocked):
        return
    req = getattr(event.greenlet, "rr_request", None)
    if req is None:
        _log.error("the event loop was blocked", blocked_at_least=event.blocking_time,
                   greenlet=repr(event.greenlet))
        return
    _log.error("a handler blocked the event loop (every connection waited)",
               blocked_at_least=event.blocking_time, request_id=req.request_id, method=req.method,
               path=req.path, route=req.route, listener=req.listener)


def disable() -> None:
    """Stop monitoring (the thread ends, the switch tracer is removed)."""
    global tracking
    hub = gevent.get_hub()
    thread = hub.periodic_monitoring_thread
    if thread is not None:
        thread.kill()
        hub.periodic_monitoring_thread = None
    gevent.config.monitor_thread = False
    if _on_event in zope.event.subscribers:
        zope.event.subscribers.remove(_on_event)
    tracking = False
