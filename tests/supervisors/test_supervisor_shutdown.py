"""Ordered start, reverse-ordered stop, shutdown timeouts and start failures."""

from __future__ import annotations

import time

import pytest

import supervisors
from supervisors import ChildSpec
from tests.supervisors.helpers import forever, wait_down
from tests.supervisors.sup_helpers import child_pids, spec, start_worker, started_tags


def test_children_start_in_order_and_stop_in_reverse_order() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec(t, me) for t in "abcd"])
    assert started_tags(4) == list("abcd")
    refs = {supervisors.monitor(pid): cid for cid, pid in child_pids(sup).items()}  # type: ignore[arg-type]
    assert supervisors.stop_supervisor(sup) == "shutdown"
    order = [refs[supervisors.receive(lambda m: m[0] == "DOWN" and m[1] in refs, 10)[1]] for _ in range(4)]
    assert order == list("dcba")


def _stubborn(observer: supervisors.Pid) -> None:
    supervisors.trap_exit(True)
    supervisors.send(observer, ("started", "stubborn", supervisors.self()))
    forever()  # EXIT messages are received and ignored


def test_a_child_ignoring_shutdown_is_killed_after_its_shutdown_timeout() -> None:
    me = supervisors.self()
    stubborn = ChildSpec("stubborn", lambda: supervisors.spawn_link(_stubborn, me), shutdown=0.05)
    sup = supervisors.start_supervisor([stubborn])
    pid = child_pids(sup)["stubborn"]
    ref = supervisors.monitor(pid)  # type: ignore[arg-type]
    supervisors.stop_supervisor(sup)
    assert wait_down(ref) == "killed"


def _telling_stubborn(observer: supervisors.Pid) -> None:
    """Traps exits and forwards every message it gets (a shutdown EXIT included) to ``observer``."""
    supervisors.trap_exit(True)
    supervisors.send(observer, ("started", "stubborn", supervisors.self()))
    while True:
        supervisors.send(observer, ("stubborn got", supervisors.receive()))


def test_brutal_kill_kills_at_once() -> None:
    """No shutdown EXIT first and no wait: the child never hears of the shutdown and the
    stop takes far less than even a short shutdown timeout would."""
    me = supervisors.self()
    stubborn = ChildSpec("stubborn", lambda: supervisors.spawn_link(_telling_stubborn, me), shutdown="brutal_kill")
    sup = supervisors.start_supervisor([stubborn])
    ref = supervisors.monitor(child_pids(sup)["stubborn"])  # type: ignore[arg-type]
    began = time.monotonic()
    supervisors.stop_supervisor(sup)
    elapsed = time.monotonic() - began
    assert wait_down(ref) == "killed"
    told = supervisors.flush_mailbox(lambda m: type(m) is tuple and m[0] == "stubborn got")
    assert told == 0, "the child received a message (a shutdown EXIT) before it was killed"
    assert elapsed < 0.5, elapsed


def test_a_cooperative_child_exits_with_shutdown() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("a", me, shutdown="infinity")])
    ref = supervisors.monitor(child_pids(sup)["a"])  # type: ignore[arg-type]
    supervisors.stop_supervisor(sup)
    assert wait_down(ref) == "shutdown"


def test_a_start_failure_stops_started_children_in_reverse_and_raises() -> None:
    me = supervisors.self()
    pids: dict[str, supervisors.Pid] = {}

    def start(tag: str) -> supervisors.Pid:
        pids[tag] = start_worker(tag, me)
        return pids[tag]

    def broken() -> supervisors.Pid:
        raise OSError("cannot bind")

    children = [ChildSpec("a", start, args=("a",)), ChildSpec("b", start, args=("b",)), ChildSpec("c", broken)]
    with pytest.raises(OSError, match="cannot bind") as info:
        supervisors.start_supervisor(children)
    assert any("'c'" in note for note in getattr(info.value, "__notes__", []))
    assert not pids["a"].is_alive and not pids["b"].is_alive


def test_exit_shutdown_from_any_process_stops_a_supervisor() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("a", me)])
    child = child_pids(sup)["a"]
    refs = (supervisors.monitor(sup), supervisors.monitor(child))  # type: ignore[arg-type]
    supervisors.spawn(lambda: supervisors.exit(sup, "shutdown"))
    assert wait_down(refs[1]) == "shutdown"
    assert wait_down(refs[0]) == "shutdown"


def test_killing_a_supervisor_takes_its_children_down() -> None:
    me = supervisors.self()
    sup = supervisors.start_supervisor([spec("a", me)])
    ref = supervisors.monitor(child_pids(sup)["a"])  # type: ignore[arg-type]
    supervisors.exit(sup, "kill")
    assert wait_down(ref) == "killed"


def test_a_linked_supervisor_stops_when_its_parent_dies() -> None:
    me = supervisors.self()

    def parent() -> None:
        sup = supervisors.start_supervisor([spec("a", me)], link=True)
        supervisors.send(me, ("sup", sup))
        supervisors.receive(lambda m: m == "die")
        raise RuntimeError("parent died")

    parent_pid = supervisors.spawn(parent)
    sup = supervisors.receive(lambda m: m[0] == "sup", 5)[1]
    ref = supervisors.monitor(sup)
    supervisors.send(parent_pid, "die")
    assert isinstance(wait_down(ref), RuntimeError)


def test_simple_one_for_one_children_are_stopped_in_parallel_on_shutdown() -> None:
    me = supervisors.self()

    def start_stubborn() -> supervisors.Pid:
        return supervisors.spawn_link(_stubborn, me)

    template = ChildSpec("s", start_stubborn, restart="temporary", shutdown=0.2)
    sup = supervisors.start_supervisor([template], strategy="simple_one_for_one")
    pids = [supervisors.start_child(sup) for _ in range(5)]
    refs = [supervisors.monitor(pid) for pid in pids]  # type: ignore[arg-type]
    supervisors.stop_supervisor(sup, timeout=0.9)  # five serial 0.2 s waits would not fit
    assert all(wait_down(ref) == "killed" for ref in refs)
