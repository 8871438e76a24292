"""The rule evaluator (rollout/analysis/judge.py): pure, so every case is a list of samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.analysis import (
    Analysis,
    Measurement,
    RuleResult,
    TrackValues,
    Verdict,
    beyond,
    judge,
)
from rollout.config import Rule

T = timedelta(seconds=30)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rule(**fields: Any) -> Rule:
    return Rule.model_validate(fields)


ERRORS_2M = rule(metric="error_rate", above=0.01, **{"for": "2m"})


def sample(
    at: datetime,
    canary: float | None,
    stable: float | None = 0.0,
    *,
    metric: str = "error_rate",
    rps: float | None = 10.0,
) -> Measurement:
    return Measurement(
        at=at,
        values={metric: TrackValues(canary, stable), "request_rate": TrackValues(rps, 30.0)},
    )


def ticks(values: Sequence[float | None], **kwargs: Any) -> list[Measurement]:
    """One sample per analysis interval from T0."""
    return [sample(T0 + i * T, value, **kwargs) for i, value in enumerate(values)]


def judged(rules: Sequence[Rule], history: Sequence[Measurement]) -> Analysis:
    now = max((m.at for m in history), default=T0)
    return judge(rules=rules, history=history, now=now, analysis_interval=T)


def one(r: Rule, history: Sequence[Measurement]) -> RuleResult:
    return judged([r], history).results[0]


BAD, OK = 0.05, 0.001


class TestForWindow:
    @pytest.mark.parametrize("count", [1, 2, 3, 4])
    def test_beyond_for_less_than_the_window_is_pending_not_breached(self, count: int) -> None:
        result = one(ERRORS_2M, ticks([BAD] * count))
        assert result.verdict is Verdict.HEALTHY
        assert result.pending
        assert result.since == T0
        assert result.note == f"beyond threshold for {format_s((count - 1) * 30)} of 2m"

    def test_breached_once_the_whole_window_is_beyond(self) -> None:
        result = one(ERRORS_2M, ticks([BAD] * 5))  # samples at 0, 30, 60, 90, 120 s
        assert result.verdict is Verdict.BREACHED
        assert (result.canary, result.stable, result.window) == (BAD, 0.0, timedelta(minutes=2))
        assert result.since == T0
        assert not result.pending

    def test_one_healthy_sample_resets_the_window(self) -> None:
        history = ticks([BAD, BAD, BAD, BAD, OK, BAD, BAD, BAD, BAD])
        assert one(ERRORS_2M, history).verdict is Verdict.HEALTHY
        history.append(sample(T0 + 9 * T, BAD))
        result = one(ERRORS_2M, history)
        assert result.verdict is Verdict.BREACHED
        assert result.since == T0 + 5 * T

    def test_a_missing_tick_inside_the_window_is_not_proof(self) -> None:
        history = [s for i, s in enumerate(ticks([BAD] * 7)) if i != 3]
        result = one(ERRORS_2M, history)
        assert result.verdict is Verdict.HEALTHY and result.pending
        assert result.since == T0 + 4 * T

    def test_a_no_data_sample_inside_the_window_is_not_proof(self) -> None:
        result = one(ERRORS_2M, ticks([BAD, BAD, None, BAD, BAD, BAD, BAD]))
        assert result.verdict is Verdict.HEALTHY and result.pending
        assert result.since == T0 + 3 * T

    def test_ticks_a_little_late_or_early_still_breach_on_time(self) -> None:
        jitter = [0, 31, 59, 92, 119]
        history = [sample(T0 + timedelta(seconds=s), BAD) for s in jitter]
        assert one(ERRORS_2M, history[:4]).verdict is Verdict.HEALTHY
        assert one(ERRORS_2M, history).verdict is Verdict.BREACHED

    def test_a_window_between_ticks_is_rounded_up_never_down(self) -> None:
        r = rule(metric="error_rate", above=0.01, **{"for": "45s"})
        assert one(r, ticks([BAD, BAD])).verdict is Verdict.HEALTHY  # 30 s < 45 s
        assert one(r, ticks([BAD, BAD, BAD])).verdict is Verdict.BREACHED

    def test_for_zero_means_the_latest_sample_decides(self) -> None:
        r = rule(metric="error_rate", above=0.01, **{"for": "0s"})
        assert one(r, ticks([OK, OK, BAD])).verdict is Verdict.BREACHED
        assert one(r, ticks([BAD, BAD, OK])).verdict is Verdict.HEALTHY

    def test_samples_after_now_are_ignored(self) -> None:
        history = ticks([OK, BAD, BAD, BAD, BAD, BAD])
        analysis = judge(rules=[ERRORS_2M], history=history, now=T0 + 4 * T, analysis_interval=T)
        assert analysis.verdict is Verdict.HEALTHY
        assert analysis.latest == history[4]

    def test_history_order_does_not_matter(self) -> None:
        history = ticks([BAD] * 5)
        assert one(ERRORS_2M, list(reversed(history))).verdict is Verdict.BREACHED


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.sampled_from([BAD, OK, None]), min_size=1, max_size=12),
    window_s=st.sampled_from([0, 10, 30, 45, 60, 120]),
)
def test_breached_exactly_when_the_last_samples_spanning_the_window_are_all_beyond(
    values: list[float | None], window_s: int
) -> None:
    r = rule(metric="error_rate", above=0.01, **{"for": f"{window_s}s"})
    needed = 1 + math.ceil(window_s / 30)  # samples on a regular grid, rounded up
    expected = len(values) >= needed and all(v == BAD for v in values[-needed:])
    assert (one(r, ticks(values)).verdict is Verdict.BREACHED) == expected


class TestNoData:
    @pytest.mark.parametrize("missing", [None, math.nan, math.inf, -math.inf])
    def test_missing_or_nan_canary_value_is_no_data(self, missing: float | None) -> None:
        result = one(ERRORS_2M, ticks([BAD, BAD, BAD, BAD, missing]))
        assert result.verdict is Verdict.NO_DATA
        assert result.canary is None
        assert result.note == "no data from Prometheus for the canary"

    def test_nan_never_survives_into_a_measurement(self) -> None:
        values = TrackValues(math.nan, math.inf)
        assert (values.canary, values.stable) == (None, None)

    def test_empty_history_is_no_data_for_every_rule(self) -> None:
        analysis = judge(rules=[ERRORS_2M], history=[], now=T0, analysis_interval=T)
        assert analysis.verdict is Verdict.NO_DATA
        assert analysis.results[0].note == "no samples yet"
        assert analysis.latest is None

    def test_metric_absent_from_the_sample_is_no_data(self) -> None:
        r = rule(metric="latency_p99_ms", above=800)
        assert one(r, ticks([OK])).verdict is Verdict.NO_DATA

    def test_a_stale_latest_sample_is_no_data(self) -> None:
        history = ticks([OK])
        analysis = judge(rules=[ERRORS_2M], history=history, now=T0 + 2 * T, analysis_interval=T)
        assert analysis.verdict is Verdict.NO_DATA
        assert analysis.results[0].note == "no sample for 1m (Prometheus unreachable?)"
        within_jitter = T0 + T + T / 2
        analysis = judge(rules=[ERRORS_2M], history=history, now=within_jitter, analysis_interval=T)
        assert analysis.verdict is Verdict.HEALTHY

    def test_no_rules_is_healthy(self) -> None:
        assert judged([], ticks([OK])).verdict is Verdict.HEALTHY


class TestMinimumVolume:
    LOW_VOLUME = rule(metric="error_rate", above=0.01, min_request_rate=0.5)

    def test_below_the_minimum_volume_is_not_judged(self) -> None:
        result = one(self.LOW_VOLUME, ticks([BAD], rps=0.2))
        assert result.verdict is Verdict.NO_DATA
        assert result.note == "below minimum volume 0.5 req/s (canary 0.2 req/s)"

    def test_a_healthy_value_on_too_little_traffic_is_not_healthy(self) -> None:
        assert one(self.LOW_VOLUME, ticks([OK], rps=0.2)).verdict is Verdict.NO_DATA

    def test_missing_request_rate_is_not_judged(self) -> None:
        result = one(self.LOW_VOLUME, ticks([BAD], rps=None))
        assert result.verdict is Verdict.NO_DATA
        assert result.note == "no canary request rate to check the minimum volume"

    def test_at_or_above_the_minimum_volume_is_judged(self) -> None:
        assert one(self.LOW_VOLUME, ticks([BAD], rps=0.5)).verdict is Verdict.BREACHED
        assert one(self.LOW_VOLUME, ticks([OK], rps=3)).verdict is Verdict.HEALTHY

    def test_a_low_volume_sample_breaks_the_window(self) -> None:
        r = rule(metric="error_rate", above=0.01, min_request_rate=1, **{"for": "1m"})
        history = ticks([BAD, BAD, BAD])
        assert one(r, history).verdict is Verdict.BREACHED
        history[1] = sample(T0 + T, BAD, rps=0.1)
        assert one(r, history).verdict is Verdict.HEALTHY


class TestRelativeRules:
    BY = rule(metric="error_rate", above_stable_by=0.005)
    RATIO = rule(metric="latency_p99_ms", above_stable_ratio=1.5)

    @pytest.mark.parametrize(
        ("canary", "stable", "verdict"),
        [
            (0.02, 0.01, Verdict.BREACHED),
            (0.014, 0.01, Verdict.HEALTHY),
            (0.015, 0.01, Verdict.HEALTHY),  # strictly more than 0.5 points
            (0.02, None, Verdict.NO_DATA),
        ],
    )
    def test_above_stable_by(self, canary: float, stable: float | None, verdict: Verdict) -> None:
        assert one(self.BY, ticks([canary], stable=stable)).verdict is verdict

    @pytest.mark.parametrize(
        ("canary", "stable", "verdict"),
        [
            (160.0, 100.0, Verdict.BREACHED),
            (150.0, 100.0, Verdict.HEALTHY),
            (140.0, 100.0, Verdict.HEALTHY),
            (0.0, 0.0, Verdict.HEALTHY),
            (1.0, 0.0, Verdict.BREACHED),  # worse than a stable at zero by any factor
            (160.0, None, Verdict.NO_DATA),
        ],
    )
    def test_above_stable_ratio(
        self, canary: float, stable: float | None, verdict: Verdict
    ) -> None:
        result = one(self.RATIO, ticks([canary], stable=stable, metric="latency_p99_ms"))
        assert result.verdict is verdict
        if verdict is Verdict.NO_DATA:
            assert result.note == "no data from Prometheus for stable"

    def test_absolute_rules_do_not_need_stable(self) -> None:
        assert one(ERRORS_2M, ticks([OK], stable=None)).verdict is Verdict.HEALTHY


class TestThresholds:
    def test_below_is_beyond_only_when_strictly_below(self) -> None:
        r = rule(metric="success_rate", below=0.999)
        assert beyond(r, 0.998, None) is True
        assert beyond(r, 0.999, None) is False
        assert beyond(r, 1.0, None) is False

    def test_above_is_beyond_only_when_strictly_above(self) -> None:
        assert beyond(ERRORS_2M, 0.01, None) is False
        assert beyond(ERRORS_2M, 0.0100001, None) is True

    def test_cannot_judge_without_a_value(self) -> None:
        assert beyond(ERRORS_2M, None, 0.0) is None
        assert beyond(ERRORS_2M, math.nan, 0.0) is None
        assert beyond(rule(metric="x", above_stable_by=1), 5.0, None) is None


class TestVerdictPrecedence:
    SUCCESS = rule(metric="success_rate", below=0.999)
    LATENCY = rule(metric="latency_avg_ms", above=500)

    def history(self, *, success: float | None, latency: float | None) -> list[Measurement]:
        return [
            Measurement(
                at=T0,
                values={
                    "success_rate": TrackValues(success, 1.0),
                    "latency_avg_ms": TrackValues(latency, 100.0),
                },
            )
        ]

    def test_breached_wins_over_no_data(self) -> None:
        analysis = judged([self.LATENCY, self.SUCCESS], self.history(success=0.9, latency=None))
        assert analysis.verdict is Verdict.BREACHED
        assert analysis.breached is not None and analysis.breached.rule == self.SUCCESS

    def test_no_data_wins_over_healthy(self) -> None:
        analysis = judged([self.LATENCY, self.SUCCESS], self.history(success=1.0, latency=None))
        assert analysis.verdict is Verdict.NO_DATA
        assert analysis.breached is None

    def test_all_healthy(self) -> None:
        analysis = judged([self.LATENCY, self.SUCCESS], self.history(success=1.0, latency=90))
        assert analysis.verdict is Verdict.HEALTHY
        assert [r.verdict for r in analysis.results] == [Verdict.HEALTHY, Verdict.HEALTHY]

    def test_breached_names_the_first_breached_rule(self) -> None:
        analysis = judged([self.LATENCY, self.SUCCESS], self.history(success=0.9, latency=900))
        assert analysis.breached is not None and analysis.breached.rule == self.LATENCY

    def test_pending_rules_are_listed(self) -> None:
        analysis = judged([ERRORS_2M], ticks([OK, BAD]))
        assert analysis.verdict is Verdict.HEALTHY
        assert [r.rule for r in analysis.pending] == [ERRORS_2M]


class TestMeasurementJson:
    def test_round_trip_keeps_values_and_missing_data(self) -> None:
        measurement = Measurement(
            at=T0,
            values={"error_rate": TrackValues(0.02, None), "request_rate": TrackValues(5.0, 15.0)},
        )
        stored = measurement.to_json()
        assert stored["at"] == "2026-03-01T12:00:00+00:00"
        assert stored["values"]["error_rate"] == {"canary": 0.02, "stable": None}
        assert Measurement.from_json(stored) == measurement

    def test_naive_times_are_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            Measurement(at=datetime(2026, 3, 1, 12, 0), values={})


def format_s(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    if seconds == 0:
        return "0s"
    return (f"{minutes}m" if minutes else "") + (f"{rest}s" if rest else "")
