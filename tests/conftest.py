"""Repository-wide test fixtures: every test must leave no process behind.

The autouse ``no_process_leaks`` fixture records the live (spawned)
processes before each test; afterwards it waits, bounded, for the set to
return to that baseline. Processes still alive are reported by label and
then killed, so one leaky test fails alone instead of poisoning the next.

Adopted greenlets (see ``supervisors.process``) are not processes anyone
started and are not checked; the main greenlet's mailbox is emptied after
each test so stale DOWN/EXIT messages cannot leak into the next one.
Mark a test ``allow_process_leaks`` when it deliberately leaves long-lived
processes (e.g. a lazily created root supervisor) for later tests.

A test marked ``peers("curl", ...)`` fails when a named peer program is
missing (``tests/peers.py``); under ``RR_ALLOW_MISSING_PEERS=1`` it skips,
and the run's summary lists every test skipped that way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from greenlet import getcurrent
from hypothesis import settings

from supervisors import exit as exit_process
from supervisors import flush_mailbox
from supervisors.process import Pid, _processes
from tests import peers

# CI draws the same Hypothesis examples on every run, so a CI result is
# reproducible; a local run (no CI variable) explores new examples each time.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

LEAK_WAIT = 5.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_process_leaks: the test may leave processes running (not checked, not killed)"
    )
    config.addinivalue_line(
        "markers", "peers(*names): the test drives these peer programs (tests/peers.py); a missing one fails it"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("peers"):
        peers.require(*marker.args)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not peers.skipped:
        return
    names = sorted({name for absent in peers.skipped for name in absent})
    terminalreporter.write_sep("=", "peers missing", yellow=True)
    terminalreporter.write_line(
        f"{peers.ALLOW_MISSING}=1: {len(peers.skipped)} test(s) skipped because a peer is missing "
        f"({', '.join(names)}); this run did not check rr against them"
    )


def _live_spawned() -> dict[Pid, str | None]:
    return {proc.pid: proc.label for proc in list(_processes.values()) if not proc.adopted and proc.alive}


def _wait_until_only(baseline: set[Pid], timeout: float) -> dict[Pid, str | None]:
    deadline = time.monotonic() + timeout
    while True:
        extra = {pid: label for pid, label in _live_spawned().items() if pid not in baseline}
        if not extra or time.monotonic() >= deadline:
            return extra
        gevent.sleep(0.01)


@pytest.fixture(autouse=True)
def no_process_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    baseline = set(_live_spawned())
    yield
    if getattr(getcurrent(), "sv_proc", None) is not None:
        flush_mailbox()
    if request.node.get_closest_marker("allow_process_leaks"):
        return
    leaked = _wait_until_only(baseline, LEAK_WAIT)
    if not leaked:
        return
    for pid in leaked:
        exit_process(pid, "kill")
    _wait_until_only(baseline, LEAK_WAIT)
    if getattr(getcurrent(), "sv_proc", None) is not None:
        flush_mailbox()
    names = sorted(repr(pid) for pid in leaked)
    pytest.fail(f"{len(leaked)} process(es) still alive {LEAK_WAIT}s after the test: {', '.join(names)}")
