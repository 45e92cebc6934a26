"""An HTTP/3 load client for tools/bench_h3.py: libcurl + ngtcp2 through curl_cffi.

    python tools/bench_apps/h3_load.py URL --concurrency 20 --duration 5 [--method POST --body-size 256]

Keeps ``concurrency`` requests in flight (libcurl multiplexes them as streams of
one QUIC connection) for ``duration`` seconds after a short warm-up, checks each
status, and prints one JSON line: requests, errors, seconds, the client's own
CPU seconds and the share of the time it slept, neither running nor waiting for a CPU
(``client_idle``, from ``/proc/self/schedstat``: so a run can show whether the client was the
bottleneck, or waited on the server, even on a machine shared with other load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path


def sched() -> tuple[float, float]:
    """Seconds this process has run on a CPU and waited for one (Linux; zeros elsewhere)."""
    try:
        run, wait = Path("/proc/self/schedstat").read_text().split()[:2]
        return int(run) / 1e9, int(wait) / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0


async def run(url: str, concurrency: int, duration: float, method: str, body: bytes | None,
              warmup: float) -> dict:
    from curl_cffi import CurlHttpVersion, requests

    done = errors = 0
    counting = False
    stop_at = time.monotonic() + warmup + duration
    kw = {"verify": False, "http_version": CurlHttpVersion.V3ONLY, "timeout": 30}

    async with requests.AsyncSession(max_clients=concurrency) as s:
        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < stop_at:
                try:
                    r = await s.request(method, url, data=body, **kw)
                    ok = r.status_code == 200
                except Exception:  # noqa: BLE001 - a failed request is counted, not fatal
                    ok = False
                if counting:
                    if ok:
                        done += 1
                    else:
                        errors += 1

        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        counting = True
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        sched0 = sched()
        started = time.monotonic()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        sched1 = sched()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    busy = (sched1[0] - sched0[0]) + (sched1[1] - sched0[1])
    return {"requests": done, "errors": errors, "seconds": elapsed, "client_cpu": cpu,
            "client_idle": max(0.0, 1 - busy / elapsed) if elapsed else 0.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--method", default="GET")
    p.add_argument("--body-size", type=int, default=0)
    a = p.parse_args()
    body = b"x" * a.body_size if a.body_size else None
    print(json.dumps(asyncio.run(run(a.url, a.concurrency, a.duration, a.method, body, a.warmup))))


if __name__ == "__main__":
    main()
