"""Spawning, exit reasons, crash logging and the process table."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

import gevent
import pytest

import supervisors
from supervisors import process as process_module
from tests.supervisors.helpers import forever, kill_and_wait, recv, wait_down


def test_spawn_runs_function_with_positional_args_in_a_new_process() -> None:
    me = supervisors.self()

    def worker(a: int, b: int) -> None:
        supervisors.send(me, ("sum", a + b, supervisors.self()))

    pid = supervisors.spawn(worker, 2, 3)
    assert recv() == ("sum", 5, pid)


def test_pid_repr_shows_id_and_label() -> None:
    pid, ref = supervisors.spawn_monitor(lambda: None, label="conn")
    assert repr(pid) == f"<Pid {pid.id} conn>"
    wait_down(ref)


def test_pid_is_alive_until_the_process_exits() -> None:
    pid = supervisors.spawn(forever)
    assert pid.is_alive
    kill_and_wait(pid)
    assert not pid.is_alive


def test_returning_from_the_function_is_exit_reason_normal() -> None:
    _, ref = supervisors.spawn_monitor(lambda: None)
    assert wait_down(ref) == "normal"


def test_raising_exit_ends_the_process_with_that_reason() -> None:
    def worker() -> None:
        raise supervisors.Exit(("shutdown", "bye"))

    _, ref = supervisors.spawn_monitor(worker)
    assert wait_down(ref) == ("shutdown", "bye")


def test_uncaught_exception_is_the_exit_reason_and_logged_once_with_label(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    error = ValueError("boom")

    def worker() -> None:
        raise error

    with caplog.at_level(logging.ERROR, logger="supervisors"):
        _, ref = supervisors.spawn_monitor(worker, label="crasher")
        assert wait_down(ref) is error
    records = [r for r in caplog.records if r.name == "supervisors"]
    assert len(records) == 1
    assert "crasher" in records[0].getMessage()
    assert records[0].exc_info is not None and records[0].exc_info[1] is error
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "boom" not in err


def test_a_crashing_unlinked_child_does_not_disturb_its_parent() -> None:
    me = supervisors.self()

    def parent() -> None:
        _, ref = supervisors.spawn_monitor(lambda: 1 / 0)
        supervisors.receive(lambda m: m[0] == "DOWN" and m[1] is ref)
        supervisors.send(me, "parent still here")

    _, ref = supervisors.spawn_monitor(parent)
    assert recv(lambda m: m == "parent still here") == "parent still here"
    assert wait_down(ref) == "normal"


def test_spawn_options_are_keyword_only_and_validated() -> None:
    with pytest.raises(ValueError, match="mailbox_overflow"):
        supervisors.spawn(forever, mailbox_overflow="block")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        supervisors.spawn(forever, unknown_option=1)  # type: ignore[call-overload]


def test_spawn_monitor_returns_pid_and_ref() -> None:
    pid, ref = supervisors.spawn_monitor(lambda: None)
    assert isinstance(pid, supervisors.Pid) and isinstance(ref, supervisors.Ref)
    assert wait_down(ref) == "normal"


def test_self_inside_a_process_is_its_pid() -> None:
    me = supervisors.self()
    pid = supervisors.spawn(lambda: supervisors.send(me, supervisors.self()))
    assert recv() is pid


def test_self_adopts_a_plain_gevent_greenlet_which_can_receive() -> None:
    results = []

    def plain() -> None:
        me = supervisors.self()
        supervisors.spawn(lambda: supervisors.send(me, "hi"))
        results.append(supervisors.receive(timeout=5))

    gevent.spawn(plain).join(5)
    assert results == ["hi"]


def test_an_adopted_greenlet_is_forgotten_when_it_finishes() -> None:
    pids = []
    g = gevent.spawn(lambda: pids.append(supervisors.self()))
    g.join(5)
    gevent.sleep(0)  # the greenlet's rawlink callbacks run on the next loop turn
    assert not pids[0].is_alive
    assert pids[0].id not in process_module._processes


def test_dead_processes_are_not_retained() -> None:
    before = len(process_module._processes)
    refs = [supervisors.spawn_monitor(lambda: None)[1] for _ in range(2000)]
    for ref in refs:
        wait_down(ref)
    assert len(process_module._processes) == before
    pid, ref = supervisors.spawn_monitor(lambda: None)
    wait_down(ref)
    gc.collect()
    assert pid._proc is None
    assert not any(isinstance(o, process_module.Process) and o.pid is pid for o in gc.get_objects())


def test_a_process_killed_before_it_ran_exits_without_running() -> None:
    ran = []
    pid, ref = supervisors.spawn_monitor(lambda: ran.append(1))
    supervisors.exit(pid, "kill")
    assert wait_down(ref) == "killed"
    assert ran == []


@contextlib.contextmanager
def _coverage_paused() -> Iterator[None]:
    """Coverage's gevent tracer keeps state per greenlet ever traced (its own memory, not
    ours): measuring memory under ``--cov`` needs the tracer off meanwhile."""
    try:
        import coverage
    except ImportError:
        yield
        return
    cov = coverage.Coverage.current()
    if cov is None:
        yield
        return
    cov.stop()
    try:
        yield
    finally:
        cov.start()


def test_spawn_and_exit_of_many_processes_does_not_grow_memory() -> None:
    with _coverage_paused():
        _spawn_and_exit_many_without_growth()


def _spawn_and_exit_many_without_growth() -> None:
    import tracemalloc

    def batch(n: int) -> None:
        refs = [supervisors.spawn_monitor(lambda: None, label="short")[1] for _ in range(n)]
        for ref in refs:
            wait_down(ref)

    def let_go_parked() -> None:
        # The pool of parked greenlets (``IDLE_GREENLETS``, "Recycled greenlets") is bounded
        # but not part of what one process retains: empty it at both measuring points.
        process_module._trim()
        process_module._trim()
        gc.collect()

    batch(2000)  # warm up free lists and caches
    tracemalloc.start()
    try:
        let_go_parked()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            batch(2000)
        let_go_parked()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A retained process costs over 1 KiB (greenlet, record, deque, Pid): a leak would show
    # as 10+ MB here. The allowance covers dict tables that keep their peak capacity.
    assert growth < 500_000, f"{growth} bytes retained after 10,000 short processes"
