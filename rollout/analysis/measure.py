"""Measuring: one analysis tick's queries for every active rollout, turned into Measurements.

The engine calls `Analyzer.measure` once per tick with all active rollouts. It never raises
for a metrics problem: every target always gets a Measurement with every metric name, and what
could not be measured is None, which the judge reads as "no data". When Prometheus cannot be
reached at all, the rest of the tick's queries are skipped rather than each waiting for its own
timeout; a query that Prometheus rejects (a broken custom query) costs only its own metric.
A whole measurement has one deadline too (`budget`, the Prometheus timeout): once it has
passed, the queries not yet run count as no data, so a slow Prometheus never stretches a tick.

The queries of a tick are independent, so after the first (which also tells whether Prometheus
can be reached at all) they run side by side, `concurrency` at a time: a tick then waits about
as long as its slowest queries, not the sum of all of them (bench/scale.py: 5 batched queries
over 1,000 rollouts, each 0.02-0.5 s in Prometheus, the p99 quantile the slowest), and the bot
decodes one answer while Prometheus evaluates the next. A tick issues 5 built-in queries per
flavour and window in use (3 of traffic, 2 of saturation shared by the flavours) however many
rollouts it measures, so a few at a time never floods Prometheus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial

import requests

from rollout.analysis.batch import BatchQuery, CustomQuery, metric_names, plan
from rollout.analysis.provider import MetricsProvider, MetricsUnavailable, QueryFailed, Series
from rollout.analysis.templates import prometheus_duration
from rollout.analysis.types import AnalysisTarget, Measurement, Track, TrackValues

log = logging.getLogger(__name__)

# How many of a tick's queries run at once, after the first: Prometheus evaluates a query on
# about one core, and more at once only held more answers in the bot's memory at a time
# (bench/scale.py on 2 cores: 2 and 4 side by side took the same time).
CONCURRENT_QUERIES = 2
# Started first among the rest: the heaviest query (a quantile over every bucket series) takes
# about two thirds of Prometheus's time for a tick's queries, so it must not wait for the others.
_HEAVIEST_FIRST = ("latency_p99_ms",)


class Analyzer:
    def __init__(
        self,
        provider: MetricsProvider,
        *,
        budget: timedelta | None = None,
        on_deadline: Callable[[str], None] | None = None,
        concurrency: int = CONCURRENT_QUERIES,
    ) -> None:
        self._provider = provider
        self._budget = budget.total_seconds() if budget is not None else None
        self._on_deadline = on_deadline or (lambda what: None)
        self._concurrency = max(1, concurrency)

    def measure(
        self, targets: Sequence[AnalysisTarget], *, now: datetime
    ) -> dict[str, Measurement]:
        """A Measurement per target's `rollout_id`, stamped `now` (the engine's clock)."""
        batches, customs = plan(targets)
        deadline = time.monotonic() + self._budget if self._budget is not None else None
        run = _Round(self._provider, deadline=deadline, on_deadline=self._on_deadline).run
        values: dict[tuple[str, str, Track], float | None] = {}  # (rollout, metric, track)

        def batched(batch: BatchQuery) -> None:
            values.update(batch.split(run(batch.promql, _about(batch))))

        def custom(query: CustomQuery) -> None:
            series = run(
                query.promql, f"custom {query.metric} ({query.track}) of {query.rollout_id}"
            )
            values[(query.rollout_id, query.metric, query.track)] = _single_value(query, series)

        first, rest = (
            batches[:1],
            sorted(batches[1:], key=lambda b: b.query not in _HEAVIEST_FIRST),
        )
        ordered = first + rest
        work = [partial(batched, b) for b in ordered] + [partial(custom, c) for c in customs]
        if work:
            work[0]()  # alone: an unreachable Prometheus is found out by one query, not all
        if len(work) > 1:
            with ThreadPoolExecutor(self._concurrency, thread_name_prefix="promql") as pool:
                # Each writes its own keys of `values`; list() re-raises a bug's exception.
                list(pool.map(lambda run: run(), work[1:]))
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


class _Round:
    """One measurement's queries: whether Prometheus still looks reachable, and the deadline.
    Shared by the queries running side by side, hence the lock."""

    def __init__(
        self,
        provider: MetricsProvider,
        *,
        deadline: float | None,
        on_deadline: Callable[[str], None],
    ) -> None:
        self._provider = provider
        self._deadline = deadline
        self._on_deadline = on_deadline
        self._reachable = True
        self._guard = threading.Lock()

    def run(self, promql: str, about: str) -> list[Series]:
        """The query's series; none once Prometheus looks unreachable this tick or the
        measurement's deadline has passed (the queries not yet started are skipped). `about`
        names the query in the log."""
        with self._guard:
            if not self._reachable:
                return []
            if self._deadline is not None and time.monotonic() >= self._deadline:
                log.warning("measurement deadline passed; the rest of this tick is no data")
                self._reachable = False  # said once, not once per query left
                self._on_deadline("measurement")
                return []
        try:
            return self._provider.query(promql)
        except QueryFailed as error:
            # A batched query names every rollout it measures (~50 KB at 1,000): the log gets
            # what it was for and its beginning, enough to find it in the code.
            log.warning(
                "query failed: %s: %.300s -- the query (%d characters) begins: %.200s",
                about,
                error,
                len(promql),
                promql,
            )
            return []
        except MetricsUnavailable as error:
            with self._guard:
                first, self._reachable = self._reachable, False
            if first:
                log.warning("metrics unavailable, skipping the rest of this tick: %s", error)
            if isinstance(error.__cause__, requests.Timeout):
                self._on_deadline("query")
            return []


def _about(batch: BatchQuery) -> str:
    window = prometheus_duration(batch.window)
    return (
        f"{', '.join(batch.metrics)} ({batch.family.name}, {window} window)"
        f" for {len(batch.targets)} rollouts"
    )


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
