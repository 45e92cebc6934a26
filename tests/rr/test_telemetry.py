"""rr.telemetry.span: start, then stop (with what the body added) or exception, never both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rr import telemetry

PREFIX = ("test", "span")


@pytest.fixture
def seen() -> Iterator[list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    telemetry.attach_many(
        "t-span",
        [PREFIX + ("start",), PREFIX + ("stop",), PREFIX + ("exception",)],
        lambda event, meas, meta, cfg: events.append((event[-1], dict(meas), dict(meta))),
    )
    yield events
    telemetry.detach("t-span")


def test_span_emits_start_then_stop_with_what_the_body_added_and_a_duration(seen, monkeypatch):
    clock = iter([100.0, 100.25])
    monkeypatch.setattr(telemetry.time, "monotonic", lambda: next(clock))
    with telemetry.span(PREFIX, {"id": 7}) as meta:
        assert [kind for kind, _, _ in seen] == ["start"]
        meta["status"] = 201
    (start, start_meas, start_meta), (stop, stop_meas, stop_meta) = seen
    assert (start, stop) == ("start", "stop")
    assert start_meta == {"id": 7} and isinstance(start_meas["system_time"], float)
    assert stop_meta == {"id": 7, "status": 201} and stop_meas == {"duration": 0.25}


def test_span_emits_exception_with_kind_and_reason_instead_of_stop_and_reraises(seen):
    boom = ValueError("boom")
    with pytest.raises(ValueError), telemetry.span(PREFIX, {"id": 8}):
        raise boom
    assert [kind for kind, _, _ in seen] == ["start", "exception"]
    _, meas, meta = seen[1]
    assert meta == {"id": 8, "kind": "ValueError", "reason": boom} and meas["duration"] >= 0


def test_span_with_no_handler_attached_runs_the_body_and_emits_nothing():
    assert not telemetry.enabled(PREFIX + ("start",))
    with telemetry.span(PREFIX, {}) as meta:
        meta["x"] = 1
    assert meta == {"x": 1}
