"""The ``rr`` command in a subprocess, as a user runs it: h1 + h2c by default, TLS with ALPN h2."""

from __future__ import annotations

import os
import re
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
