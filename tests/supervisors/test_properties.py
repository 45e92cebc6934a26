"""Property tests: supervision trees under random crashes; no process leaks.

Settling is deterministic, without sleeps: after a worker dies (its DOWN has
arrived) its exit is already queued at its supervisor, so a call to that
supervisor returns only after the restart (or the shutdown) happened; a
supervisor that shut down has, in turn, queued its exit at its own parent
before its DOWN reaches us. Walking the crashed worker's ancestors
bottom-up with calls therefore waits for every consequence of the crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import supervisors
from supervisors import ChildSpec, Pid
from supervisors.process import _processes
from tests.supervisors.helpers import SAFETY, wait_down

STRATEGIES = ["one_for_one", "one_for_all", "rest_for_one"]


@dataclass(frozen=True)
class WorkerShape:
    restart: str


@dataclass(frozen=True)
class SupShape:
    strategy: str
    max_restarts: int
    children: tuple[Any, ...] = field(default_factory=tuple)


def _workers() -> st.SearchStrategy[WorkerShape]:
    return st.builds(WorkerShape, st.sampled_from(["permanent", "transient", "temporary"]))


def _sup(children: st.SearchStrategy[Any]) -> st.SearchStrategy[SupShape]:
    return st.builds(
        SupShape,
        st.sampled_from(STRATEGIES),
        st.integers(0, 3),
        st.lists(children, min_size=1, max_size=3).map(tuple),
    )


# depth <= 3: root -> sub -> sub -> workers
TREES = _sup(st.one_of(_workers(), _sup(st.one_of(_workers(), _sup(_workers())))))


def _crashable() -> None:
    while True:
        if supervisors.receive() == "crash":
            raise RuntimeError("injected crash")


def _start_worker() -> Pid:
    return supervisors.spawn_link(_crashable, label="prop.worker")


def _start_sup(shape: SupShape, link: bool) -> Pid:
    return supervisors.start_supervisor(
        [_spec(i, child) for i, child in enumerate(shape.children)],
        strategy=shape.strategy,  # type: ignore[arg-type]
        max_restarts=shape.max_restarts,
        max_seconds=3600.0,
        link=link,
        label="prop.sup",
    )


def _spec(index: int, shape: Any) -> ChildSpec:
    if isinstance(shape, WorkerShape):
        return ChildSpec(index, _start_worker, restart=shape.restart, shutdown=5.0)  # type: ignore[arg-type]
    return ChildSpec(index, _start_sup, args=(shape, True), type="supervisor", shutdown="infinity")


def _worker_paths(shape: SupShape, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    paths = []
    for i, child in enumerate(shape.children):
        if isinstance(child, WorkerShape):
            paths.append(prefix + (i,))
        else:
            paths.extend(_worker_paths(child, prefix + (i,)))
    return paths


def _children(sup: Pid) -> dict[Any, Pid | None] | None:
    try:
        return {cid: pid for cid, pid, _ in supervisors.which_children(sup)}
    except supervisors.NoProc:
        return None


def _resolve(root: Pid, path: tuple[int, ...]) -> list[Pid] | None:
    """Pids along ``path`` (supervisors then the worker), or None if some link is gone."""
    chain = [root]
    for index in path:
        children = _children(chain[-1])
        if children is None or children.get(index) is None:
            return None
        chain.append(children[index])  # type: ignore[arg-type]
    return chain


def _assert_whole(sup: Pid, shape: SupShape) -> None:
    children = _children(sup)
    assert children is not None, "a supervisor listed by its parent is dead"
    for i, child in enumerate(shape.children):
        if isinstance(child, WorkerShape) and child.restart == "temporary":
            if i in children:
                assert children[i] is not None and children[i].is_alive  # type: ignore[union-attr]
            continue
        assert i in children, f"child {i} lost its spec"
        pid = children[i]
        assert pid is not None and pid.is_alive, f"child {i} of {sup!r} is not running"
        if isinstance(child, SupShape):
            _assert_whole(pid, child)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES, crashes=st.lists(st.integers(0, 100), max_size=8))
def test_random_crashes_leave_every_supervisor_whole_or_shut_down(tree: SupShape, crashes: list[int]) -> None:
    baseline = {p for p in _processes.values() if not p.adopted}
    root = _start_sup(tree, link=False)
    root_ref = supervisors.monitor(root)
    paths = _worker_paths(tree)
    for pick in crashes:
        if not root.is_alive or not paths:
            break
        chain = _resolve(root, paths[pick % len(paths)])
        if chain is None:
            continue  # a temporary worker already gone
        worker = chain[-1]
        ref = supervisors.monitor(worker)
        supervisors.send(worker, "crash")
        wait_down(ref)
        for ancestor in reversed(chain[:-1]):  # settle bottom-up (see module doc)
            _children(ancestor)
    if root.is_alive:
        _assert_whole(root, tree)
        assert supervisors.stop_supervisor(root) == "shutdown"
        assert wait_down(root_ref) == "shutdown"
    else:
        assert wait_down(root_ref) == "shutdown"  # intensity exceeded somewhere, all the way up
    assert {p for p in _processes.values() if not p.adopted} <= baseline


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["spawn", "spawn_link", "monitor", "kill", "crash", "finish"]), st.integers(0, 20)),
        max_size=30,
    )
)
def test_random_process_operations_leak_nothing(ops: list[tuple[str, int]]) -> None:
    """Spawning, linking, monitoring and killing in any order: afterwards the table is as before."""
    baseline = {p for p in _processes.values() if not p.adopted}
    me = supervisors.self()

    def coordinator() -> None:
        supervisors.trap_exit(True)
        pids: list[Pid] = []
        for op, n in ops:
            if op in ("spawn", "spawn_link"):
                pids.append(supervisors.spawn(_crashable, link=op == "spawn_link", label="prop.op"))
            elif not pids:
                continue
            elif op == "monitor":
                supervisors.monitor(pids[n % len(pids)])
            elif op == "kill":
                supervisors.exit(pids[n % len(pids)], "kill")
            elif op == "crash":
                supervisors.send(pids[n % len(pids)], "crash")
            else:
                supervisors.exit(pids[n % len(pids)], "shutdown")
        refs = [supervisors.monitor(pid) for pid in pids]
        for pid in pids:
            supervisors.exit(pid, "kill")
        for ref in refs:
            supervisors.receive(lambda m, ref=ref: m[0] == "DOWN" and m[1] is ref, SAFETY)
        supervisors.send(me, "done")

    _, ref = supervisors.spawn_monitor(coordinator, label="prop.coordinator")
    supervisors.receive(lambda m: m == "done", SAFETY)
    assert wait_down(ref) == "normal"
    assert {p for p in _processes.values() if not p.adopted} <= baseline
