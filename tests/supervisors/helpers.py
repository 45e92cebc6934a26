"""Waiting helpers for the supervisors tests: waits are on messages, with generous safety timeouts."""

from __future__ import annotations

from typing import Any

import supervisors
from supervisors import Pid, Ref

SAFETY = 10.0  # seconds; only reached when a test is already failing


def is_down(ref: Ref) -> Any:
    return lambda m: type(m) is tuple and len(m) == 4 and m[0] == "DOWN" and m[1] is ref


def is_exit(pid: Pid) -> Any:
    return lambda m: type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] is pid


def wait_down(ref: Ref, timeout: float = SAFETY) -> Any:
    """Wait for the DOWN of monitor ``ref``; returns the exit reason."""
    return supervisors.receive(is_down(ref), timeout)[3]


def wait_exit(pid: Pid, timeout: float = SAFETY) -> Any:
    """Wait for ``('EXIT', pid, reason)``; returns the reason."""
    return supervisors.receive(is_exit(pid), timeout)[2]


def recv(match: Any = None, timeout: float = SAFETY) -> Any:
    return supervisors.receive(match, timeout)


def kill_and_wait(pid: Pid) -> Any:
    ref = supervisors.monitor(pid)
    supervisors.exit(pid, "kill")
    return wait_down(ref)


def forever() -> None:
    """A worker that waits for messages forever (until killed)."""
    while True:
        supervisors.receive()


def echo() -> None:
    """Replies ``(self(), msg)`` to ``(sender, msg)``; stops on ``"stop"``."""
    while True:
        msg = supervisors.receive()
        if msg == "stop":
            return
        sender, body = msg
        supervisors.send(sender, (supervisors.self(), body))
