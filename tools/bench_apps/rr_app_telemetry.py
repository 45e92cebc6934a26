"""rr's bench app with a telemetry subscriber on every request event (``python rr_app_telemetry.py PORT``).

Measures what observing costs: compare its server CPU per request with
``rr_app.py`` (no subscriber), see docs/bench_results.md.
"""

from __future__ import annotations

import rr_app

import rr

counts = {"start": 0, "stop": 0}


def count(event, measurements, metadata, config):  # a typical metrics subscriber
    counts[event[-1]] += 1
    _ = metadata["request_id"], measurements.get("duration")


rr.telemetry.attach_many("bench", [("rr", "request", "start"), ("rr", "request", "stop")], count)

if __name__ == "__main__":
    rr_app.main()
