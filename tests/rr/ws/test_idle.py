"""Idle WebSocket sessions cost little memory: RSS per session of rr in a subprocess.

``tools/ws_idle.py`` starts rr (an h1 listener whose WebSocket handler does
nothing) in a subprocess, opens N sessions from this process over loopback
(each proven alive by one ping answered with a pong) and reads the server's
VmRSS before and after. The suite runs 1,000 sessions (a couple of seconds);
the 10,000-session figure is in docs/conformance.md. The bound is about 1.5x
what one session costs today (~12 KiB): a session that grew a second process
again (it had a reader process until 2026-11-30: ~22 KiB) or started holding
a buffer while idle fails it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "tools" / "ws_idle.py"
BOUND_KIB = 18.0


def _tool():
    spec = importlib.util.spec_from_file_location("ws_idle", TOOL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
def test_a_thousand_idle_sessions_cost_under_the_bound_each(deflate):
    result = _tool().measure(1000, deflate=deflate, deadline_s=120.0)
    assert result["sessions"] == 1000
    assert 0 < result["per_session_kib"] <= BOUND_KIB, result
