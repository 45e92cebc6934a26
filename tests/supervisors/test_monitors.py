"""Monitors: exactly one DOWN, noproc for dead pids, demonitor and flush."""

from __future__ import annotations

import gevent
import pytest

import supervisors
from tests.supervisors.helpers import forever, kill_and_wait, wait_down


def test_monitor_delivers_down_with_the_exit_reason() -> None:
    pid = supervisors.spawn(forever)
    ref = supervisors.monitor(pid)
    supervisors.exit(pid, "shutdown")
    assert supervisors.receive(lambda m: m[0] == "DOWN", 5) == ("DOWN", ref, pid, "shutdown")


def test_monitor_on_a_dead_pid_delivers_noproc_at_once() -> None:
    pid, ref = supervisors.spawn_monitor(lambda: None)
    wait_down(ref)
    ref2 = supervisors.monitor(pid)
    assert supervisors.receive(timeout=0) == ("DOWN", ref2, pid, "noproc")


def test_exactly_one_down_per_monitor() -> None:
    pid = supervisors.spawn(forever)
    refs = [supervisors.monitor(pid) for _ in range(3)]
    kill_and_wait(pid)
    for ref in refs:
        assert wait_down(ref) == "killed"
    gevent.sleep(0)
    with pytest.raises(supervisors.Timeout):
        supervisors.receive(lambda m: m[0] == "DOWN", timeout=0)


def test_demonitor_prevents_the_down() -> None:
    pid = supervisors.spawn(forever)
    ref = supervisors.monitor(pid)
    assert supervisors.demonitor(ref) is True
    kill_and_wait(pid)
    with pytest.raises(supervisors.Timeout):
        supervisors.receive(lambda m: m[0] == "DOWN" and m[1] is ref, timeout=0)


def test_demonitor_flush_removes_an_already_queued_down() -> None:
    pid = supervisors.spawn(forever)
    ref = supervisors.monitor(pid)
    kill_and_wait(pid)
    assert supervisors.mailbox_size() == 1
    assert supervisors.demonitor(ref, flush=True) is False
    assert supervisors.mailbox_size() == 0


def test_monitors_die_with_the_watcher() -> None:
    target = supervisors.spawn(forever)

    def watcher() -> None:
        supervisors.monitor(target)
        forever()

    w = supervisors.spawn(watcher)
    gevent.sleep(0)
    assert len(target._proc.watchers or {}) == 1  # type: ignore[union-attr]
    kill_and_wait(w)
    assert not target._proc.watchers  # type: ignore[union-attr]
    kill_and_wait(target)
