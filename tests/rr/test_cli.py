"""The ``rr`` command in a subprocess, as a user runs it (``python -m rr``), checked with curl.

What it serves (an rr handler, a route list, a WSGI app: told apart by
signature, or by ``--interface``), what it refuses at start-up (ASGI apps,
coroutine functions, a missing module or attribute: one line, exit 2), the
flags gunicorn/uvicorn users know, ``--config rr.toml``, and that README's CLI
paragraph names exactly the flags ``rr --help`` shows.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest
from gevent import subprocess

from rr import cli
from tests.rr.certs import make_cert

pytestmark = pytest.mark.peers("curl")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

APP = '''
from rr import resp

def handler(req):
    return resp.text(200, f"{req.version} {req.path}")

def about(req):
    return resp.text(200, "about page")

ROUTES = [("/about", about)]

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("wsgi " + environ["SCRIPT_NAME"] + "|" + environ["PATH_INFO"]).encode()]

def varargs(*args):
    environ, start_response = args
    start_response("200 OK", [])
    return [b"forced wsgi"]

async def asgi(scope, receive, send):
    pass

class Framework:
    async def __call__(self, scope, receive, send):
        pass

framework = Framework()

def three(scope, receive, send):
    pass

async def coro(req):
    pass

NUMBER = 42

def whoami(req):
    subject = dict(pair for rdn in (req.peer_cert or {}).get("subject", ()) for pair in rdn)
    return resp.text(200, f"{req.peer[0]} {req.scheme} {req.host} {subject.get('commonName', '-')}")
'''


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP)
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_xyz\n")
    return tmp_path


def _serve(cwd: Path, *args: str, listeners: int = 1):
    proc = subprocess.Popen([sys.executable, "-m", "rr", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    for _ in range(listeners):
        line = proc.stdout.readline().decode()
        match = re.search(r"listener '(\S+)' \((.*?)\) listening on (\S+?)/ \((.*)\)", line)
        assert match, (line, proc.stderr.read().decode() if proc.poll() is not None else "")
        lines.append(match.groups())
    return proc, lines


def _stop(proc) -> str:
    proc.terminate()
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return out.decode() + err.decode()


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rr", *args], cwd=cwd, env=ENV, capture_output=True, timeout=30)


def _curl(*args: str) -> str:
    out = subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True, timeout=20)
    return out.stdout.decode()


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("rr: ") and "Traceback" not in err, err
    return err


def test_cli_serves_http1_and_h2c_on_one_port_by_default(app_dir):
    proc, [(name, kind, url, protocols)] = _serve(app_dir, "cliapp:handler", "--port", "0")
    try:
        assert (name, kind, protocols) == ("rr", "rr handler cliapp:handler", "http1, http2")
        assert _curl(f"{url}/a") == "HTTP/1.1 /a"
        assert _curl("--http2", f"{url}/b") == "HTTP/2 /b"
        assert _curl("--http2-prior-knowledge", f"{url}/c") == "HTTP/2 /c"
    finally:
        _stop(proc)


def test_cli_tls_prefers_h2_and_a_bad_protocol_fails_naming_the_option(app_dir):
    certfile, keyfile = make_cert(app_dir)
    proc, [(_, _, url, protocols)] = _serve(app_dir, "cliapp:handler", "--port", "0",
                                            "--certfile", certfile, "--keyfile", keyfile)
    try:
        assert url.startswith("https://") and protocols == "http2, http1"
        assert _curl("-k", f"{url}/t") == "HTTP/2 /t"
        assert _curl("-k", "--http1.1", f"{url}/u") == "HTTP/1.1 /u"
    finally:
        _stop(proc)
    assert "protocols" in _one_line_error(_run(app_dir, "cliapp:handler", "--protocols", "http9"))


def test_cli_detects_a_wsgi_app_and_a_route_list_by_what_they_are(app_dir):
    proc, [(_, kind, url, _)] = _serve(app_dir, "cliapp:application", "--port", "0", "--script-name", "/mnt")
    try:
        assert kind == "WSGI app cliapp:application"
        assert _curl(f"{url}/mnt/x%20y") == "wsgi /mnt|/x y"
        assert _curl("--http2-prior-knowledge", f"{url}/mnt/") == "wsgi /mnt|/"
    finally:
        _stop(proc)
    proc, [(_, kind, url, _)] = _serve(app_dir, "cliapp:ROUTES", "--port", "0")
    try:
        assert kind == "route list cliapp:ROUTES"
        assert _curl(f"{url}/about") == "about page"
    finally:
        _stop(proc)


def test_cli_interface_flag_serves_what_auto_cannot_tell(app_dir):
    err = _one_line_error(_run(app_dir, "cliapp:varargs", "--port", "0"))
    assert "--interface rr or --interface wsgi" in err
    proc, [(_, kind, url, _)] = _serve(app_dir, "cliapp:varargs", "--port", "0", "--interface", "wsgi")
    try:
        assert kind == "WSGI app cliapp:varargs" and _curl(f"{url}/") == "forced wsgi"
    finally:
        _stop(proc)


@pytest.mark.parametrize("attr", ["asgi", "framework", "three", "coro"])
def test_cli_refuses_asgi_apps_and_coroutine_functions_at_start_up(app_dir, attr):
    err = _one_line_error(_run(app_dir, f"cliapp:{attr}", "--port", "0"))
    assert "rr serves rr handlers (handler(req)) and WSGI apps (app(environ, start_response))" in err
    forced = _one_line_error(_run(app_dir, f"cliapp:{attr}", "--port", "0", "--interface", "rr"))
    assert "rr serves rr handlers" in forced
    wrong = _one_line_error(_run(app_dir, "cliapp:application", "--port", "0", "--interface", "rr"))
    assert "--interface rr needs a callable of 1 positional parameter(s); cliapp:application takes 2" in wrong


@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_module_xyz:app", "cannot import 'no_such_module_xyz': no module named 'no_such_module_xyz'"),
    ("cliapp:missing", "'cliapp' has no attribute 'missing'"),
    ("cliapp", "APP must look like module:attribute"),
    ("needs_dep:app", "importing 'needs_dep' failed: No module named 'no_such_dependency_xyz'"),
    ("cliapp:NUMBER", "cliapp:NUMBER is a int, not an app"),
])
def test_cli_a_bad_app_is_one_clear_line_and_exit_2(app_dir, spec, message):
    assert message in _one_line_error(_run(app_dir, spec, "--port", "0"))


def test_cli_version_help_defaults_and_python_dash_m(app_dir):
    version = _run(app_dir, "--version")
    assert version.returncode == 0 and version.stdout.decode().strip() == f"rr {cli.version()}"
    assert re.fullmatch(r"rr \d+\.\d+\.\d+\S*", version.stdout.decode().strip())
    helptext = " ".join(_run(app_dir, "--help").stdout.decode().split())
    for default in ("(default: 127.0.0.1)", "(default: 8080)", "(default: info)", "(default: 150)",
                    "(default: http1,http2; http2,http1 with TLS)", "(default: auto)"):
        assert default in helptext
    via_script = subprocess.run([sys.executable, "-m", "rr.cli", "--version"], env=ENV, capture_output=True,
                                timeout=30)
    assert via_script.stdout == version.stdout


def test_cli_binds_several_addresses_and_names_its_listeners(app_dir):
    proc, lines = _serve(app_dir, "cliapp:handler", "--bind", "127.0.0.1:0", "-b", "127.0.0.1:0",
                         "--name", "web", listeners=2)
    try:
        assert [line[0] for line in lines] == ["web", "web-2"]
        assert lines[0][2] != lines[1][2]
        assert [_curl(f"{line[2]}/{line[0]}") for line in lines] == ["HTTP/1.1 /web", "HTTP/1.1 /web-2"]
    finally:
        _stop(proc)
    assert "give the socket's path" in _one_line_error(_run(app_dir, "cliapp:handler", "--bind", "unix:"))
    assert "HOST:PORT" in _one_line_error(_run(app_dir, "cliapp:handler", "--bind", "localhost"))


def test_cli_config_file_uses_listener_option_names_and_flags_override_it(app_dir):
    (app_dir / "rr.toml").write_text('''
app = "cliapp:handler"
name = "fromfile"
port = 0
ip = "127.0.0.1"
protocols = ["http1", ["http2", {max_concurrent_streams = 10}]]
access_log = true
log_level = "info"
''')
    proc, [(name, _, url, protocols)] = _serve(app_dir, "--config", "rr.toml")
    try:
        assert (name, protocols) == ("fromfile", "http1, http2")
        assert _curl(f"{url}/logged") == "HTTP/1.1 /logged"
    finally:
        output = _stop(proc)
    assert "request" in output and "/logged" in output  # access_log = true from the file
    proc, [(_, _, _, protocols)] = _serve(app_dir, "--config", "rr.toml", "--protocols", "http1")
    _stop(proc)
    assert protocols == "http1"
    (app_dir / "bad.toml").write_text('app = "cliapp:handler"\nport = 0\nmax_clientz = 5\n')
    assert "max_clientz" in _one_line_error(_run(app_dir, "--config", "bad.toml"))
    (app_dir / "code.toml").write_text('routes = "cliapp:ROUTES"\n')
    assert "'routes' is Python code" in _one_line_error(_run(app_dir, "cliapp:handler", "-c", "code.toml"))
    assert "not valid TOML" in _one_line_error(_run(app_dir, "cliapp:handler", "-c", "cliapp.py"))
    assert "cannot read config" in _one_line_error(_run(app_dir, "cliapp:handler", "-c", "nope.toml"))


def test_readme_cli_paragraph_and_rr_help_name_the_same_flags():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- cli -->")[1]
    in_readme = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", section))
    in_help = {opt for action in cli.parser()._actions for opt in action.option_strings if opt.startswith("--")}
    assert in_readme == in_help


@pytest.mark.parametrize(("level", "logged"), [("info", True), ("warning", False)])
def test_cli_log_level_filters_the_access_log(app_dir, level, logged):
    proc, [(_, _, url, _)] = _serve(app_dir, "cliapp:handler", "--port", "0", "--access-log", "--log-level", level)
    try:
        assert _curl(f"{url}/seen") == "HTTP/1.1 /seen"
    finally:
        output = _stop(proc)
    assert ("path=/seen" in output) == logged, output


def test_cli_log_format_json_writes_json_lines_on_stderr(app_dir):
    proc, [(_, _, url, _)] = _serve(app_dir, "cliapp:handler", "--port", "0", "--access-log",
                                    "--log-format", "json")
    try:
        assert _curl(f"{url}/seen") == "HTTP/1.1 /seen"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.decode().splitlines() if line.strip()]  # every line is JSON
    (access,) = [e for e in events if e.get("logger") == "rr.access"]
    assert access["event"] == "request" and access["path"] == "/seen" and len(access["request_id"]) == 16


def test_cli_a_port_in_use_is_one_line_and_exit_2(app_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = _run(app_dir, "cliapp:handler", "--host", "127.0.0.1", "--port", str(taken.getsockname()[1]))
    assert out.returncode == 2, out
    assert _one_line_error(out).startswith("rr: "), out


def test_cli_max_clients_reaches_the_listener(app_dir):
    proc, [(_, _, url, _)] = _serve(app_dir, "cliapp:handler", "--port", "0", "--protocols", "http1",
                                    "--max-clients", "1")
    try:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as held:  # the one client slot
            held.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(4096).startswith(b"HTTP/1.1 200")
            held.sendall(b"GET /next HTTP/1.1\r\n")  # mid-request: not idle, cannot make room
            assert _curl("-o", "/dev/null", "-w", "%{http_code}", f"{url}/second") == "503"
    finally:
        _stop(proc)


def test_cli_proxy_headers_and_forwarded_allow_ips(app_dir):
    headers = ["-H", "X-Forwarded-For: 6.6.6.6, 203.0.113.7", "-H", "X-Forwarded-Proto: https",
               "-H", "X-Forwarded-Host: shop.example"]
    cases = [((), "127.0.0.1 http"), (("--proxy-headers",), "203.0.113.7 https shop.example"),
             (("--forwarded-allow-ips", "10.0.0.0/8"), "127.0.0.1 http"),
             (("--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.1"), "203.0.113.7 https shop.example"),
             (("--forwarded-allow-ips", "*"), "6.6.6.6 https shop.example")]  # every hop trusted: the leftmost
    for flags, expected in cases:
        proc, [(_, _, url, _)] = _serve(app_dir, "cliapp:whoami", "--port", "0", *flags)
        try:
            assert _curl(*headers, f"{url}/").startswith(expected), flags
        finally:
            _stop(proc)
    assert "forwarded_allow_ips" in _one_line_error(
        _run(app_dir, "cliapp:whoami", "--forwarded-allow-ips", "not-an-ip"))


def test_cli_ca_certs_verifies_client_certificates(app_dir):
    from tests.rr.certs import make_cert

    (app_dir / "server").mkdir()
    (app_dir / "client").mkdir()
    certfile, keyfile = make_cert(app_dir / "server")
    client_cert, client_key = make_cert(app_dir / "client")  # self-signed: its own CA
    tls = ["--certfile", certfile, "--keyfile", keyfile, "--ca-certs", client_cert]
    proc, [(_, _, url, _)] = _serve(app_dir, "cliapp:whoami", "--port", "0", *tls)
    try:
        port = url.rsplit(":", 1)[1]
        curl = ["--cacert", certfile, "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/"]
        assert _curl("--cert", client_cert, "--key", client_key, *curl).endswith(" localhost")  # the client's CN
        assert _curl(*curl) == ""  # no certificate: the handshake is refused
    finally:
        _stop(proc)
    proc, [(_, _, url, _)] = _serve(app_dir, "cliapp:whoami", "--port", "0", *tls, "--verify-client", "optional")
    try:
        port = url.rsplit(":", 1)[1]
        assert _curl("--cacert", certfile, "--resolve", f"localhost:{port}:127.0.0.1",
                     f"https://localhost:{port}/").endswith(" -")
    finally:
        _stop(proc)
    assert "--certfile" in _one_line_error(_run(app_dir, "cliapp:whoami", "--ca-certs", client_cert))


def test_cli_binds_a_unix_socket_beside_tcp_and_removes_it_on_stop(app_dir):
    path = app_dir / "cli.sock"
    proc = subprocess.Popen([sys.executable, "-m", "rr", "cliapp:handler", "--bind", f"unix:{path}",
                             "--bind", "127.0.0.1:0", "--protocols", "http1,http2"],
                            cwd=app_dir, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first, second = proc.stdout.readline().decode(), proc.stdout.readline().decode()
        assert first == f"rr: listener 'rr' (rr handler cliapp:handler) listening on unix:{path} (http1, http2)\n"
        assert re.fullmatch(r"rr: listener 'rr-2' .* listening on http://127\.0\.0\.1:\d+/ \(http1, http2\)\n", second)
        assert _curl("--unix-socket", str(path), "http://localhost/u") == "HTTP/1.1 /u"
        assert _curl("--http2-prior-knowledge", "--unix-socket", str(path), "http://localhost/v") == "HTTP/2 /v"
    finally:
        _stop(proc)
    assert not path.exists()


def test_cli_sigterm_says_how_many_connections_it_drains_and_by_when(app_dir):
    proc, [(_, _, url, _)] = _serve(app_dir, "cliapp:handler", "--port", "0", "--drain-timeout", "7")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as idle:  # a kept-alive connection
        idle.sendall(b"GET /kept HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        output = _stop(proc)
    assert "draining 1 connection (deadline 7 s; send the signal again to force)" in output, output


def test_the_start_up_line_is_printed_once_not_also_logged_by_start_listener(app_dir):
    proc, [(name, _, url, _)] = _serve(app_dir, "cliapp:handler", "--port", "0", "--log-level", "info")
    assert _curl(f"{url}/a") == "HTTP/1.1 /a"
    output = _stop(proc)
    assert "listening on" not in output  # the line _serve read was the only one
