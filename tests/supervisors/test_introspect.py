"""Observer-style introspection: processes() and process_info()."""

from __future__ import annotations

import gevent

import supervisors
from tests.supervisors.helpers import forever, kill_and_wait, wait_down


def test_process_info_describes_a_live_process() -> None:
    me = supervisors.self()
    pid = supervisors.spawn(forever, label="observed", link=True, trap_exit=True, max_heap=1000)
    ref = supervisors.monitor(pid)
    supervisors.register("intro.observed", pid)
    gevent.sleep(0)
    supervisors.send(pid, b"queued")  # received by forever() at its next turn
    info = supervisors.process_info(pid)
    assert info is not None
    assert (info.pid, info.label, info.alive) == (pid, "observed", True)
    assert info.trap_exit is True and info.max_heap == 1000
    assert info.links == (me,)
    assert info.registered_name == "intro.observed"
    assert info.mailbox_depth == 1 and info.heap_bytes == len(b"queued")
    supervisors.unlink(pid)
    kill_and_wait(pid)
    wait_down(ref)
    assert supervisors.process_info(pid) is None


def test_processes_lists_live_processes_and_forgets_dead_ones() -> None:
    pid = supervisors.spawn(forever, label="listed")
    assert pid in {info.pid for info in supervisors.processes()}
    kill_and_wait(pid)
    assert pid not in {info.pid for info in supervisors.processes()}


def test_processes_lists_an_adopted_greenlet_only_while_it_has_messages_queued() -> None:
    me = supervisors.self()
    assert me not in {info.pid for info in supervisors.processes()}
    supervisors.send(me, "pending")
    assert me in {info.pid for info in supervisors.processes()}
    supervisors.receive(timeout=0)


def test_process_info_lists_what_a_process_monitors() -> None:
    target = supervisors.spawn(forever)
    ref = supervisors.monitor(target)
    info = supervisors.process_info(supervisors.self())
    assert info is not None and target in info.monitors
    supervisors.demonitor(ref)
    kill_and_wait(target)
