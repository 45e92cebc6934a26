"""Recycled greenlets (``supervisors.process``): an ended process's greenlet runs a later
process, which must see nothing of the one before."""

from __future__ import annotations

import contextvars

import gevent
import pytest
from greenlet import getcurrent

import supervisors
from supervisors import process as process_module
from tests.supervisors.helpers import recv, wait_down

_VAR: contextvars.ContextVar[str | None] = contextvars.ContextVar("test_recycle", default=None)


def _run_and_report(me: supervisors.Pid) -> None:
    """Report the greenlet, the context variable and a greenlet attribute, then dirty all three."""
    g = getcurrent()
    supervisors.send(me, ("ran", g, _VAR.get(), getattr(g, "left_behind", None)))
    _VAR.set("stale")
    g.left_behind = "stale"  # type: ignore[attr-defined]


def test_a_later_process_runs_in_the_ended_ones_greenlet_with_fresh_context_and_no_attributes() -> None:
    me = supervisors.self()
    _, ref = supervisors.spawn_monitor(_run_and_report, me)
    first = recv(lambda m: m[0] == "ran")
    assert wait_down(ref) == "normal"
    _, ref = supervisors.spawn_monitor(_run_and_report, me)
    second = recv(lambda m: m[0] == "ran")
    assert wait_down(ref) == "normal"
    assert second[1] is first[1]  # the same greenlet ...
    assert second[2] is None  # ... without the context variable the first process set
    assert second[3] is None  # ... nor the attribute it left on the greenlet


def _crash() -> None:
    raise RuntimeError("boom")


def test_a_crashed_or_killed_process_leaves_a_greenlet_that_runs_the_next_one_normally(caplog) -> None:
    me = supervisors.self()
    _, ref = supervisors.spawn_monitor(_crash)
    assert isinstance(wait_down(ref), RuntimeError)
    pid, ref = supervisors.spawn_monitor(gevent.sleep, 30)
    gevent.sleep(0)
    supervisors.exit(pid, "kill")
    assert wait_down(ref) == "killed"
    _, ref = supervisors.spawn_monitor(_run_and_report, me)
    ran = recv(lambda m: m[0] == "ran")
    assert wait_down(ref) == "normal"
    assert ran[2] is None


def test_a_stray_switch_or_throw_into_a_parked_greenlet_reaches_no_process() -> None:
    me = supervisors.self()
    _, ref = supervisors.spawn_monitor(_run_and_report, me)
    parked = recv(lambda m: m[0] == "ran")[1]
    wait_down(ref)
    assert parked in process_module._idle
    hub = gevent.get_hub()
    # What a leftover timer or waiter of the ended process would do, from the hub.
    hub.loop.run_callback(parked.switch, "late wake-up")
    hub.loop.run_callback(parked.throw, gevent.Timeout(1))
    gevent.sleep(0)
    gevent.sleep(0)
    assert not parked.dead
    assert parked in process_module._idle  # still waiting for a process
    _, ref = supervisors.spawn_monitor(_run_and_report, me)
    ran = recv(lambda m: m[0] == "ran")
    assert wait_down(ref) == "normal"
    assert ran[1] is parked


def test_parked_greenlets_no_spawn_needed_are_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    me = supervisors.self()
    refs = [supervisors.spawn_monitor(gevent.sleep, 0.01)[1] for _ in range(20)]
    for ref in refs:
        wait_down(ref)
    assert len(process_module._idle) >= 20
    parked = list(process_module._idle)
    # Two trims: the first sees the whole pool unused since the last, the second lets it go.
    process_module._trim()
    process_module._trim()
    assert process_module._idle == []
    assert all(g.dead for g in parked)
    _, ref = supervisors.spawn_monitor(_run_and_report, me)  # a fresh greenlet then
    assert recv(lambda m: m[0] == "ran")[1] not in parked
    wait_down(ref)


def test_at_most_idle_greenlets_are_parked(monkeypatch: pytest.MonkeyPatch) -> None:
    process_module._trim()
    process_module._trim()  # an empty pool to start from
    monkeypatch.setattr(process_module, "IDLE_GREENLETS", 5)
    refs = [supervisors.spawn_monitor(gevent.sleep, 0.01)[1] for _ in range(12)]
    for ref in refs:
        wait_down(ref)
    assert len(process_module._idle) == 5
