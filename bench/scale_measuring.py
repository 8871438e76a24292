"""Measuring instruments of `bench/scale.py`, and the naive way to compare the bot with.

Also: asking Prometheus for how many services it holds data, how many warm-up ticks fill the
rules' window of samples, which rollouts had fresh data, what one real chart costs, and
profiling a tick with the pool's threads.

`CountingProvider` and `KubeTimer` add up the time the bot waits for Prometheus and for the
Kubernetes API. `naive_measure` asks one query per built-in query, rollout and track, built
from the bot's own query templates (`rollout.analysis.queries`), sent through the same provider
and split the same way, so the comparison with the bot's batched `Analyzer.measure` differs
only in the batching.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import math
import pstats
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import common  # noqa: F401  (first: puts this clone on sys.path)
import requests
from scale_world import NAMESPACE

from bot.runtime import Runtime
from handlers.charts import rollout_chart
from rollout.analysis import AnalysisTarget, Analyzer, Measurement, PrometheusProvider, Series
from rollout.analysis.batch import BatchQuery
from rollout.analysis.queries import FAMILIES, Family, flavour_of
from rollout.analysis.templates import prometheus_duration
from rollout.analysis.types import TRACKS, Track, TrackValues
from rollout.config import Config
from rollout.model import Rollout


class CountingProvider(PrometheusProvider):
    """The bot's provider, also adding up the time spent waiting for Prometheus: the wall
    time during which at least one query was under way (the bot runs a tick's queries side
    by side, so their own times would add up to more than the wait)."""

    seconds = 0.0
    _in_flight = 0
    _since = 0.0
    _guard = threading.Lock()

    def query(self, promql: str) -> list[Series]:
        with self._guard:
            if self._in_flight == 0:
                self._since = time.perf_counter()
            self._in_flight += 1
        try:
            return super().query(promql)
        finally:
            with self._guard:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self.seconds += time.perf_counter() - self._since


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
    """One query per built-in query, rollout and track, with the same templates, provider
    and split."""
    values: dict[Slot, float | None] = {}
    for target in targets:
        window = prometheus_duration(target.window)
        for family in FAMILIES[flavour_of(target.strategy)]:
            for query in family.queries:
                one = BatchQuery(family, query, target.window, (target,))
                for track in TRACKS:
                    selector = naive_selector(family, target, track)
                    answer = provider.query(family.build(family, query, selector, window))
                    measured = one.split(answer)
                    for metric in one.metrics:
                        values[(target.rollout_id, metric, track)] = measured.get(
                            (target.rollout_id, metric, track)
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


def wait_for_data(url: str, wanted: int, *, deadline: float) -> dict[str, Any]:
    """Waits until Prometheus holds request counts for exactly `wanted` services (all of them,
    or none), at most `deadline` seconds; says plainly what it found."""
    began = time.monotonic()
    found = -1
    while True:
        found = services_with_data(url)
        waited = time.monotonic() - began
        if found == wanted or waited >= deadline:
            break
        time.sleep(1.0)
    met = found == wanted
    what = "every one of" if wanted else "none of"
    print(
        f"Prometheus holds data for {found} of the services after {waited:.0f} s "
        f"(waiting for {what} them): "
        + (
            "ready to measure"
            if met
            else f"NOT as wanted; measuring anyway, deadline {deadline:g} s"
        )
    )
    return {"services_with_data": found, "wanted": wanted, "waited_seconds": round(waited, 1)}


def services_with_data(url: str) -> int:
    query = f'count(count by (service) (http_requests_total{{namespace="{NAMESPACE}"}}))'
    try:
        answer = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
        result = answer["data"]["result"]
    except (requests.RequestException, ValueError, KeyError) as error:
        print(f"  (asking Prometheus failed: {error})")
        return -1  # unknown: never taken for "none" or "all"
    return int(float(result[0]["value"][1])) if result else 0


def warm_up_ticks(config: Config, *, given: int, done: int) -> int:
    """Ticks until each rollout judges on as many samples as a bot that has run for a while:
    its rules' longest `for` and 3 intervals (`Observer._since`), 27 with DESIGN.md's example
    rules every 5 s. The ticks measured before this was added were the first few of a run,
    judging on 2-6 samples: each later one cost more CPU, up to 0.8 s more a tick."""
    if given >= 0:
        return given
    policy = next(iter(config.services.values())).policy
    longest = max((rule.for_ for rule in policy.rules), default=timedelta(0))
    samples = math.ceil(longest / policy.analysis_interval) + 3
    return max(0, samples - done)


def with_fresh_data(runtime: Runtime, active: Sequence[Rollout]) -> int:
    """Rollouts whose latest measurement has both tracks of the rules' metrics."""
    interval = next(iter(runtime.config.services.values())).policy.analysis_interval
    since = datetime.now(UTC) - 4 * interval
    count = 0
    for rollout in active:
        rows = runtime.engine.store.measurements(rollout.id, since=since)
        latest = Measurement.from_json(rows[-1]) if rows else None
        if latest is not None and all(
            latest.get(metric).of(track) is not None
            for metric in ("error_rate", "success_rate", "latency_avg_ms")
            for track in TRACKS
        ):
            count += 1
    return count


def chart_cost(runtime: Runtime, rollout: Rollout) -> float:
    """CPU seconds of one real step chart over this rollout's measurements so far."""
    history = [
        Measurement.from_json(row)
        for row in runtime.engine.store.measurements(rollout.id, since=rollout.created_at)
    ]
    cpu = time.process_time()
    rollout_chart(measurements=history, steps=[], title="one chart", now=datetime.now(UTC))
    return round(time.process_time() - cpu, 3)


@contextlib.contextmanager
def profiling_ticks(engine: Any) -> Iterator[list[cProfile.Profile]]:
    """Profiles each rollout's tick on the pool's threads too (cProfile sees one thread)."""
    profiles: list[cProfile.Profile] = []
    tick = engine.tick

    def profiled(*args: Any, **kwargs: Any) -> None:
        profile = cProfile.Profile()
        profile.enable()
        try:
            tick(*args, **kwargs)
        finally:
            profile.disable()
            profiles.append(profile)

    engine.tick = profiled
    try:
        yield profiles
    finally:
        del engine.tick


def profile_summary(profile: cProfile.Profile, threads: Sequence[cProfile.Profile]) -> list[str]:
    """Where the profiled tick went: the bot's functions by cumulative time, then every
    function by its own time (libraries included); the pool's ticks added in (their times
    add up across threads, so they exceed the wall time)."""
    lines: list[str] = []
    for sort, restriction in (("cumulative", r"/(rollout|bot|handlers)/"), ("tottime", "")):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        for thread in threads:
            stats.add(thread)
        stats.sort_stats(sort).print_stats(*(r for r in (restriction, 15) if r != ""))
        lines += [line for line in out.getvalue().splitlines() if line.strip()]
    return lines
