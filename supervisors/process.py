"""Processes: greenlets with a mailbox, links, monitors and exit signals.

What this module is
-------------------
The core of ``supervisors``: Erlang's process model on gevent. A process is a
raw greenlet (parented to the gevent hub) plus a :class:`Process` record that
owns its mailbox, its links, its monitors and its heap budget. Everything
above (registry, server, supervisor) is built from the functions here:
``spawn``, ``send``, ``receive``, ``exit``, ``link``, ``monitor``.

What it owns
------------
- the process table (live processes only; a process is removed the moment it
  exits, and its :class:`Pid` drops its reference to the record, so a dead
  process keeps nothing alive but the tiny ``Pid`` object its holders hold);
- the name table used by :mod:`supervisors.registry` (names are dropped here,
  at exit, so no dead process is ever reachable by name);
- exit-signal delivery and the exit reasons (table in ``docs/supervisors.md``).

What it must never do
---------------------
- block inside a hub callback: every wake-up and every exit signal is a hub
  callback that only switches into, or throws into, the target greenlet;
- let an exception escape a process greenlet into the hub (gevent would print
  it on stderr): a crash is logged once on the ``"supervisors"`` logger and
  becomes the exit reason;
- monkey-patch anything.

Theory of operation
-------------------
``send`` appends to the receiver's ``deque`` and, when the receiver is parked
in ``receive``, schedules one pre-bound resume callback with
``hub.loop.run_callback`` (the same wake-up gevent's own queues use). The
``waiting`` flag makes sure a parked receiver is scheduled at most once, and
the ``blocked`` flag makes a stale resume a no-op, so a wake-up can never be
delivered to a greenlet that is blocked on something else (a socket, say).

Exit signals are asynchronous, as in Erlang: ``exit(pid, reason)`` either
queues an ``('EXIT', sender, reason)`` message (trapping target) or schedules
a hub callback that throws :class:`Exit` into the target, which therefore
dies at its next switch. A process that never switches cannot be killed; that
is the price of cooperative scheduling.

Adopted greenlets
-----------------
``self()`` called from a greenlet that ``spawn`` did not create (the main
greenlet, a ``gevent.spawn`` greenlet, a test) *adopts* it: the greenlet gets
a Pid and a mailbox so it can ``receive`` replies, ``DOWN`` and ``EXIT``
messages. An adopted greenlet always behaves as if trapping exits: every exit
signal sent to it, ``"kill"`` included, becomes an ``('EXIT', sender,
reason)`` message, and a link never kills it -- we cannot safely throw into
a greenlet whose code does not expect it. It is forgotten when the greenlet
finishes (``gevent.Greenlet``) or is garbage collected (raw greenlets).

Recycled greenlets
------------------
A process is a :class:`Process` record; the greenlet that runs it is not
its identity. When a spawned process ends (links signalled, monitors fired,
the record forgotten), its greenlet parks itself in ``_host`` and the next
``spawn`` runs its new process there: on Python 3.11+ every new greenlet
maps (``mmap``) a fresh frame stack on its first call and unmaps it at its
end, which made spawn + exit ~4x dearer than a switch and a message. A
recycled greenlet starts each process with empty context variables
(``gr_context``) and none of the attributes the last one set on it; what is
keyed on the greenlet object itself (``gevent.local``, a lock's owner) is
not reset -- keep per-process state in the process. A parked greenlet
ignores any stray switch or throw (meant for the ended process) until
``spawn`` hands it a process. At most ``IDLE_GREENLETS`` are parked, and
those no spawn needed within ``TRIM_PERIOD`` seconds are let go (a loop
timer that keeps no loop alive).

Bounded mailboxes: why ``"kill"`` is the default overflow policy
-----------------------------------------------------------------
``mailbox_limit=N`` bounds the queue. When a send would make it longer than
N, the default policy ``"kill"`` drops the message and ends the receiver with
reason ``"mailbox_overflow"`` (untrappable, like ``max_heap``). A receiver
that cannot keep up is overloaded, and silently losing messages such as
``DOWN``, ``EXIT`` or call replies would leave it running in a state nobody
can reason about; killing it turns overload into an ordinary crash that links
and supervisors already handle. ``"drop"`` is offered for processes whose
messages are disposable hints (metrics, progress ticks): the new message is
dropped and counted in ``process_info(pid).dropped``.

Heap budget
-----------
``max_heap=N`` bounds what a process buffers: queued messages (estimated by
:func:`estimate_size`) plus whatever it ``charge``\\ s itself for (request
bodies, send queues). Mailbox sizes are only tracked for processes with a
budget, so processes without one pay nothing on the hot path;
``process_info`` computes their mailbox estimate on demand.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, overload

from gevent import get_hub
from greenlet import GreenletExit as RawGreenletExit
from greenlet import error as RawGreenletError
from greenlet import getcurrent
from greenlet import greenlet as RawGreenlet

__all__ = [
    "Exit",
    "Pid",
    "Ref",
    "Timeout",
    "charge",
    "demonitor",
    "estimate_size",
    "exit",
    "link",
    "mailbox_size",
    "monitor",
    "receive",
    "release",
    "self",
    "send",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "trap_exit",
    "unlink",
]

logger = logging.getLogger("supervisors")

OverflowPolicy = Literal["kill", "drop"]


class Timeout(Exception):
    """``receive`` (or a ``call``) waited ``timeout`` seconds for a matching message."""


class Exit(BaseException):
    """Ends the process it is raised in, with ``reason`` as its exit reason.

    Raise it to end the current process with a reason of your choosing; the
    runtime throws it into a process to deliver an exit signal. It is a
    ``BaseException`` so that ``except Exception`` in user code does not
    swallow a kill.
    """

    def __init__(self, reason: Any = "normal") -> None:
        super().__init__(reason)
        self.reason = reason


_ids = itertools.count(1)
_OTHER_OBJECT_COST = 64  # bytes charged for a queued object that is not bytes-like or a sequence
_TIMED_OUT = object()  # value the receive timer switches in with

_processes: dict[int, Process] = {}
_names: dict[str, Process] = {}


class Pid:
    """An opaque handle on a process; hashable, cheap, safe to keep after the process died."""

    __slots__ = ("_id", "_label", "_proc", "__weakref__")

    def __init__(self, ident: int, label: str | None, proc: Process) -> None:
        self._id = ident
        self._label = label
        self._proc: Process | None = proc

    @property
    def id(self) -> int:
        return self._id

    @property
    def label(self) -> str | None:
        return self._label

    @property
    def is_alive(self) -> bool:
        proc = self._proc
        if proc is None:
            return False
        if proc.adopted:
            return proc.check_adopted_alive()
        return True

    def __repr__(self) -> str:
        if self._label:
            return f"<Pid {self._id} {self._label}>"
        return f"<Pid {self._id}>"


class Ref:
    """A unique reference, as returned by ``monitor``; used to tag DOWN messages and calls."""

    __slots__ = ("_id",)

    def __init__(self) -> None:
        self._id = next(_ids)

    def __repr__(self) -> str:
        return f"<Ref {self._id}>"


# The mailbox of every process that has not received a message yet: never appended to
# (``_deliver`` replaces it with the process's own deque first).
_NO_MAIL: deque[Any] = deque()


class Process:
    """The runtime record of one process. Private to the package: hand out its ``pid``."""

    __slots__ = (
        "pid",
        "label",
        "greenlet",
        "switch",
        "resume",
        "mailbox",
        "sizes",
        "heap",
        "charged",
        "max_heap",
        "mailbox_limit",
        "overflow",
        "dropped",
        "links",
        "monitors",
        "watchers",
        "trap",
        "adopted",
        "started",
        "alive",
        "waiting",
        "blocked",
        "pending_exit",
        "name",
        "fn",
        "args",
    )

    def __init__(self, label: str | None) -> None:
        ident = next(_ids)
        self.pid = Pid(ident, label, self)
        self.label = label
        self.greenlet: Any = None
        self.switch: Callable[..., Any] = _noop
        self.resume = self._resume
        # Shared and empty until the first message arrives (_deliver gives it its own).
        self.mailbox: deque[Any] = _NO_MAIL
        self.sizes: deque[int] | None = None
        self.heap = 0
        self.charged = 0
        self.max_heap: int | None = None
        self.mailbox_limit: int | None = None
        self.overflow: OverflowPolicy = "kill"
        self.dropped = 0
        self.links: set[Process] | None = None
        self.monitors: dict[Ref, Process] | None = None  # refs this process holds
        self.watchers: dict[Ref, Process] | None = None  # refs others hold on this process
        self.trap = False
        self.adopted = False
        self.started = False
        self.alive = True
        self.waiting = False
        self.blocked = False
        self.pending_exit: Any = None
        self.name: str | None = None
        self.fn: Callable[..., Any] | None = None
        self.args: tuple[Any, ...] = ()
        _processes[ident] = self

    def _resume(self) -> None:
        # Hub callback scheduled by ``send``: only wake the greenlet if it is
        # still parked in ``receive`` (never a socket wait it moved on to).
        if self.blocked:
            self.switch()

    def _on_timer(self) -> None:
        if self.blocked:
            self.waiting = False
            self.switch(_TIMED_OUT)

    def _deliver_exit(self) -> None:
        # Hub callback: throw the pending exit into the greenlet. A process
        # that has not started yet sees ``pending_exit`` in ``_run`` instead.
        if self.alive and self.started and self.pending_exit is not None:
            reason = self.pending_exit
            self.pending_exit = None
            self.greenlet.throw(Exit(reason))

    def check_adopted_alive(self) -> bool:
        if self.alive:
            g = self.greenlet()
            if g is None or g.dead:
                _finish(self, "normal")
        return self.alive


def _noop(*args: Any) -> None:
    return None


# -- spawning ---------------------------------------------------------------


class _ProcessGreenlet(RawGreenlet):
    __slots__ = ("sv_proc",)


# Greenlets whose process ended, each parked in ``_host`` to run a later process (see
# "Recycled greenlets" in the module doc): at most IDLE_GREENLETS, and every TRIM_PERIOD
# seconds those no spawn needed during the period (the pool's low-water mark) are let go.
IDLE_GREENLETS = 1024
TRIM_PERIOD = 5.0
_idle: list[_ProcessGreenlet] = []
_idle_low = 0  # the fewest parked greenlets since the last trim
_trim_timer: Any = None


def _trim() -> None:
    """Loop timer callback: let go of the greenlets no spawn needed since the last trim."""
    global _idle_low
    if _idle_low:
        let_go = _idle[:_idle_low]
        del _idle[:_idle_low]
        here = getcurrent()  # the hub (the timer), or a test
        for g in let_go:
            try:
                g.parent = here  # ended, it comes back here
                g.throw()  # GreenletExit: ``_host`` returns
            except RawGreenletError:  # another thread's hub parked it: dropped, not ended here
                pass
    _idle_low = len(_idle)


def _start_trim(hub: Any) -> None:
    global _trim_timer
    _trim_timer = hub.loop.timer(TRIM_PERIOD, TRIM_PERIOD, ref=False)  # keeps no loop alive
    _trim_timer.start(_trim)


def _host(proc: Process) -> None:
    """The body of every process greenlet: run ``proc``, then park for the next one."""
    g: Any = getcurrent()
    hub = g.parent
    idle = _idle
    while True:
        _run(proc)
        del proc
        if len(idle) >= IDLE_GREENLETS:
            return
        g.sv_proc = None
        g.gr_context = None  # the next process starts with empty context variables
        if g.__dict__:
            g.__dict__.clear()  # attributes its last process set on its greenlet
        idle.append(g)
        if _trim_timer is None:
            _start_trim(hub)
        while True:
            try:
                nxt = hub.switch()
            except RawGreenletExit:
                if g in idle:
                    idle.remove(g)
                return
            except BaseException:  # noqa: BLE001, S112 - a stray throw meant for an ended process
                continue
            # Only ``spawn`` hands a greenlet a process; any other switch in is stale.
            if type(nxt) is Process and nxt.greenlet is g and not nxt.started:
                proc, nxt = nxt, None  # only ``proc`` refers to it, and is deleted when it ended
                break


@overload
def spawn(
    fn: Callable[..., Any],
    *args: Any,
    label: str | None = ...,
    link: bool = ...,
    monitor: Literal[False] = ...,
    trap_exit: bool = ...,
    mailbox_limit: int | None = ...,
    mailbox_overflow: OverflowPolicy = ...,
    max_heap: int | None = ...,
) -> Pid: ...


@overload
def spawn(
    fn: Callable[..., Any],
    *args: Any,
    label: str | None = ...,
    link: bool = ...,
    monitor: Literal[True],
    trap_exit: bool = ...,
    mailbox_limit: int | None = ...,
    mailbox_overflow: OverflowPolicy = ...,
    max_heap: int | None = ...,
) -> tuple[Pid, Ref]: ...


def spawn(
    fn: Callable[..., Any],
    *args: Any,
    label: str | None = None,
    link: bool = False,
    monitor: bool = False,
    trap_exit: bool = False,
    mailbox_limit: int | None = None,
    mailbox_overflow: OverflowPolicy = "kill",
    max_heap: int | None = None,
) -> Pid | tuple[Pid, Ref]:
    """Start ``fn(*args)`` in a new process; keyword arguments are spawn options only.

    ``link``/``monitor`` link or monitor the caller to the new process before
    it runs (with ``monitor=True`` the result is ``(pid, ref)``).
    """
    if mailbox_overflow not in ("kill", "drop"):
        raise ValueError(f"mailbox_overflow must be 'kill' or 'drop', not {mailbox_overflow!r}")
    if mailbox_limit is not None and mailbox_limit < 0:
        raise ValueError(f"mailbox_limit must be >= 0, not {mailbox_limit!r}")
    if max_heap is not None and max_heap < 0:
        raise ValueError(f"max_heap must be >= 0, not {max_heap!r}")
    caller = _current() if (link or monitor) else None
    hub = get_hub()
    proc = Process(label)
    proc.fn = fn
    proc.args = args
    proc.trap = trap_exit
    proc.mailbox_limit = mailbox_limit
    proc.overflow = mailbox_overflow
    if max_heap is not None:
        proc.max_heap = max_heap
        proc.sizes = deque()
    global _idle_low
    g = None
    if _idle:
        g = _idle.pop()
        if len(_idle) < _idle_low:
            _idle_low = len(_idle)
    if g is None or g.parent is not hub or g.dead:
        g = _ProcessGreenlet(_host, hub)
    g.sv_proc = proc
    proc.greenlet = g
    proc.switch = g.switch
    ref = None
    if caller is not None:
        if link:
            _add_link(caller, proc)
        if monitor:
            ref = _add_monitor(caller, proc)
    hub.loop.run_callback(g.switch, proc)
    if ref is not None:
        return proc.pid, ref
    return proc.pid


def spawn_link(fn: Callable[..., Any], *args: Any, **opts: Any) -> Pid:
    """``spawn(fn, *args, link=True, **opts)``."""
    opts["link"] = True
    return spawn(fn, *args, **opts)


def spawn_monitor(fn: Callable[..., Any], *args: Any, **opts: Any) -> tuple[Pid, Ref]:
    """``spawn(fn, *args, monitor=True, **opts)``: returns ``(pid, ref)``."""
    opts["monitor"] = True
    return spawn(fn, *args, **opts)


def _run(proc: Process) -> None:
    proc.started = True
    fn = proc.fn
    args = proc.args
    proc.fn = None
    proc.args = ()
    reason: Any = "normal"
    if proc.pending_exit is not None:
        reason = _dying_reason(proc.pending_exit)
    else:
        try:
            fn(*args)  # type: ignore[misc]
        except Exit as exc:
            reason = _dying_reason(exc.reason)
        except BaseException as exc:  # noqa: BLE001 - every crash becomes an exit reason
            if type(exc).__name__ == "GreenletExit":
                reason = "killed"
            else:
                reason = exc
                _log_crash(proc, exc)
        del fn, args
    _finish(proc, reason)


def _dying_reason(reason: Any) -> Any:
    return "killed" if reason == "kill" else reason


def _log_crash(proc: Process, exc: BaseException) -> None:
    try:
        logger.error(
            "process %r crashed: %s: %s", proc.pid, type(exc).__name__, exc,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
    except Exception:  # a broken handler must not stop the exit protocol
        pass


def _finish(proc: Process, reason: Any) -> None:
    """Exit bookkeeping; never switches. Signals links, fires monitors, forgets the process."""
    if not proc.alive:
        return
    proc.alive = False
    pid = proc.pid
    _processes.pop(pid._id, None)
    pid._proc = None
    if proc.name is not None:
        _names.pop(proc.name, None)
        proc.name = None
    proc.mailbox.clear()
    proc.sizes = None
    proc.heap = proc.charged = 0
    monitors = proc.monitors
    if monitors:
        proc.monitors = None
        for ref, target in monitors.items():
            if target.watchers:
                target.watchers.pop(ref, None)
    watchers = proc.watchers
    if watchers:
        proc.watchers = None
        for ref, watcher in watchers.items():
            if watcher.monitors:
                watcher.monitors.pop(ref, None)
            _deliver(watcher, ("DOWN", ref, pid, reason))
    links = proc.links
    if links:
        proc.links = None
        for other in links:
            if other.links:
                other.links.discard(proc)
            _signal(other, pid, reason)
    proc.greenlet = None
    proc.switch = _noop
    proc.resume = _noop


# -- the current process ----------------------------------------------------


def _current() -> Process:
    g = getcurrent()
    proc = getattr(g, "sv_proc", None)
    if proc is not None and proc.alive:
        return proc
    return _adopt(g)


def _adopt(g: Any) -> Process:
    hub = get_hub()
    if g is hub:
        raise RuntimeError("the gevent hub cannot be a process (called from a hub callback?)")
    proc = Process("main" if g.parent is None else getattr(g, "name", None))
    proc.adopted = True
    proc.trap = True
    proc.started = True

    def on_collected(_ref: Any, proc: Process = proc) -> None:
        _finish(proc, "normal")

    gref = weakref.ref(g, on_collected)
    proc.greenlet = gref

    def switch(*args: Any) -> Any:
        target = gref()
        if target is not None and not target.dead:
            return target.switch(*args)
        return None

    proc.switch = switch
    proc.resume = proc._resume
    rawlink = getattr(g, "rawlink", None)
    if rawlink is not None:  # a gevent.Greenlet: forget it the moment it finishes

        def on_finished(glet: Any, proc: Process = proc) -> None:
            exc = getattr(glet, "exception", None)
            _finish(proc, exc if exc is not None else "normal")

        rawlink(on_finished)
    g.sv_proc = proc
    return proc


def self() -> Pid:
    """The calling process's Pid (adopting the calling greenlet if needed; see module doc)."""
    return _current().pid


# -- messages ---------------------------------------------------------------


def estimate_size(msg: Any) -> int:
    """Bytes a queued message counts against ``max_heap`` (a cheap, shallow estimate)."""
    t = type(msg)
    if t is bytes or t is str or t is bytearray:
        return len(msg)
    if t is memoryview:
        return msg.nbytes
    if t is tuple or t is list:
        total = 0
        for item in msg:
            it = type(item)
            if it is bytes or it is str or it is bytearray:
                total += len(item)
            elif it is memoryview:
                total += item.nbytes
            else:
                total += _OTHER_OBJECT_COST
        return total
    return _OTHER_OBJECT_COST


def send(dest: Pid | str, msg: Any) -> None:
    """Queue ``msg`` for ``dest`` (a Pid or a registered name); dropped if nobody is there.

    A registered name that is not (or no longer) registered drops the message
    too: the common cause is a process that just died, and a send racing a
    death must not raise.
    """
    if type(dest) is Pid:
        proc = dest._proc
    else:
        proc = _names.get(dest)  # type: ignore[arg-type]
    if proc is not None:
        _deliver(proc, msg)


def _admit(proc: Process, msg: Any) -> bool:
    limit = proc.mailbox_limit
    if limit is not None and len(proc.mailbox) >= limit:
        if proc.overflow == "drop":
            proc.dropped += 1
        else:
            proc.dropped += 1
            _kill(proc, "mailbox_overflow")
        return False
    sizes = proc.sizes
    if sizes is not None:
        size = estimate_size(msg)
        if proc.heap + proc.charged + size > proc.max_heap:  # type: ignore[operator]
            proc.dropped += 1
            _kill(proc, "max_heap")
            return False
        proc.heap += size
        sizes.append(size)
    return True


def _deliver(proc: Process, msg: Any) -> None:
    """Queue ``msg`` and wake ``proc``: user messages and runtime ones (DOWN, EXIT)
    alike, under the same limits."""
    if not proc.alive:
        return
    if (proc.mailbox_limit is not None or proc.sizes is not None) and not _admit(proc, msg):
        return
    mailbox = proc.mailbox
    if mailbox is _NO_MAIL:  # the first message: a process that never gets one never pays for a deque
        mailbox = proc.mailbox = deque()
    mailbox.append(msg)
    if proc.waiting:
        proc.waiting = False
        get_hub().loop.run_callback(proc.resume)


def receive(match: Callable[[Any], Any] | None = None, timeout: float | None = None) -> Any:
    """Return the first queued message for which ``match(msg)`` is truthy (any message if None).

    Messages that do not match stay queued, in order. Waits up to ``timeout``
    seconds (forever if None; ``0`` polls) and raises :class:`Timeout`. While
    waiting only newly arrived messages are matched.
    """
    proc = _current()
    mailbox = proc.mailbox
    if match is None:
        if mailbox:
            return _take_first(proc)
    else:
        index = _scan(mailbox, match, 0)
        if index >= 0:
            return _take_at(proc, index)
    if timeout is not None and timeout <= 0:
        raise Timeout(f"no matching message (timeout={timeout})")
    hub = get_hub()
    if getcurrent() is hub:
        raise RuntimeError("receive() would block the gevent hub")
    timer = None
    if timeout is not None:
        timer = hub.loop.timer(timeout)
        timer.start(proc._on_timer)
    scanned = len(mailbox)
    hub_switch = hub.switch
    try:
        while True:
            proc.waiting = True
            proc.blocked = True
            try:
                woke = hub_switch()
            finally:
                proc.blocked = False
                proc.waiting = False
            mailbox = proc.mailbox  # its own deque now if this wake brought the first message
            if match is None:
                if mailbox:
                    return _take_first(proc)
            else:
                index = _scan(mailbox, match, scanned)
                if index >= 0:
                    return _take_at(proc, index)
                scanned = len(mailbox)
            if woke is _TIMED_OUT:
                raise Timeout(f"no matching message within {timeout}s")
    finally:
        if timer is not None:
            timer.close()


def _scan(mailbox: deque[Any], match: Callable[[Any], Any], start: int) -> int:
    if start >= len(mailbox):
        return -1
    it = iter(mailbox) if start == 0 else itertools.islice(mailbox, start, None)
    for index, msg in enumerate(it, start):
        if match(msg):
            return index
    return -1


def _take_first(proc: Process) -> Any:
    msg = proc.mailbox.popleft()
    sizes = proc.sizes
    if sizes is not None:
        proc.heap -= sizes.popleft()
    return msg


def _take_at(proc: Process, index: int) -> Any:
    mailbox = proc.mailbox
    if index == 0:
        return _take_first(proc)
    msg = mailbox[index]
    del mailbox[index]
    sizes = proc.sizes
    if sizes is not None:
        proc.heap -= sizes[index]
        del sizes[index]
    return msg


def mailbox_size(pid: Pid | None = None) -> int:
    """Number of queued messages of ``pid`` (the caller if None); 0 for a dead pid."""
    if pid is None:
        return len(_current().mailbox)
    proc = pid._proc
    return 0 if proc is None else len(proc.mailbox)


def flush_mailbox(match: Callable[[Any], Any] | None = None) -> int:
    """Drop the caller's queued messages (those matching ``match``); returns how many."""
    proc = _current()
    mailbox = proc.mailbox
    dropped = 0
    index = 0
    while index < len(mailbox):
        if match is None or match(mailbox[index]):
            _take_at(proc, index)
            dropped += 1
        else:
            index += 1
    return dropped


# -- heap budget ------------------------------------------------------------


def charge(nbytes: int) -> None:
    """Count ``nbytes`` the caller buffers against its ``max_heap``; over budget ends it now."""
    proc = _current()
    proc.charged += nbytes
    if proc.max_heap is not None and proc.heap + proc.charged > proc.max_heap and not proc.adopted:
        proc.pending_exit = "max_heap"
        raise Exit("max_heap")


def release(nbytes: int) -> None:
    """Give back ``nbytes`` previously charged."""
    proc = _current()
    proc.charged = max(0, proc.charged - nbytes)


# -- exit signals -----------------------------------------------------------


def _kill(proc: Process, reason: Any) -> None:
    """Make ``proc`` die with ``reason`` at its next switch (untrappable)."""
    if not proc.alive:
        return
    if proc.adopted:
        _deliver(proc, ("EXIT", None, reason))
        return
    if proc.pending_exit is None or reason == "kill":
        first = proc.pending_exit is None
        proc.pending_exit = reason
        if first and proc.started:
            get_hub().loop.run_callback(proc._deliver_exit)


def _signal(target: Process, sender: Pid | None, reason: Any) -> None:
    """Deliver a (trappable) exit signal from ``sender``: a message, a kill, or nothing."""
    if not target.alive:
        return
    if target.trap or target.adopted:
        _deliver(target, ("EXIT", sender, reason))
    elif reason != "normal":
        _kill(target, reason)


def exit(pid: Pid, reason: Any) -> None:  # noqa: A001 - Erlang's name, on purpose
    """Send an exit signal to ``pid`` (Erlang ``exit/2``; see the reason table in the docs).

    ``"kill"`` cannot be trapped (the target dies with ``"killed"``). Other
    reasons become an ``('EXIT', caller, reason)`` message for a trapping
    target, and kill a non-trapping one -- except ``"normal"``, which such a
    target ignores unless it is the caller itself. Asynchronous: the target
    dies at its next switch. Exiting the caller itself raises at once.
    """
    target = pid._proc
    if target is None:
        return
    current = getcurrent()
    in_hub = current is get_hub()
    sender = None if in_hub else _current()
    if target is sender and not target.adopted and (reason == "kill" or not target.trap):
        raise Exit(_dying_reason(reason))
    if reason == "kill":
        if target.adopted:
            _deliver(target, ("EXIT", sender.pid if sender else None, "killed"))
        else:
            _kill(target, "kill")
        return
    if target.trap or target.adopted:
        _deliver(target, ("EXIT", sender.pid if sender else None, reason))
    elif reason != "normal":
        _kill(target, reason)


def link(pid: Pid) -> None:
    """Link the caller and ``pid``; linking a dead pid delivers exit reason ``"noproc"``."""
    proc = _current()
    target = pid._proc
    if target is None or not target.alive:
        if proc.trap or proc.adopted:
            _deliver(proc, ("EXIT", pid, "noproc"))
            return
        raise Exit("noproc")
    if target is not proc:
        _add_link(proc, target)


def _add_link(a: Process, b: Process) -> None:
    if a.links is None:
        a.links = set()
    if b.links is None:
        b.links = set()
    a.links.add(b)
    b.links.add(a)


def unlink(pid: Pid) -> None:
    """Remove the link between the caller and ``pid`` (no-op if none)."""
    proc = _current()
    target = pid._proc
    if proc.links and target is not None:
        proc.links.discard(target)
    if target is not None and target.links:
        target.links.discard(proc)


def trap_exit(flag: bool) -> bool:
    """Set whether the caller turns exit signals into messages; returns the previous value."""
    proc = _current()
    previous = proc.trap
    if not proc.adopted:
        proc.trap = bool(flag)
    return previous


# -- monitors ---------------------------------------------------------------


def monitor(pid: Pid) -> Ref:
    """Watch ``pid``: exactly one ``('DOWN', ref, pid, reason)`` arrives when it exits.

    If ``pid`` is already dead, the DOWN (reason ``"noproc"``) is queued at once.
    """
    proc = _current()
    target = pid._proc
    if target is None or not target.alive:
        ref = Ref()
        _deliver(proc, ("DOWN", ref, pid, "noproc"))
        return ref
    return _add_monitor(proc, target)


def _add_monitor(watcher: Process, target: Process) -> Ref:
    ref = Ref()
    if watcher.monitors is None:
        watcher.monitors = {}
    if target.watchers is None:
        target.watchers = {}
    watcher.monitors[ref] = target
    target.watchers[ref] = watcher
    return ref


def demonitor(ref: Ref, flush: bool = False) -> bool:
    """Stop the monitor ``ref``; with ``flush`` also drop its DOWN if already queued.

    Returns True if the monitor was active.
    """
    proc = _current()
    target = proc.monitors.pop(ref, None) if proc.monitors else None
    if target is not None and target.watchers:
        target.watchers.pop(ref, None)
    if flush and target is None:
        # Only a monitor that already fired can have left a DOWN behind.
        flush_mailbox(lambda m: type(m) is tuple and len(m) == 4 and m[0] == "DOWN" and m[1] is ref)
    return target is not None


def is_monitoring(pid: Pid, ref: Ref) -> bool:
    """Whether the process ``pid`` still holds the monitor ``ref`` (used to drop late replies)."""
    proc = pid._proc
    return proc is not None and proc.monitors is not None and ref in proc.monitors
