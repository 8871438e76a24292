"""Measuring instruments of `bench/scale.py`, and the naive way to compare the bot with.

`CountingProvider` and `KubeTimer` add up the time the bot waits for Prometheus and for the
Kubernetes API. `naive_measure` asks one query per metric, rollout and track, built from the
bot's own query templates (`rollout.analysis.queries`) and sent through the same provider, so
the comparison with the bot's batched `Analyzer.measure` differs only in the batching.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import common  # noqa: F401  (first: puts this clone on sys.path)

from rollout.analysis import AnalysisTarget, Analyzer, Measurement, PrometheusProvider, Series
from rollout.analysis.queries import FAMILIES, Family, flavour_of
from rollout.analysis.templates import prometheus_duration
from rollout.analysis.types import TRACKS, Track, TrackValues
from rollout.model import Rollout


class CountingProvider(PrometheusProvider):
    """The bot's provider, also adding up the time spent waiting for Prometheus."""

    seconds = 0.0

    def query(self, promql: str) -> list[Series]:
        started = time.perf_counter()
        try:
            return super().query(promql)
        finally:
            self.seconds += time.perf_counter() - started


class KubeTimer:
    """Adds up the time the bot's Kubernetes client spends in HTTP requests."""

    def __init__(self, api_client: Any) -> None:
        self.seconds = 0.0
        send = api_client.request

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return send(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        api_client.request = timed


def target_of(rollout: Rollout, *, window: timedelta) -> AnalysisTarget:
    """What the engine measures for a rollout (as `rollout/observer.py` builds it)."""
    return AnalysisTarget(
        rollout_id=rollout.id,
        service=rollout.service,
        namespace=rollout.namespace,
        deployment=rollout.deployment,
        strategy=rollout.strategy,
        ingress=None,
        window=window,
    )


Slot = tuple[str, str, Track]  # (rollout, metric, track)


def naive_selector(family: Family, target: AnalysisTarget, track: Track) -> str:
    """The batched selector narrowed to one rollout and one track."""
    if family.name == "cadvisor":
        # The batched query's own pod pattern: `<deployment>-<replicaset hash>-<suffix>`.
        pods = f"{target.deployment_of(track)}-[a-z0-9]+-[a-z0-9]+"
        return f'namespace="{target.namespace}",pod=~"{pods}"'
    return f'namespace="{target.namespace}",service="{target.service}",track="{track}"'


def naive_measure(
    provider: PrometheusProvider, targets: Sequence[AnalysisTarget]
) -> dict[Slot, float | None]:
    """One query per metric, rollout and track, with the same templates and provider."""
    values: dict[Slot, float | None] = {}
    for target in targets:
        window = prometheus_duration(target.window)
        for family in FAMILIES[flavour_of(target.strategy)]:
            for metric in family.metrics:
                for track in TRACKS:
                    promql = family.build(
                        family, metric, naive_selector(family, target, track), window
                    )
                    series = provider.query(promql)
                    values[(target.rollout_id, metric, track)] = (
                        series[0].value if len(series) == 1 else None
                    )
    return values


def batched_values(measured: dict[str, Measurement]) -> dict[Slot, float | None]:
    values: dict[Slot, float | None] = {}
    for rollout_id, measurement in measured.items():
        for metric, pair in measurement.values.items():
            for track in TRACKS:
                values[(rollout_id, metric, track)] = TrackValues.of(pair, track)
    return values


def compare_with_naive(url: str, targets: list[AnalysisTarget], *, sample: int) -> dict[str, Any]:
    batched_provider = CountingProvider(url, timeout=timedelta(seconds=10))
    wall = time.perf_counter()
    batched = batched_values(Analyzer(batched_provider).measure(targets, now=datetime.now(UTC)))
    batched_wall = time.perf_counter() - wall

    measured = targets[:sample] if sample else targets
    naive_provider = CountingProvider(url, timeout=timedelta(seconds=10))
    wall = time.perf_counter()
    naive = naive_measure(naive_provider, measured)
    naive_wall = time.perf_counter() - wall
    scale = len(targets) / len(measured)
    both = [k for k, v in naive.items() if v is not None and batched.get(k) is not None]
    differences = [_relative_difference(naive[k], batched[k]) for k in both]
    return {
        "batched_measure": {
            "queries": batched_provider.queries_issued,
            "wall_seconds": round(batched_wall, 3),
        },
        "naive_measure": {
            "rollouts_measured": len(measured),
            "queries": naive_provider.queries_issued,
            "wall_seconds": round(naive_wall, 3),
            "queries_for_all": round(naive_provider.queries_issued * scale),
            "wall_seconds_for_all": round(naive_wall * scale, 1),
            "values_naive": len(naive),
            "values_with_data_both_ways": len(both),
            "median_relative_difference": round(statistics.median(differences or [0.0]), 4),
        },
    }


def _relative_difference(a: float | None, b: float | None) -> float:
    assert a is not None and b is not None
    return abs(a - b) / max(abs(a), abs(b), 1e-9)
