"""Links, trap_exit and exit signals (Erlang exit/2 semantics)."""

from __future__ import annotations

import gevent

import supervisors
from tests.supervisors.helpers import forever, kill_and_wait, recv, wait_down, wait_exit


def _crash() -> None:
    raise RuntimeError("crash")


def test_abnormal_exit_kills_linked_process_that_does_not_trap() -> None:
    def parent() -> None:
        supervisors.spawn_link(_crash)
        forever()

    pid, ref = supervisors.spawn_monitor(parent)
    reason = wait_down(ref)
    assert isinstance(reason, RuntimeError)
    assert not pid.is_alive


def test_trapping_process_receives_exit_message() -> None:
    me = supervisors.self()

    def parent() -> None:
        supervisors.trap_exit(True)
        child = supervisors.spawn_link(_crash)
        supervisors.send(me, supervisors.receive(lambda m: m[0] == "EXIT" and m[1] is child))

    _, ref = supervisors.spawn_monitor(parent)
    msg = recv(lambda m: m[0] == "EXIT")
    assert isinstance(msg[2], RuntimeError)
    assert wait_down(ref) == "normal"


def test_normal_exit_does_not_propagate() -> None:
    me = supervisors.self()

    def parent() -> None:
        _, ref = supervisors.spawn_monitor(lambda: None, link=True)
        supervisors.receive(lambda m: m[0] == "DOWN" and m[1] is ref)
        supervisors.send(me, "survived")
        forever()

    pid = supervisors.spawn(parent)
    assert recv(lambda m: m == "survived") == "survived"
    assert pid.is_alive
    kill_and_wait(pid)


def test_kill_is_untrappable_and_linked_processes_see_killed() -> None:
    def victim() -> None:
        supervisors.trap_exit(True)
        forever()

    def watcher(target: supervisors.Pid) -> None:
        supervisors.trap_exit(True)
        supervisors.link(target)
        forever()

    v = supervisors.spawn(victim)
    w, wref = supervisors.spawn_monitor(watcher, v)
    vref = supervisors.monitor(v)
    gevent.sleep(0)  # let both run and link
    supervisors.exit(v, "kill")
    assert wait_down(vref) == "killed"
    assert w.is_alive
    assert supervisors.process_info(w).mailbox_depth == 1  # type: ignore[union-attr]
    kill_and_wait(w)


def test_exit_with_a_reason_kills_a_non_trapping_target_with_that_reason() -> None:
    pid, ref = supervisors.spawn_monitor(forever)
    supervisors.exit(pid, "shutdown")
    assert wait_down(ref) == "shutdown"


def test_exit_normal_is_ignored_by_a_non_trapping_target() -> None:
    me = supervisors.self()

    def worker() -> None:
        supervisors.receive(lambda m: m == "go")
        supervisors.send(me, "still alive")

    pid, ref = supervisors.spawn_monitor(worker)
    supervisors.exit(pid, "normal")
    supervisors.send(pid, "go")
    assert recv(lambda m: m == "still alive") == "still alive"
    assert wait_down(ref) == "normal"


def test_exit_normal_on_oneself_ends_the_process() -> None:
    def worker() -> None:
        supervisors.exit(supervisors.self(), "normal")
        raise AssertionError("not reached")

    _, ref = supervisors.spawn_monitor(worker)
    assert wait_down(ref) == "normal"


def test_exit_to_a_trapping_target_becomes_a_message_from_the_sender() -> None:
    me = supervisors.self()

    def worker() -> None:
        supervisors.trap_exit(True)
        supervisors.send(me, "ready")
        supervisors.send(me, supervisors.receive())

    pid, ref = supervisors.spawn_monitor(worker)
    recv(lambda m: m == "ready")
    supervisors.exit(pid, "shutdown")
    assert recv(lambda m: m[0] == "EXIT") == ("EXIT", me, "shutdown")
    wait_down(ref)


def test_linking_a_dead_pid_delivers_noproc() -> None:
    dead, ref = supervisors.spawn_monitor(lambda: None)
    wait_down(ref)

    def non_trapping() -> None:
        supervisors.link(dead)

    _, ref = supervisors.spawn_monitor(non_trapping)
    assert wait_down(ref) == "noproc"
    supervisors.link(dead)  # the adopted test greenlet traps: a message
    assert wait_exit(dead) == "noproc"


def test_unlink_stops_propagation() -> None:
    me = supervisors.self()

    def parent() -> None:
        child = supervisors.spawn_link(lambda: supervisors.receive() and _crash())
        supervisors.unlink(child)
        cref = supervisors.monitor(child)
        supervisors.send(child, "crash now")
        supervisors.receive(lambda m: m[0] == "DOWN" and m[1] is cref)
        supervisors.send(me, "unharmed")

    _, ref = supervisors.spawn_monitor(parent)
    assert recv(lambda m: m == "unharmed") == "unharmed"
    assert wait_down(ref) == "normal"


def test_trap_exit_returns_previous_value() -> None:
    me = supervisors.self()

    def worker() -> None:
        first = supervisors.trap_exit(True)
        second = supervisors.trap_exit(False)
        supervisors.send(me, (first, second))

    supervisors.spawn(worker)
    assert recv() == (False, True)


def test_an_adopted_greenlet_is_never_killed_by_a_link_it_gets_exit_messages() -> None:
    pid = supervisors.spawn_link(_crash)
    reason = wait_exit(pid)
    assert isinstance(reason, RuntimeError)
    other = supervisors.spawn_link(forever)
    supervisors.exit(other, "kill")
    assert wait_exit(other) == "killed"


def test_exit_kill_to_an_adopted_greenlet_is_a_message() -> None:
    me = supervisors.self()
    sender = supervisors.spawn(lambda: supervisors.exit(me, "kill"))
    assert recv(lambda m: m[0] == "EXIT") == ("EXIT", sender, "killed")
