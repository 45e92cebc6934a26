"""Autobahn's WebSocket fuzzing cases against an rr echo endpoint, run by ``kosoku``.

kosoku (PyPI) is a Rust reimplementation of the Autobahn fuzzing client; it
writes Autobahn's ``index.json``. Cases 1.*–7.*, 9.* and 10.* (framing,
pings, fragmentation, UTF-8, close handling, limits of large messages; ~300
cases, about 10 s here) run in the suite, plus one fast case of each of the
twelve permessage-deflate groups 12.1–12.5 and 13.1–13.7 (each group another
message size or set of negotiated parameters: window bits, no context
takeover); all of 12.*/13.* (216 cases, 10–20 min) are in the full runs
recorded in docs/conformance.md, over h1 and over h2. Any case that is not
OK, NON-STRICT or INFORMATIONAL fails the test, naming the case.
"""

from __future__ import annotations

import json
from pathlib import Path

from gevent import subprocess

from rr import resp
from tests import peers

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
# permessage-deflate: the fastest case of each group (under a second each over h2).
DEFLATE_SUBSET = ["12.1.1", "12.2.2", "12.3.2", "12.4.2", "12.5.2",
                  "13.1.1", "13.2.2", "13.3.2", "13.4.2", "13.5.2", "13.6.2", "13.7.2"]
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", *DEFLATE_SUBSET]


class Echo:
    @staticmethod
    def handle_frame(frame, state):
        return [frame], state


def echo_listener(serve):
    # Section 9 sends messages up to 16 MiB in frames up to 4 MiB.
    return serve(lambda req: resp.WebSocket(Echo), max_clients=1000,
                 ws={"max_message_size": 64 * 1024 * 1024, "max_frame_size": 64 * 1024 * 1024})


def run_kosoku(port: int, out: Path, cases: list[str]) -> dict[str, dict]:
    kosoku = peers.script_path("kosoku")
    assert kosoku
    args = [kosoku, "-p", "2", "-o", str(out)]
    for case in cases:
        args += ["-i", case]
    proc = subprocess.run([*args, f"127.0.0.1:{port}"], capture_output=True, timeout=600)
    index = json.loads((out / "index.json").read_text())
    assert index, proc.stdout.decode() + proc.stderr.decode()
    return next(iter(index.values()))


def test_autobahn_cases_1_to_10_and_a_deflate_subset(serve, tmp_path):
    peers.require("kosoku")
    results = run_kosoku(echo_listener(serve).port, tmp_path, CASES)
    assert len(results) > 290
    assert set(DEFLATE_SUBSET) <= set(results)
    bad = {case: (r["behavior"], r["behaviorClose"]) for case, r in results.items()
           if r["behavior"] not in ACCEPTED or r["behaviorClose"] not in ACCEPTED}
    assert not bad, bad


def test_autobahn_cases_1_to_10_and_a_deflate_subset_over_h2_via_a_bridge(serve, tmp_path):
    """The same cases over WebSocket over HTTP/2 (RFC 8441): kosoku speaks only h1, so
    ``h2bridge`` turns each of its connections into an extended CONNECT stream (the ``h2``
    library as the h2 client) and moves the frames unchanged both ways."""
    peers.require("kosoku")
    from tests.rr.ws.h2bridge import Bridge

    versions: set[str] = set()

    def app(req):
        versions.add(req.version)
        return resp.WebSocket(Echo)

    srv = serve(app, max_clients=1000, protocols=["http2"],
                ws={"max_message_size": 64 * 1024 * 1024, "max_frame_size": 64 * 1024 * 1024})
    bridge = Bridge(srv.port)
    try:
        results = run_kosoku(bridge.port, tmp_path, CASES)
    finally:
        bridge.stop()
    assert versions == {"HTTP/2"}  # every case went over an extended CONNECT stream
    assert len(results) > 290
    assert set(DEFLATE_SUBSET) <= set(results)
    bad = {case: (r["behavior"], r["behaviorClose"]) for case, r in results.items()
           if r["behavior"] not in ACCEPTED or r["behaviorClose"] not in ACCEPTED}
    assert not bad, bad
