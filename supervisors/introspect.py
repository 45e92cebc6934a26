"""Observer-style introspection: what processes exist and what they hold.

What it owns: :class:`ProcessInfo` snapshots and the two queries,
``processes()`` and ``process_info(pid)``. It only reads the process table;
it must never change a process, keep a reference to a dead one, or be used
on a hot path (``processes()`` walks every live process).

Adopted greenlets (see :mod:`supervisors.process`) are listed by
``processes()`` only while alive with messages queued -- a greenlet that
once called ``self()`` is not a process anyone started, but unread messages
piling up in it are worth seeing. ``process_info`` answers for them always.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisors.process import Pid, Process, _processes, estimate_size


@dataclass(frozen=True)
class ProcessInfo:
    """A snapshot of one process."""

    pid: Pid
    label: str | None
    alive: bool
    mailbox_depth: int
    heap_bytes: int
    max_heap: int | None
    links: tuple[Pid, ...]
    monitors: tuple[Pid, ...]
    trap_exit: bool
    dropped: int
    registered_name: str | None


def _info(proc: Process) -> ProcessInfo:
    if proc.sizes is not None:
        mailbox_bytes = proc.heap
    else:
        mailbox_bytes = sum(estimate_size(msg) for msg in proc.mailbox)
    return ProcessInfo(
        pid=proc.pid,
        label=proc.label,
        alive=proc.alive,
        mailbox_depth=len(proc.mailbox),
        heap_bytes=mailbox_bytes + proc.charged,
        max_heap=proc.max_heap,
        links=tuple(p.pid for p in proc.links or ()),
        monitors=tuple(p.pid for p in (proc.monitors or {}).values()),
        trap_exit=proc.trap,
        dropped=proc.dropped,
        registered_name=proc.name,
    )


def process_info(pid: Pid) -> ProcessInfo | None:
    """A snapshot of ``pid``, or None if it is dead."""
    proc = pid._proc
    if proc is None or not pid.is_alive:
        return None
    return _info(proc)


def processes() -> list[ProcessInfo]:
    """Snapshots of the live processes, oldest first (adopted greenlets: see module doc)."""
    result = []
    for proc in list(_processes.values()):
        if proc.adopted and (not proc.mailbox or not proc.check_adopted_alive()):
            continue
        if proc.alive:
            result.append(_info(proc))
    return result


__all__ = ["ProcessInfo", "process_info", "processes"]
