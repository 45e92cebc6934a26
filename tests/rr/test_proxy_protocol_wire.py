"""The PROXY protocol on the wire: HAProxy in front of rr (``send-proxy``,
``send-proxy-v2``, TLS passthrough, TLS terminated with TLVs), and hand-made
headers for what HAProxy never sends (hostile, split, slow, untrusted).

The client (curl) binds 127.0.0.5 so the address rr must report differs from
the proxy's (HAProxy connects to rr from 127.0.0.1): ``req.peer`` equal to
curl's own address and port proves the header was read and believed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import structlog
from gevent import socket as gsocket
from gevent import subprocess

import rr
from rr import resp
from rr.contrib import rate_limit
from tests.rr import haproxy
from tests.rr.certs import make_cert
from tests.rr.conftest import read_response, read_until_close
from tests.rr.wire import client_context

CLIENT_IP = "127.0.0.5"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def whoami(req):
    proxy = req.proxy
    info = {"peer": list(req.peer), "scheme": req.scheme, "version": req.version}
    if proxy is not None:
        info["proxy"] = {
            "version": proxy.version, "command": proxy.command, "family": proxy.family,
            "destination": list(proxy.destination) if isinstance(proxy.destination, tuple) else proxy.destination,
            "authority": proxy.authority, "alpn": (proxy.alpn or b"").decode(),
            "unique_id": (proxy.unique_id or b"").decode(), "tlv_types": [t for t, _ in proxy.tlvs],
            "ssl": None if proxy.ssl is None else {"tls": proxy.ssl.tls, "version": proxy.ssl.version,
                                                   "cipher": proxy.ssl.cipher, "verify": proxy.ssl.verify},
        }
    return resp.json(200, info)


def curl(*args: str, ok: bool = True) -> tuple[dict, tuple[str, int]] | int:
    """curl from CLIENT_IP; returns (the handler's JSON, curl's own (ip, port)), or curl's exit status."""
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "--interface", CLIENT_IP,
                        "-w", "\n%{local_ip} %{local_port}", *args], capture_output=True, timeout=20)
    if not ok:
        return p.returncode
    assert p.returncode == 0, p.stderr.decode()
    body, _, local = p.stdout.decode().rpartition("\n")
    ip, port = local.split()
    return json.loads(body), (ip, int(port))


def _backend(port: int, server_opts: str, frontend_bind: str = "{fe0}") -> str:
    return f"""
frontend fe
    mode tcp
    bind {frontend_bind}
    default_backend rr
backend rr
    mode tcp
    server rr 127.0.0.1:{port} {server_opts}
"""


needs_haproxy = pytest.mark.peers("curl", "haproxy")


# -- HAProxy in front ------------------------------------------------------------------

@needs_haproxy
@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
@pytest.mark.parametrize("http", ["--http1.1", "--http2-prior-knowledge"])
def test_haproxy_send_proxy_gives_the_real_client_as_peer_on_h1_and_h2(serve, tmp_path, send, http):
    srv = serve(whoami, protocols=["http1", "http2"], proxy_protocol={"trusted": ["127.0.0.1"]})
    with haproxy.start(_backend(srv.port, send), tmp_path) as lb:
        got, local = curl(http, f"http://127.0.0.1:{lb.ports[0]}/")
    assert tuple(got["peer"]) == local and local[0] == CLIENT_IP
    assert got["version"] == ("HTTP/2" if "http2" in http else "HTTP/1.1")
    assert got["proxy"]["version"] == (2 if send.endswith("v2") else 1)
    assert got["proxy"]["destination"] == ["127.0.0.1", lb.ports[0]]


@needs_haproxy
@pytest.mark.parametrize("send, family", [("send-proxy", "TCP6"), ("send-proxy-v2", "INET6")])
def test_haproxy_ipv6_client_in_front_of_an_ipv4_backend(serve, tmp_path, send, family):
    srv = serve(whoami, proxy_protocol=True)  # HAProxy reaches rr over IPv4 (127.0.0.1)
    with haproxy.start(_backend(srv.port, send), tmp_path, ip="::1") as lb:
        p = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{local_ip} %{local_port}",
                            f"http://[::1]:{lb.ports[0]}/"], capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    body, _, local = p.stdout.decode().rpartition("\n")
    got = json.loads(body)
    assert got["peer"] == ["::1", int(local.split()[1])] and got["proxy"]["family"] == family


@needs_haproxy
@pytest.mark.parametrize("alpn", ["--http1.1", "--http2"])
def test_haproxy_tls_passthrough_header_precedes_the_handshake(serve, tmp_path, alpn):
    certfile, keyfile = make_cert(tmp_path)
    srv = serve(whoami, protocols=["http1", "http2"], tls={"certfile": certfile, "keyfile": keyfile},
                proxy_protocol={"trusted": ["127.0.0.0/8"]})
    with haproxy.start(_backend(srv.port, "send-proxy-v2"), tmp_path) as lb:
        port = lb.ports[0]
        got, local = curl(alpn, "--cacert", certfile, "--resolve", f"localhost:{port}:127.0.0.1",
                          f"https://localhost:{port}/")
    assert tuple(got["peer"]) == local and local[0] == CLIENT_IP
    assert got["scheme"] == "https" and got["version"] == ("HTTP/2" if alpn == "--http2" else "HTTP/1.1")


@needs_haproxy
def test_haproxy_terminating_tls_sends_ssl_authority_alpn_crc_and_unique_id_tlvs(serve, tmp_path):
    certfile, keyfile = make_cert(tmp_path)
    combined = tmp_path / "combined.pem"
    combined.write_text(Path(certfile).read_text() + Path(keyfile).read_text())
    srv = serve(whoami, protocols=["http1", "http2"], proxy_protocol=True)
    config = f"""
frontend fe
    mode tcp
    bind {{fe0}} ssl crt {combined} alpn h2,http/1.1
    unique-id-format %ci:%cp
    default_backend rr
backend rr
    mode tcp
    server rr 127.0.0.1:{srv.port} send-proxy-v2 proxy-v2-options ssl,ssl-cipher,authority,crc32c,unique-id
"""
    with haproxy.start(config, tmp_path) as lb:
        port = lb.ports[0]
        got, local = curl("--http2", "--cacert", certfile, "--resolve", f"localhost:{port}:127.0.0.1",
                          f"https://localhost:{port}/")
    proxy = got["proxy"]
    assert tuple(got["peer"]) == local
    # HAProxy→rr is h2c here; :scheme is the client's own, sent end to end
    assert got["scheme"] == "https" and got["version"] == "HTTP/2"
    assert proxy["authority"] == "localhost"  # curl's SNI
    assert proxy["alpn"] == "h2"
    assert proxy["unique_id"] == f"{local[0]}:{local[1]}"
    assert proxy["ssl"]["tls"] and proxy["ssl"]["version"].startswith("TLSv1.") and proxy["ssl"]["cipher"]
    assert 0x03 in proxy["tlv_types"]  # the CRC32C, verified by rr's parser


@needs_haproxy
def test_haproxy_from_an_untrusted_address_is_closed_without_an_answer(serve, tmp_path):
    served = []
    srv = serve(lambda req: served.append(req) or resp.text(200, "no"),
                proxy_protocol={"trusted": ["127.0.0.9/32"]})
    with haproxy.start(_backend(srv.port, "send-proxy-v2"), tmp_path) as lb:
        assert curl(f"http://127.0.0.1:{lb.ports[0]}/", ok=False) == 52  # curl: empty reply
    assert served == []


# -- headers by hand -----------------------------------------------------------------------

def _v2_inet(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 80, tlvs: bytes = b"",
             command: int = 1) -> bytes:
    body = gsocket.inet_aton(src) + gsocket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlvs
    return SIG + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


GET = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


def test_v1_header_then_request_in_one_segment(serve):
    srv = serve(whoami, proxy_protocol=True)
    out = srv.request(b"PROXY TCP4 203.0.113.7 127.0.0.1 4711 80\r\n" + GET)
    assert json.loads(out.partition(b"\r\n\r\n")[2])["peer"] == ["203.0.113.7", 4711]


def test_header_split_byte_by_byte_is_taken_exactly(serve):
    srv = serve(whoami, proxy_protocol=True)
    header = _v2_inet("198.51.100.9", 1234)
    with srv.connect() as sock:
        for i in range(len(header)):
            sock.sendall(header[i:i + 1])
        sock.sendall(GET)
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["peer"] == ["198.51.100.9", 1234]


def test_v2_local_keeps_the_connection_peer(serve):
    srv = serve(whoami, proxy_protocol=True)
    with srv.connect() as sock:
        sock.sendall(_v2_inet("198.51.100.9", 1234, command=0) + GET)
        _, body = read_response(sock)
        assert json.loads(body)["peer"] == ["127.0.0.1", sock.getsockname()[1]]


def test_tls_handshake_after_a_hand_made_header(serve, tmp_path):
    certfile, keyfile = make_cert(tmp_path)
    srv = serve(whoami, tls={"certfile": certfile, "keyfile": keyfile}, proxy_protocol=True)
    ctx = client_context(certfile)
    raw = srv.connect()
    raw.sendall(b"PROXY TCP6 2001:db8::7 ::1 5555 443\r\n")
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(GET)
        out = read_until_close(tls)
    got = json.loads(out.partition(b"\r\n\r\n")[2])
    assert got["peer"] == ["2001:db8::7", 5555] and got["scheme"] == "https"


HOSTILE = {
    "no_header": GET,
    "tls_hello_without_header": b"\x16\x03\x01\x00\x05hello",
    "malformed_v1": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n" + GET,
    "v1_without_crlf": b"PROXY TCP4 " + b"1" * 120,
    "v2_bad_version": SIG + b"\x11\x11\x00\x0c" + bytes(12) + GET,
    "v2_tlv_past_end": _v2_inet("1.2.3.4", 1, tlvs=b"\x02\x00\x09abc") + GET,
    "v2_oversized": SIG + b"\x21\x11\xff\xff" + bytes(12),
    "truncated_then_closed": _v2_inet("1.2.3.4", 1)[:20],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_or_missing_header_is_closed_without_a_byte(serve, name):
    served = []
    srv = serve(lambda req: served.append(req) or resp.text(200, "no"), proxy_protocol=True)
    assert srv.exchange(HOSTILE[name]) == b""
    assert served == []


def test_untrusted_source_is_closed_before_any_byte_is_read(serve):
    srv = serve(whoami, proxy_protocol={"trusted": ["10.0.0.0/8"]})
    assert srv.request(b"PROXY TCP4 1.2.3.4 127.0.0.1 1 80\r\n" + GET) == b""


def test_a_silent_connection_is_closed_at_the_timeout_and_reported(serve):
    seen = []
    rr.telemetry.attach("t-proxy-close", ("rr", "conn", "close"), lambda ev, m, md, cfg: seen.append(md["reason"]))
    try:
        srv = serve(whoami, proxy_protocol={"timeout": 0.2}, first_byte_timeout=30)
        with srv.connect() as sock:
            sock.sendall(b"PROXY TCP4 1.2")  # a header that never ends
            assert read_until_close(sock, timeout=10) == b""  # closed by rr, long before 10 s
    finally:
        rr.telemetry.detach("t-proxy-close")
    assert seen == ["proxy_protocol"]


@pytest.mark.parametrize("opts, named", [
    ({"trusted": ["not-an-ip"]}, "proxy_protocol.trusted"),
    ({"trusted": []}, "proxy_protocol.trusted"),
    ({"timeout": 0}, "proxy_protocol.timeout"),
    ({"max_size": 100}, "proxy_protocol.max_size"),
    ({"allow": ["1.2.3.4"]}, "proxy_protocol.allow"),
    ("yes", "proxy_protocol"),
])
def test_bad_proxy_protocol_options_fail_at_start_naming_the_option(opts, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        rr.start_listener("bad-pp", {"port": 0, "routes": whoami, "proxy_protocol": opts})


def test_rate_limit_and_access_log_key_on_the_client_the_header_names(serve):
    # The access line is written before rr closes the connection: reading to the close orders it.
    srv = serve(whoami, proxy_protocol=True, access_log=True,
                middlewares=[rate_limit.middleware(rate=0.001, burst=1)])

    def status(client: str) -> bytes:
        out = srv.request(f"PROXY TCP4 {client} 127.0.0.1 4000 80\r\n".encode() + GET)
        return out.split(b" ", 2)[1]

    with structlog.testing.capture_logs() as logs:
        assert [status("203.0.113.1"), status("203.0.113.1"), status("203.0.113.2")] == [b"200", b"429", b"200"]
    assert [e["peer"][0] for e in logs if e.get("event") == "request"] == ["203.0.113.1", "203.0.113.1",
                                                                            "203.0.113.2"]
