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


def test_start_children_starts_a_batch_in_one_call_and_reports_each_failure() -> None:
    me = supervisors.self()

    def start(tag, fail):
        if fail:
            raise RuntimeError(f"no {tag}")
        return start_worker(tag, me)

    sup = supervisors.start_supervisor([ChildSpec("c", start, restart="temporary")], strategy="simple_one_for_one")
    a, bad, b = supervisors.start_children(sup, [("a", False), ("bad", True), ("b", False)])
    assert isinstance(a, supervisors.Pid) and isinstance(b, supervisors.Pid) and a is not b
    assert isinstance(bad, RuntimeError) and str(bad) == "no bad"
    assert started("a") is a and started("b") is b  # each started with its own args
    assert supervisors.count_children(sup)["active"] == 2
    static = supervisors.start_supervisor([])
    with pytest.raises(TypeError, match="simple_one_for_one"):
        supervisors.start_children(static, [()])
    supervisors.stop_supervisor(static)
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


def _exits(timeout: float = 10.0) -> tuple:
    return supervisors.receive(lambda m: type(m) is tuple and m[:1] == ("on_exit",), timeout)


def test_on_exit_sees_every_end_of_a_dynamic_child_even_one_killed_before_it_ran() -> None:
    me = supervisors.self()

    def on_exit(pid, reason, args):
        supervisors.send(me, ("on_exit", pid, reason, args))

    def start_then_kill(tag, observer, kill_first):
        pid = supervisors.spawn_link(lambda: supervisors.receive(), label=f"w.{tag}")
        if kill_first:
            supervisors.exit(pid, "kill")  # dies before it runs a single line
        return pid

    sup = supervisors.start_supervisor(
        [ChildSpec("conn", start_then_kill, restart="temporary", on_exit=on_exit)],
        strategy="simple_one_for_one")
    early = supervisors.start_child(sup, "early", me, True)
    assert _exits() == ("on_exit", early, "killed", ("early", me, True))
    crashing = supervisors.start_child(sup, "crash", me, False)
    supervisors.exit(crashing, "boom")
    assert _exits() == ("on_exit", crashing, "boom", ("crash", me, False))
    stopped = supervisors.start_child(sup, "stopped", me, False)
    supervisors.terminate_child(sup, stopped)
    assert _exits()[1:3] == (stopped, "shutdown")
    left = supervisors.start_child(sup, "left", me, False)
    supervisors.stop_supervisor(sup)
    assert _exits()[1:3] == (left, "shutdown")


def test_on_exit_of_a_static_child_and_a_failing_callback_does_not_break_the_supervisor() -> None:
    me = supervisors.self()
    calls = []

    def on_exit(pid, reason, args):
        calls.append(reason)
        raise RuntimeError("a broken on_exit")

    sup = supervisors.start_supervisor([spec("a", me, on_exit=on_exit)])
    first = started("a")
    supervisors.send(first, "crash")
    second = started("a")  # restarted as usual
    assert second is not first and calls and isinstance(calls[0], RuntimeError)
    supervisors.stop_supervisor(sup)
    assert calls[-1] == "shutdown"


def test_on_exit_must_be_callable() -> None:
    with pytest.raises(ValueError, match="on_exit"):
        ChildSpec("a", print, on_exit="nope")
