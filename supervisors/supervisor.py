"""Supervisors: processes that start, watch and restart other processes (OTP's supervisor).

What it is
----------
A supervisor is a :class:`~supervisors.server.Server` that traps exits and
owns an ordered list of children described by :class:`ChildSpec`. When a
child exits, the child's ``restart`` type and the exit reason decide whether
it is restarted, and the ``strategy`` decides which other children are
restarted with it:

- ``one_for_one``: only the child that exited;
- ``one_for_all``: all children -- the others are stopped in reverse start
  order, then all are started again in order;
- ``rest_for_one``: the child and the ones started after it (those stopped
  in reverse order first);
- ``simple_one_for_one``: one template spec, many dynamic children started
  by ``start_child(sup, *extra_args)``, each restarted on its own.

Restart rules: ``permanent`` always, ``transient`` only after an abnormal
exit (anything but ``"normal"``, ``"shutdown"`` or ``("shutdown", term)``),
``temporary`` never (its spec is dropped when it exits).

Restart intensity, and why it is bounded this way
-------------------------------------------------
Every restart is timestamped; if more than ``max_restarts`` happened within
the last ``max_seconds``, restarting is not fixing anything, so the
supervisor stops all its children (reverse order) and exits with reason
``"shutdown"``. Its own supervisor sees a child exit and applies *its*
strategy and intensity: a fault that restarts cannot cure climbs the tree
until some level can cure it, or the root gives up. A restart whose start
function fails counts as a restart too and is retried through a message the
supervisor sends itself, so the supervisor stays responsive between attempts
and the loop is bounded by the intensity.

Mailbox protocol
----------------
Calls (``which_children``, ``count_children``, ``start_child``,
``terminate_child``, ``restart_child``, ``delete_child``) arrive through
:func:`supervisors.call`; ``('EXIT', pid, reason)`` messages drive restarts;
``(RETRY, key)`` is the self-sent retry of a failed restart. An ``EXIT`` from
the parent (the process that started the supervisor) terminates it with that
reason; an ``EXIT`` from any other non-child process terminates it only for
``"shutdown"`` or ``("shutdown", term)`` (so ``exit(sup, "shutdown")`` works
from anywhere), and is otherwise ignored.

What it must never do: block a hub callback (all work happens in the
supervisor's own process), restart without bound, or leave a child running
after it has exited itself.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from supervisors.process import (
    Pid,
    Timeout,
    exit,
    flush_mailbox,
    link,
    monitor,
    receive,
    send,
    trap_exit,
    unlink,
)
from supervisors.registry import resolve
from supervisors.server import From, Server, call, start_server

__all__ = [
    "ChildSpec",
    "Supervisor",
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "start_supervisor",
    "stop_supervisor",
    "terminate_child",
    "which_children",
]

logger = logging.getLogger("supervisors")

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
Shutdown = float | Literal["brutal_kill", "infinity"]

_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
_RESTARTS = ("permanent", "transient", "temporary")
_TYPES = ("worker", "supervisor")
_RETRY = "$supervisor_retry"


@dataclass(frozen=True)
class ChildSpec:
    """How to start and stop one child.

    ``start(*args)`` runs in the supervisor's process and returns the child's
    Pid linked to the caller (``spawn_link``, ``start_server(..., link=True)``,
    ``start_supervisor(..., link=True)``); a Pid that is not linked yet is
    linked by the supervisor. Returning None means "nothing to supervise";
    raising is a start failure.

    ``on_exit(pid, reason, args)``, when given, runs in the supervisor's
    process each time a child started from this spec ends — whatever the
    reason, a crash before the child ran a single line and the supervisor's
    own stop included — with the arguments it was started with (for
    ``simple_one_for_one``: the ``start_child`` arguments). It is how a
    resource counted for a child is given back by the one process that always
    sees its end (the analogue of a custom OTP supervisor counting its
    children, as ranch's connection supervisor does). It must not block; an
    exception in it is logged and ignored.
    """

    id: Any
    start: Any
    args: tuple[Any, ...] = ()
    restart: Restart = "permanent"
    shutdown: Shutdown = 5.0
    type: Literal["worker", "supervisor"] = "worker"
    on_exit: Any = None

    def __post_init__(self) -> None:
        if not callable(self.start):
            raise ValueError(f"child {self.id!r}: start must be callable, not {self.start!r}")
        if self.restart not in _RESTARTS:
            raise ValueError(f"child {self.id!r}: restart must be one of {_RESTARTS}, not {self.restart!r}")
        if self.type not in _TYPES:
            raise ValueError(f"child {self.id!r}: type must be one of {_TYPES}, not {self.type!r}")
        if not (
            self.shutdown in ("brutal_kill", "infinity")
            or (isinstance(self.shutdown, int | float) and self.shutdown >= 0)
        ):
            raise ValueError(
                f"child {self.id!r}: shutdown must be seconds >= 0, 'brutal_kill' or 'infinity', "
                f"not {self.shutdown!r}"
            )
        if not isinstance(self.args, tuple):
            object.__setattr__(self, "args", tuple(self.args))
        if self.on_exit is not None and not callable(self.on_exit):
            raise ValueError(f"child {self.id!r}: on_exit must be callable, not {self.on_exit!r}")


class _Child:
    __slots__ = ("spec", "pid")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.pid: Pid | None = None


def _is_normal(reason: Any) -> bool:
    return (
        reason == "normal"
        or reason == "shutdown"
        or (type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown")
    )


def _should_restart(restart: str, reason: Any) -> bool:
    if restart == "permanent":
        return True
    if restart == "transient":
        return not _is_normal(reason)
    return False


def _down_of(ref: Any) -> Callable[[Any], bool]:
    return lambda m: type(m) is tuple and len(m) == 4 and m[0] == "DOWN" and m[1] is ref


def _exit_of(pid: Pid) -> Callable[[Any], bool]:
    return lambda m: type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] is pid


def _stop_process(pid: Pid, shutdown: Shutdown) -> Any:
    """Stop one child: ``exit(pid, "shutdown")``, wait ``shutdown`` s for it, then kill it."""
    ref = monitor(pid)
    unlink(pid)
    if not pid.is_alive:  # it may have exited already: forget its EXIT
        flush_mailbox(_exit_of(pid))
    is_down = _down_of(ref)
    if shutdown == "brutal_kill":
        exit(pid, "kill")
        return receive(is_down)[3]
    exit(pid, "shutdown")
    try:
        return receive(is_down, None if shutdown == "infinity" else shutdown)[3]
    except Timeout:
        exit(pid, "kill")
        return receive(is_down)[3]


def _stop_many(pids: list[Pid], shutdown: Shutdown) -> None:
    """Stop many children at once (simple_one_for_one): signal all, then wait on all."""
    refs = {}
    for pid in pids:
        refs[monitor(pid)] = pid
        unlink(pid)
        if not pid.is_alive:
            flush_mailbox(_exit_of(pid))
        exit(pid, "kill" if shutdown == "brutal_kill" else "shutdown")
    deadline = None if shutdown in ("brutal_kill", "infinity") else time.monotonic() + shutdown  # type: ignore[operator]

    def is_down(m: Any) -> bool:
        return type(m) is tuple and len(m) == 4 and m[0] == "DOWN" and m[1] in refs

    while refs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            refs.pop(receive(is_down, left)[1], None)
        except Timeout:
            for pid in refs.values():
                exit(pid, "kill")
            deadline = None


def _notify_exit(spec: ChildSpec, pid: Pid, reason: Any, args: tuple[Any, ...]) -> None:
    """Run the spec's ``on_exit`` for one ended child (never lets it break the supervisor)."""
    if spec.on_exit is None:
        return
    try:
        spec.on_exit(pid, reason, args)
    except Exception:
        logger.exception("supervisor: on_exit of child %r failed", spec.id)


class Supervisor(Server):
    """The supervisor process's state and callbacks; start one with :func:`start_supervisor`."""

    def init(
        self,
        children: list[ChildSpec],
        strategy: Strategy,
        max_restarts: int,
        max_seconds: float,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, not {strategy!r}")
        if max_restarts < 0 or max_seconds <= 0:
            raise ValueError(
                f"need max_restarts >= 0 and max_seconds > 0, got {max_restarts!r}, {max_seconds!r}"
            )
        for spec in children:
            if not isinstance(spec, ChildSpec):
                raise ValueError(f"children must be ChildSpec instances, not {spec!r}")
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate child ids in {ids!r}")
        if strategy == "simple_one_for_one" and len(children) != 1:
            raise ValueError("simple_one_for_one takes exactly one child spec (the template)")
        trap_exit(True)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.restarts: deque[float] = deque()
        self.children: list[_Child] = []
        self.template: ChildSpec | None = None
        self.dynamic: dict[Pid, tuple[Any, ...]] = {}
        if strategy == "simple_one_for_one":
            self.template = children[0]
            return
        for spec in children:
            child = _Child(spec)
            try:
                self._start(child)
            except BaseException as exc:
                self._stop_all()
                if isinstance(exc, Exception):
                    exc.add_note(f"while starting child {spec.id!r} of supervisor {self.pid!r}")
                raise
            self.children.append(child)

    # -- starting and stopping --------------------------------------------

    def _start(self, child: _Child) -> None:
        child.pid = self._adopt(child.spec.start(*child.spec.args), child.spec.id)

    def _adopt(self, pid: Any, child_id: Any) -> Pid | None:
        if pid is None:
            return None
        if not isinstance(pid, Pid):
            raise TypeError(f"child {child_id!r}: start returned {pid!r}, expected a Pid or None")
        link(pid)  # a no-op if start already linked it; an EXIT 'noproc' if it already died
        return pid

    def _stop(self, child: _Child) -> None:
        if child.pid is not None:
            pid = child.pid
            reason = _stop_process(pid, child.spec.shutdown)
            child.pid = None
            _notify_exit(child.spec, pid, reason, child.spec.args)

    def _stop_all(self) -> None:
        if self.template is not None:
            stopped = dict(self.dynamic)
            self.dynamic.clear()
            _stop_many(list(stopped), self.template.shutdown)
            for pid, args in stopped.items():
                _notify_exit(self.template, pid, "shutdown", args)
            return
        for child in reversed(self.children):
            self._stop(child)
        self.children = [c for c in self.children if c.spec.restart != "temporary"]

    def terminate(self, reason: Any) -> None:
        self._stop_all()

    # -- restarts -------------------------------------------------------------

    def _count_restart(self) -> bool:
        """Record a restart; False when the intensity is exceeded (and the supervisor stops)."""
        now = time.monotonic()
        restarts = self.restarts
        restarts.append(now)
        while restarts and restarts[0] < now - self.max_seconds:
            restarts.popleft()
        if len(restarts) > self.max_restarts:
            logger.error(
                "supervisor %r: more than %d restarts in %ss, shutting down",
                self.pid, self.max_restarts, self.max_seconds,
            )
            self.stop("shutdown")
            return False
        return True

    def handle_info(self, msg: Any) -> None:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT":
            self._child_exited(msg[1], msg[2])
        elif type(msg) is tuple and len(msg) == 2 and msg[0] == _RETRY:
            self._retry(msg[1])

    def _child_exited(self, pid: Pid, reason: Any) -> None:
        if self.template is not None:
            args = self.dynamic.pop(pid, None)
            if args is not None:
                _notify_exit(self.template, pid, reason, args)
                if _should_restart(self.template.restart, reason) and self._count_restart():
                    self._restart_dynamic(args)
                return
        else:
            for index, child in enumerate(self.children):
                if child.pid is pid:
                    child.pid = None
                    _notify_exit(child.spec, pid, reason, child.spec.args)
                    if child.spec.restart == "temporary":
                        del self.children[index]
                    elif _should_restart(child.spec.restart, reason) and self._count_restart():
                        self._restart(child)
                    return
        if _is_normal(reason) and reason != "normal":
            self.stop(reason)  # exit(sup, "shutdown") from outside the tree

    def _restart_dynamic(self, args: tuple[Any, ...]) -> None:
        spec = self.template
        assert spec is not None
        try:
            pid = self._adopt(spec.start(*spec.args, *args), spec.id)
        except Exception:
            logger.exception("supervisor %r: restarting a %r child failed", self.pid, spec.id)
            send(self.pid, (_RETRY, args))
            return
        if pid is not None:
            self.dynamic[pid] = args

    def _restart(self, child: _Child) -> None:
        """Restart ``child`` and, per the strategy, its group (stopping the others first)."""
        if self.strategy == "one_for_one":
            group = [child]
        else:
            first = 0 if self.strategy == "one_for_all" else self.children.index(child)
            group = self.children[first:]
            for other in reversed(group):
                if other is not child:
                    self._stop(other)
            group = [c for c in group if c is child or c.spec.restart != "temporary"]
            self.children = self.children[:first] + group
        for member in group:
            if member.pid is not None:
                continue
            try:
                self._start(member)
            except Exception:
                logger.exception("supervisor %r: restarting child %r failed", self.pid, member.spec.id)
                send(self.pid, (_RETRY, member.spec.id))
                return

    def _retry(self, key: Any) -> None:
        if not self._count_restart():
            return
        if self.template is not None:
            self._restart_dynamic(key)
            return
        for child in self.children:
            if child.spec.id == key:
                if child.pid is None:
                    self._restart(child)
                return

    # -- the API, as calls ------------------------------------------------------

    def handle_call(self, msg: Any, from_: From) -> Any:
        op, args = msg
        try:
            return ("ok", getattr(self, "_op_" + op)(*args))
        except Exception as exc:
            return ("error", exc)

    def _find(self, child_id: Any) -> _Child:
        for child in self.children:
            if child.spec.id == child_id:
                return child
        raise LookupError(f"supervisor {self.pid!r} has no child {child_id!r}")

    def _op_start_child(self, *args: Any) -> Pid | None:
        if self.template is not None:
            spec = self.template
            pid = self._adopt(spec.start(*spec.args, *args), spec.id)
            if pid is not None:
                self.dynamic[pid] = args
            return pid
        if len(args) != 1 or not isinstance(args[0], ChildSpec):
            raise TypeError(f"start_child on a {self.strategy} supervisor takes one ChildSpec")
        spec = args[0]
        if any(c.spec.id == spec.id for c in self.children):
            raise ValueError(f"supervisor {self.pid!r} already has a child {spec.id!r}")
        child = _Child(spec)
        self._start(child)
        self.children.append(child)
        return child.pid

    def _op_start_children(self, batch: list[tuple[Any, ...]]) -> list[Pid | BaseException | None]:
        if self.template is None:
            raise TypeError(f"start_children needs a simple_one_for_one supervisor, not {self.strategy}")
        started: list[Pid | BaseException | None] = []
        for args in batch:
            try:
                started.append(self._op_start_child(*args))
            except Exception as exc:
                started.append(exc)
        return started

    def _op_terminate_child(self, key: Any) -> None:
        if self.template is not None:
            if key not in self.dynamic:
                raise LookupError(f"supervisor {self.pid!r} has no child {key!r}")
            args = self.dynamic.pop(key)
            reason = _stop_process(key, self.template.shutdown)
            _notify_exit(self.template, key, reason, args)
            return
        child = self._find_by_id_or_pid(key)
        self._stop(child)
        if child.spec.restart == "temporary":
            self.children.remove(child)

    def _find_by_id_or_pid(self, key: Any) -> _Child:
        if isinstance(key, Pid):
            for child in self.children:
                if child.pid is key:
                    return child
        return self._find(key)

    def _op_restart_child(self, child_id: Any) -> Pid | None:
        if self.template is not None:
            raise TypeError("restart_child is not supported by simple_one_for_one supervisors")
        child = self._find(child_id)
        if child.pid is not None:
            raise ValueError(f"child {child_id!r} of {self.pid!r} is running; terminate it first")
        self._start(child)
        return child.pid

    def _op_delete_child(self, child_id: Any) -> None:
        if self.template is not None:
            raise TypeError("delete_child is not supported by simple_one_for_one supervisors")
        child = self._find(child_id)
        if child.pid is not None:
            raise ValueError(f"child {child_id!r} of {self.pid!r} is running; terminate it first")
        self.children.remove(child)

    def _op_which_children(self) -> list[tuple[Any, Pid | None, str]]:
        if self.template is not None:
            kind = self.template.type
            return [(None, pid, kind) for pid in self.dynamic]
        return [(c.spec.id, c.pid, c.spec.type) for c in self.children]

    def _op_count_children(self) -> dict[str, int]:
        if self.template is not None:
            n = len(self.dynamic)
            is_sup = self.template.type == "supervisor"
            return {"specs": 1, "active": n, "supervisors": n if is_sup else 0, "workers": 0 if is_sup else n}
        return {
            "specs": len(self.children),
            "active": sum(1 for c in self.children if c.pid is not None),
            "supervisors": sum(1 for c in self.children if c.spec.type == "supervisor"),
            "workers": sum(1 for c in self.children if c.spec.type == "worker"),
        }


# -- public functions -----------------------------------------------------------


def start_supervisor(
    children: list[ChildSpec],
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    max_seconds: float = 5.0,
    name: str | None = None,
    link: bool = False,
    label: str | None = None,
) -> Pid:
    """Start a supervisor and its children (in order); returns once all have started.

    A child that fails to start stops the ones already started (in reverse)
    and its exception is raised here (with a note naming the child).
    """
    return start_server(
        Supervisor, list(children), strategy, max_restarts, max_seconds,
        name=name, link=link, label=label or name or f"supervisor.{strategy}",
    )


def _sup_call(sup: Pid | str, op: str, *args: Any, timeout: float | None = None) -> Any:
    status, value = call(sup, (op, args), timeout)
    if status == "error":
        raise value
    return value


def start_child(sup: Pid | str, *args: Any) -> Pid | None:
    """Add a child: ``start_child(sup, spec)``, or ``start_child(sup, *extra_args)`` for simple_one_for_one."""
    return _sup_call(sup, "start_child", *args)


def start_children(sup: Pid | str, batch: list[tuple[Any, ...]]) -> list[Pid | BaseException | None]:
    """``start_child(sup, *args)`` for each ``args`` in ``batch``, in one call (simple_one_for_one).

    One result per entry, in order: the pid (or ``None``), or the exception that
    entry's start raised (the others still start).
    """
    return _sup_call(sup, "start_children", batch)


def terminate_child(sup: Pid | str, id_or_pid: Any) -> None:
    """Stop a child (by id; by pid for simple_one_for_one); its spec stays unless temporary."""
    _sup_call(sup, "terminate_child", id_or_pid)


def restart_child(sup: Pid | str, child_id: Any) -> Pid | None:
    """Start again a terminated child (by id)."""
    return _sup_call(sup, "restart_child", child_id)


def delete_child(sup: Pid | str, child_id: Any) -> None:
    """Remove the spec of a terminated child (by id)."""
    _sup_call(sup, "delete_child", child_id)


def which_children(sup: Pid | str) -> list[tuple[Any, Pid | None, str]]:
    """``[(id, pid or None, type)]`` in start order (id None for simple_one_for_one)."""
    return _sup_call(sup, "which_children")


def count_children(sup: Pid | str) -> dict[str, int]:
    """``{"specs", "active", "supervisors", "workers"}`` counts."""
    return _sup_call(sup, "count_children")


def stop_supervisor(sup: Pid | str, timeout: float | None = 30.0) -> Any:
    """Shut ``sup`` down (children stopped in reverse order) and wait; returns its exit reason.

    The caller is unlinked first: stopping is intentional and must not kill
    or message the caller. After ``timeout`` seconds the supervisor is killed.
    """
    pid = resolve(sup)
    if pid is None:
        return "noproc"
    ref = monitor(pid)
    unlink(pid)
    is_down = _down_of(ref)
    exit(pid, "shutdown")
    try:
        return receive(is_down, timeout)[3]
    except Timeout:
        exit(pid, "kill")
        return receive(is_down)[3]

