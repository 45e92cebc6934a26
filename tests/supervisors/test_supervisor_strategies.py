"""Restart strategies, restart types and restart intensity."""

from __future__ import annotations

import pytest

import supervisors
from supervisors import ChildSpec
from supervisors import supervisor as supervisor_module
from tests.supervisors.helpers import wait_down
from tests.supervisors.sup_helpers import child_pids, spec, start_worker, started, started_tags


def _three(strategy: str, **kw: object) -> tuple[supervisors.Pid, dict[str, supervisors.Pid]]:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec(t, me) for t in "abc"], strategy=strategy, **kw)  # type: ignore[arg-type]
    assert started_tags(3) == ["a", "b", "c"]
    return sup, child_pids(sup)  # type: ignore[return-value]


def _downs_in_order(refs: dict[object, str], n: int) -> list[str]:
    return [refs[supervisors.receive(lambda m: m[0] == "DOWN" and m[1] in refs, 10)[1]] for _ in range(n)]


def test_one_for_one_restarts_only_the_child_that_exited() -> None:
    sup, before = _three("one_for_one")
    supervisors.send(before["b"], "crash")
    new_b = started("b")
    after = child_pids(sup)
    assert after == {"a": before["a"], "b": new_b, "c": before["c"]}
    assert new_b is not before["b"]
    supervisors.stop_supervisor(sup)


def test_one_for_all_stops_the_others_in_reverse_then_restarts_all_in_order() -> None:
    sup, before = _three("one_for_all")
    refs = {supervisors.monitor(before["a"]): "a", supervisors.monitor(before["c"]): "c"}
    supervisors.send(before["b"], "crash")
    assert _downs_in_order(refs, 2) == ["c", "a"]
    assert started_tags(3) == ["a", "b", "c"]
    after = child_pids(sup)
    assert all(after[t] is not before[t] for t in "abc")
    supervisors.stop_supervisor(sup)


def test_rest_for_one_restarts_the_child_and_the_ones_after_it() -> None:
    sup, before = _three("rest_for_one")
    supervisors.send(before["b"], "crash")
    assert started_tags(2) == ["b", "c"]
    after = child_pids(sup)
    assert after["a"] is before["a"]
    assert after["b"] is not before["b"] and after["c"] is not before["c"]
    supervisors.stop_supervisor(sup)


def test_simple_one_for_one_starts_children_with_extra_args_and_restarts_them() -> None:
    me = supervisors.self()
    template = ChildSpec("conn", start_worker, args=(), restart="permanent")
    sup = supervisors.start_supervisor([template], strategy="simple_one_for_one")
    one = supervisors.start_child(sup, "one", me)
    two = supervisors.start_child(sup, "two", me)
    assert started_tags(2) == ["one", "two"]
    supervisors.send(one, "crash")
    again = started("one")
    assert again is not one
    assert {pid for _, pid, _ in supervisors.which_children(sup)} == {again, two}
    supervisors.stop_supervisor(sup)


def test_permanent_child_is_restarted_even_after_a_normal_exit() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("p", me, restart="permanent")])
    first = started("p")
    supervisors.send(first, "finish")
    assert started("p") is not first
    supervisors.stop_supervisor(sup)


def test_transient_child_is_restarted_only_after_an_abnormal_exit() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("t", me, restart="transient")])
    first = started("t")
    supervisors.send(first, "crash")
    second = started("t")
    ref = supervisors.monitor(second)
    supervisors.send(second, ("exit", ("shutdown", "done")))
    wait_down(ref)
    assert child_pids(sup) == {"t": None}
    supervisors.stop_supervisor(sup)


def test_temporary_child_is_never_restarted_and_its_spec_is_dropped() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("tmp", me, restart="temporary"), spec("keep", me)])
    tmp = started("tmp")
    started("keep")
    ref = supervisors.monitor(tmp)
    supervisors.send(tmp, "crash")
    wait_down(ref)
    assert list(child_pids(sup)) == ["keep"]
    supervisors.stop_supervisor(sup)


def test_exceeding_restart_intensity_stops_children_and_exits_shutdown() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("a", me), spec("b", me)], max_restarts=2, max_seconds=60)
    sup_ref = supervisors.monitor(sup)
    started_tags(2)
    for _ in range(2):
        supervisors.send(child_pids(sup)["a"], "crash")
        started("a")
    b = child_pids(sup)["b"]
    b_ref = supervisors.monitor(b)  # type: ignore[arg-type]
    supervisors.send(child_pids(sup)["a"], "crash")
    assert wait_down(sup_ref) == "shutdown"
    assert wait_down(b_ref) == "shutdown"


class _Clock:
    """Stands in for ``time`` in supervisors.supervisor: the test moves time forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_restarts_older_than_max_seconds_leave_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_restarts=1 in max_seconds=10: a crash every 11 s restarts forever; two within
    10 s exceed the intensity."""
    clock = _Clock()
    monkeypatch.setattr(supervisor_module, "time", clock)
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("a", me)], max_restarts=1, max_seconds=10)
    sup_ref = supervisors.monitor(sup)
    pid = started("a")
    for _ in range(3):  # each earlier restart has left the window by the next crash
        supervisors.send(pid, "crash")
        restarted = started("a")
        assert restarted is not pid
        pid = restarted
        clock.now += 11
    supervisors.send(pid, "crash")  # restart 1 of this window: allowed
    pid = started("a")
    clock.now += 9.5
    supervisors.send(pid, "crash")  # restart 2 within 10 s: too many
    assert wait_down(sup_ref) == "shutdown"


def _crash_at_once() -> supervisors.Pid:
    return supervisors.spawn_link(lambda: 1 / 0, label="doomed")


def test_intensity_exhaustion_propagates_up_two_levels() -> None:
    def start_mid() -> supervisors.Pid:
        return supervisors.start_supervisor(
            [ChildSpec("doomed", _crash_at_once)], max_restarts=1, max_seconds=60, link=True, label="mid"
        )

    def start_upper() -> supervisors.Pid:
        return supervisors.start_supervisor(
            [ChildSpec("mid", start_mid, type="supervisor")], max_restarts=1, max_seconds=60,
            link=True, label="upper",
        )

    top = supervisors.start_supervisor(
        [ChildSpec("upper", start_upper, type="supervisor")], max_restarts=0, max_seconds=60, label="top"
    )
    ref = supervisors.monitor(top)
    assert wait_down(ref, timeout=20) == "shutdown"


def test_a_failing_restart_is_retried_within_the_intensity() -> None:
    me = supervisors.self()
    attempts = []

    def flaky(observer: supervisors.Pid) -> supervisors.Pid:
        attempts.append(1)
        if len(attempts) in (2, 3):
            raise OSError("not yet")
        return start_worker("flaky", observer)

    sup = supervisors.start_supervisor([ChildSpec("flaky", flaky, args=(me,))], max_restarts=5, max_seconds=60)
    first = started("flaky")
    supervisors.send(first, "crash")
    second = started("flaky")
    assert len(attempts) == 4 and second is not first
    supervisors.stop_supervisor(sup)
