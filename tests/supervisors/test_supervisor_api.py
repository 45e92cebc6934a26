"""Supervisor introspection and dynamic children: which/count/start/terminate/restart/delete."""

from __future__ import annotations

import pytest

import supervisors
from supervisors import ChildSpec
from tests.supervisors.helpers import wait_down
from tests.supervisors.sup_helpers import child_pids, spec, start_worker, started


def test_which_children_lists_id_pid_and_type_in_start_order() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("a", me), spec("b", me)])
    a, b = started("a"), started("b")
    assert supervisors.which_children(sup) == [("a", a, "worker"), ("b", b, "worker")]
    supervisors.stop_supervisor(sup)


def test_count_children() -> None:
    me = supervisors.self()

    def start_inner() -> supervisors.Pid:
        return supervisors.start_supervisor([], link=True)

    sup = supervisors.start_supervisor(
        [spec("a", me), ChildSpec("inner", start_inner, type="supervisor")], name="api.count"
    )
    assert supervisors.count_children("api.count") == {"specs": 2, "active": 2, "supervisors": 1, "workers": 1}
    supervisors.stop_supervisor(sup)


def test_terminate_restart_and_delete_child() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("a", me)])
    first = started("a")
    with pytest.raises(ValueError, match="running"):
        supervisors.delete_child(sup, "a")
    supervisors.terminate_child(sup, "a")
    assert not first.is_alive
    assert child_pids(sup) == {"a": None}
    second = supervisors.restart_child(sup, "a")
    assert started("a") is second
    with pytest.raises(ValueError, match="running"):
        supervisors.restart_child(sup, "a")
    supervisors.terminate_child(sup, second)
    supervisors.delete_child(sup, "a")
    assert supervisors.which_children(sup) == []
    with pytest.raises(LookupError, match="no child 'a'"):
        supervisors.terminate_child(sup, "a")
    supervisors.stop_supervisor(sup)


def test_start_child_adds_a_spec_and_rejects_duplicates() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([])
    pid = supervisors.start_child(sup, spec("x", me))
    assert started("x") is pid
    with pytest.raises(ValueError, match="already has a child 'x'"):
        supervisors.start_child(sup, spec("x", me))
    supervisors.stop_supervisor(sup)


def test_start_child_failure_is_raised_to_the_caller() -> None:
    def broken() -> supervisors.Pid:
        raise OSError("nope")

    sup = supervisors.start_supervisor([])
    with pytest.raises(OSError, match="nope"):
        supervisors.start_child(sup, ChildSpec("broken", broken))
    assert supervisors.which_children(sup) == []
    supervisors.stop_supervisor(sup)


def test_a_child_start_returning_none_is_ignored() -> None:
    sup = supervisors.start_supervisor([ChildSpec("nothing", lambda: None)])
    assert supervisors.which_children(sup) == [("nothing", None, "worker")]
    supervisors.stop_supervisor(sup)


def test_terminate_child_of_simple_one_for_one_by_pid() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([ChildSpec("c", start_worker)], strategy="simple_one_for_one")
    pid = supervisors.start_child(sup, "c1", me)
    ref = supervisors.monitor(pid)  # type: ignore[arg-type]
    supervisors.terminate_child(sup, pid)
    assert wait_down(ref) == "shutdown"
    assert supervisors.count_children(sup)["active"] == 0
    supervisors.stop_supervisor(sup)


def test_bad_arguments_fail_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="restart must be one of"):
        ChildSpec("x", start_worker, restart="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strategy must be one of"):
        supervisors.start_supervisor([], strategy="all_for_none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate child ids"):
        supervisors.start_supervisor([ChildSpec("x", start_worker), ChildSpec("x", start_worker)])
    with pytest.raises(supervisors.NoProc):
        supervisors.which_children("api.no_such_supervisor")


def test_a_start_function_that_forgets_to_link_is_linked_by_the_supervisor() -> None:
    me = supervisors.self()

    def unlinked() -> supervisors.Pid:
        return supervisors.spawn(lambda: (supervisors.send(me, "up"), supervisors.receive()))

    sup = supervisors.start_supervisor([ChildSpec("u", unlinked)])
    supervisors.receive(lambda m: m == "up", 5)
    pid = child_pids(sup)["u"]
    supervisors.send(pid, "go")  # type: ignore[arg-type]
    supervisors.receive(lambda m: m == "up", 5)  # restarted: the supervisor saw its exit
    supervisors.stop_supervisor(sup)
