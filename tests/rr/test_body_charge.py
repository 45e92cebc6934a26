"""The exchange's auto-mode body read and the handler process's ``max_heap``.

A body that comes whole in one read and is at most ``UNCHARGED_BODY`` bytes is not charged
(it holds less than the read buffer); any other body is charged as it is read, so a
process whose budget it overruns ends with ``max_heap`` before the handler runs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import supervisors
from rr import exchange
from rr.request import Headers, Request


class Chunks:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def read(self, max_bytes: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def read_in_process(chunks: list[bytes], max_heap: int) -> tuple[str, object]:
    """Run ``Exchange._read_body`` in a process with ``max_heap``: ("ok", (charged, body)) or
    ("down", reason)."""
    req = Request("POST", "/", "/", "", "HTTP/1.1", Headers([]), source=Chunks(chunks))
    out: dict[str, object] = {}

    def body() -> None:
        charged = exchange.Exchange._read_body(SimpleNamespace(req=req))  # type: ignore[arg-type]
        out["result"] = (charged, req._body)

    _pid, ref = supervisors.spawn(body, label="test.body_charge", monitor=True, max_heap=max_heap)
    down = supervisors.receive(lambda m: type(m) is tuple and m[:2] == ("DOWN", ref), timeout=5)
    if down[3] == "max_heap":
        return "down", down[3]
    return "ok", out["result"]


def test_a_small_body_in_one_read_is_not_charged():
    small = b"s" * exchange.UNCHARGED_BODY
    assert read_in_process([small], max_heap=1024) == ("ok", (0, small))


def test_a_small_first_read_with_more_behind_it_is_charged():
    # Two reads of 3 KB each: 6 KB charged, over a 4 KiB budget.
    assert read_in_process([b"a" * 3000, b"b" * 3000], max_heap=4096) == ("down", "max_heap")
    assert read_in_process([b"a" * 3000, b"b" * 3000], max_heap=64 * 1024) == \
        ("ok", (6000, b"a" * 3000 + b"b" * 3000))


@pytest.mark.parametrize("size", [exchange.UNCHARGED_BODY + 1, 40_000])
def test_a_larger_body_in_one_read_is_charged(size):
    assert read_in_process([b"x" * size], max_heap=exchange.UNCHARGED_BODY) == ("down", "max_heap")
    assert read_in_process([b"x" * size], max_heap=64 * 1024) == ("ok", (size, b"x" * size))
