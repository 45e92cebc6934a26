"""rr_app with a fairness probe on ``/``: ``python rr_app_fair.py PORT OUT.json``.

For each request on ``/`` it records how many requests other connections were
served since this connection's previous one (with 50 busy keep-alive
connections a fair server gives 49 every time), and the wall time between the
two. ``kill -USR1`` writes the percentiles of both to OUT.json and starts a
new sample. The request count does not move with other load on the machine,
unlike the time, so it tells the server's scheduling apart from the machine's
(docs/bench_rr.md). Same routes and bytes as rr_app otherwise.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import bench_common as c
import rr_app

from rr import resp

served = 0
last: dict[object, tuple[int, float]] = {}
gaps: list[int] = []
times: list[float] = []


def hello(req):
    global served
    served += 1
    now = time.perf_counter()
    key = req.peer
    if key in last:
        count, then = last[key]
        gaps.append(served - count - 1)
        times.append(now - then)
    last[key] = (served, now)
    return resp.Response(200, rr_app.TEXT, c.HELLO)


def _percentiles(values: list, scale: float = 1.0) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = {f"p{q}": ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] for q in (50, 90, 99, 99.9)}
    pick["max"] = ordered[-1]
    return {k: round(v * scale, 3) for k, v in pick.items()}


def dump(out: str) -> None:
    with open(out, "w") as f:
        json.dump({"requests": len(gaps), "gap_requests": _percentiles(gaps),
                   "gap_ms": _percentiles(times, 1000.0)}, f)
    gaps.clear()
    times.clear()


def main() -> None:
    port, out = sys.argv[1], sys.argv[2]
    rr_app.TABLE["/"] = hello
    signal.signal(signal.SIGUSR1, lambda *_: dump(out))
    sys.argv = ["rr_app.py", port]
    rr_app.main()


if __name__ == "__main__":
    main()
