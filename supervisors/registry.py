"""Registered names: a process may be known by one ``str`` name.

What it owns: the public naming API. The table itself lives in
:mod:`supervisors.process` (``_names``) because a name must disappear in the
same step as its process exits; this module only reads and writes it.

What it must never do: keep a name for a dead process, or let two live
processes share a name.
"""

from __future__ import annotations

from supervisors.process import Pid, _names


def register(name: str, pid: Pid) -> None:
    """Give ``pid`` the name ``name``.

    Raises ValueError if the name is taken, the process already has a name,
    or the process is dead.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a registered name must be a non-empty str, not {name!r}")
    proc = pid._proc
    if proc is None or not proc.alive:
        raise ValueError(f"cannot register {name!r}: {pid!r} is not alive")
    holder = _names.get(name)
    if holder is not None:
        raise ValueError(f"name {name!r} is already registered to {holder.pid!r}")
    if proc.name is not None:
        raise ValueError(f"{pid!r} is already registered as {proc.name!r}")
    _names[name] = proc
    proc.name = name


def unregister(name: str) -> None:
    """Remove the name ``name`` (ValueError if it is not registered)."""
    proc = _names.pop(name, None)
    if proc is None:
        raise ValueError(f"name {name!r} is not registered")
    proc.name = None


def whereis(name: str) -> Pid | None:
    """The Pid registered as ``name``, or None."""
    proc = _names.get(name)
    return None if proc is None else proc.pid


def registered() -> list[str]:
    """All registered names."""
    return list(_names)


def resolve(dest: Pid | str) -> Pid | None:
    """``dest`` as a Pid: a Pid is returned as is, a name is looked up (None if unknown)."""
    if isinstance(dest, Pid):
        return dest
    return whereis(dest)


__all__ = ["register", "registered", "resolve", "unregister", "whereis"]
