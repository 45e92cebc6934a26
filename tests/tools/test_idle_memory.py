"""tools/idle_memory.py: a small run against a real rr subprocess (RSS line and tracemalloc sites)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_idle_memory_holds_n_connections_and_reports_what_they_hold():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "idle_memory.py"), "50", "--tracemalloc"],
                         capture_output=True, text=True, timeout=120, env=env, check=True).stdout
    line = re.search(r"(\d+) of 50 idle keep-alive connections open; server RSS [\d.]+ -> [\d.]+ MiB: "
                     r"(-?[\d.]+) KiB/conn", out)
    assert line is not None, out
    assert int(line[1]) == 50
    traced = re.search(r"([\d.]+) B/conn total traced", out)
    assert traced is not None and float(traced[1]) > 1000, out  # a connection holds something
    assert "rr/http1/conn.py" in out  # sites are attributed to rr's frames
