"""Micro-benchmarks of the supervisors process layer against bare gevent.

Prints, in one run (< 30 s): ping-pong messages/s between two processes,
spawn+exit/s (all at once) and spawn+DOWN/s in batches of 10 (the h2
pattern), each next to the same loop written with bare gevent
(``gevent.queue.Queue`` ping-pong, ``gevent.spawn``) as the floor, with the
ratio. Each row is the median of ``--rounds`` interleaved rounds.

Usage: .venv/bin/python tools/bench_supervisors.py [--rounds 3] [--messages 50000] [--spawns 20000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import gevent
import gevent.event
import gevent.queue

import supervisors


def pingpong_supervisors(n: int) -> float:
    """Two spawned processes bounce a message ``n`` times; returns messages/s."""
    done = gevent.event.Event()

    def pong() -> None:
        while True:
            msg = supervisors.receive()
            if msg is None:
                return
            supervisors.send(msg[0], msg)

    def ping(partner: supervisors.Pid) -> None:
        me = supervisors.self()
        msg = (me, 0)
        for _ in range(n):
            supervisors.send(partner, msg)
            msg = supervisors.receive()
        supervisors.send(partner, None)
        done.set()

    partner = supervisors.spawn(pong, label="bench.pong")
    start = time.perf_counter()
    supervisors.spawn(ping, partner, label="bench.ping")
    done.wait()
    return 2 * n / (time.perf_counter() - start)


def pingpong_gevent_queue(n: int) -> float:
    """The same loop with two bare gevent greenlets and two ``gevent.queue.Queue``."""
    to_pong: gevent.queue.Queue = gevent.queue.Queue()
    to_ping: gevent.queue.Queue = gevent.queue.Queue()

    def pong() -> None:
        while True:
            msg = to_pong.get()
            if msg is None:
                return
            to_ping.put(msg)

    def ping() -> None:
        msg = (None, 0)
        for _ in range(n):
            to_pong.put(msg)
            msg = to_ping.get()
        to_pong.put(None)

    gevent.spawn(pong)
    start = time.perf_counter()
    gevent.spawn(ping).join()
    return 2 * n / (time.perf_counter() - start)


def spawn_exit_supervisors(n: int) -> float:
    """Spawn ``n`` processes that return at once; wait until all exited; returns spawns/s."""
    done = gevent.event.Event()
    left = [n]

    def short() -> None:
        left[0] -= 1
        if not left[0]:
            done.set()

    start = time.perf_counter()
    for _ in range(n):
        supervisors.spawn(short)
    done.wait()
    return n / (time.perf_counter() - start)


def spawn_exit_gevent(n: int) -> float:
    """The same with ``gevent.spawn``."""
    done = gevent.event.Event()
    left = [n]

    def short() -> None:
        left[0] -= 1
        if not left[0]:
            done.set()

    start = time.perf_counter()
    for _ in range(n):
        gevent.spawn(short)
    done.wait()
    return n / (time.perf_counter() - start)


BATCH = 10  # spawn+exit in batches: an h2 connection starting the workers of one read's streams


def spawn_monitor_batched_supervisors(n: int) -> float:
    """``n`` monitored processes, ``BATCH`` at a time, each DOWN received; returns spawns/s.

    Few processes live at once, as on an h2 connection, so ended processes' greenlets
    are recycled (``supervisors.process``'s "Recycled greenlets")."""
    result: list[float] = []

    def parent() -> None:
        start = time.perf_counter()
        for _ in range(n // BATCH):
            for _ in range(BATCH):
                supervisors.spawn_monitor(_nothing, label="bench.short")
            for _ in range(BATCH):
                supervisors.receive()
        result.append(n // BATCH * BATCH / (time.perf_counter() - start))

    ref = supervisors.monitor(supervisors.spawn(parent, label="bench.parent"))
    supervisors.receive(lambda m: isinstance(m, tuple) and m[:2] == ("DOWN", ref))
    return result[0]


def spawn_link_batched_gevent(n: int) -> float:
    """The same with ``gevent.spawn`` and ``rawlink`` (gevent's monitor)."""
    done = gevent.queue.Queue()
    start = time.perf_counter()
    for _ in range(n // BATCH):
        for _ in range(BATCH):
            gevent.spawn(_nothing).rawlink(done.put)
        for _ in range(BATCH):
            done.get()
    return n // BATCH * BATCH / (time.perf_counter() - start)


def _nothing() -> None:
    pass


def median_rates(pairs: list[tuple[Callable[[int], float], int]], rounds: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in pairs]
    for _ in range(rounds):  # interleaved: both sides see the same machine state
        for i, (fn, n) in enumerate(pairs):
            samples[i].append(fn(n))
    return [statistics.median(s) for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=50_000, help="round trips per ping-pong round")
    parser.add_argument("--spawns", type=int, default=20_000, help="processes per spawn round")
    args = parser.parse_args()

    pp_sv, pp_floor, sp_sv, sp_floor, sb_sv, sb_floor = median_rates(
        [
            (pingpong_supervisors, args.messages),
            (pingpong_gevent_queue, args.messages),
            (spawn_exit_supervisors, args.spawns),
            (spawn_exit_gevent, args.spawns),
            (spawn_monitor_batched_supervisors, args.spawns),
            (spawn_link_batched_gevent, args.spawns),
        ],
        args.rounds,
    )
    print(f"python {platform.python_version()}  gevent {gevent.__version__}  rounds={args.rounds} (median)")
    print(f"{'benchmark':<22}{'supervisors/s':>15}{'bare gevent/s':>15}{'ratio':>8}")
    print(f"{'ping-pong messages':<22}{pp_sv:>15,.0f}{pp_floor:>15,.0f}{pp_sv / pp_floor:>8.2f}")
    print(f"{'spawn+exit':<22}{sp_sv:>15,.0f}{sp_floor:>15,.0f}{sp_sv / sp_floor:>8.2f}")
    print(f"{'spawn+DOWN, 10 a time':<22}{sb_sv:>15,.0f}{sb_floor:>15,.0f}{sb_sv / sb_floor:>8.2f}")
    leftover = [p for p in supervisors.processes() if p.label and p.label.startswith("bench.")]
    if leftover:
        raise SystemExit(f"benchmark leaked processes: {leftover}")


if __name__ == "__main__":
    main()
