#!/usr/bin/env python3
"""Measure rr's HTTP/2 receive windows: upload/download throughput and server memory.

    .venv/bin/python tools/bench_h2_window.py                         # full matrix, as root (~10 min)
    .venv/bin/python tools/bench_h2_window.py --quick                 # 3 settings, loopback + 50 ms
    .venv/bin/python tools/bench_h2_window.py --rtts 0 --no-memory    # loopback only: no root needed
    .venv/bin/python tools/bench_h2_window.py --windows 256K,1M --thresholds '' --out /tmp/w.md

What varies: rr's ``("http2", {...})`` options ``stream_window`` (SETTINGS_INITIAL_WINDOW_SIZE),
``conn_window`` (the WINDOW_UPDATE on stream 0) and ``window_refill_threshold``. Each pair
from ``--windows`` with conn_window >= stream_window is one row (threshold ``--threshold``);
``--thresholds`` adds rows that vary only the threshold of the ``--threshold-base`` pairs.

Scenarios, all driven by h2load (nghttp2's C client: independent of rr, and not the
bottleneck), one h2c connection each, h2load's own receive windows left at 2^30-1:

    up1    h2load -n 1   -c 1 -m 1   -d FILE(64 MiB) http://HOST:PORT/upload   1 stream uploads 64 MiB
    up10   h2load -n 10  -c 1 -m 10  -d FILE(8 MiB)  http://HOST:PORT/upload   10 concurrent 8 MiB uploads
    down1  h2load -n 1   -c 1 -m 1   http://HOST:PORT/download?n=67108864      1 stream downloads 64 MiB
    stall  h2load -n 100 -c 1 -m 100 -d FILE(1 MiB)  http://127.0.0.1:PORT/stall   100 concurrent uploads
    drain  h2load -n 100 -c 1 -m 100 -d FILE(1 MiB)  http://127.0.0.1:PORT/upload  the same, read at once

Every h2load call also gets ``-T``/``-N`` (seconds) and a subprocess timeout. The server is rr
with ``body_buffering: manual``: ``/upload`` consumes the body with ``req.iter_body()`` (so rr
returns window as it goes) and answers the byte count; ``/stall`` sleeps ``--stall`` seconds
before it reads, so every window fills while the handler is away: that run's peak RSS is the
most the windows let one client make the server buffer; ``/download`` streams ``n`` bytes in
16 KiB sends (rr's send side, not governed by rr's receive windows: the control column).
Throughput is body bytes / h2load's "finished in" (which includes connect: one or two RTTs),
in MB/s (10^6 B/s); loopback cells are the median of ``--repeat`` runs, RTT cells of
``--repeat-rtt``. Memory: the server's VmRSS polled every 10 ms, each run on a fresh server,
as the peak and the peak minus the RSS after a 1 MiB warm-up upload ("+MiB"), loopback only.

Round-trip times: 0 is loopback (127.0.0.1, no namespace). Otherwise two network namespaces
are created, the server in one (10.201.0.1) and h2load in the other (10.201.0.2), with
``--delay`` choosing how the delay is made:

    netem  a veth pair, and on each end: tc qdisc add dev DEV root netem delay RTT/2ms limit 100000
    tun    (when the kernel has no sch_netem) a TUN device in each namespace, MTU 9000, and a
           relay process (this file, ``--relay``) that copies every IP packet to the other
           device RTT/2 later, in order, without drops
    auto   netem if ``tc`` accepts it, else tun (the default)

The namespaces get this namespace's tcp_rmem/tcp_wmem, so only the delay differs from
loopback; they are deleted on exit (finally, atexit, SIGTERM/SIGINT). A non-zero RTT needs root.
Every process started here is stopped by pid (its own session), and the server and relay exit
by themselves when this driver goes away.

Time bounds: a window-bound upload moves about one window per RTT (64 KiB per 50 ms is
1.3 MB/s), so when min(window) / RTT * ``--time-cap`` is below the nominal body, the body is
cut to that (whole MiB, at least 4 MiB for up1, 1 MiB per stream for up10); the ``MiB``
columns say what was sent.

Pinning (like tools/bench.py): the server (one rr process, one gevent hub) runs on core 0
(``taskset -c 0``); h2load and the relay on core 1. The server runs rr as committed at
``--rev`` (default HEAD, exported with ``git archive`` to a temp dir, so edits in progress in
the work tree are not measured); ``--rev worktree`` runs the work tree.

``--serve`` and ``--relay`` are the internal server and delay-line modes the driver starts.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(_VENV_PY) if _VENV_PY.exists() else sys.executable
SERVER_CPU = "0"
CLIENT_CPU = "1"
KiB = 1024
MiB = 1024 * 1024
MB = 1_000_000

UP1_BYTES = 64 * MiB
UP10_BYTES = 8 * MiB
DOWN_BYTES = 64 * MiB
MEM_STREAMS = 100
MEM_BYTES = 1 * MiB
MIN_BODY = 4 * MiB
WARMUP_BYTES = 1 * MiB

NS_SRV = f"rrw-srv-{os.getpid()}"
NS_CLI = f"rrw-cli-{os.getpid()}"
DEV_SRV = "rrw-s"
DEV_CLI = "rrw-c"
IP_SRV = "10.201.0.1"
IP_CLI = "10.201.0.2"
PORT_NS = 8800
TUN_MTU = 9000


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KkMm]?)(i?B)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65535, 64K, 1M)")
    return int(m.group(1)) * {"": 1, "K": KiB, "M": MiB}[m.group(2).upper()]


def sizes(text: str) -> list[int]:
    return [parse_size(x) for x in text.split(",") if x.strip()]


def fmt_size(n: int) -> str:
    if n % MiB == 0:
        return f"{n // MiB}M"
    if n % KiB == 0:
        return f"{n // KiB}K"
    return str(n)


def _exit_with_parent(parent: int) -> None:
    """A thread that ends this process once the driver (``parent``) is gone (bounded lifetime)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


# --------------------------------------------------------------------------- the server (--serve)


def serve(args: argparse.Namespace) -> None:
    import gevent

    import rr
    from rr import resp

    if args.parent:
        def watch() -> None:
            while os.getppid() == args.parent:
                gevent.sleep(1.0)
            os._exit(3)

        gevent.spawn(watch)

    block = b"d" * 16384
    text = [("content-type", "text/plain")]

    def upload(req):
        n = 0
        for chunk in req.iter_body():
            n += len(chunk)
        return resp.Response(200, text, str(n).encode())

    def stall(req):
        gevent.sleep(args.stall)
        return upload(req)

    def download(req):
        query = req.query_string or ""
        size = int(query.partition("n=")[2]) if "n=" in query else DOWN_BYTES

        def run(send):
            left = size
            while left > 0:
                piece = block if left >= len(block) else block[:left]
                send(piece)
                left -= len(piece)
            send(b"", fin=True)

        return resp.Stream(200, [("content-type", "application/octet-stream"),
                                 ("content-length", str(size))], run)

    h2opts = {"stream_window": args.sw, "conn_window": args.cw, "window_refill_threshold": args.th}
    rr.start_listener("winbench", {
        "port": args.port, "ip": args.bind, "protocols": [("http2", h2opts)],
        "body_buffering": "manual", "max_content_length": 1 << 30,
        "request_timeout": 120, "keep_alive_timeout": 600, "max_clients": 1000,
        "routes": [("/upload", upload), ("/stall", stall), ("/download", download)],
    })
    print("READY", flush=True)
    rr.wait(drain_timeout=2.0)


# --------------------------------------------------------------------------- the delay line (--relay)


def _open_tun(ns: str, name: str) -> int:
    """Create TUN device ``name`` inside namespace ``ns`` (setns in a short-lived thread)."""
    import ctypes
    import fcntl
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    out: dict[str, object] = {}

    def enter_and_open() -> None:
        try:
            nsfd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(nsfd, 0x40000000) != 0:  # CLONE_NEWNET, this thread only
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(nsfd)
            fd = os.open("/dev/net/tun", os.O_RDWR)
            # struct ifreq: name[16], short flags (IFF_TUN | IFF_NO_PI)
            fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", name.encode(), 0x0001 | 0x1000))
            out["fd"] = fd
        except OSError as exc:
            out["error"] = exc

    t = threading.Thread(target=enter_and_open)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["fd"]  # type: ignore[return-value]


def relay(args: argparse.Namespace) -> None:
    """Copy IP packets between the two TUN devices, each one ``delay_ms / 2`` late, in order."""
    if args.parent:
        _exit_with_parent(args.parent)
    one_way = args.delay_ms / 2000.0
    fd_srv = _open_tun(args.ns_srv, DEV_SRV)
    fd_cli = _open_tun(args.ns_cli, DEV_CLI)

    def direction(src: int, dst: int) -> None:
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = threading.Condition()

        def read() -> None:
            while True:
                packet = os.read(src, 65536)
                with ready:
                    if len(queue) < 100_000:
                        queue.append((time.monotonic() + one_way, packet))
                        ready.notify()

        def write() -> None:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, packet = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with ready:
                    queue.popleft()
                with contextlib.suppress(OSError):
                    os.write(dst, packet)

        for fn in (read, write):
            threading.Thread(target=fn, daemon=True).start()

    direction(fd_srv, fd_cli)
    direction(fd_cli, fd_srv)
    print("READY", flush=True)
    while True:
        time.sleep(3600)


# --------------------------------------------------------------------------- processes


_children: list[subprocess.Popen] = []


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None,
          ready: float = 20.0) -> subprocess.Popen:
    """Start ``cmd`` in its own session, output to ``log``; wait (bounded) for it to print READY."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, cwd=cwd)
    _children.append(proc)
    deadline = time.monotonic() + ready
    while time.monotonic() < deadline and proc.poll() is None:
        if b"READY" in log.read_bytes():
            return proc
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{cmd[-1]}: did not start:\n{log.read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process we started (by its process group), TERM then KILL, bounded."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc in _children:
        _children.remove(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssPoller:
    """Peak VmRSS of one pid, polled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.peak = max(self.peak, rss(self.pid))


def netns_prefix(ns: str | None) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


@dataclass
class Ctx:
    args: argparse.Namespace
    tmp: Path
    src: Path  # the rr source the server imports (PYTHONPATH)


@dataclass
class Server:
    proc: subprocess.Popen
    url: str


def start_server(ctx: Ctx, s: Setting, ns: str | None, host: str) -> Server:
    port = free_port() if ns is None else PORT_NS
    cmd = [*netns_prefix(ns), "taskset", "-c", SERVER_CPU, PY, str(Path(__file__).resolve()),
           "--serve", "--bind", host, "--port", str(port), "--sw", str(s.sw), "--cw", str(s.cw),
           "--th", str(s.th), "--stall", str(ctx.args.stall), "--parent", str(os.getpid())]
    env = {**os.environ, "PYTHONPATH": str(ctx.src)}
    log = ctx.tmp / f"server-{s.sw}-{s.cw}-{s.th}-{port}.log"
    proc = spawn(cmd, log, env=env, cwd=str(ctx.src))
    return Server(proc, f"http://{host}:{port}")


# --------------------------------------------------------------------------- h2load


@dataclass
class Run:
    seconds: float = 0.0
    ok: int = 0
    total: int = 0
    nbytes: int = 0
    connect_ms: float = 0.0
    note: str = ""

    @property
    def mbps(self) -> float:
        return self.nbytes / self.seconds / MB if self.seconds > 0 and not self.note else 0.0


_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s|us),")
_REQS = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded")
_STATUS = re.compile(r"status codes: (\d+) 2xx")
_CONNECT = re.compile(r"time for connect:\s+\S+\s+\S+\s+([\d.]+)(ms|s|us)")


def h2load(url: str, n: int, data: Path | None, ns: str | None, timeout: int) -> Run:
    cmd = [*netns_prefix(ns), "taskset", "-c", CLIENT_CPU, "h2load", "-n", str(n), "-c", "1",
           "-m", str(n), "-T", str(timeout), "-N", str(timeout)]
    if data is not None:
        cmd += ["-d", str(data)]
    cmd.append(url)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 15).stdout
    except subprocess.TimeoutExpired:
        return Run(total=n, note="timeout")
    fin, reqs, status = _FINISHED.search(out), _REQS.search(out), _STATUS.search(out)
    if not fin or not reqs:
        last = out.strip().splitlines()[-1] if out.strip() else "no output"
        return Run(total=n, note=f"h2load: {last}")
    run = Run(float(fin.group(1)) * _UNIT[fin.group(2)], total=int(reqs.group(1)))
    run.ok = min(int(reqs.group(2)), int(status.group(1)) if status else 0)
    conn = _CONNECT.search(out)
    if conn:
        run.connect_ms = float(conn.group(1)) * _UNIT[conn.group(2)] * 1000
    if run.ok != n:
        run.note = f"{run.ok}/{n} ok"
    return run


_files: dict[int, Path] = {}


def body_file(ctx: Ctx, size: int) -> Path:
    path = _files.get(size)
    if path is None:
        path = ctx.tmp / f"body-{size}.bin"
        chunk = b"0123456789abcdef" * 4096
        with open(path, "wb") as f:
            left = size
            while left > 0:
                f.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        _files[size] = path
    return path


def transfer(ctx: Ctx, url: str, n: int, size: int, upload: bool, ns: str | None, timeout: int) -> Run:
    if upload:
        run = h2load(url, n, body_file(ctx, size), ns, timeout)
    else:
        run = h2load(f"{url}?n={size}", n, None, ns, timeout)
    run.nbytes = n * size
    return run


def median_run(runs: list[Run]) -> Run:
    good = [r for r in runs if not r.note]
    if not good:
        return runs[-1]
    good.sort(key=lambda r: r.mbps)
    return good[(len(good) - 1) // 2] if len(good) % 2 else _mean_of_middle(good)


def _mean_of_middle(good: list[Run]) -> Run:
    a, b = good[len(good) // 2 - 1], good[len(good) // 2]
    secs = a.nbytes / ((a.mbps + b.mbps) / 2 * MB)
    return Run(secs, a.ok, a.total, a.nbytes, a.connect_ms)


def capped(nominal: int, window: int, rtt_ms: float, cap: float, floor: int) -> int:
    """The body that keeps a window-bound run near ``cap`` seconds (whole MiB, >= ``floor``)."""
    if rtt_ms <= 0:
        return nominal
    est = window / (rtt_ms / 1000.0) * cap
    if est >= nominal:
        return nominal
    return max(floor, int(est) // MiB * MiB)


# --------------------------------------------------------------------------- the delay


class Delay:
    """Two namespaces, server and client side, with ``rtt`` ms between them (netem or tun)."""

    def __init__(self, method: str, ctx: Ctx) -> None:
        self.method = method
        self.ctx = ctx
        self.made = False
        self.relay: subprocess.Popen | None = None
        self.qdisc = False

    @staticmethod
    def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), check=check, timeout=20, capture_output=True, text=True)

    def _namespaces(self) -> None:
        self.made = True
        tcp = {k: Path(f"/proc/sys/net/ipv4/{k}").read_text().split() for k in ("tcp_rmem", "tcp_wmem")}
        for ns in (NS_SRV, NS_CLI):
            self.sh("ip", "netns", "add", ns)
            self.sh("ip", "-n", ns, "link", "set", "lo", "up")
            for key, vals in tcp.items():
                self.sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv4.{key}={' '.join(vals)}")

    def _veth(self) -> None:
        self.sh("ip", "link", "add", DEV_SRV, "type", "veth", "peer", "name", DEV_CLI)
        for ns, dev, ip in ((NS_SRV, DEV_SRV, IP_SRV), (NS_CLI, DEV_CLI, IP_CLI)):
            self.sh("ip", "link", "set", dev, "netns", ns)
            self.sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            self.sh("ip", "-n", ns, "link", "set", dev, "up")

    def _netem(self, rtt: float) -> bool:
        verb = "change" if self.qdisc else "add"
        for ns, dev in ((NS_SRV, DEV_SRV), (NS_CLI, DEV_CLI)):
            r = self.sh("tc", "-n", ns, "qdisc", verb, "dev", dev, "root", "netem", "delay",
                        f"{rtt / 2:g}ms", "limit", "100000", check=False)
            if r.returncode != 0:
                return False
        self.qdisc = True
        return True

    def _tun(self, rtt: float) -> None:
        if self.relay is not None:
            stop(self.relay)  # its devices go with it
        cmd = ["taskset", "-c", CLIENT_CPU, PY, str(Path(__file__).resolve()), "--relay",
               "--delay-ms", f"{rtt:g}", "--ns-srv", NS_SRV, "--ns-cli", NS_CLI, "--parent", str(os.getpid())]
        self.relay = spawn(cmd, self.ctx.tmp / f"relay-{rtt:g}.log")
        for ns, dev, ip, peer in ((NS_SRV, DEV_SRV, IP_SRV, IP_CLI), (NS_CLI, DEV_CLI, IP_CLI, IP_SRV)):
            self.sh("ip", "-n", ns, "addr", "add", ip, "peer", peer, "dev", dev)
            self.sh("ip", "-n", ns, "link", "set", dev, "mtu", str(TUN_MTU), "up")

    def set_rtt(self, rtt: float) -> str:
        """Make the path ``rtt`` ms long; returns the method used ("netem" or "tun")."""
        if shutil.which("ip") is None or shutil.which("tc") is None:
            raise SystemExit("ip/tc not found: apt-get install iproute2")
        if not self.made:
            self._namespaces()
            if self.method in ("auto", "netem"):
                self._veth()
                if self._netem(rtt):
                    self.method = "netem"
                    return self.method
                if self.method == "netem":
                    raise SystemExit("tc refused netem (no sch_netem in this kernel?): try --delay tun")
                self.sh("ip", "-n", NS_SRV, "link", "del", DEV_SRV, check=False)
            self.method = "tun"
        if self.method == "netem":
            if not self._netem(rtt):
                raise SystemExit("tc qdisc change netem failed")
        else:
            self._tun(rtt)
        return self.method

    def destroy(self) -> None:
        if self.relay is not None:
            stop(self.relay)
            self.relay = None
        if self.made:
            self.made = False
            for ns in (NS_SRV, NS_CLI):  # a namespace takes its devices with it
                self.sh("ip", "netns", "del", ns, check=False)


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Setting:
    sw: int
    cw: int
    th: int

    @property
    def label(self) -> str:
        return f"{fmt_size(self.sw)} / {fmt_size(self.cw)} / {fmt_size(self.th)}"


@dataclass
class Row:
    setting: Setting
    rtt: float
    up1: Run | None = None
    up10: Run | None = None
    down1: Run | None = None
    connect_ms: float = 0.0


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    memory: dict[Setting, tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=dict)
    methods: dict[float, str] = field(default_factory=dict)


def settings_for(args: argparse.Namespace) -> list[Setting]:
    out: list[Setting] = []
    for sw in args.windows:
        for cw in args.windows:
            if cw >= sw:  # a stream never gets more than the connection window
                out.append(Setting(sw, cw, min(args.threshold, sw)))
    for base in args.threshold_base:
        sw_text, _, cw_text = base.partition("/")
        sw, cw = parse_size(sw_text), parse_size(cw_text)
        for th in args.thresholds:
            s = Setting(sw, cw, th)
            if th <= min(sw, cw) and s not in out:
                out.append(s)
    return out


def measure_throughput(ctx: Ctx, s: Setting, rtt: float, ns_srv: str | None, ns_cli: str | None,
                       host: str) -> Row:
    args = ctx.args
    row = Row(s, rtt)
    repeat = args.repeat if rtt == 0 else args.repeat_rtt
    cap = args.time_cap
    timeout = int(cap * 5 + 30)
    srv = start_server(ctx, s, ns_srv, host)
    try:
        up = srv.url + "/upload"
        warm = transfer(ctx, up, 1, WARMUP_BYTES, True, ns_cli, 60)
        row.connect_ms = warm.connect_ms
        size1 = capped(UP1_BYTES, min(s.sw, s.cw), rtt, cap, MIN_BODY)
        row.up1 = median_run([transfer(ctx, up, 1, size1, True, ns_cli, timeout) for _ in range(repeat)])
        size10 = capped(10 * UP10_BYTES, min(10 * s.sw, s.cw), rtt, cap, 10 * MiB) // 10 // MiB * MiB
        row.up10 = median_run([transfer(ctx, up, 10, size10, True, ns_cli, timeout) for _ in range(repeat)])
        if args.download:
            down = srv.url + "/download"
            row.down1 = median_run([transfer(ctx, down, 1, args.down_bytes, False, ns_cli, timeout)
                                    for _ in range(repeat)])
    finally:
        stop(srv.proc)
    return row


def measure_memory(ctx: Ctx, s: Setting, path: str) -> tuple[float, float]:
    srv = start_server(ctx, s, None, "127.0.0.1")
    try:
        transfer(ctx, srv.url + "/upload", 1, WARMUP_BYTES, True, None, 60)
        time.sleep(0.2)
        base = rss(srv.proc.pid)
        with RssPoller(srv.proc.pid) as poll:
            run = transfer(ctx, srv.url + path, MEM_STREAMS, MEM_BYTES, True, None,
                           int(ctx.args.stall * 4 + 60))
        if run.note:
            print(f"  memory {path}: {run.note}", file=sys.stderr)
        return poll.peak / MiB, (poll.peak - base) / MiB
    finally:
        stop(srv.proc)


# --------------------------------------------------------------------------- output


def cell(run: Run | None) -> str:
    if run is None:
        return "-"
    return run.note or f"{run.mbps:.1f}"


def sent(run: Run | None) -> str:
    return "-" if run is None else f"{run.nbytes / MiB:g}"


def table(res: Results) -> str:
    lines = []
    for rtt in sorted({r.rtt for r in res.rows}):
        rows = [r for r in res.rows if r.rtt == rtt]
        if rtt == 0:
            lines.append("\n#### loopback (127.0.0.1)\n")
        else:
            conn = statistics.median(r.connect_ms for r in rows)
            lines.append(f"\n#### {rtt:g} ms RTT ({res.methods.get(rtt, '?')}; h2load connect "
                         f"time, median: {conn:.1f} ms)\n")
        lines.append("| stream / conn / threshold | window/RTT MB/s | up 1 stream MB/s | MiB "
                     "| up 10 streams MB/s | MiB | down 1 stream MB/s |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            s = r.setting
            bound = "∞" if rtt == 0 else f"{min(s.sw, s.cw) / (rtt / 1000) / MB:.1f}"
            lines.append(f"| {s.label} | {bound} | {cell(r.up1)} | {sent(r.up1)} | {cell(r.up10)} "
                         f"| {sent(r.up10)} | {cell(r.down1)} |")
    if res.memory:
        lines.append(f"\n#### server memory: {MEM_STREAMS} concurrent {MEM_BYTES // MiB} MiB uploads "
                     "on one connection (loopback)\n")
        lines.append("| stream / conn / threshold | min(conn, 100 × stream) MiB | stall: peak RSS MiB "
                     "| stall: +MiB | drain: peak RSS MiB | drain: +MiB |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for s, (st, dr) in res.memory.items():
            bound = min(s.cw, MEM_STREAMS * min(s.sw, MEM_BYTES)) / MiB
            lines.append(f"| {s.label} | {bound:g} | {st[0]:.1f} | {st[1]:+.1f} | {dr[0]:.1f} | {dr[1]:+.1f} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def sysctl(name: str) -> str:
        with contextlib.suppress(OSError):
            return Path(f"/proc/sys/net/ipv4/{name}").read_text().strip().replace("\t", " ")
        return "?"

    h2v = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
            f"{h2v}; tcp_rmem {sysctl('tcp_rmem')}, tcp_wmem {sysctl('tcp_wmem')}, "
            f"congestion control {sysctl('tcp_congestion_control')}")


def export_source(rev: str, tmp: Path) -> tuple[Path, str]:
    """The rr + supervisors packages as committed at ``rev`` (or the work tree), and a label."""
    if rev == "worktree":
        return ROOT, "work tree"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True,
                            capture_output=True, text=True, timeout=20).stdout.strip()
    dest = tmp / "src"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "rr", "supervisors"],
                             check=True, capture_output=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return dest, f"commit {commit}"


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=doc.split("\n\n", 2)[2])
    ap.add_argument("--rtts", default="0,10,50", help="round-trip times in ms, 0 = loopback (default 0,10,50)")
    ap.add_argument("--windows", type=sizes, default="64K,256K,1M,4M,16M",
                    help="sizes for the stream_window x conn_window rows (default 64K,256K,1M,4M,16M)")
    ap.add_argument("--threshold", type=parse_size, default=32 * KiB,
                    help="window_refill_threshold of the window rows, capped at stream_window (default 32K)")
    ap.add_argument("--thresholds", type=sizes, default="8K,32K,128K,512K",
                    help="thresholds tried on the --threshold-base pairs (default 8K,32K,128K,512K)")
    ap.add_argument("--threshold-base", default="256K/1M,1M/4M",
                    help="stream/conn pairs for the threshold rows (default 256K/1M,1M/4M)")
    ap.add_argument("--delay", choices=("auto", "netem", "tun"), default="auto",
                    help="how a non-zero RTT is made (default auto: netem, else tun)")
    ap.add_argument("--time-cap", type=float, default=6.0,
                    help="seconds a window-bound upload may last before its body is cut (default 6)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per loopback cell, median shown (default 3)")
    ap.add_argument("--repeat-rtt", type=int, default=1, help="runs per non-zero-RTT cell (default 1)")
    ap.add_argument("--stall", type=float, default=1.5, help="seconds /stall waits before reading (default 1.5)")
    ap.add_argument("--down-bytes", type=parse_size, default=DOWN_BYTES, help="download size (default 64M)")
    ap.add_argument("--no-download", dest="download", action="store_false", help="skip the download column")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the 100-stream memory runs")
    ap.add_argument("--quick", action="store_true", help="64K/64K, 256K/1M and 1M/4M at 0 and 50 ms only")
    ap.add_argument("--rev", default="HEAD", help="the rr commit to measure, or 'worktree' (default HEAD)")
    ap.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    # internal modes
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--bind", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--sw", type=int, default=256 * KiB, help=argparse.SUPPRESS)
    ap.add_argument("--cw", type=int, default=MiB, help=argparse.SUPPRESS)
    ap.add_argument("--th", type=int, default=32 * KiB, help=argparse.SUPPRESS)
    ap.add_argument("--delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--ns-srv", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ns-cli", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threshold_base = [x for x in args.threshold_base.split(",") if x.strip()]
    return args


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args)
        return
    if args.relay:
        relay(args)
        return

    rtts = [float(x) for x in args.rtts.split(",") if x.strip()]
    settings = settings_for(args)
    if args.quick:
        rtts = [0.0, 50.0]
        settings = [Setting(64 * KiB, 64 * KiB, 32 * KiB), Setting(256 * KiB, MiB, 32 * KiB),
                    Setting(MiB, 4 * MiB, 32 * KiB)]
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    if any(r > 0 for r in rtts) and os.geteuid() != 0:
        raise SystemExit("a non-zero RTT needs root (ip netns, tc); use --rtts 0")

    tmp = Path(tempfile.mkdtemp(prefix="rr-h2win-"))
    src, source = export_source(args.rev, tmp)
    ctx = Ctx(args, tmp, src)
    delay = Delay(args.delay, ctx)

    def cleanup() -> None:
        for proc in list(_children):
            with contextlib.suppress(Exception):
                stop(proc)
        delay.destroy()
        shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(cleanup)

    def on_signal(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.monotonic()
    load = [os.getloadavg()[0]]
    res = Results()
    print(f"# rr {source}; {len(settings)} settings x RTTs {args.rtts if not args.quick else '0,50'}", flush=True)
    try:
        for rtt in rtts:
            if rtt > 0:
                res.methods[rtt] = delay.set_rtt(rtt)
                ns_srv, ns_cli, host = NS_SRV, NS_CLI, IP_SRV
                print(f"# RTT {rtt:g} ms ({res.methods[rtt]})", flush=True)
            else:
                ns_srv = ns_cli = None
                host = "127.0.0.1"
                print("# loopback", flush=True)
            for s in settings:
                row = measure_throughput(ctx, s, rtt, ns_srv, ns_cli, host)
                res.rows.append(row)
                load.append(os.getloadavg()[0])
                print(f"  {s.label:>20}  up1 {cell(row.up1):>8}  up10 {cell(row.up10):>8}  "
                      f"down1 {cell(row.down1):>8}  connect {row.connect_ms:.1f} ms  "
                      f"[{time.monotonic() - started:.0f}s]", flush=True)
                if rtt == 0 and args.memory:
                    res.memory[s] = (measure_memory(ctx, s, "/stall"), measure_memory(ctx, s, "/upload"))
                    (sp, sd), (dp, dd) = res.memory[s]
                    print(f"  {'':>20}  memory stall {sp:.1f} MiB ({sd:+.1f})  drain {dp:.1f} MiB ({dd:+.1f})",
                          flush=True)
    finally:
        cleanup()

    head = [f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
            f"- machine: {machine()}",
            f"- rr: {source}",
            "- command: " + " ".join([".venv/bin/python", "tools/bench_h2_window.py", *sys.argv[1:]]),
            f"- total time: {time.monotonic() - started:.0f} s; 1-min load average during the runs: "
            f"{min(load):.1f}..{max(load):.1f}"]
    text = "\n".join(head) + "\n" + table(res) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
