"""Heap budget (max_heap) and bounded mailboxes (mailbox_limit)."""

from __future__ import annotations

import gevent

import supervisors
from tests.supervisors.helpers import forever, kill_and_wait, recv, wait_down


def test_charging_over_max_heap_ends_the_process_with_max_heap() -> None:
    me = supervisors.self()

    def worker() -> None:
        supervisors.charge(600)
        supervisors.send(me, "under budget")
        try:
            supervisors.charge(600)
        except Exception:  # not an Exception: Exit is a BaseException
            supervisors.send(me, "caught")
        supervisors.send(me, "not reached")

    _, ref = supervisors.spawn_monitor(worker, max_heap=1000)
    assert wait_down(ref) == "max_heap"
    assert recv(timeout=0) == "under budget"
    assert supervisors.mailbox_size() == 0


def test_release_gives_budget_back() -> None:
    def worker() -> None:
        for _ in range(10):
            supervisors.charge(800)
            supervisors.release(800)

    _, ref = supervisors.spawn_monitor(worker, max_heap=1000)
    assert wait_down(ref) == "normal"


def test_mailbox_growth_over_max_heap_kills_the_receiver_and_drops_the_message() -> None:
    pid, ref = supervisors.spawn_monitor(forever, max_heap=1000)
    supervisors.send(pid, b"x" * 600)  # queued before the process ever runs
    supervisors.send(pid, b"y" * 600)
    assert supervisors.process_info(pid).mailbox_depth == 1  # type: ignore[union-attr]
    assert wait_down(ref) == "max_heap"


def test_max_heap_kill_cannot_be_trapped() -> None:
    pid, ref = supervisors.spawn_monitor(forever, max_heap=10, trap_exit=True)
    supervisors.send(pid, "a" * 100)
    assert wait_down(ref) == "max_heap"


def test_received_messages_no_longer_count_against_the_heap() -> None:
    me = supervisors.self()

    def worker() -> None:
        for _ in range(5):
            supervisors.receive()
        supervisors.send(me, supervisors.process_info(supervisors.self()).heap_bytes)  # type: ignore[union-attr]

    pid, ref = supervisors.spawn_monitor(worker, max_heap=1000)
    for _ in range(5):
        supervisors.send(pid, b"z" * 600)
        gevent.sleep(0)
    assert recv(lambda m: isinstance(m, int)) == 0
    assert wait_down(ref) == "normal"


def test_heap_bytes_counts_mailbox_estimate_plus_charges() -> None:
    me = supervisors.self()

    def worker() -> None:
        supervisors.charge(100)
        supervisors.send(me, "charged")
        forever()

    pid = supervisors.spawn(worker, max_heap=10_000)
    recv(lambda m: m == "charged")
    info = supervisors.process_info(pid)
    assert info is not None and info.heap_bytes >= 100
    assert supervisors.estimate_size((b"abc", "de", 7)) == 3 + 2 + 64
    assert supervisors.estimate_size(memoryview(b"12345")) == 5
    kill_and_wait(pid)


def test_mailbox_limit_kill_policy_ends_the_receiver_with_mailbox_overflow() -> None:
    pid, ref = supervisors.spawn_monitor(forever, mailbox_limit=2)
    for i in range(3):  # the process has not run yet: all three are queued now
        supervisors.send(pid, i)
    assert supervisors.mailbox_size(pid) == 2
    assert wait_down(ref) == "mailbox_overflow"


def test_mailbox_limit_drop_policy_drops_and_counts_new_messages() -> None:
    me = supervisors.self()

    def worker() -> None:
        supervisors.receive(lambda m: m == "go")
        got = [supervisors.receive(timeout=0) for _ in range(supervisors.mailbox_size())]
        supervisors.send(me, got)

    pid, ref = supervisors.spawn_monitor(worker, mailbox_limit=3, mailbox_overflow="drop")
    supervisors.send(pid, "go")
    for i in range(5):
        supervisors.send(pid, i)
    assert supervisors.process_info(pid).dropped == 3  # type: ignore[union-attr]
    assert recv(lambda m: isinstance(m, list)) == [0, 1]
    assert wait_down(ref) == "normal"
