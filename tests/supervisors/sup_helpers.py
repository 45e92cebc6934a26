"""Workers and start functions for the supervisor tests; they report to the test by message."""

from __future__ import annotations

from typing import Any

import supervisors
from supervisors import ChildSpec, Pid


def worker(tag: Any, observer: Pid) -> None:
    """Reports ``("started", tag, pid)``; then ``"crash"`` raises, ``"finish"`` returns,
    ``("exit", reason)`` exits with ``reason``."""
    supervisors.send(observer, ("started", tag, supervisors.self()))
    while True:
        msg = supervisors.receive()
        if msg == "crash":
            raise RuntimeError(f"{tag} crashed")
        if msg == "finish":
            return
        if isinstance(msg, tuple) and msg[0] == "exit":
            raise supervisors.Exit(msg[1])


def start_worker(tag: Any, observer: Pid) -> Pid:
    return supervisors.spawn_link(worker, tag, observer, label=f"worker.{tag}")


def spec(tag: Any, observer: Pid, **kw: Any) -> ChildSpec:
    return ChildSpec(tag, start_worker, args=(tag, observer), **kw)


def started(tag: Any = None, timeout: float = 10.0) -> Pid:
    """Wait for the next ``started`` report (of ``tag`` if given); returns the pid."""
    msg = supervisors.receive(
        lambda m: type(m) is tuple and len(m) == 3 and m[0] == "started" and (tag is None or m[1] == tag),
        timeout,
    )
    return msg[2]  # type: ignore[no-any-return]


def started_tags(n: int, timeout: float = 10.0) -> list[Any]:
    return [
        supervisors.receive(lambda m: type(m) is tuple and len(m) == 3 and m[0] == "started", timeout)[1]
        for _ in range(n)
    ]


def child_pids(sup: Pid) -> dict[Any, Pid | None]:
    return {cid: pid for cid, pid, _ in supervisors.which_children(sup)}
