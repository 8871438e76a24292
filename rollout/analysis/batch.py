"""A tick's queries planned across rollouts, and each answer split back into metrics per track.

rollout/analysis/queries.py says what each family asks Prometheus; this module groups the
rollouts of a tick into one query per (family, query, window) (`plan`), and turns an answer
back into values per (rollout, metric, track) (`BatchQuery.split`). The `requests` query
answers with a rate per status code; the three request metrics are derived from it here, with
the semantics of the PromQL they replace (`_request_metrics`).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from rollout.analysis.provider import Series
from rollout.analysis.queries import (
    BUILTIN_METRICS,
    FAMILIES,
    REQUESTS,
    TRAFFIC_QUERIES,
    Family,
    SeriesKey,
    flavour_of,
)
from rollout.analysis.templates import TemplateError, render
from rollout.analysis.types import TRACKS, AnalysisTarget, Track

log = logging.getLogger(__name__)

Slot = tuple[str, Track]  # (rollout_id, track)
Value = tuple[str, str, Track]  # (rollout_id, metric, track)
# What PromQL's `code=~"5.."` matches: Prometheus anchors a matcher's regex at both ends, and
# its `.` (RE2's) matches any character but a newline, as Python's does.
_SERVER_ERROR = re.compile("5..")
REQUEST_METRICS = TRAFFIC_QUERIES[REQUESTS]


@dataclass(frozen=True)
class BatchQuery:
    """One query of a family for many rollouts and both tracks, in one PromQL query."""

    family: Family
    query: str
    window: timedelta
    targets: tuple[AnalysisTarget, ...]

    @property
    def promql(self) -> str:
        return self.family.promql(self.query, self.targets, self.window)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.family.queries[self.query]

    def split(self, series: Sequence[Series]) -> dict[Value, float | None]:
        """Each series to its rollout and track, then the query's metrics of each track;
        unrelated series are ignored, and so are a target's metrics its own queries replace.

        A track that no series names has no data: it gets no value. A slot (and status code)
        that two series claim is ambiguous (None, logged): the query grouped by too few
        labels, and adding up ratios would be wrong. Targets measuring the same workload
        (not expected: one active rollout per service) each get its value.
        """
        slots: dict[SeriesKey, list[Slot]] = defaultdict(list)
        for target in self.targets:
            for track in TRACKS:
                slots[self.family.key(target, track)].append((target.rollout_id, track))
        code = self.family.code if self.query == REQUESTS else ""
        answers: dict[Slot, dict[str, float | None]] = {}
        ambiguous: set[Slot] = set()
        for one in series:
            status = one.labels.get(code, "") if code else ""
            for slot in slots.get(self.family.series_key(one.labels), ()):
                by_code = answers.setdefault(slot, {})
                if status in by_code:
                    log.warning("%s: several series for %s %s", self.query, *slot)
                    ambiguous.add(slot)
                by_code[status] = one.value
        values: dict[Value, float | None] = {}
        for target in self.targets:
            for track in TRACKS:
                slot = (target.rollout_id, track)
                if slot not in answers:
                    continue
                derived = (
                    dict.fromkeys(self.metrics)
                    if slot in ambiguous
                    else self._derive(answers[slot])
                )
                for metric, value in derived.items():
                    if metric not in target.custom_metrics:
                        values[(target.rollout_id, metric, track)] = value
        return values

    def _derive(self, by_code: Mapping[str, float | None]) -> dict[str, float | None]:
        if self.query == REQUESTS:
            return _request_metrics(by_code)
        (metric,) = self.metrics
        (value,) = by_code.values()
        return {metric: value}


def _request_metrics(by_code: Mapping[str, float | None]) -> dict[str, float | None]:
    """One track's request rate, error rate and success rate from its rate per status code,
    as PromQL would give them: `sum by (...) (rate(...))` and `(part or total * 0) / total`
    where the part is the codes matching `5..` (errors) or the others (successes).

    So: no series, no data (the caller gives no value); traffic without a 5xx code is an
    error rate of 0; a total of 0 (0/0) is no data for the ratios; a value that is not a
    number (None: NaN or infinite) makes every sum it is in, and each ratio over it, no data
    (PromQL would give 0 for a finite share of an infinite total; real counters never have
    an infinite rate, and a value that cannot be trusted is held on, never passed).
    """
    rates = {code: rate for code, rate in by_code.items() if rate is not None}
    if len(rates) < len(by_code):
        return dict.fromkeys(REQUEST_METRICS)
    total = sum(rates.values())
    errors = sum(rate for code, rate in rates.items() if _SERVER_ERROR.fullmatch(code))
    successes = sum(rate for code, rate in rates.items() if not _SERVER_ERROR.fullmatch(code))
    return {
        "request_rate": total,
        "error_rate": errors / total if total else None,
        "success_rate": successes / total if total else None,
    }


@dataclass(frozen=True)
class CustomQuery:
    """A service's own PromQL for one metric and track of one rollout."""

    rollout_id: str
    metric: str
    track: Track
    promql: str


def metric_names(target: AnalysisTarget) -> tuple[str, ...]:
    """Every metric measured for `target`: the built-ins, then its custom-only metrics."""
    extra = sorted(set(target.custom_metrics) - set(BUILTIN_METRICS))
    return BUILTIN_METRICS + tuple(extra)


def plan(targets: Sequence[AnalysisTarget]) -> tuple[list[BatchQuery], list[CustomQuery]]:
    """The queries of one tick: batched built-ins, then custom queries one by one. A target
    is left out of a built-in query only when its own queries replace every metric of it."""
    groups: dict[tuple[str, str, timedelta], list[AnalysisTarget]] = defaultdict(list)
    families: dict[str, Family] = {}
    customs: list[CustomQuery] = []
    for target in targets:
        for family in FAMILIES[flavour_of(target.strategy)]:
            families[family.name] = family
            for query, metrics in family.queries.items():
                if not set(metrics) <= set(target.custom_metrics):
                    groups[(family.name, query, target.window)].append(target)
        customs.extend(custom_queries(target))
    batches = [
        BatchQuery(families[name], query, window, tuple(members))
        for (name, query, window), members in groups.items()
    ]
    return batches, customs


def custom_queries(target: AnalysisTarget) -> list[CustomQuery]:
    queries = []
    for metric, template in sorted(target.custom_metrics.items()):
        for track in TRACKS:
            try:
                promql = render(
                    template,
                    namespace=target.namespace,
                    service=target.service,
                    deployment=target.deployment_of(track),
                    track=track,
                    window=target.window,
                )
            except TemplateError as error:
                log.warning("%s: custom metric %s: %s", target.service, metric, error)
                continue
            queries.append(CustomQuery(target.rollout_id, metric, track, promql))
    return queries
