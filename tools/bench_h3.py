#!/usr/bin/env python3
"""HTTP/3 benchmark: rr against hypercorn's HTTP/3, same routes, same client, one run.

    .venv/bin/python tools/bench_h3.py [--servers rr,hypercorn] [--duration 5] [--rounds 2]
                                       [--scenarios hello,json,echo,large_response,multiplex_100]

Each server runs pinned to CPU 0 (``taskset``), the load client to CPU 1: libcurl
with ngtcp2 through ``curl_cffi`` (``tools/bench_apps/h3_load.py``; HTTP/3 only,
requests multiplexed as streams of one QUIC connection), the only fast HTTP/3
client installable here (Debian's h2load is built without HTTP/3). Rounds are
interleaved across servers; the table reports the best round per cell, the
server's CPU (its process tree, sampled) and the client's, so a row shows which
side was the bottleneck. ``RR_BASE=<checkout>`` adds ``rr-base`` (rr at another
commit) for before/after rows; ``rr-dgram`` is rr with ``http3.max_datagram_size``
16384 (since path MTU discovery, rr's default too: it probes up to 16384, which
loopback carries and curl receives; hypercorn sends aioquic's 1200). Needs a quiet machine: never while tests run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tools" / "bench_apps"
PY = sys.executable
BIN = Path(PY).parent
SERVER_CPU, CLIENT_CPU = "0", "1"


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    concurrency: int = 20
    method: str = "GET"
    body_size: int = 0


SCENARIOS = {s.name: s for s in [
    Scenario("hello", "/"),
    Scenario("json", "/json"),
    Scenario("echo", "/echo", method="POST", body_size=256),
    Scenario("large_response", "/large"),
    Scenario("multiplex_100", "/", concurrency=100),
    Scenario("echo_100", "/echo", concurrency=100, method="POST", body_size=256),
]}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u.bind(("127.0.0.1", port))
        return port


def make_cert(directory: Path) -> tuple[str, str]:
    sys.path.insert(0, str(ROOT))
    from tests.rr.certs import make_cert as make  # ECDSA P-256, the deployment default

    return make(directory)


def server_argv(name: str, port: int, cert: tuple[str, str]) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if name in ("rr", "rr-dgram"):
        env["PYTHONPATH"] = f"{ROOT}:{APPS}"
        if name == "rr-dgram":  # rr with http3.max_datagram_size 16384 (loopback carries it, curl takes it)
            env["RR_H3_MAX_DATAGRAM_SIZE"] = "16384"
        return [PY, str(APPS / "rr_h3_app.py"), str(port), *cert], env
    if name == "rr-base":
        base = Path(os.environ["RR_BASE"]).resolve()
        env["PYTHONPATH"] = f"{base}:{base / 'tools' / 'bench_apps'}"
        return [PY, str(base / "tools" / "bench_apps" / "rr_h3_app.py"), str(port), *cert], env
    if name == "hypercorn":
        return [str(BIN / "hypercorn"), "--quic-bind", f"127.0.0.1:{port}", "--bind", f"127.0.0.1:{port}",
                "--certfile", cert[0], "--keyfile", cert[1], "--workers", "1", "--worker-class", "uvloop",
                "--keep-alive", "600", "--log-level", "warning", "asgi_app:app"], {**env, "PYTHONPATH": str(APPS)}
    raise SystemExit(f"unknown server {name!r} (rr, rr-dgram, rr-base, hypercorn)")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (from /proc)."""
    total = 0.0
    pids = [pid]
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(k) for k in kids]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
    return total


def tree_sched(pid: int) -> dict[int, tuple[float, float]]:
    """For ``pid`` and its children: seconds each has run on a CPU and waited for one."""
    out = {}
    pids = [pid]
    try:
        pids += [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            run, wait = Path(f"/proc/{p}/schedstat").read_text().split()[:2]
            out[p] = (int(run) / 1e9, int(wait) / 1e9)
        except (OSError, ValueError):
            pass
    return out


def idle_share(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]],
               wall: float) -> float:
    """The share of ``wall`` the busiest process slept: neither ran nor waited for a CPU. On a
    machine shared with other load, what says a process waited on its peer, not on the CPU."""
    busiest = max(after, key=lambda p: after[p][0] - before.get(p, (0.0, 0.0))[0], default=None)
    if busiest is None or busiest not in before:
        return 0.0
    (r0, w0), (r1, w1) = before[busiest], after[busiest]
    return max(0.0, 1 - ((r1 - r0) + (w1 - w0)) / wall)


def wait_ready(port: int, timeout: float = 30.0) -> None:
    probe = [PY, str(APPS / "h3_load.py"), f"https://127.0.0.1:{port}/", "--concurrency", "1",
             "--duration", "0.2", "--warmup", "0"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0 and json.loads(done.stdout)["requests"] > 0:
            return
        time.sleep(0.3)
    raise SystemExit(f"server on {port} never answered over HTTP/3")


def run_cell(sc: Scenario, port: int, pid: int, duration: float) -> dict:
    argv = ["taskset", "-c", CLIENT_CPU, PY, str(APPS / "h3_load.py"), f"https://127.0.0.1:{port}{sc.path}",
            "--concurrency", str(sc.concurrency), "--duration", str(duration), "--method", sc.method,
            "--body-size", str(sc.body_size)]
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the client's warm-up second
    cpu0, sched0, t0 = tree_cpu(pid), tree_sched(pid), time.monotonic()
    out, _ = client.communicate(timeout=duration + 60)
    cpu1, sched1, t1 = tree_cpu(pid), tree_sched(pid), time.monotonic()
    result = json.loads(out)
    result["rps"] = result["requests"] / result["seconds"]
    result["server_cpu"] = (cpu1 - cpu0) / (t1 - t0)
    result["client_cpu_share"] = result["client_cpu"] / result["seconds"]
    result["server_us"] = 1e6 * result["server_cpu"] / max(result["rps"], 1e-9)
    result["server_idle"] = idle_share(sched0, sched1, t1 - t0)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="rr,hypercorn")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    servers = a.servers.split(",")
    scenarios = [SCENARIOS[n] for n in a.scenarios.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-h3-"))
    cert = make_cert(tmp)
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        for name in servers:
            port = free_port()
            argv, env = server_argv(name, port, cert)
            proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], env=env, cwd=APPS,
                                    stdout=subprocess.DEVNULL, stderr=(tmp / f"{name}.log").open("w"))  # noqa: SIM115 - lives as long as the server
            running[name] = (proc, port)
            wait_ready(port)
        best: dict[tuple[str, str], dict] = {}
        for rnd in range(a.rounds):
            for sc in scenarios:
                for name in servers:
                    proc, port = running[name]
                    r = run_cell(sc, port, proc.pid, a.duration)
                    print(f"round {rnd + 1} {sc.name:15s} {name:10s} {r['rps']:8.0f} req/s  errors {r['errors']}"
                          f"  server cpu {r['server_cpu']:.0%} ({r['server_us']:.0f} µs/request)"
                          f"  client cpu {r['client_cpu_share']:.0%}"
                          f"  idle: server {r['server_idle']:.0%} client {r.get('client_idle', 0):.0%}", flush=True)
                    key = (sc.name, name)
                    if key not in best or r["rps"] > best[key]["rps"]:
                        best[key] = r
        head = "| scenario | " + " | ".join(f"{n} req/s (server cpu / client cpu; server µs/req)" for n in servers)
        if "hypercorn" in servers and "rr" in servers:
            head += " | rr ÷ hypercorn"
        print("\n" + head + " |")
        print("|---" * (len(servers) + 1 + ("hypercorn" in servers and "rr" in servers)) + "|")
        for sc in scenarios:
            cells = [f"{best[(sc.name, n)]['rps']:.0f} ({best[(sc.name, n)]['server_cpu']:.0%} / "
                     f"{best[(sc.name, n)]['client_cpu_share']:.0%}; {best[(sc.name, n)]['server_us']:.0f} µs)"
                     for n in servers]
            row = f"| {sc.name} (c={sc.concurrency}) | " + " | ".join(cells)
            if "hypercorn" in servers and "rr" in servers:
                row += f" | {best[(sc.name, 'rr')]['rps'] / best[(sc.name, 'hypercorn')]['rps']:.2f}×"
            print(row + " |")
    finally:
        for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in running.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
