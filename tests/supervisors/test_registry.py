"""Registered names."""

from __future__ import annotations

import pytest

import supervisors
from tests.supervisors.helpers import forever, kill_and_wait, recv, wait_down


def test_register_whereis_and_send_by_name() -> None:
    pid = supervisors.spawn(supervisors.receive)
    ref = supervisors.monitor(pid)
    supervisors.register("reg.one", pid)
    assert supervisors.whereis("reg.one") is pid
    assert "reg.one" in supervisors.registered()
    supervisors.send("reg.one", "hello")
    assert wait_down(ref) == "normal"


def test_name_is_unregistered_automatically_on_exit() -> None:
    pid = supervisors.spawn(forever)
    supervisors.register("reg.two", pid)
    kill_and_wait(pid)
    assert supervisors.whereis("reg.two") is None
    assert "reg.two" not in supervisors.registered()


def test_register_a_taken_name_raises_value_error() -> None:
    a = supervisors.spawn(forever)
    b = supervisors.spawn(forever)
    supervisors.register("reg.three", a)
    with pytest.raises(ValueError, match="already registered"):
        supervisors.register("reg.three", b)
    kill_and_wait(a)
    kill_and_wait(b)


def test_register_a_dead_pid_raises_value_error() -> None:
    pid, ref = supervisors.spawn_monitor(lambda: None)
    wait_down(ref)
    with pytest.raises(ValueError, match="not alive"):
        supervisors.register("reg.four", pid)


def test_unregister_frees_the_name() -> None:
    pid = supervisors.spawn(forever)
    supervisors.register("reg.five", pid)
    supervisors.unregister("reg.five")
    assert supervisors.whereis("reg.five") is None
    with pytest.raises(ValueError):
        supervisors.unregister("reg.five")
    kill_and_wait(pid)


def test_send_to_an_unknown_name_is_dropped() -> None:
    supervisors.send("reg.nobody", "lost")
    with pytest.raises(supervisors.Timeout):
        recv(timeout=0)
