#!/usr/bin/env python3
"""HTTP/3 benchmark: rr against hypercorn's HTTP/3, same routes, same client, one run.

    .venv/bin/python tools/bench_h3.py [--servers rr,hypercorn] [--duration 5] [--rounds 2]
                                       [--scenarios hello,json,echo,large_response,multiplex_100,echo_100]
                                       [--client auto|h3bench|curl_cffi]

Each server runs pinned to CPU 0 (``taskset``), the load client to CPU 1. Both clients are
libcurl + ngtcp2 + nghttp3 (the build curl_cffi ships), HTTP/3 only, the requests of a cell
multiplexed as streams of one QUIC connection, each of ``concurrency`` requests started again
as soon as it ends:

- ``h3bench`` (default; ``tools/bench_apps/h3bench.c``, built here with ``cc``): that libcurl
  driven from C, one multi handle; it checks every response's status, HTTP version and body
  length. Debian's h2load is built without HTTP/3 and gtlsclient has no closed loop
  (docs/bench_h3.md), so this is the C client.
- ``curl_cffi`` (``tools/bench_apps/h3_load.py``): the same libcurl from Python asyncio, which
  costs ~150-260 µs of client CPU per request (the rows before 2026-12-01 used it).

``auto`` takes h3bench when it builds and loads, else curl_cffi, and says which. Before the
rounds a pre-flight request per server and scenario checks the status and the body. Rounds are
interleaved across servers; the table reports the best round per cell, the server's CPU (its
process tree, sampled) and the client's, so a row shows which side was the bottleneck, and
each round line the share of the time the server's busiest process and the client slept.
``RR_BASE=<checkout>`` adds ``rr-base`` (rr at another commit) for before/after rows;
``rr-dgram`` is rr with ``http3.max_datagram_size`` 16384 (since path MTU discovery, rr's
default too: it probes up to 16384, which loopback carries and curl receives; hypercorn sends
aioquic's 1200). Needs a quiet machine: never while tests run.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tools" / "bench_apps"
PY = sys.executable
BIN = Path(PY).parent
SERVER_CPU, CLIENT_CPU = "0", "1"
H3BENCH_SRC = APPS / "h3bench.c"
H3BENCH_BIN = APPS / "build" / "h3bench"
CLIENTS = ("h3bench", "curl_cffi")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    concurrency: int = 20
    method: str = "GET"
    body_size: int = 0
    response_size: int | None = None  # every response's body length, when the route fixes it


def _common():  # tools/bench_apps/bench_common.py: the routes' bytes (loaded by path: sys.path untouched)
    spec = importlib.util.spec_from_file_location("rr_bench_common", APPS / "bench_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_C = _common()
SCENARIOS = {s.name: s for s in [
    Scenario("hello", "/", response_size=len(_C.HELLO)),
    Scenario("json", "/json"),
    Scenario("echo", "/echo", method="POST", body_size=256, response_size=256),
    Scenario("large_response", "/large", response_size=len(_C.LARGE)),
    Scenario("multiplex_100", "/", concurrency=100, response_size=len(_C.HELLO)),
    Scenario("echo_100", "/echo", concurrency=100, method="POST", body_size=256, response_size=256),
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
        if not (BIN / "hypercorn").exists():
            raise SystemExit("hypercorn is not installed (pip install -e '.[bench]')")
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


def curl_cffi_libs() -> tuple[str, str] | str:
    """(libcurl, libpython) for h3bench: curl_cffi's module, which exports libcurl's C API, and the
    shared libpython its Python glue's symbols resolve against; or why there are none."""
    spec = importlib.util.find_spec("curl_cffi")
    if spec is None or not spec.submodule_search_locations:
        return "curl_cffi is not installed (pip install curl_cffi)"
    wrappers = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "_wrapper*.so")))
    if not wrappers:
        return "curl_cffi has no _wrapper*.so (a build that does not bundle libcurl)"
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    libpython = Path(sysconfig.get_config_var("LIBDIR") or "") / soname
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libpython.is_file():
        return f"{PY} has no shared libpython (curl_cffi's module needs its symbols to load)"
    return wrappers[0], str(libpython)


def h3bench_unavailable() -> str | None:
    """Why tools/bench_apps/h3bench.c cannot run (None when it can): built into tools/bench_apps/build/
    when the binary is missing or older than the source (``bench_common.build_c``)."""
    libs = curl_cffi_libs()
    if isinstance(libs, str):
        return libs
    return _C.build_c(H3BENCH_SRC, H3BENCH_BIN, ("-ldl",))


def choose_client(which: str) -> tuple[str, str]:
    """(client, why): h3bench when it builds (``which`` auto or h3bench), else curl_cffi (auto or
    curl_cffi); ``why`` says why h3bench was passed over. SystemExit when the one asked for cannot run."""
    if which not in ("auto", *CLIENTS):
        raise SystemExit(f"--client {which!r}: one of auto, {', '.join(CLIENTS)}")
    if which == "curl_cffi":
        return "curl_cffi", ""
    no = h3bench_unavailable()
    if no is None:
        return "h3bench", ""
    if which == "h3bench":
        raise SystemExit(f"--client h3bench: {no}")
    return "curl_cffi", f"h3bench: {no}"


def client_argv(client: str, sc: Scenario, port: int, duration: float, warmup: float = 1.0,
                concurrency: int | None = None) -> list[str]:
    """The load client's command line for one cell (without the taskset prefix)."""
    url = f"https://127.0.0.1:{port}{sc.path}"
    load = ["--concurrency", str(concurrency or sc.concurrency), "--duration", f"{duration:g}",
            "--warmup", f"{warmup:g}", "--method", sc.method, "--body-size", str(sc.body_size)]
    if client == "h3bench":
        libs = curl_cffi_libs()
        if isinstance(libs, str):
            raise SystemExit(f"h3bench: {libs}")
        return [str(H3BENCH_BIN), "--lib", libs[0], "--preload", libs[1], "--url", url, *load]
    if client == "curl_cffi":
        return [PY, str(APPS / "h3_load.py"), url, *load]
    raise ValueError(f"client {client!r}: one of {', '.join(CLIENTS)}")


def parse_client(stdout: str) -> dict:
    """The client's JSON line (its last line of output) with the derived fields every cell reports:
    rps and client_cpu_share. Both clients print requests, errors, seconds, client_cpu, client_idle."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("the load client printed nothing")
    result = json.loads(lines[-1])
    for key in ("requests", "errors", "seconds", "client_cpu"):
        if key not in result:
            raise ValueError(f"the load client's line has no {key!r}: {lines[-1]}")
    seconds = result["seconds"] or 1e-9
    result["rps"] = result["requests"] / seconds
    result["client_cpu_share"] = result["client_cpu"] / seconds
    return result


def problems(result: dict, sc: Scenario) -> list[str]:
    """What says a cell's responses were not the scenario's: errors, a status other than 200, a
    response not over HTTP/3, more than one connection, a body of the wrong length (h3bench's
    fields; curl_cffi's line reports errors only)."""
    out = []
    if result["errors"]:
        out.append(f"{result['errors']} errors ({result.get('first_error') or 'status other than 200'})")
    if result.get("not_h3"):
        out.append(f"{result['not_h3']} responses not over HTTP/3")
    statuses = {k: v for k, v in result.get("statuses", {}).items() if k != "200"}
    if statuses:
        out.append(f"statuses {statuses}")
    if result.get("connections", 0) > 1:
        out.append(f"{result['connections']} connections (one expected)")
    if "body_min" in result and result["requests"]:
        if result["body_min"] != result["body_max"]:
            out.append(f"bodies of {result['body_min']}..{result['body_max']} bytes")
        elif sc.response_size is not None and result["body_min"] != sc.response_size:
            out.append(f"bodies of {result['body_min']} bytes, {sc.response_size} expected")
    return out


def preflight(client: str, sc: Scenario, port: int) -> dict:
    """A short run with one request in flight: the scenario answers 200 over HTTP/3 with the right
    body (every check of ``problems``), or SystemExit. The first try may pay for the handshake."""
    argv = client_argv(client, sc, port, duration=0.3, warmup=0.1, concurrency=1)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    try:
        result = parse_client(done.stdout)
    except ValueError as exc:
        raise SystemExit(f"pre-flight {sc.name} on {port}: {exc}; stderr: {done.stderr[-500:]}") from None
    bad = problems(result, sc) + ([] if result["requests"] else ["no response"])
    if bad:
        raise SystemExit(f"pre-flight {sc.name} on {port}: " + "; ".join(bad))
    return result


def wait_ready(client: str, port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Until one hello over HTTP/3 answers; SystemExit with the server's own last words if its
    process ends first (a missing package, a bad option) or nothing answers within ``timeout``."""
    probe = client_argv(client, SCENARIOS["hello"], port, duration=0.2, warmup=0, concurrency=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:].strip()
            raise SystemExit(f"server on {port} exited ({proc.returncode}) before it answered: {tail}")
        done = subprocess.run(probe, capture_output=True, text=True)
        try:
            if parse_client(done.stdout)["requests"] > 0:
                return
        except ValueError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"server on {port} never answered over HTTP/3 (its log: {log})")


def run_cell(client: str, sc: Scenario, port: int, pid: int, duration: float) -> dict:
    argv = ["taskset", "-c", CLIENT_CPU, *client_argv(client, sc, port, duration)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the client's warm-up second
    cpu0, sched0, t0 = tree_cpu(pid), tree_sched(pid), time.monotonic()
    out, _ = proc.communicate(timeout=duration + 60)
    cpu1, sched1, t1 = tree_cpu(pid), tree_sched(pid), time.monotonic()
    result = parse_client(out)
    result["server_cpu"] = (cpu1 - cpu0) / (t1 - t0)
    result["server_us"] = 1e6 * result["server_cpu"] / max(result["rps"], 1e-9)
    result["client_us"] = 1e6 * result["client_cpu"] / max(result["requests"], 1)
    result["server_idle"] = idle_share(sched0, sched1, t1 - t0)
    result["problems"] = problems(result, sc)
    return result


def round_line(rnd: int, sc: Scenario, name: str, r: dict) -> str:
    line = (f"round {rnd} {sc.name:15s} {name:10s} {r['rps']:8.0f} req/s  errors {r['errors']}"
            f"  server cpu {r['server_cpu']:.0%} ({r['server_us']:.0f} µs/request)"
            f"  client cpu {r['client_cpu_share']:.0%} ({r['client_us']:.0f} µs/request)"
            f"  idle: server {r['server_idle']:.0%} client {r.get('client_idle', 0):.0%}")
    return line + ("  PROBLEMS: " + "; ".join(r["problems"]) if r.get("problems") else "")


def table(best: dict[tuple[str, str], dict], servers: list[str], scenarios: list[Scenario]) -> list[str]:
    """The markdown table of the best round per cell: req/s (server / client CPU; server / client
    µs per request), and when both ran rr ÷ hypercorn in req/s and in server CPU per request
    (hypercorn's µs ÷ rr's: what the req/s ratio is when both servers are bound by their core,
    and what moves least when other load shares the machine)."""
    ratio = "hypercorn" in servers and "rr" in servers
    head = "| scenario | " + " | ".join(f"{n} req/s (server / client cpu; server / client µs/req)" for n in servers)
    out = [head + (" | rr ÷ hypercorn | by server µs/req |" if ratio else " |"),
           "|---" * (len(servers) + 1 + 2 * ratio) + "|"]
    for sc in scenarios:
        cells = []
        for n in servers:
            r = best[(sc.name, n)]
            cells.append(f"{r['rps']:.0f} ({r['server_cpu']:.0%} / {r['client_cpu_share']:.0%}; "
                         f"{r['server_us']:.0f} / {r['client_us']:.0f} µs)")
        row = f"| {sc.name} (c={sc.concurrency}) | " + " | ".join(cells)
        if ratio:
            rr_, hc = best[(sc.name, "rr")], best[(sc.name, "hypercorn")]
            row += f" | {rr_['rps'] / hc['rps']:.2f}× | {hc['server_us'] / max(rr_['server_us'], 1e-9):.2f}×"
        out.append(row + " |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="rr,hypercorn")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--client", default="auto", help="auto (h3bench when it builds), h3bench or curl_cffi")
    a = p.parse_args()
    servers = a.servers.split(",")
    scenarios = [SCENARIOS[n] for n in a.scenarios.split(",")]
    client, why = choose_client(a.client)
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
            wait_ready(client, port, proc, tmp / f"{name}.log")
        libcurl = ""
        for name in servers:
            for sc in scenarios:
                libcurl = preflight(client, sc, running[name][1]).get("libcurl", libcurl)
        print(f"load: {client} on CPU {CLIENT_CPU}" + (f" ({libcurl})" if libcurl else "")
              + (f"; {why}" if why else "") + f"; servers on CPU {SERVER_CPU}", flush=True)
        best: dict[tuple[str, str], dict] = {}
        for rnd in range(a.rounds):
            for sc in scenarios:
                for name in servers:
                    proc, port = running[name]
                    r = run_cell(client, sc, port, proc.pid, a.duration)
                    print(round_line(rnd + 1, sc, name, r), flush=True)
                    key = (sc.name, name)
                    if key not in best or r["rps"] > best[key]["rps"]:
                        best[key] = r
        print("\n" + "\n".join(table(best, servers, scenarios)))
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
