"""The demo's Prometheus stand-in answers the bot's own built-in queries with the right numbers.

Without a `prometheus` binary the demo's bot measures through `DirectMetrics`; a wrong answer
there would make the demo promote or roll back for the wrong reasons. The queries here are the
ones the bot really sends (`Analyzer` plans them), for every traffic flavour.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from emulators.direct_metrics import DirectMetrics
from emulators.traffic import TrafficExporter
from rollout.analysis import AnalysisTarget, Analyzer, QueryFailed


@pytest.fixture
def exporter() -> Iterator[TrafficExporter]:
    traffic = TrafficExporter(weight_of=lambda namespace, service: 25.0)
    traffic.add_service("shop", "checkout", deployment="checkout", rps=100.0)
    traffic.set_track("shop", "checkout", "stable", error_rate=0.0, latency_ms=50.0)
    traffic.set_track("shop", "checkout", "canary", error_rate=0.1, latency_ms=80.0)
    yield traffic  # never started: DirectMetrics reads it in-process


def _target(strategy: str) -> AnalysisTarget:
    return AnalysisTarget(
        rollout_id="r1",
        service="checkout",
        namespace="shop",
        deployment="checkout",
        strategy=strategy,
        ingress=None,
        window=timedelta(seconds=30),
    )


@pytest.mark.parametrize("strategy", ["replicas", "istio", "nginx"])
def test_built_in_metrics_match_the_traffic(exporter: TrafficExporter, strategy: str) -> None:
    metrics = DirectMetrics(exporter)
    for _ in range(3):
        metrics.scrape()
        time.sleep(0.15)
    metrics.scrape()

    values = Analyzer(metrics).measure([_target(strategy)], now=datetime.now(UTC))["r1"].values

    assert values["request_rate"].canary == pytest.approx(25.0, rel=0.05)
    assert values["request_rate"].stable == pytest.approx(75.0, rel=0.05)
    assert values["error_rate"].canary == pytest.approx(0.1)
    assert values["error_rate"].stable == 0.0
    assert values["success_rate"].canary == pytest.approx(0.9)
    assert values["latency_avg_ms"].canary == pytest.approx(80.0)
    assert values["latency_avg_ms"].stable == pytest.approx(50.0)
    # 1.5 x 80 ms lands in the (100 ms, 250 ms] bucket, which is where p99 must be.
    p99 = values["latency_p99_ms"].canary
    assert p99 is not None and 100.0 < p99 <= 250.0
    assert values["cpu_saturation"].canary == pytest.approx(0.2, rel=0.01)


def test_one_sample_is_no_data_not_zero(exporter: TrafficExporter) -> None:
    metrics = DirectMetrics(exporter)
    metrics.scrape()

    values = Analyzer(metrics).measure([_target("replicas")], now=datetime.now(UTC))["r1"].values

    assert values["error_rate"].canary is None
    assert values["request_rate"].canary is None


@pytest.mark.parametrize(
    "promql", ["sum(rate(http_requests_total[1m]", "predict_linear(http_requests_total[1m], 60)"]
)
def test_what_it_cannot_answer_is_a_failed_query(exporter: TrafficExporter, promql: str) -> None:
    metrics = DirectMetrics(exporter)
    metrics.scrape()

    with pytest.raises(QueryFailed):
        metrics.query(promql)
