"""tools/bench_ws_session.py: a short run prints both paths' CPU per message, the fast one cheaper."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_ws_session_reports_the_fast_path_below_wsproto():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_ws_session.py"), "--count", "300"],
                         capture_output=True, text=True, timeout=120, env=env, check=True).stdout
    line = re.search(r"1024 B text echo: wsproto path ([\d.]+) us/message, fast path ([\d.]+) us/message", out)
    assert line is not None, out
    assert 0 < float(line[2]) < float(line[1]), out
