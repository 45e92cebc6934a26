"""A listener that exceeds its restart intensity is restarted, and never reported alive when dead
(issue 13, defect 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import rr
import supervisors
from rr import resp
from tests.rr.conftest import read_response

ROOT = Path(__file__).resolve().parents[3]


def _acceptors(runtime) -> list[supervisors.Pid]:
    return [pid for cid, pid, _ in supervisors.which_children(runtime.sup)
            if isinstance(cid, str) and cid.startswith("acceptor") and pid is not None]


def test_a_listener_past_its_restart_intensity_is_restarted_on_its_port_by_rr(serve):
    srv = serve(lambda req: resp.text(200, "ok"), num_acceptors=1)
    runtime = rr._runtimes[srv.name]
    first_sup = runtime.sup
    ref = supervisors.monitor(first_sup)
    for _ in range(11):  # the listener supervisor allows 10 restarts in 10 s
        [acceptor] = _acceptors(runtime) or [None]
        if acceptor is None or not first_sup.is_alive:
            break
        down = supervisors.monitor(acceptor)
        supervisors.exit(acceptor, "boom")
        supervisors.receive(lambda m, down=down: type(m) is tuple and m[:2] == ("DOWN", down), timeout=10)
        try:
            supervisors.count_children(first_sup)  # its restart of the acceptor is done
        except supervisors.NoProc:
            break  # it gave up on this one: past its intensity
    supervisors.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref), timeout=10)
    supervisors.count_children(rr._ROOT)  # the root handled the listener's exit (and restarted it)
    assert runtime.sup is not first_sup and runtime.sup.is_alive
    assert srv.info()["status"] == "accepting"
    with srv.connect() as sock:  # same port
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and body == b"ok"


def test_listener_info_says_down_when_the_listener_is_gone(serve):
    srv = serve(lambda req: resp.text(200, "ok"))
    runtime = rr._runtimes[srv.name]
    runtime.sup = None  # as between its end and a restart
    assert rr.listener_info(srv.name)["status"] == "down"


def test_wait_raises_server_down_when_the_root_gives_up(tmp_path):
    script = textwrap.dedent("""
        import gevent, rr, supervisors
        from rr import resp
        rr.start_listener("web", {"port": 0, "ip": "127.0.0.1", "routes": lambda r: resp.text(200, "x")})

        def crash_listener_repeatedly():
            for _ in range(12):  # the root allows 10 restarts in 10 s
                runtime = rr._runtimes.get("web")
                if runtime is None or runtime.sup is None or not runtime.sup.is_alive:
                    return
                ref = supervisors.monitor(runtime.sup)
                supervisors.exit(runtime.sup, "kill")
                supervisors.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref), timeout=10)
                root = supervisors.whereis("rr.sup")
                if root is None:
                    return
                supervisors.count_children(root)

        supervisors.spawn(crash_listener_repeatedly)
        try:
            rr.wait()
        except rr.ServerDown as exc:
            print("ServerDown:", exc)
            raise SystemExit(3)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert b"ServerDown: rr's root supervisor stopped" in out.stdout
    assert b"exceeded their restart intensity" in out.stdout + out.stderr
