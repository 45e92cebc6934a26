"""``rr_app.py`` with ``/sse`` waiting after every event: ``SSE_WAIT=yield python rr_app_sse_wait.py PORT``.

``SSE_WAIT=yield``: ``gevent.sleep(0)`` after each event (the handler yields; the loop does
not poll in between); ``SSE_WAIT=timer`` (default): ``gevent.sleep(1e-6)`` (a timer: the loop
polls before the handler runs again). The same 100 events as ``rr_app.py``'s ``/sse``, which
sends them back to back; ``tools/bench_sse_cpu.sh`` measures either (docs/bench_rr.md).
"""

from __future__ import annotations

import os

import bench_common as c
import gevent
import rr_app

from rr import resp

WAIT = 0.0 if os.environ.get("SSE_WAIT", "timer") == "yield" else 1e-6


def sse(req):
    def run(send):
        for event in c.sse_events():
            send(event)
            gevent.sleep(WAIT)
        send(b"", fin=True)

    return resp.Stream(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache")], run)


if __name__ == "__main__":
    rr_app.TABLE["/sse"] = sse
    rr_app.main()
