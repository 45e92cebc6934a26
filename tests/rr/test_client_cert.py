"""Client certificates on a TLS listener (``tls.cafile`` + ``tls.verify_client``), checked with curl.

``req.peer_cert`` is the verified certificate (``ssl.getpeercert()``) on h1 and h2.
"""

from __future__ import annotations

import pytest
from gevent import subprocess

import rr
from rr import resp
from tests.rr.certs import make_cert

pytestmark = pytest.mark.peers("curl")


def whoami(req):
    cert = req.peer_cert
    if cert is None:
        return resp.text(200, f"{req.version} anonymous")
    subject = dict(pair for rdn in cert["subject"] for pair in rdn)
    return resp.text(200, f"{req.version} {subject['commonName']}")


@pytest.fixture
def pki(tmp_path):
    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    server = make_cert(tmp_path / "server")
    client = make_cert(tmp_path / "client")  # self-signed: it is its own CA
    return server, client


def curl(port: int, cafile: str, *args: str) -> tuple[int, str]:
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", cafile, "--resolve",
                        f"localhost:{port}:127.0.0.1", *args, f"https://localhost:{port}/"],
                       capture_output=True, timeout=20)
    return p.returncode, p.stdout.decode()


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_required_client_certificate_is_checked_and_exposed(serve, pki, http):
    (certfile, keyfile), (client_cert, client_key) = pki
    srv = serve(whoami, protocols=["http1", "http2"],
                tls={"certfile": certfile, "keyfile": keyfile, "cafile": client_cert, "verify_client": "required"})
    code, out = curl(srv.port, certfile, http, "--cert", client_cert, "--key", client_key)
    assert (code, out) == (0, f"{'HTTP/2' if http == '--http2' else 'HTTP/1.1'} localhost")
    code, out = curl(srv.port, certfile, http)
    assert code != 0 and out == ""


def test_optional_client_certificate_lets_anonymous_clients_in(serve, pki, tmp_path):
    (certfile, keyfile), (client_cert, client_key) = pki
    srv = serve(whoami, tls={"certfile": certfile, "keyfile": keyfile, "cafile": client_cert,
                             "verify_client": "optional"})
    assert curl(srv.port, certfile) == (0, "HTTP/1.1 anonymous")
    assert curl(srv.port, certfile, "--cert", client_cert, "--key", client_key) == (0, "HTTP/1.1 localhost")
    (tmp_path / "stranger").mkdir()
    other_cert, other_key = make_cert(tmp_path / "stranger")  # a certificate the listener does not trust
    code, _ = curl(srv.port, certfile, "--cert", other_cert, "--key", other_key)
    assert code != 0


def test_without_verify_client_no_certificate_is_asked(serve, pki):
    (certfile, keyfile), (client_cert, client_key) = pki
    srv = serve(whoami, tls={"certfile": certfile, "keyfile": keyfile})
    assert curl(srv.port, certfile, "--cert", client_cert, "--key", client_key) == (0, "HTTP/1.1 anonymous")


@pytest.mark.parametrize("tls, named", [
    ({"verify_client": "required"}, "tls.verify_client"),  # no cafile
    ({"cafile": "CA", "verify_client": "sometimes"}, "tls.verify_client"),
    ({"cafile": "/no/such/ca.pem", "verify_client": True}, "tls.cafile"),
])
def test_bad_client_certificate_options_fail_at_start_naming_the_option(pki, tls, named):
    (certfile, keyfile), (client_cert, _) = pki
    opts = {"certfile": certfile, "keyfile": keyfile, **tls}
    if opts.get("cafile") == "CA":
        opts["cafile"] = client_cert
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        rr.start_listener("bad-tls", {"port": 0, "routes": whoami, "tls": opts})
