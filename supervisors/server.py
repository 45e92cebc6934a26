"""A generic server (Erlang's gen_server): one process, one state, three kinds of message.

What it is
----------
Subclass :class:`Server`, override the callbacks, start it with
:func:`start_server`; clients use :func:`call` (request/reply),
:func:`cast` (fire and forget) or plain ``send`` (handled by
``handle_info``).

Mailbox protocol (what a server process accepts)
------------------------------------------------
- ``(CALL, (caller_pid, ref), msg)`` -- from :func:`call`; answered with
  ``(REPLY, ref, value)`` sent to ``caller_pid``;
- ``(CAST, msg)`` -- from :func:`cast`;
- ``('EXIT', parent, reason)`` -- when the server traps exits and its parent
  (the process that started it) sends an exit signal: ``terminate(reason)``
  runs and the server exits with ``reason``, as in OTP;
- anything else goes to ``handle_info``.

Errors a caller sees
--------------------
- :class:`CallTimeout` (a :class:`supervisors.Timeout`): no reply within
  ``timeout``. A reply arriving later is dropped, never queued: ``reply``
  only delivers while the caller still monitors the call's reference.
- :class:`NoProc` (a :class:`CallError`): the server was not alive when
  called (``reason == "noproc"``), or exited before replying (``reason`` is
  its exit reason: the exception a callback raised, ``"shutdown"``, ...).

What it owns: the server loop and the call protocol. What it must never do:
swallow a callback's exception (it becomes the exit reason, after
``terminate``), or leave a monitor or a stray DOWN/reply in the caller's
mailbox after a call returns or raises.
"""

from __future__ import annotations

from typing import Any

from supervisors.process import (
    Exit,
    Pid,
    Timeout,
    _current,
    demonitor,
    is_monitoring,
    monitor,
    receive,
    send,
    spawn,
    unlink,
)
from supervisors.registry import register, resolve

__all__ = [
    "NOREPLY",
    "CallError",
    "CallTimeout",
    "NoProc",
    "Server",
    "call",
    "cast",
    "reply",
    "start_server",
]


class _Tag:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CALL = _Tag("CALL")
CAST = _Tag("CAST")
REPLY = _Tag("REPLY")
_STARTED = _Tag("STARTED")
_INIT_FAILED = _Tag("INIT_FAILED")
NOREPLY: Any = _Tag("NOREPLY")
"""Return this from ``handle_call`` to answer later with ``reply(from_, value)``."""

_RUNNING = _Tag("RUNNING")


class CallError(Exception):
    """A call failed; ``dest`` is what was called and ``reason`` why."""

    def __init__(self, dest: Any, reason: Any) -> None:
        super().__init__(f"call to {dest!r} failed: {reason!r}")
        self.dest = dest
        self.reason = reason


class NoProc(CallError):
    """The server is not alive, or exited (with ``reason``) before replying."""


class CallTimeout(Timeout):
    """No reply to a call within its timeout."""

    def __init__(self, dest: Any, timeout: float | None) -> None:
        super().__init__(f"call to {dest!r} timed out after {timeout}s")
        self.dest = dest
        self.timeout = timeout


From = tuple[Pid, Any]


class Server:
    """Base class of generic servers; override the callbacks you need.

    The instance lives inside the server process; ``self.pid`` is its Pid.
    """

    pid: Pid

    def init(self, *args: Any) -> None:
        """Runs in the new process before ``start_server`` returns; raise to refuse to start."""

    def handle_call(self, msg: Any, from_: From) -> Any:
        """Answer a ``call``: return the reply, or ``NOREPLY`` and ``reply(from_, value)`` later."""
        raise NotImplementedError(f"{type(self).__name__} does not handle call {msg!r}")

    def handle_cast(self, msg: Any) -> None:
        """Handle a ``cast``."""
        raise NotImplementedError(f"{type(self).__name__} does not handle cast {msg!r}")

    def handle_info(self, msg: Any) -> None:
        """Handle any other message (ignored by default)."""

    def terminate(self, reason: Any) -> None:
        """Runs once when the loop ends (stop, callback crash, parent's exit signal)."""

    def stop(self, reason: Any = "normal") -> None:
        """End the loop after the current callback; the process exits with ``reason``."""
        self._stop_reason = reason

    _stop_reason: Any = _RUNNING


def start_server(
    cls: type[Server], *args: Any, name: str | None = None, link: bool = False, **spawn_opts: Any
) -> Pid:
    """Start ``cls`` in a new process and return its Pid once ``init(*args)`` has returned.

    If ``init`` raises (or ``name`` is taken), that exception is raised here
    and the process is gone; it unlinks from the caller first, so a failed
    start never also kills the caller. ``spawn_opts`` are ``spawn`` options.
    """
    spawn_opts.setdefault("label", name or cls.__name__)
    spawn_opts.pop("monitor", None)
    parent = _current().pid
    pid, ref = spawn(_serve, cls, args, parent, name, link=link, monitor=True, **spawn_opts)
    msg = receive(
        lambda m: type(m) is tuple
        and len(m) >= 2
        and ((m[1] is pid and (m[0] is _STARTED or m[0] is _INIT_FAILED)) or m[1] is ref)
    )
    demonitor(ref, flush=True)
    if msg[0] is _STARTED:
        return pid
    if msg[0] is _INIT_FAILED:
        raise msg[2]
    raise NoProc(cls.__name__, msg[3])


def _serve(cls: type[Server], args: tuple[Any, ...], parent: Pid, name: str | None) -> None:
    me = _current()
    try:
        server = cls()
        server.pid = me.pid
        if name is not None:
            register(name, me.pid)
        server.init(*args)
    except BaseException as exc:
        if isinstance(exc, Exit):
            raise
        unlink(parent)
        send(parent, (_INIT_FAILED, me.pid, exc))
        raise Exit(exc) from None
    send(parent, (_STARTED, me.pid))
    _loop(server, me, parent)


def _loop(server: Server, me: Any, parent: Pid) -> None:
    reason: Any = "normal"
    try:
        while server._stop_reason is _RUNNING:
            msg = receive()
            if type(msg) is tuple and len(msg) == 3:
                tag = msg[0]
                if tag is CALL:
                    from_ = msg[1]
                    result = server.handle_call(msg[2], from_)
                    if result is not NOREPLY:
                        reply(from_, result)
                    continue
                if tag == "EXIT" and msg[1] is parent and me.trap:
                    server._stop_reason = msg[2]
                    break
            elif type(msg) is tuple and len(msg) == 2 and msg[0] is CAST:
                server.handle_cast(msg[1])
                continue
            server.handle_info(msg)
        reason = server._stop_reason
    except Exit:
        raise  # killed: as in OTP, terminate does not run
    except BaseException as exc:
        server.terminate(exc)
        raise
    server.terminate(reason)
    if reason != "normal":
        raise Exit(reason)


def reply(from_: From, value: Any) -> None:
    """Answer a call received by ``handle_call`` (dropped if the caller gave up waiting)."""
    pid, ref = from_
    if is_monitoring(pid, ref):
        send(pid, (REPLY, ref, value))


def call(dest: Pid | str, msg: Any, timeout: float | None = 5.0) -> Any:
    """Send ``msg`` to the server ``dest`` and wait for its reply (``timeout=None``: forever).

    Raises :class:`CallTimeout` or :class:`NoProc` (see the module doc).
    """
    pid = resolve(dest)
    if pid is None:
        raise NoProc(dest, "noproc")
    me = _current()
    ref = monitor(pid)
    send(pid, (CALL, (me.pid, ref), msg))
    try:
        answer = receive(lambda m: type(m) is tuple and len(m) >= 3 and m[1] is ref, timeout)
    except Timeout:
        demonitor(ref, flush=True)
        raise CallTimeout(dest, timeout) from None
    if answer[0] is REPLY:
        demonitor(ref, flush=True)
        return answer[2]
    raise NoProc(dest, answer[3])


def cast(dest: Pid | str, msg: Any) -> None:
    """Send ``msg`` to the server ``dest`` without waiting (never fails)."""
    send(dest, (CAST, msg))
