"""The ``rr`` command in a subprocess, as a user runs it: h1 + h2c by default, TLS with ALPN h2."""

from __future__ import annotations

import os
import re
import socket
import sys

import pytest
from gevent import subprocess

from tests.rr.certs import make_cert

pytestmark = pytest.mark.peers("curl")

APP = "from rr import resp\n\ndef handler(req):\n    return resp.text(200, f'{req.version} {req.path}')\n"


def _serve(tmp_path, *flags):
    (tmp_path / "cliapp.py").write_text(APP)
    proc = subprocess.Popen([sys.executable, "-m", "rr.cli", "cliapp:handler", "--port", "0", *flags],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    line = proc.stdout.readline().decode()
    match = re.search(r"listening on (\S+?)/ \((.*)\)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, match.group(1), match.group(2)


def _curl(*args):
    out = subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True, timeout=20)
    return out.stdout.decode()


def test_cli_serves_http1_and_h2c_on_one_port_by_default(tmp_path):
    proc, url, protocols = _serve(tmp_path)
    try:
        assert protocols == "http1, http2"
        assert _curl(f"{url}/a") == "HTTP/1.1 /a"
        assert _curl("--http2", f"{url}/b") == "HTTP/2 /b"
        assert _curl("--http2-prior-knowledge", f"{url}/c") == "HTTP/2 /c"
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_cli_tls_prefers_h2_and_a_bad_protocol_fails_naming_the_option(tmp_path):
    certfile, keyfile = make_cert(tmp_path)
    proc, url, protocols = _serve(tmp_path, "--certfile", certfile, "--keyfile", keyfile)
    try:
        assert url.startswith("https://") and protocols == "http2, http1"
        assert _curl("-k", f"{url}/t") == "HTTP/2 /t"
        assert _curl("-k", "--http1.1", f"{url}/u") == "HTTP/1.1 /u"
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "rr.cli", "cliapp:handler", "--protocols", "http9"],
                         cwd=tmp_path, capture_output=True, timeout=20,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert bad.returncode == 2 and b"protocols" in bad.stderr


def _run_cli(tmp_path, *args):
    (tmp_path / "cliapp.py").write_text(APP)
    return subprocess.run([sys.executable, "-m", "rr.cli", *args], cwd=tmp_path, capture_output=True,
                          timeout=20, env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.mark.parametrize(("args", "message"), [
    (["cliapp"], b"APP must look like module:attribute"),
    (["cliapp:nothing"], b"module 'cliapp' has no attribute 'nothing'"),
    (["cliapp:handler", "--port", "0", "--max-clients", "0"], b"max_clients"),
    (["cliapp:handler", "--port", "0", "--ip", "not-an-ip"], b"'ip'"),
    (["cliapp:handler", "--port", "0", "--certfile", "/nonexistent.pem"], b"'tls'"),
])
def test_cli_errors_exit_nonzero_naming_the_problem(tmp_path, args, message):
    out = _run_cli(tmp_path, *args)
    assert out.returncode != 0 and message in out.stderr, out


def test_cli_a_port_in_use_exits_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = _run_cli(tmp_path, "cliapp:handler", "--port", str(taken.getsockname()[1]))
    assert out.returncode == 2 and out.stderr.startswith(b"rr: "), out


def test_cli_flags_reach_the_listener_access_log_and_max_clients(tmp_path):
    proc, url, protocols = _serve(tmp_path, "--protocols", "http1", "--access-log", "--max-clients", "1",
                                  "--body-buffering", "manual", "--drain-timeout", "5")
    try:
        assert protocols == "http1"
        assert _curl(f"{url}/logged") == "HTTP/1.1 /logged"
        assert _curl("-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge", f"{url}/h2") != "200"
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as held:  # the one client slot
            held.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(4096).startswith(b"HTTP/1.1 200")
            assert _curl("-w", "%{http_code}", f"{url}/second") == "000"  # closed at accept
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"request" in out and b"/logged" in out, out  # the access-log line
