"""Soak: minutes of mixed, partly abusive load on one rr listener; flat lines pass.

    PYTHONPATH=$PWD nice -n 10 python tools/soak.py [--minutes 10] [--out DIR]

Starts an rr listener (``http1`` + ``http2`` on one port, rr's defaults
otherwise) as a subprocess on 127.0.0.1 (``tools/soak.py --serve``), then for
the whole run drives it with:

- ``wrk -t1 -c16`` (HTTP/1.1 keep-alive) and ``h2load -c4 -m8`` (h2c prior
  knowledge), both bounded by the run's duration;
- slowloris clients: a request head trickled a byte at a time (rr's
  ``min_bytes_per_second`` closes them; they reconnect);
- clients that never read: 200 pipelined requests for a 256 KiB body each,
  then silence (a blocked write is bounded by ``request_timeout``);
- idle connections that send nothing at all;
- h2 clients that open streams and reset them at once — one within the reset
  budget, one over it (``GOAWAY(ENHANCE_YOUR_CALM)``; it reconnects);
- h2 clients with a zero stream window that never grant more (stalled
  streams, reset ``CANCEL`` after ``stall_timeout``).

Every second it samples the server's RSS (``/proc/PID/status``), open file
descriptors (``/proc/PID/fd``) and live rr process count (the app's own
``/soak/stats`` route, ``supervisors.processes()``), and writes
``soak.csv``, ``soak.png`` (matplotlib, the ``bench`` extra) and
``soak.json`` (summary) into ``--out``.

Flat, the pass condition: the first ``warm-up`` (10 % of the run, at least
2 s) is ignored; of the rest, the last third's maximum of each series must be
within 10 % (plus a small absolute slack: 4 MiB RSS, 16 fds, 32 processes —
load is bursty at this scale) of the first third's maximum. Exit status 0 when
every line is flat and the server lived to the end, 1 otherwise.

What it owns: the soak's load mix, sampling, verdict and plot. It must never
bind anything but 127.0.0.1, nor run a loop that is not bounded by the run's
deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIG = 256 * 1024
FIELDS = ("t", "rss_mib", "fds", "processes", "active_clients", "requests_served")
# series → absolute slack: a few MiB of allocator noise; fds and processes move with the
# load's own bursts (h2load alone has up to 4 × 8 streams, each a process, in flight)
FLAT_SERIES = {"rss_mib": 4.0, "fds": 16, "processes": 32}
FLAT_RATIO = 1.10


# -- the server (a subprocess) ---------------------------------------------------------


def serve() -> None:
    """The soak's rr listener: prints its port, serves until SIGTERM."""
    sys.path.insert(0, str(ROOT))
    import rr
    import supervisors
    from rr import resp

    big = b"b" * BIG

    def stats(req: Any) -> Any:
        info = rr.listener_info("soak")
        return resp.json(200, {"processes": len(supervisors.processes()),
                               "active_clients": info["active_clients"],
                               "requests_served": info["requests_served"]})

    def route(req: Any) -> Any:
        if req.path == "/soak/stats":
            return stats(req)
        if req.path == "/big":
            return resp.Response(200, [("content-type", "application/octet-stream")], big)
        if req.path == "/echo":
            return resp.Response(200, [], req.read_body())
        return resp.text(200, "hello")

    rr.start_listener("soak", {"port": 0, "ip": "127.0.0.1", "protocols": ["http1", "http2"],
                               "routes": route})
    print(f"PORT {rr.listener_port('soak')}", flush=True)
    rr.wait(drain_timeout=5.0)


# -- abusive clients (threads of the driver; every loop ends at the deadline) -----------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(1.0)
    return sock


def _until(deadline: float, stop: threading.Event, step: Callable[[], None], pause: float) -> None:
    while time.monotonic() < deadline and not stop.is_set():
        try:
            step()
        except OSError:
            pass  # the server closed on us: that is what it should do to these clients
        stop.wait(pause)


def slowloris(port: int, deadline: float, stop: threading.Event) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200

    def one() -> None:
        with _connect(port) as sock:
            for i in range(len(head)):
                if time.monotonic() > deadline or stop.is_set():
                    return
                sock.sendall(head[i:i + 1])
                if stop.wait(0.2):
                    return

    _until(deadline, stop, one, 0.1)


def never_reads(port: int, deadline: float, stop: threading.Event) -> None:
    def one() -> None:
        with _connect(port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
            stop.wait(max(0.0, min(45.0, deadline - time.monotonic())))

    _until(deadline, stop, one, 0.1)


def idle(port: int, deadline: float, stop: threading.Event) -> None:
    def one() -> None:
        with _connect(port) as sock:
            stop.wait(max(0.0, min(40.0, deadline - time.monotonic())))
            del sock

    _until(deadline, stop, one, 0.1)


def _h2_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return bytes([n >> 16, (n >> 8) & 0xFF, n & 0xFF, ftype, flags]) + sid.to_bytes(4, "big") + payload


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h2_block(path: str) -> bytes:
    import hpack

    return hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", path),
                                   (":authority", "127.0.0.1")])


def _drain_input(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
        sock.settimeout(1.0)


def h2_resetter(port: int, deadline: float, stop: threading.Event, per_second: int) -> None:
    """Open streams and reset them at once, ``per_second`` of them (over 20/s: over budget)."""
    block = _h2_block("/")

    def one() -> None:
        with _connect(port) as sock:
            sock.sendall(_PREFACE + _h2_frame(0x4, 0, 0))
            sid = 1
            while time.monotonic() < deadline and not stop.is_set() and sid < 2**30:
                burst = b"".join(_h2_frame(0x1, 0x5, s, block) + _h2_frame(0x3, 0, s, (8).to_bytes(4, "big"))
                                 for s in range(sid, sid + 2 * per_second // 5, 2))
                sid += 2 * per_second // 5
                sock.sendall(burst)
                _drain_input(sock)
                if stop.wait(0.2):
                    return

    _until(deadline, stop, one, 0.2)


def h2_staller(port: int, deadline: float, stop: threading.Event) -> None:
    """A zero stream window, a stream for 256 KiB every 5 s, never a WINDOW_UPDATE."""
    block = _h2_block("/big")

    def one() -> None:
        with _connect(port) as sock:
            sock.sendall(_PREFACE + _h2_frame(0x4, 0, 0, (4).to_bytes(2, "big") + (0).to_bytes(4, "big")))
            sid = 1
            while time.monotonic() < deadline and not stop.is_set() and sid < 2**30:
                sock.sendall(_h2_frame(0x1, 0x5, sid, block))
                sid += 2
                _drain_input(sock)
                if stop.wait(5.0):
                    return

    _until(deadline, stop, one, 0.5)


# -- sampling ---------------------------------------------------------------------------


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _stats(port: int) -> dict[str, Any]:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(b"GET /soak/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
                if len(data) > 65536:
                    break
        return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))
    except (OSError, ValueError, IndexError):
        return {}


# -- the verdict ------------------------------------------------------------------------


def flatness(rows: list[dict[str, Any]], series: str, slack: float, warmup: float
             ) -> dict[str, Any]:
    """First and last third's maxima of ``series`` after ``warmup`` seconds, and whether flat."""
    values = [(r["t"], r[series]) for r in rows if r["t"] >= warmup and r[series] not in (None, "")]
    if len(values) < 3:
        return {"series": series, "flat": False, "reason": "too few samples", "samples": len(values)}
    third = len(values) // 3
    first = max(v for _, v in values[:third])
    last = max(v for _, v in values[-third:])
    limit = first * FLAT_RATIO + slack
    return {"series": series, "first_third_max": first, "last_third_max": last,
            "limit": round(limit, 2), "flat": last <= limit, "samples": len(values)}


# -- the driver -------------------------------------------------------------------------


def _start_server(python: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--serve"], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server's first line; EOF if it died
    match = re.match(r"PORT (\d+)", line)
    if match is None:
        proc.kill()
        proc.wait(10)
        raise SystemExit(f"soak: the rr listener did not start ({line!r})")
    return proc, int(match[1])


def _load_tools(port: int, seconds: int) -> list[subprocess.Popen[str]]:
    url = f"http://127.0.0.1:{port}/"
    return [
        subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds}s", url], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True),
        subprocess.Popen(["h2load", "-t1", "-c4", "-m8", "-D", str(seconds), url], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True),
    ]


def _tool_summary(output: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m := re.search(r"(\d+) requests in", output):
        out["wrk_requests"] = int(m[1])
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        out["wrk_non_2xx"] = int(m[1])
    if m := re.search(r"Socket errors: (.*)", output):
        out["wrk_socket_errors"] = m[1].strip()
    if m := re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored", output):
        out.update(h2load_total=int(m[1]), h2load_succeeded=int(m[4]), h2load_failed=int(m[5]),
                   h2load_errored=int(m[6]))
    return out


def _plot(rows: list[dict[str, Any]], warmup: float, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: matplotlib missing (pip install rr[bench]); no PNG", file=sys.stderr)
        return False
    series = [("rss_mib", "RSS (MiB)"), ("fds", "open fds"), ("processes", "rr processes"),
              ("active_clients", "active connections")]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 9), sharex=True)
    for ax, (key, label) in zip(axes, series, strict=True):
        pts = [(r["t"], r[key]) for r in rows if r[key] not in (None, "")]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
        ax.axvspan(0, warmup, color="0.9")
        ax.set_ylabel(label)
        ax.set_ylim(0, max([p[1] for p in pts] or [1]) * 1.15 or 1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds (grey: warm-up, not judged)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def run(seconds: int, out: Path, python: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    server, port = _start_server(python)
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    tools = _load_tools(port, seconds)
    clients: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
        *[(slowloris, ())] * 6, *[(never_reads, ())] * 3, *[(idle, ())] * 4,
        (h2_resetter, (10,)), (h2_resetter, (100,)), (h2_staller, ()),
    ]
    threads = [threading.Thread(target=fn, args=(port, deadline, stop, *extra), daemon=True)
               for fn, extra in clients]
    for t in threads:
        t.start()
    rows: list[dict[str, Any]] = []
    start = time.monotonic()
    alive = True
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                alive = False
                break
            stats = _stats(port)
            rows.append({"t": round(time.monotonic() - start, 1), "rss_mib": _rss_mib(server.pid),
                         "fds": _fds(server.pid), "processes": stats.get("processes"),
                         "active_clients": stats.get("active_clients"),
                         "requests_served": stats.get("requests_served")})
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start) % 1.0))
    finally:
        stop.set()
        outputs = []
        for tool in tools:
            try:
                outputs.append(tool.communicate(timeout=30)[0])
            except subprocess.TimeoutExpired:
                tool.kill()
                outputs.append(tool.communicate()[0])
        for t in threads:
            t.join(10)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    with (out / "soak.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    warmup = max(2.0, seconds * 0.1)
    verdicts = [flatness(rows, s, slack, warmup) for s, slack in FLAT_SERIES.items()]
    flat = alive and all(v["flat"] for v in verdicts)
    load: dict[str, Any] = {}
    for text in outputs:
        load.update(_tool_summary(text))
    summary = {"seconds": seconds, "samples": len(rows), "server_alive_to_the_end": alive,
               "server_exit": server.returncode, "flat": flat, "series": verdicts, "load": load,
               "warmup_s": warmup, "ratio": FLAT_RATIO}
    (out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(rows, warmup, out / "soak.png",
          f"rr soak, {seconds} s: {'flat' if flat else 'NOT FLAT'}")
    print(json.dumps(summary, indent=2))
    return 0 if flat else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    parser.add_argument("--seconds", type=int, help="length in seconds (overrides --minutes; smoke runs)")
    parser.add_argument("--out", type=Path, default=ROOT / ".soak", help="where the CSV, PNG and JSON go")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    seconds = args.seconds if args.seconds is not None else int(args.minutes * 60)
    if seconds < 5:
        parser.error("a soak shorter than 5 s judges nothing")
    return run(seconds, args.out, sys.executable)


if __name__ == "__main__":
    sys.exit(main())
