"""Selective receive: order, matching, timeouts, mailbox_size."""

from __future__ import annotations

import gevent
import pytest

import supervisors
from tests.supervisors.helpers import recv


def test_receive_without_match_returns_messages_in_arrival_order() -> None:
    me = supervisors.self()
    for i in range(3):
        supervisors.send(me, i)
    assert [recv(), recv(), recv()] == [0, 1, 2]


def test_selective_receive_takes_first_match_and_leaves_others_queued_in_order() -> None:
    me = supervisors.self()
    for msg in ["a", 1, "b", 2, "c"]:
        supervisors.send(me, msg)
    assert recv(lambda m: isinstance(m, int)) == 1
    assert recv(lambda m: isinstance(m, int)) == 2
    assert [recv(), recv(), recv()] == ["a", "b", "c"]


def test_selective_receive_waits_for_a_matching_message_sent_later() -> None:
    me = supervisors.self()

    def sender() -> None:
        supervisors.send(me, "noise")
        supervisors.send(me, ("wanted", 42))

    supervisors.spawn(sender)
    assert recv(lambda m: isinstance(m, tuple)) == ("wanted", 42)
    assert recv(timeout=0) == "noise"


def test_only_new_messages_are_rescanned_while_waiting() -> None:
    me = supervisors.self()
    seen: list[object] = []

    def match(m: object) -> bool:
        seen.append(m)
        return m == "last"

    supervisors.send(me, "old")

    def sender() -> None:
        supervisors.send(me, "new")
        supervisors.send(me, "last")

    supervisors.spawn(sender)
    assert recv(match) == "last"
    assert seen.count("old") == 1
    assert recv(timeout=0) == "old" and recv(timeout=0) == "new"


def test_receive_timeout_raises_timeout() -> None:
    with pytest.raises(supervisors.Timeout):
        supervisors.receive(timeout=0.01)


def test_receive_timeout_zero_polls_without_waiting() -> None:
    me = supervisors.self()
    with pytest.raises(supervisors.Timeout):
        supervisors.receive(timeout=0)
    supervisors.send(me, "x")
    assert supervisors.receive(timeout=0) == "x"


def test_timeout_is_an_exception_subclass() -> None:
    assert issubclass(supervisors.Timeout, Exception)


def test_non_matching_messages_survive_a_timeout() -> None:
    me = supervisors.self()
    supervisors.send(me, "keep")
    with pytest.raises(supervisors.Timeout):
        supervisors.receive(lambda m: m == "never", timeout=0.01)
    assert recv(timeout=0) == "keep"


def test_mailbox_size_counts_queued_messages_of_self_or_another_process() -> None:
    me = supervisors.self()
    assert supervisors.mailbox_size() == 0
    supervisors.send(me, 1)
    supervisors.send(me, 2)
    assert supervisors.mailbox_size() == 2
    assert supervisors.mailbox_size(me) == 2
    supervisors.flush_mailbox()
    assert supervisors.mailbox_size() == 0


def test_send_to_a_dead_pid_is_silently_dropped() -> None:
    pid, ref = supervisors.spawn_monitor(lambda: None)
    supervisors.receive(lambda m: m[1] is ref, 5)
    supervisors.send(pid, "into the void")
    assert supervisors.mailbox_size(pid) == 0


def test_ping_pong_between_two_processes() -> None:
    me = supervisors.self()

    def pong() -> None:
        while (msg := supervisors.receive()) != "stop":
            supervisors.send(me, msg + 1)

    pid = supervisors.spawn(pong)
    n = 0
    for _ in range(1000):
        supervisors.send(pid, n)
        n = recv()
    supervisors.send(pid, "stop")
    assert n == 1000


def test_a_process_pays_for_a_mailbox_only_once_a_message_arrives() -> None:
    from supervisors.process import _NO_MAIL

    me = supervisors.self()
    quiet = supervisors.spawn(lambda: supervisors.receive(), label="quiet")
    waiter = supervisors.spawn(lambda: supervisors.send(me, ("got", supervisors.receive(timeout=10))), label="w")
    gevent.sleep(0)  # both are now parked in receive with nothing queued
    assert quiet._proc.mailbox is _NO_MAIL and waiter._proc.mailbox is _NO_MAIL  # type: ignore[union-attr]
    supervisors.send(waiter, "first")  # arrives while it waits: it must see it in its new deque
    assert supervisors.receive(lambda m: m[0] == "got", 5) == ("got", "first")
    assert len(_NO_MAIL) == 0
    supervisors.exit(quiet, "kill")
