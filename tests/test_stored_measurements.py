"""Stored measurements are decoded when read, so a tick judges on what it reads only.

A beat's ticks judge each rollout on the samples of its rules' longest `for`: with `for: 2m`
every 5 s that is 27 samples a rollout, 27,000 a beat at 1,000 rollouts, and decoding them all
(JSON, then a TrackValues per metric and track) cost about 0.8 s of CPU a beat. A rule reads
the latest sample, and older ones only while it is beyond its threshold (rollout/analysis/
judge.py). Shown here with older samples stored as text that is not JSON at all: a judge that
decoded them would fail.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from rollout.analysis import Measurement, TrackValues, Verdict, judge
from rollout.config import Rule

T = timedelta(seconds=5)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ERRORS_30S = Rule.model_validate({"metric": "error_rate", "above": 0.05, "for": "30s"})


def stored(at: datetime, error_rate: float) -> Measurement:
    measured = Measurement(at=at, values={"error_rate": TrackValues(error_rate, 0.0)})
    return Measurement.stored(at, json.dumps(measured.to_json()))


def unreadable(at: datetime) -> Measurement:
    return Measurement.stored(at, "{not json")


def test_a_stored_measurement_reads_as_the_one_that_was_stored() -> None:
    measured = Measurement(at=T0, values={"error_rate": TrackValues(0.5, None)})
    again = Measurement.stored(T0, json.dumps(measured.to_json()))
    assert again == measured
    assert again.get("error_rate") == TrackValues(0.5, None)
    assert dict(again.values) == {"error_rate": TrackValues(0.5, None)}


def test_a_healthy_rollout_is_judged_on_its_latest_sample_alone() -> None:
    history = [unreadable(T0 + i * T) for i in range(26)] + [stored(T0 + 26 * T, 0.01)]
    analysis = judge(rules=[ERRORS_30S], history=history, now=T0 + 26 * T, analysis_interval=T)
    assert analysis.verdict is Verdict.HEALTHY


def test_a_rule_beyond_its_threshold_reads_back_through_its_run() -> None:
    history = [unreadable(T0)] + [stored(T0 + i * T, 0.01) for i in range(1, 3)]
    history += [stored(T0 + i * T, 0.5) for i in range(3, 11)]
    analysis = judge(rules=[ERRORS_30S], history=history, now=T0 + 10 * T, analysis_interval=T)
    assert analysis.verdict is Verdict.BREACHED
    assert analysis.results[0].since == T0 + 3 * T
