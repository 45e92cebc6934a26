"""tools/soak.py: the flatness verdict, and a 10-second smoke run against a real rr.

The smoke run starts the soak's rr listener as a subprocess and drives it with
wrk, h2load and the soak's own abusive clients for 10 s: it checks that every
series was sampled each second, the load really ran, the server lived and
drained, and the CSV/PNG/JSON agree with the exit status. Whether 10 s is
"flat" is not asserted (the slow clients' cycles are longer than that); the
10-minute run recorded in docs/reliability.md is the real verdict.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_soak():
    spec = importlib.util.spec_from_file_location("rr_tools_soak", ROOT / "tools" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


def _rows(values):
    return [{"t": float(i), "v": v} for i, v in enumerate(values)]


def test_a_level_line_is_flat():
    verdict = soak.flatness(_rows([50, 60, 55, 58, 61, 57, 59, 60, 62]), "v", 0, 0)
    assert verdict["flat"] and verdict["first_third_max"] == 60 and verdict["last_third_max"] == 62


def test_a_rising_line_is_not_flat():
    assert not soak.flatness(_rows([50, 52, 54, 60, 66, 70, 75, 80, 90]), "v", 0, 0)["flat"]


def test_the_slack_and_the_warm_up_are_applied():
    rising_a_little = _rows([10, 10, 10, 10, 10, 10, 14, 14, 14])
    assert not soak.flatness(rising_a_little, "v", 0, 0)["flat"]
    assert soak.flatness(rising_a_little, "v", 4, 0)["flat"]
    warm_up_spike = _rows([500, 500, 10, 10, 10, 10, 10, 10, 10, 10, 10])
    assert soak.flatness(warm_up_spike, "v", 0, 2.0)["flat"]


def test_missing_samples_are_not_flat():
    assert not soak.flatness([{"t": 5.0, "v": None}] * 10, "v", 0, 0)["flat"]


@pytest.mark.slow
@pytest.mark.peers("wrk", "h2load")
def test_ten_second_soak_smoke_run(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--seconds", "10",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    summary = json.loads((tmp_path / "soak.json").read_text())
    assert summary["flat"] == (proc.returncode == 0)
    assert summary["server_alive_to_the_end"] and summary["server_exit"] == 0, summary
    with (tmp_path / "soak.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 7, rows
    assert all(r["rss_mib"] and r["fds"] for r in rows)
    assert sum(1 for r in rows if r["processes"]) >= len(rows) - 2  # /soak/stats answered
    assert summary["load"]["wrk_requests"] > 0 and summary["load"]["h2load_succeeded"] > 0
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
