"""The fuzz targets in the normal suite: seeds and regressions replayed, a short
coverage-guided run of each target, and proof that each target can fail.

The long runs (≥ 1,000,000 executions per target) are recorded in
docs/reliability.md with their command (``tools/fuzz/long_run.sh``); here each
target gets a few thousand executions of atheris (libFuzzer) seeded from
``tests/fuzz/corpus/TARGET`` — enough to catch a codec change that breaks a
property on the seeds' near neighbours, in a few seconds per target.

``tests/fuzz/regressions/TARGET/`` holds inputs a fuzz run once failed on,
named after what they found; each is replayed on every run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from rr import exchange
from rr.http1 import codec as h1
from rr.http2 import codec as h2
from tools.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
REGRESSIONS = ROOT / "tests" / "fuzz" / "regressions"
SHORT_RUNS = {"h1_head": 2000, "h1_chunked": 2000, "h2_machine": 3000, "h2_hpack": 4000,
              "response_fields": 4000, "proxy_header": 4000}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_passes_its_target(target):
    seeds = _files(CORPUS / target)
    assert len(seeds) >= 8, f"the {target} seed corpus is missing (tools/fuzz/make_corpus.py)"
    for path in seeds:
        TARGETS[target](path.read_bytes())


@pytest.mark.parametrize(
    "path", [p for t in sorted(TARGETS) for p in _files(REGRESSIONS / t)],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_regression_input_passes_its_target(path):
    TARGETS[path.parent.name](path.read_bytes())


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.machine() != "x86_64",
                    reason="atheris ships Linux x86-64 wheels only (pyproject.toml's test extra)")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_coverage_guided_run_finds_nothing(target, tmp_path):
    import atheris  # noqa: F401  (the test extra installs it on Linux: a missing one fails here)

    runs = SHORT_RUNS[target]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fuzz" / "run.py"), target, f"-runs={runs}",
         "-print_final_stats=1", f"-artifact_prefix={tmp_path}/", str(tmp_path), str(CORPUS / target)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        # not traced by the suite's coverage (setup.cfg patches subprocesses): tracing
        # under atheris's own instrumentation doubles the run for no new line
        env={**{k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")},
             "PYTHONPATH": str(ROOT)},
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert f"stat::number_of_executed_units: {runs}" in proc.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail


# -- each target can fail: a codec broken on purpose is caught -------------------------


def test_h1_head_target_catches_an_uppercase_field_name(monkeypatch):
    real = h1.parse_head

    def broken(buf, limits):
        got = real(buf, limits)
        if got is not None:
            got[0].headers = [(n.upper(), v) for n, v in got[0].headers]
        return got

    monkeypatch.setattr(h1, "parse_head", broken)
    with pytest.raises(AssertionError):
        TARGETS["h1_head"](b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_h1_chunked_target_catches_a_lost_byte(monkeypatch):
    real = h1.ChunkedDecoder._feed

    def broken(self, buf):
        return [piece[:-1] if len(piece) == 1 else piece for piece in real(self, buf)]

    monkeypatch.setattr(h1.ChunkedDecoder, "_feed", broken)
    with pytest.raises(AssertionError):
        TARGETS["h1_chunked"](b"5\r\nhello\r\n0\r\n\r\n")


def test_h2_machine_target_catches_an_unparseable_frame(monkeypatch):
    real = h2.settings_frame
    monkeypatch.setattr(h2, "settings_frame", lambda values: real(values)[:-1])  # one octet short
    with pytest.raises(AssertionError):
        TARGETS["h2_machine"](b"")


def test_h2_machine_target_catches_an_unexpected_exception(monkeypatch):
    from rr.http2 import machine

    def broken(self, *args):
        raise KeyError(args)

    monkeypatch.setattr(machine.H2Machine, "on_ping", broken)
    with pytest.raises(KeyError):
        TARGETS["h2_machine"](h2.frame(h2.PING, 0, 0, b"12345678"))


def test_h2_hpack_target_catches_a_connection_field_let_through(monkeypatch):
    from rr import fields

    monkeypatch.setattr(fields, "_CONNECTION_SPECIFIC", frozenset())  # the rule lives in rr.fields
    seed = (CORPUS / "h2_hpack" / "connection_field").read_bytes()
    with pytest.raises(AssertionError):
        TARGETS["h2_hpack"](seed)


def test_response_fields_target_catches_a_crlf_let_through(monkeypatch):
    monkeypatch.setattr(exchange, "_BAD_VALUE", frozenset("\0"))
    monkeypatch.setattr(exchange, "_checked", {})
    monkeypatch.setattr(exchange, "_sections", {})
    seed = (CORPUS / "response_fields" / "crlf_value").read_bytes()
    with pytest.raises(AssertionError):
        TARGETS["response_fields"](seed)


def test_proxy_header_target_catches_an_over_read(monkeypatch):
    from rr import proxy_protocol

    real = proxy_protocol.parse

    def broken(data, max_size=4096):
        got = real(data, max_size)
        return got if got is None else (got[0], min(got[1] + 1, len(data)))  # takes a byte too many

    monkeypatch.setattr(proxy_protocol, "parse", broken)
    seed = (CORPUS / "proxy_header" / "ok_v1_tcp4").read_bytes()
    with pytest.raises(AssertionError):
        TARGETS["proxy_header"](seed)


def test_proxy_header_target_catches_a_wrong_crc_accepted(monkeypatch):
    from rr import proxy_protocol

    monkeypatch.setattr(proxy_protocol, "_check_crc", lambda header, tlvs: None)
    seed = bytearray((CORPUS / "proxy_header" / "ok_v2_crc").read_bytes())
    seed[-1] ^= 1
    with pytest.raises(AssertionError):
        TARGETS["proxy_header"](bytes(seed))
