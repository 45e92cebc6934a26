"""The generic server: call, cast, info, timeouts, noproc, deferred replies, init failure."""

from __future__ import annotations

from typing import Any

import pytest

import supervisors
from supervisors import NOREPLY, Server
from tests.supervisors.helpers import recv, wait_down


class Counter(Server):
    def init(self, start: int = 0, observer: supervisors.Pid | None = None) -> None:
        self.value = start
        self.pending: list[Any] = []
        self.observer = observer  # told ("pending", n) whenever a deferred call is parked

    def handle_call(self, msg: Any, from_: Any) -> Any:
        if msg == "get":
            return self.value
        if msg == "later":
            self.pending.append(from_)
            if self.observer is not None:
                supervisors.send(self.observer, ("pending", len(self.pending)))
            return NOREPLY
        if msg == "release":
            for waiter in self.pending:
                supervisors.reply(waiter, "released")
            return len(self.pending)
        if msg == "crash":
            raise ValueError("bad call")
        if msg == "stop":
            self.stop("normal")
            return "stopping"
        if msg == "hang":
            supervisors.receive(lambda m: m == "never")
        raise AssertionError(msg)

    def handle_cast(self, msg: Any) -> None:
        self.value += msg

    def handle_info(self, msg: Any) -> None:
        if isinstance(msg, tuple) and msg[0] == "tell":
            supervisors.send(msg[1], ("value", self.value))


def test_call_returns_the_reply_and_cast_updates_state() -> None:
    pid = supervisors.start_server(Counter, 10)
    supervisors.cast(pid, 5)
    assert supervisors.call(pid, "get") == 15
    supervisors.call(pid, "stop")


def test_start_server_returns_after_init_completed() -> None:
    pid = supervisors.start_server(Counter, 3, name="srv.counter")
    assert supervisors.whereis("srv.counter") is pid
    assert supervisors.call("srv.counter", "get") == 3
    supervisors.call(pid, "stop")


def test_other_messages_go_to_handle_info() -> None:
    pid = supervisors.start_server(Counter, 7)
    supervisors.send(pid, ("tell", supervisors.self()))
    assert recv() == ("value", 7)
    supervisors.call(pid, "stop")


def test_call_timeout_raises_call_timeout_and_late_reply_is_dropped() -> None:
    pid = supervisors.start_server(Counter)
    with pytest.raises(supervisors.CallTimeout):
        supervisors.call(pid, "later", timeout=0.05)
    assert issubclass(supervisors.CallTimeout, supervisors.Timeout)
    assert supervisors.call(pid, "release") == 1
    assert supervisors.mailbox_size() == 0  # the late "released" never arrived
    supervisors.call(pid, "stop")


def test_deferred_reply_with_noreply_and_reply() -> None:
    pid = supervisors.start_server(Counter, 0, supervisors.self())
    results = []

    def waiter() -> None:
        results.append(supervisors.call(pid, "later"))

    _, ref = supervisors.spawn_monitor(waiter)
    assert recv(lambda m: type(m) is tuple and m[0] == "pending") == ("pending", 1)
    assert results == []  # the call is parked: no reply yet
    assert supervisors.call(pid, "release") == 1
    assert wait_down(ref) == "normal"
    assert results == ["released"]
    supervisors.call(pid, "stop")


def test_call_to_a_dead_server_raises_noproc() -> None:
    pid = supervisors.start_server(Counter)
    ref = supervisors.monitor(pid)
    supervisors.call(pid, "stop")
    wait_down(ref)
    with pytest.raises(supervisors.NoProc) as info:
        supervisors.call(pid, "get")
    assert info.value.reason == "noproc"
    with pytest.raises(supervisors.NoProc):
        supervisors.call("srv.nobody", "get")


def test_server_crashing_during_a_call_raises_noproc_with_the_reason() -> None:
    pid = supervisors.start_server(Counter)
    with pytest.raises(supervisors.NoProc) as info:
        supervisors.call(pid, "crash")
    assert isinstance(info.value.reason, ValueError)
    assert isinstance(info.value, supervisors.CallError)
    assert not pid.is_alive


def test_server_killed_during_a_call_raises_noproc() -> None:
    pid = supervisors.start_server(Counter)
    killer = supervisors.spawn(lambda: supervisors.exit(pid, "kill"))
    with pytest.raises(supervisors.NoProc) as info:
        supervisors.call(pid, "hang")
    assert info.value.reason == "killed"
    assert killer is not None


def test_init_failure_is_raised_by_start_server_and_does_not_kill_the_caller() -> None:
    class Refuses(Server):
        def init(self) -> None:
            raise OSError("port in use")

    def starter() -> None:
        with pytest.raises(OSError, match="port in use"):
            supervisors.start_server(Refuses, link=True)

    _, ref = supervisors.spawn_monitor(starter)
    assert wait_down(ref) == "normal"


def test_a_taken_name_fails_the_start() -> None:
    pid = supervisors.start_server(Counter, name="srv.taken")
    with pytest.raises(ValueError, match="already registered"):
        supervisors.start_server(Counter, name="srv.taken")
    supervisors.call(pid, "stop")


def test_terminate_runs_on_stop_and_on_callback_crash() -> None:
    me = supervisors.self()

    class Reporting(Server):
        def handle_cast(self, msg: Any) -> None:
            if msg == "crash":
                raise KeyError("k")
            self.stop(("shutdown", msg))

        def terminate(self, reason: Any) -> None:
            supervisors.send(me, ("terminated", reason))

    pid = supervisors.start_server(Reporting)
    ref = supervisors.monitor(pid)
    supervisors.cast(pid, "bye")
    assert recv(lambda m: m[0] == "terminated") == ("terminated", ("shutdown", "bye"))
    assert wait_down(ref) == ("shutdown", "bye")

    pid = supervisors.start_server(Reporting)
    ref = supervisors.monitor(pid)
    supervisors.cast(pid, "crash")
    reason = recv(lambda m: m[0] == "terminated")[1]
    assert isinstance(reason, KeyError)
    assert wait_down(ref) is reason


def test_a_trapping_server_terminates_on_its_parents_exit_signal() -> None:
    me = supervisors.self()

    class Trapping(Server):
        def init(self) -> None:
            supervisors.trap_exit(True)

        def terminate(self, reason: Any) -> None:
            supervisors.send(me, ("terminated", reason))

    def parent() -> None:
        server = supervisors.start_server(Trapping, link=True)
        supervisors.send(me, server)
        supervisors.receive()

    parent_pid = supervisors.spawn(parent)
    server = recv(lambda m: isinstance(m, supervisors.Pid))
    ref = supervisors.monitor(server)
    supervisors.exit(parent_pid, "shutdown")
    assert recv(lambda m: m[0] == "terminated") == ("terminated", "shutdown")
    assert wait_down(ref) == "shutdown"


def test_calls_work_from_a_plain_gevent_greenlet() -> None:
    import gevent

    pid = supervisors.start_server(Counter, 1)
    g = gevent.spawn(supervisors.call, pid, "get")
    assert g.get(timeout=5) == 1
    supervisors.call(pid, "stop")
