"""What one tick sees: the traffic the cluster reports and the verdict of the metric rules.

Measuring (batched PromQL for every due rollout, stored in SQLite) and judging (the pure
`judge` over the stored samples) are kept apart, as STYLE.md asks; this module only wires the
two to the rollout records, so the engine deals in `Observation`s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from rollout.analysis import Analysis, AnalysisTarget, Analyzer, Measurement, Verdict, judge
from rollout.analysis.judge import beyond_any
from rollout.config import Config, Rule
from rollout.machine import Observation
from rollout.machine.types import DRIFT_PHASES
from rollout.model import Rollout
from rollout.stores import Store
from rollout.traffic.base import TrafficRouter, TrafficStatus
from rollout.wording import describe_breach

log = logging.getLogger(__name__)

HISTORY_GROUP = 100  # rollouts whose measurements one query of a beat reads


class Observer:
    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        routers: Mapping[str, TrafficRouter],
        analyzer: Analyzer | None,
    ) -> None:
        self._config = config
        self._store = store
        self._routers = routers
        self._analyzer = analyzer

    def record_measurements(
        self, rollouts: Sequence[Rollout], *, now: datetime
    ) -> dict[str, Measurement]:
        """One batched measurement of every due rollout, stored (in one transaction) for
        judging and charts; returned as the store will give it back (its JSON read again)."""
        if self._analyzer is None:
            return {}
        targets = [self._target(r) for r in rollouts if self.rules(r)]
        if not targets:
            return {}
        measured = self._analyzer.measure(targets, now=now)
        stored = [(i, m.at, m.to_json()) for i, m in measured.items()]
        self._store.add_measurements(stored)
        return {i: Measurement.from_json(data) for i, _at, data in stored}

    def histories(
        self,
        rollouts: Sequence[Rollout],
        *,
        now: datetime,
        latest: Mapping[str, Measurement] | None = None,
    ) -> BeatHistories:
        """What each rollout's rules are judged on at `now`. A rollout whose `latest`
        measurement (the beat's own, stamped `now`) is beyond none of its rules' thresholds is
        judged on that one alone, as `judge` would on its whole history: the older samples
        only count for how long a rule has been beyond. The others are read a group at a time."""
        latest = latest or {}
        since: dict[str, datetime] = {}
        alone: dict[str, Measurement] = {}
        for rollout in rollouts:
            rules = self.rules(rollout)
            if not rules:
                continue
            measurement = latest.get(rollout.id)
            if (
                measurement is not None
                and measurement.at == now
                and not beyond_any(rules, measurement)
            ):
                alone[rollout.id] = measurement
            else:
                since[rollout.id] = self._since(rollout, now=now)
        return BeatHistories(self._store, since, until=now, alone=alone)

    def observe(
        self, rollout: Rollout, *, now: datetime, history: Sequence[Measurement] | None = None
    ) -> tuple[Observation, Analysis | None]:
        """`history`: the measurements to judge on, when the caller has read them already."""
        traffic: TrafficStatus | None = None
        drift: str | None = None
        if rollout.step_index >= 0 and rollout.phase.is_active:
            router = self._routers[rollout.strategy]
            try:
                traffic = router.status(rollout)
                if rollout.phase in DRIFT_PHASES:
                    drift = router.drift(rollout)
            except Exception as error:
                log.warning("cannot read traffic of %s: %s", rollout.id, error)
        if not self.rules(rollout):
            return Observation(traffic=traffic, drift=drift), None
        analysis = self.analyse(rollout, now=now, history=history)
        if analysis is None:
            return Observation(traffic=traffic, verdict=Verdict.NO_DATA, drift=drift), None
        breach = analysis.breached
        observation = Observation(
            drift=drift,
            traffic=traffic,
            verdict=analysis.verdict,
            breach=describe_breach(breach) if breach else None,
            pending=bool(analysis.pending),
        )
        return observation, analysis

    def analyse(
        self, rollout: Rollout, *, now: datetime, history: Sequence[Measurement] | None = None
    ) -> Analysis | None:
        """Judge the rules on the stored measurements (None: no analyzer to measure with)."""
        rules = self.rules(rollout)
        if self._analyzer is None or not rules:
            return None
        if history is None:
            history = self.history(rollout, since=self._since(rollout, now=now), until=now)
        return judge(
            rules=rules, history=history, now=now, analysis_interval=rollout.plan.analysis_interval
        )

    def snapshot_at(
        self, rollout: Rollout, at: datetime
    ) -> tuple[Analysis, Sequence[Measurement]] | None:
        """For the outbox sender: the analysis as it stood at `at`, and the chart's history
        (a snapshot is judged when sent, from what was stored up to the moment it stands for)."""
        analysis = self.analyse(rollout, now=at)
        if analysis is None:
            return None
        return analysis, self.history(rollout, since=rollout.created_at, until=at)

    def history(
        self, rollout: Rollout, *, since: datetime, until: datetime | None = None
    ) -> list[Measurement]:
        return [
            Measurement.from_json(data)
            for data in self._store.measurements(rollout.id, since=since, until=until)
        ]

    def _since(self, rollout: Rollout, *, now: datetime) -> datetime:
        """The oldest measurement the rules need: the longest `for` and a few intervals."""
        longest = max((rule.for_ for rule in self.rules(rollout)), default=timedelta(0))
        return now - longest - 3 * rollout.plan.analysis_interval

    def rules(self, rollout: Rollout) -> tuple[Rule, ...]:
        service = self._config.services.get(rollout.service)
        return service.policy.rules if service else ()

    def _target(self, rollout: Rollout) -> AnalysisTarget:
        service = self._config.services[rollout.service]
        return AnalysisTarget(
            rollout_id=rollout.id,
            service=rollout.service,
            namespace=rollout.namespace,
            deployment=rollout.deployment,
            strategy=rollout.strategy,
            ingress=service.ingress,
            window=service.policy.analysis_window,
            custom_metrics=service.metrics,
        )


class BeatHistories:
    """The measurements every rollout of a beat is judged on: the beat's own measurement
    alone for a rollout within every rule on it (`alone`), and for the others their stored
    ones, read `HISTORY_GROUP` rollouts per query instead of one query each (1,000 reads a
    beat at 1,000 rollouts, queued on the store's lock behind each other). A group is read
    when the first of its ticks asks, and each rollout's rows are handed out once and then
    dropped, so the beat holds a group or two at a time, not the history of every rollout
    (tens of megabytes at 1,000)."""

    def __init__(
        self,
        store: Store,
        since: Mapping[str, datetime],
        *,
        until: datetime,
        alone: Mapping[str, Measurement] | None = None,
    ) -> None:
        self._store = store
        self._alone = dict(alone or {})  # judged on the beat's measurement alone: no read
        self._until = until
        ids = list(since)
        self._groups = [
            {i: since[i] for i in ids[first : first + HISTORY_GROUP]}
            for first in range(0, len(ids), HISTORY_GROUP)
        ]
        self._group_of = {rollout_id: n // HISTORY_GROUP for n, rollout_id in enumerate(ids)}
        self._read: dict[int, dict[str, list[tuple[str, str]]]] = {}
        self._locks = [threading.Lock() for _ in self._groups]

    def take(self, rollout_id: str) -> list[Measurement] | None:
        """The rollout's measurements, once (None: not of this beat, or taken already)."""
        alone = self._alone.pop(rollout_id, None)
        if alone is not None:
            return [alone]
        group = self._group_of.get(rollout_id)
        if group is None:
            return None
        with self._locks[group]:  # the first tick of a group reads it; the others wait
            if group not in self._read:
                self._read[group] = self._store.stored_measurements_of(
                    self._groups[group], until=self._until
                )
            rows = self._read[group].pop(rollout_id, None)
        # Decoded when read: judging reads the latest sample only, unless a rule is beyond.
        return (
            None
            if rows is None
            else [Measurement.stored(datetime.fromisoformat(at), text) for at, text in rows]
        )
