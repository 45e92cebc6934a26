"""``rr.workers`` and ``rr --workers``/``--reload``: a master and worker OS processes, real sockets.

Each test runs the server as a subprocess (``python -m rr ... --workers 2``,
or a script calling ``rr.workers.run``) and drives it with httpx clients in
OS threads (blocking clients, while this process's hub reads the server's
log), curl and raw sockets where a request must stop half-way. What they
hold: a worker killed with -9 under load is replaced and the other worker's
connections see no error; a rolling restart (SIGHUP) under load fails no
request and ends with only new workers serving, and under wrk sees no socket
error; SIGTERM drains an in-flight
request and says so, a second one forces; crashes past the restart intensity
end the master with status 1; a worker that cannot start ends it with 2;
``--reload`` serves an edited module; the worker id reaches log lines.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import httpx
import pytest
from gevent import socket as gsocket
from gevent import subprocess

from tests.rr.conftest import read_until_close

pytestmark = pytest.mark.peers("curl")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# A safety net for every wait below (each waits on a log line or a count, never on time).
DEADLINE = 30.0

APP = '''
import os
import rr.workers
from rr import resp

def handler(req):
    return resp.text(200, str(os.getpid()))

def upload(req):
    return resp.text(200, f"got {req.read_body().decode()} from {os.getpid()}")

served = [0]

def counted(req):
    served[0] += 1
    if served[0] == 500:
        print(f"worker {rr.workers.worker_id()} served 500 requests", flush=True)
    return resp.text(200, "ok")

ROUTES = [("/", handler), {"path": "/upload", "handler": upload, "methods": ["POST"]}, ("/counted", counted)]
'''


class Server:
    """A server subprocess and its log (stdout and stderr), read line by line as it comes."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(args, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.seen = 0
        self._new = gevent.queue.Queue()
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._new.put(None)
        self._new.put(None)

    def expect(self, pattern: str) -> re.Match[str]:
        """The next log line (after the last one matched) matching ``pattern``."""
        deadline = time.monotonic() + DEADLINE
        while True:
            while self.seen < len(self.lines):
                line = self.lines[self.seen]
                self.seen += 1
                match = re.search(pattern, line)
                if match:
                    return match
            if self.proc.poll() is not None and self._reader.dead:
                raise AssertionError(f"server exited ({self.proc.returncode}) before {pattern!r}:\n" + self.log)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {DEADLINE} s:\n" + self.log)
            try:
                self._new.get(timeout=left)
            except gevent.queue.Empty:
                pass

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def accepting(self) -> tuple[int, int]:
        """(worker id, pid) of the next worker that says it accepts."""
        match = self.expect(r"worker accepting\s+(?:\[[\w.]+\]\s+)?pid=(\d+) worker=(\d+)")
        return int(match.group(2)), int(match.group(1))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self) -> int:
        code = self.proc.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE)
        self._reader.join(timeout=DEADLINE)
        for line in self.lines:  # a worker left behind would still hold the port
            match = re.search(r"worker started\s+(?:\[[\w.]+\]\s+)?pid=(\d+)", line)
            if match:
                try:
                    os.kill(int(match.group(1)), signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "wapp.py").write_text(APP)
    return tmp_path


@pytest.fixture
def servers() -> Any:
    started: list[Server] = []

    def start(cwd: Path, *args: str) -> Server:
        server = Server(cwd, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _cli(servers: Callable[..., Server], cwd: Path, *args: str) -> tuple[Server, str]:
    server = servers(cwd, sys.executable, "-m", "rr", "wapp:ROUTES", "--port", "0", *args)
    url = server.expect(r"listening on (http://\S+?)/ ").group(1)
    return server, url


class Load:
    """Clients in OS threads, each looping GET / on its own keep-alive connection (httpx),
    recording which worker (pid) answered and every failure with the pid its connection
    was on."""

    def __init__(self, clients: list[httpx.Client], url: str) -> None:
        self.url = url
        self.clients = clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.served: list[int] = []  # pid per successful response, in order
        self.by: list[int] = []  # which client (its index) read each of them
        self.failures: list[tuple[int | None, str]] = []  # (pid the connection was on, error)
        pool = gevent.get_hub().threadpool
        self.threads = [pool.spawn(self._loop, index, client) for index, client in enumerate(clients)]

    def _loop(self, index: int, client: httpx.Client) -> None:
        on: int | None = None
        for _ in range(100_000):
            if self.stop.is_set():
                return
            try:
                response = client.get(self.url + "/")
                response.raise_for_status()
                on = int(response.text)
                with self.lock:
                    self.served.append(on)
                    self.by.append(index)
            except (httpx.HTTPError, ValueError) as exc:
                with self.lock:
                    self.failures.append((on, f"{type(exc).__name__}: {exc}"))
                on = None

    def reach(self, count: int) -> int:
        """Wait (bounded) until ``count`` more responses were served; returns the total."""
        target = len(self.served) + count
        deadline = time.monotonic() + DEADLINE
        while len(self.served) < target:
            assert time.monotonic() < deadline, f"only {len(self.served)} of {target} responses"
            gevent.sleep(0.02)  # a look at a counter OS threads update; not a synchronisation sleep
        return len(self.served)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.get(timeout=DEADLINE)
        for client in self.clients:
            client.close()


def _client() -> httpx.Client:
    return httpx.Client(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1), timeout=10.0)


def _connected_to_each(url: str, pids: set[int], per_worker: int) -> list[httpx.Client]:
    """Keep-alive clients, ``per_worker`` of them connected to each of ``pids`` (which worker
    accepts a connection is the kernel's and the workers' race: try fresh ones until it fits)."""
    kept: dict[int, list[httpx.Client]] = {pid: [] for pid in pids}
    for _ in range(200):
        if all(len(v) >= per_worker for v in kept.values()):
            break
        client = _client()
        pid = int(client.get(url + "/").text)
        if len(kept[pid]) < per_worker:
            kept[pid].append(client)
        else:
            client.close()
    assert all(len(v) >= per_worker for v in kept.values()), {pid: len(v) for pid, v in kept.items()}
    return [client for clients in kept.values() for client in clients]


def test_a_worker_killed_with_sigkill_under_load_is_replaced_and_the_other_workers_connections_see_no_error(
        servers, app_dir):
    server, url = _cli(servers, app_dir, "--workers", "2")
    workers = dict([server.accepting(), server.accepting()])
    victim, survivor = workers[1], workers[2]
    clients = gevent.get_hub().threadpool.apply(_connected_to_each, (url, {victim, survivor}, 3))
    load = Load(clients, url)
    try:
        load.reach(200)
        os.kill(victim, signal.SIGKILL)
        server.expect(rf"worker exited unexpectedly: restarting it\s+(?:\[[\w.]+\]\s+)?how='killed by SIGKILL' pid={victim} worker=1")
        slot, replacement = server.accepting()
        load.reach(200)
    finally:
        load.finish()
    assert slot == 1 and replacement not in (victim, survivor)
    assert [f for f in load.failures if f[0] == survivor] == []
    assert load.served.count(survivor) > 200
    fresh = {int(_get(url)) for _ in range(60)}  # new connections: the replacement takes its share
    assert replacement in fresh, fresh


def _get(url: str) -> str:
    out = subprocess.run(["curl", "-s", "--max-time", "10", url + "/"], capture_output=True, timeout=20)
    return out.stdout.decode()


def test_a_rolling_restart_under_load_fails_no_request_and_ends_with_new_workers_only(servers, app_dir):
    server, url = _cli(servers, app_dir, "--workers", "2")
    old = dict([server.accepting(), server.accepting()])
    load = Load([_client() for _ in range(4)], url)
    try:
        load.reach(200)
        server.signal(signal.SIGHUP)
        done = server.expect(r"rolling restart done\s+(?:\[[\w.]+\]\s+)?workers=\[\(1, (\d+)\), \(2, (\d+)\)\]")
        new = {int(done.group(1)), int(done.group(2))}
        for pid in old.values():
            server.seen = 0
            server.expect(rf"worker exited\s+(?:\[[\w.]+\]\s+)?how='exit status 0' pid={pid} ")
        mark = load.reach(0)
        load.reach(200)
    finally:
        load.finish()
    assert load.failures == []
    assert not new & set(old.values())
    # Each client thread may append one response it read just before the old workers exited:
    # its first one after the mark (the threads' appends interleave in any order).
    after = []
    first_seen: set[int] = set()
    for pid, client in zip(load.served[mark:], load.by[mark:], strict=True):
        if client in first_seen:
            after.append(pid)
        first_seen.add(client)
    assert set(after) <= new and set(after) & new


@pytest.mark.slow
@pytest.mark.peers("wrk")
def test_a_rolling_restart_under_wrk_has_no_socket_error_and_no_failed_response(servers, app_dir):
    server, url = _cli(servers, app_dir, "--workers", "2")
    server.accepting(), server.accepting()
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d4s", f"{url}/counted"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        server.expect(r"worker \d served 500 requests")  # the load is flowing
        server.signal(signal.SIGHUP)
        server.expect(r"rolling restart done")
        out, _ = wrk.communicate(timeout=DEADLINE)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    text = out.decode()
    requests = re.search(r"(\d+) requests in", text)
    assert requests and int(requests.group(1)) > 500, text
    assert "Socket errors" not in text and "Non-2xx" not in text, text
    assert server.expect(r"worker \d served 500 requests")  # a new worker served under wrk too


def test_sigterm_drains_an_in_flight_request_in_a_worker_then_the_master_exits_0(servers, app_dir):
    server, url = _cli(servers, app_dir, "--workers", "2")
    server.accepting(), server.accepting()
    port = int(url.rsplit(":", 1)[1])
    with gsocket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")  # in flight
        assert _get(url).isdigit()  # the head above was read long before this answer
        server.signal(signal.SIGTERM)
        server.expect(r"stopping 2 workers: each drains its connections "
                      r"\(deadline 30 s; send the signal again to force\)")
        server.seen = 0
        # the in-flight request's worker; curl's finished connection may not be seen closed yet
        server.expect(r"draining [12] connections? \(deadline 30 s; send the signal again to force\).* worker=\d")
        sock.sendall(b"cde")
        answer = read_until_close(sock)  # draining: the answer says connection: close
    assert re.match(rb"HTTP/1.1 200 .*\r\n\r\ngot abcde from \d+$", answer, re.DOTALL), answer
    assert b"connection: close" in answer.lower(), answer
    assert server.wait() == 0, server.log
    with pytest.raises(OSError):
        gsocket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_second_sigterm_forces_the_workers_to_exit(servers, app_dir):
    server, url = _cli(servers, app_dir, "--workers", "1", "--drain-timeout", "60")
    server.accepting()
    port = int(url.rsplit(":", 1)[1])
    with gsocket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
        assert _get(url).isdigit()
        server.signal(signal.SIGTERM)
        server.expect(r"draining [12] connections? \(deadline 60 s")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait() == 0, server.log
    assert time.monotonic() - started < 15
    assert "second signal: forcing the workers to exit" in server.log


SCRIPT = '''
import os, sys
import rr.telemetry
import rr.workers
from rr import resp

def handler(req):
    return resp.text(200, f"{os.getpid()} worker {rr.workers.worker_id()}")

def broken_routes():
    raise RuntimeError("the app cannot start")

rr.telemetry.attach("t", ("rr", "request", "stop"),  # attached in the master, inherited by every worker
                    lambda event, measurements, metadata, config:
                        print("telemetry request stop worker", metadata.get("worker"), flush=True))
listeners = {"web": {"ip": "127.0.0.1", "port": 0, "routes": handler}}
if sys.argv[1] == "unix":
    listeners["local"] = {"unix": sys.argv[2], "routes": handler, "protocols": ["http1", "http2"]}
def held_routes():
    import time
    deadline = time.monotonic() + 20
    while os.path.exists("hold") and time.monotonic() < deadline:
        time.sleep(0.05)  # the app starts slowly while the test holds it

routes = {"broken": broken_routes, "held": held_routes}.get(sys.argv[1])
status = rr.workers.run(listeners, workers=2, routes=routes, max_restarts=1, max_seconds=60,
                        on_bound=lambda name, sock: print("bound", name, sock.getsockname(), flush=True))
print("exit status", status, flush=True)
raise SystemExit(status)
'''


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "served.py"
    path.write_text(SCRIPT)
    return path


def test_crashes_past_the_restart_intensity_end_the_master_with_status_1(servers, script, tmp_path):
    server = servers(tmp_path, sys.executable, str(script), "tcp")
    workers = dict([server.accepting(), server.accepting()])
    os.kill(workers[1], signal.SIGKILL)
    _, replacement = server.accepting()
    os.kill(replacement, signal.SIGKILL)  # two exits in 60 s: more than max_restarts=1
    server.expect(r"workers exited 2 times in 60 s, more than the restart intensity allows "
                  r"\(max_restarts=1 in max_seconds=60\): stopping")
    assert server.wait() == 1
    assert "exit status 1" in server.log


def test_a_worker_that_cannot_start_ends_the_master_with_status_2_and_one_line(servers, script, tmp_path):
    server = servers(tmp_path, sys.executable, str(script), "broken")
    server.expect(r"rr: worker 1: the app cannot start")  # stderr: may share a line of the merged log
    assert server.wait() == 2
    assert "Traceback" not in server.log and "worker started" in server.log
    assert server.log.count("worker started") == 1  # the others are forked once the first accepts


def test_workers_serve_a_unix_socket_too_and_log_and_answer_their_worker_id(servers, script, tmp_path):
    path = tmp_path / "w.sock"
    server = servers(tmp_path, sys.executable, str(script), "unix", str(path))
    server.accepting(), server.accepting()
    for http2 in ([], ["--http2-prior-knowledge"]):
        out = subprocess.run(["curl", "-s", "--max-time", "10", *http2, "--unix-socket", str(path),
                              "http://localhost/"], capture_output=True, timeout=20).stdout.decode()
        worker = re.fullmatch(r"\d+ worker ([12])", out)
        assert worker, out
        server.expect(rf"telemetry request stop worker {worker.group(1)}$")
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    # curl's connection may not have been seen closing yet: 0 or 1 connection to drain
    assert re.search(r"draining [01] connections? .* worker=1", server.log)
    assert re.search(r"draining [01] connections? .* worker=2", server.log)
    assert not path.exists()  # the master bound it, the master removed it


def test_reload_serves_an_edited_module_on_the_next_request(servers, tmp_path):
    module = tmp_path / "live.py"
    module.write_text("from rr import resp\n\ndef handler(req):\n    return resp.text(200, 'v1')\n")
    server = servers(tmp_path, sys.executable, "-m", "rr", "live:handler", "--port", "0", "--reload")
    url = server.expect(r"listening on (http://\S+?)/ ").group(1)
    server.accepting()
    assert _get(url) == "v1"
    module.write_text("from rr import resp\n\ndef handler(req):\n    return resp.text(200, 'v2')\n")
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # whatever the clock's grain
    server.expect(r"source changed: restarting the workers\s+(?:\[[\w.]+\]\s+)?file=live.py")
    server.expect(r"rolling restart done")
    assert _get(url) == "v2"


@pytest.mark.parametrize(("args", "kwargs", "named"), [
    (({"web": {"port": 0}}, 0), {}, "'workers'"),
    (({"web": {"port": 0}}, True), {}, "'workers'"),
    (({},), {}, "'listeners'"),
    (({"web": {"port": 0, "max_clientz": 5}},), {}, "max_clientz"),
    (({"web": {"port": 0}},), {"max_restarts": -1}, "'max_restarts'"),
    (({"web": {"port": 0}},), {"drain_timeout": 0}, "'drain_timeout'"),
])
def test_bad_worker_options_fail_before_any_fork_naming_the_option(args, kwargs, named):
    import rr.workers

    with pytest.raises(ValueError, match=named):
        rr.workers.run(*args, **kwargs)


def test_workers_and_a_unix_bind_come_from_the_config_file_too(servers, app_dir):
    path = app_dir / "conf.sock"
    (app_dir / "rr.toml").write_text(f'app = "wapp:ROUTES"\nworkers = 2\nbind = ["unix:{path}"]\n')
    server = servers(app_dir, sys.executable, "-m", "rr", "--config", "rr.toml")
    server.expect(rf"listening on unix:{re.escape(str(path))} \(http1, http2\)")
    pids = {server.accepting()[1], server.accepting()[1]}
    out = subprocess.run(["curl", "-s", "--max-time", "10", "--unix-socket", str(path), "http://localhost/"],
                         capture_output=True, timeout=20).stdout.decode()
    assert int(out) in pids
    server.signal(signal.SIGINT)  # Ctrl-C: the master alone gets it and drains the workers once
    assert server.wait() == 0
    assert "second signal" not in server.log and not path.exists()
    (app_dir / "bad.toml").write_text('app = "wapp:ROUTES"\nworkers = 0\n')
    bad = subprocess.run([sys.executable, "-m", "rr", "-c", "bad.toml"], cwd=app_dir, env=ENV, capture_output=True,
                         timeout=30)
    assert bad.returncode == 2 and bad.stderr.decode() == "rr: workers must be a number of processes in 1..1024, got 0\n"


def test_reload_of_code_that_does_not_import_keeps_the_old_worker_serving(servers, tmp_path):
    module = tmp_path / "live.py"
    module.write_text("from rr import resp\n\ndef handler(req):\n    return resp.text(200, 'v1')\n")
    server = servers(tmp_path, sys.executable, "-m", "rr", "live:handler", "--port", "0", "--reload")
    url = server.expect(r"listening on (http://\S+?)/ ").group(1)
    server.accepting()

    def edit(text: str) -> None:
        module.write_text(text)
        stat = module.stat()
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    edit("from rr import resp\n\ndef handler(req)\n    return resp.text(200, 'typo')\n")
    server.expect(r"a new worker failed to start: the rolling restart stops, the old workers keep serving")
    assert _get(url) == "v1"
    edit("from rr import resp\n\ndef handler(req):\n    return resp.text(200, 'v3')\n")
    server.expect(r"rolling restart done")
    assert _get(url) == "v3"
    assert "restart intensity" not in server.log


def test_a_sighup_while_a_replacement_is_starting_waits_for_it_then_replaces_every_worker(servers, script, tmp_path):
    server = servers(tmp_path, sys.executable, str(script), "held")
    workers = dict([server.accepting(), server.accepting()])
    (tmp_path / "hold").touch()
    os.kill(workers[1], signal.SIGKILL)
    server.expect(r"worker started\s+(?:\[[\w.]+\]\s+)?pid=\d+ worker=1")  # the replacement, held in its start
    server.signal(signal.SIGHUP)
    server.expect(r"rolling restart\s+(?:\[[\w.]+\]\s+)?reason=SIGHUP workers=2")
    (tmp_path / "hold").unlink()  # the replacement accepts: the rolling restart goes on
    _, replacement = server.accepting()
    done = server.expect(r"rolling restart done\s+(?:\[[\w.]+\]\s+)?workers=\[\(1, (\d+)\), \(2, (\d+)\)\]")
    # The replacement started before the SIGHUP (it may run older code): it is replaced too.
    final = {int(done.group(1)), int(done.group(2))}
    assert not final & {replacement, *workers.values()}


@pytest.mark.peers("aioquic")
def test_http3_under_workers_each_connection_stays_with_one_worker(servers, tmp_path, app_dir):
    """Each worker binds its own UDP socket with SO_REUSEPORT on the listener's port: the
    kernel hashes a client's datagrams (by address and port) to one worker, so every QUIC
    connection is served whole by one worker, and connections spread over both."""
    from tests.rr.certs import make_cert
    from tests.rr.h3wire import H3Wire

    certfile, keyfile = make_cert(tmp_path)
    server = servers(app_dir, sys.executable, "-m", "rr", "wapp:ROUTES", "--port", "0", "--workers", "2",
                     "--certfile", certfile, "--keyfile", keyfile, "--protocols", "http1,http2,http3")
    port = int(server.expect(r"listening on https://\S+?:(\d+)/ ").group(1))
    server.accepting(), server.accepting()
    by_connection = []
    for _ in range(16):
        with H3Wire(port, certfile) as c:
            replies = [c.finish(c.start("GET", "/")) for _ in range(5)]
        assert [r.status for r in replies] == [200] * 5
        by_connection.append({r.body for r in replies})
    assert all(len(pids) == 1 for pids in by_connection), by_connection  # one worker per connection
    assert len(set.union(*by_connection)) == 2, by_connection  # and both workers serve
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_the_start_up_line_is_said_once_by_the_master_not_once_per_worker(servers, app_dir, tmp_path):
    server, url = _cli(servers, app_dir, "--workers", "2")  # the rr command's own line
    server.accepting(), server.accepting()
    assert _get(url).isdigit()
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert server.log.count("listening on") == 1, server.log
    (tmp_path / "api.py").write_text(
        "import rr.workers\nfrom rr import resp\n"
        "raise SystemExit(rr.workers.run({'web': {'ip': '127.0.0.1', 'port': 0, 'protocols': ['http1'],\n"
        "                                         'routes': lambda req: resp.text(200, 'ok')}}, workers=2))\n")
    api = servers(tmp_path, sys.executable, str(tmp_path / "api.py"))  # rr.workers.run without on_bound
    url = api.expect(r"listener 'web' listening on (http://127\.0\.0\.1:\d+)/ \(http1\)").group(1)
    api.accepting(), api.accepting()
    assert _get(url) == "ok"
    api.signal(signal.SIGTERM)
    assert api.wait() == 0
    assert api.log.count("listening on") == 1, api.log
