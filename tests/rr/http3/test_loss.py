"""HTTP/3 through a lossy path: a UDP relay of the test's own drops, duplicates and reorders.

The relay sits between aioquic's client and rr on loopback and, with a seeded
random generator (so a failure replays), drops a few percent of the datagrams
in each direction, sends a few twice and holds a few back to let the next one
overtake them. Transfers must still complete byte for byte: QUIC's loss
recovery (aioquic's, on both sides) and rr's flow control and acknowledgements
(the worker's ``SENT`` follows what aioquic actually sent) have to agree.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import gevent
import pytest
from gevent import socket as gsocket

from rr import resp
from tests.rr.certs import make_cert
from tests.rr.h3wire import H3Wire

pytestmark = pytest.mark.peers("aioquic")


class LossyRelay:
    """127.0.0.1:port ⇄ the server, with drops, duplicates and reordering (seeded)."""

    def __init__(self, server_port: int, seed: int, drop: float, dup: float, reorder: float) -> None:
        self.server = ("127.0.0.1", server_port)
        self.rng = random.Random(seed)
        self.drop, self.dup, self.reorder = drop, dup, reorder
        self.sock = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.client: Any = None
        self.held: dict[Any, bytes] = {}
        self.counts = {"forwarded": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self.task = gevent.spawn(self.run)

    def run(self) -> None:
        while True:
            data, addr = self.sock.recvfrom(65536)
            if addr == self.server:
                dest = self.client
            else:
                self.client = addr
                dest = self.server
            if dest is None:
                continue
            roll = self.rng.random()
            if roll < self.drop:
                self.counts["dropped"] += 1
                continue
            held = self.held.pop(dest, None)
            if roll < self.drop + self.reorder and held is None:
                self.held[dest] = data  # goes out after the next datagram to the same side
                self.counts["reordered"] += 1
                continue
            self.sock.sendto(data, dest)
            self.counts["forwarded"] += 1
            if held is not None:
                self.sock.sendto(held, dest)
            if roll > 1 - self.dup:
                self.sock.sendto(data, dest)
                self.counts["duplicated"] += 1

    def close(self) -> None:
        self.task.kill()
        self.sock.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("h3-loss"))


PAYLOAD = random.Random(5).randbytes(2 * 1024 * 1024)


def app(req):
    if req.path == "/echo":
        body = req.read_body()
        return resp.text(200, hashlib.sha256(body).hexdigest())
    return resp.Response(200, [("content-type", "application/octet-stream")], PAYLOAD)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transfers_complete_through_drops_duplicates_and_reordering(serve, cert, seed):
    srv = serve(app, tls={"certfile": cert[0], "keyfile": cert[1]}, protocols=["http3", "http2"])
    relay = LossyRelay(srv.port, seed, drop=0.03, dup=0.02, reorder=0.03)
    try:
        with H3Wire(relay.port, timeout=30) as c:
            down = [c.start("GET", f"/big{i}") for i in range(3)]
            up = c.start("POST", "/echo", body=PAYLOAD[: 512 * 1024])
            replies = [c.finish(sid) for sid in down]
            echoed = c.finish(up)
    finally:
        relay.close()
    assert [(r.status, r.complete, r.body == PAYLOAD) for r in replies] == [(200, True, True)] * 3
    assert echoed.status == 200 and echoed.body.decode() == hashlib.sha256(PAYLOAD[: 512 * 1024]).hexdigest()
    counts = relay.counts
    assert counts["dropped"] > 20 and counts["duplicated"] > 10 and counts["reordered"] > 20, counts
