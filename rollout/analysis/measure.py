"""Measuring: one analysis tick's queries for every active rollout, turned into Measurements.

The engine calls `Analyzer.measure` once per tick with all active rollouts. It never raises
for a metrics problem: every target always gets a Measurement with every metric name, and what
could not be measured is None, which the judge reads as "no data". When Prometheus cannot be
reached at all, the rest of the tick's queries are skipped rather than each waiting for its own
timeout; a query that Prometheus rejects (a broken custom query) costs only its own metric.
A whole measurement has one deadline too (`budget`, the Prometheus timeout): once it has
passed, the queries not yet run count as no data, so a slow Prometheus never stretches a tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import requests

from rollout.analysis.provider import MetricsProvider, MetricsUnavailable, QueryFailed, Series
from rollout.analysis.queries import CustomQuery, metric_names, plan
from rollout.analysis.types import AnalysisTarget, Measurement, Track, TrackValues

log = logging.getLogger(__name__)


class Analyzer:
    def __init__(
        self,
        provider: MetricsProvider,
        *,
        budget: timedelta | None = None,
        on_deadline: Callable[[str], None] | None = None,
    ) -> None:
        self._provider = provider
        self._budget = budget.total_seconds() if budget is not None else None
        self._deadline: float | None = None
        self._on_deadline = on_deadline or (lambda what: None)

    def measure(
        self, targets: Sequence[AnalysisTarget], *, now: datetime
    ) -> dict[str, Measurement]:
        """A Measurement per target's `rollout_id`, stamped `now` (the engine's clock)."""
        batches, customs = plan(targets)
        if self._budget is not None:
            self._deadline = time.monotonic() + self._budget
        values: dict[tuple[str, str, Track], float | None] = {}  # (rollout, metric, track)
        reachable = True
        for batch in batches:
            series, reachable = self._run(batch.promql, reachable=reachable)
            for (rollout_id, track), value in batch.split(series).items():
                values[(rollout_id, batch.metric, track)] = value
        for custom in customs:
            series, reachable = self._run(custom.promql, reachable=reachable)
            values[(custom.rollout_id, custom.metric, custom.track)] = _single_value(custom, series)
        return {
            target.rollout_id: Measurement(
                at=now,
                values={
                    metric: TrackValues(
                        canary=values.get((target.rollout_id, metric, "canary")),
                        stable=values.get((target.rollout_id, metric, "stable")),
                    )
                    for metric in metric_names(target)
                },
            )
            for target in targets
        }

    def _run(self, promql: str, *, reachable: bool) -> tuple[list[Series], bool]:
        """The query's series and whether Prometheus still looks reachable this tick."""
        if not reachable:
            return [], False
        if self._deadline is not None and time.monotonic() >= self._deadline:
            log.warning("measurement deadline of %gs passed; the rest is no data", self._budget)
            self._on_deadline("measurement")
            return [], False
        try:
            return self._provider.query(promql), True
        except QueryFailed as error:
            log.warning("query failed: %s -- %s", error, promql)
            return [], True
        except MetricsUnavailable as error:
            log.warning("metrics unavailable, skipping the rest of this tick: %s", error)
            if isinstance(error.__cause__, requests.Timeout):
                self._on_deadline("query")
            return [], False


def _single_value(custom: CustomQuery, series: Sequence[Series]) -> float | None:
    """A custom query must return one series per track; anything else is no data.

    Several series cannot be merged safely (a sum is right for rates, wrong for ratios), so the
    query's author is told to aggregate it, and the rollout holds rather than guess.
    """
    if len(series) == 1:
        return series[0].value
    if series:
        log.warning(
            "custom metric %s (%s) returned %d series; aggregate it (sum/avg) to one",
            custom.metric,
            custom.track,
            len(series),
        )
    return None
