"""The bot's own Prometheus metrics, served at GET /metrics.

A private registry (not the process-global default) so several bots in one test process, or
the demo beside the tests, never share counters.

Transitions, rollbacks and refusals are read from the audit table at scrape time rather than
counted where they happen: every one of them is already an audit row, written in the same
transaction as the change, so the numbers cannot drift from the record, survive restarts, and
need no hook in the engine. The table is append-only (triggers refuse UPDATE and DELETE), so
each scrape reads only the rows added since the last one.

Errors by dependency are counted where the bot already reports them: each module that talks to
Kubernetes, Slack or Prometheus logs a failed call at WARNING or above, so a logging handler
maps the module to its dependency. Listener failures are counted by the runtime's error handler.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

BOT_ACTOR = "canary-bot"
# The store's audit rows after a given id, oldest first (`Store.audit_after`).
AuditReader = Callable[[int], Sequence[Mapping[str, Any]]]

# Which dependency a module's failure reports are about. `rollout.engine` logs only cluster
# operations below ERROR; its errors carry the exception, which names the dependency itself.
DEPENDENCY_OF_LOGGER: Mapping[str, str] = {
    "rollout.kube": "kubernetes",
    "rollout.kube_call": "kubernetes",
    "rollout.traffic": "kubernetes",
    "rollout.engine": "kubernetes",
    "rollout.cluster": "kubernetes",
    "rollout.sender": "slack",
    "bot.notifier": "slack",
    "handlers.auth": "slack",
    "rollout.analysis": "prometheus",
}
DEPENDENCY_OF_MODULE: Mapping[str, str] = {
    "kubernetes": "kubernetes",
    "urllib3": "kubernetes",
    "slack_sdk": "slack",
    "slack_bolt": "slack",
    "prometheus_api_client": "prometheus",
    "requests": "prometheus",
    "sqlite3": "store",
    "sqlite_utils": "store",
}


def dependency_of(error: BaseException) -> str:
    """`kubernetes`, `slack`, `prometheus`, `store`, or `bot` for the bot's own faults."""
    return DEPENDENCY_OF_MODULE.get(type(error).__module__.split(".")[0], "bot")


class BotMetrics:
    def __init__(self, *, active_rollouts: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.ack_seconds = Histogram(
            "canary_bot_slack_ack_seconds",
            "Time from receiving a Slack request to the HTTP response",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0),
            registry=self.registry,
        )
        self.requests = Counter(
            "canary_bot_slack_requests",
            "Slack requests by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "canary_bot_errors",
            "Failed calls to a dependency (kubernetes, slack, prometheus, store) and bot faults",
            ["dependency"],
            registry=self.registry,
        )
        self.deadlines = Counter(
            "canary_bot_deadlines_exceeded",
            "Calls to a dependency that ran past their one deadline (retries included)",
            ["dependency"],
            registry=self.registry,
        )
        for dependency in ("kubernetes", "slack", "prometheus"):
            self.errors.labels(dependency=dependency)  # present (at 0) before the first error
            self.deadlines.labels(dependency=dependency)
        active = Gauge(
            "canary_bot_active_rollouts", "Rollouts not yet finished", registry=self.registry
        )
        active.set_function(lambda: float(active_rollouts()))
        self._audit: AuditCollector | None = None
        self._audit_lock = threading.Lock()
        _ErrorLogCounter.attach(self)

    def count_error(self, dependency: str) -> None:
        self.errors.labels(dependency=dependency).inc()

    def watch_audit(self, read: AuditReader) -> None:
        """Serve transition, rollback and refusal counts from the store's audit table."""
        with self._audit_lock:
            if self._audit is None:
                self._audit = AuditCollector(read)
                self.registry.register(self._audit)


class AuditCollector(Collector):
    """Counts read from the append-only audit table, incrementally, at scrape time."""

    def __init__(self, read: AuditReader) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._last_id = 0
        self._entered: Tally[str] = Tally()
        self._rollbacks: Tally[str] = Tally()
        self._refusals: Tally[str] = Tally()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._catch_up()
            entered, rollbacks, refusals = (
                dict(self._entered),
                dict(self._rollbacks),
                dict(self._refusals),
            )
        yield _family(
            "canary_bot_transitions",
            "Rollout phase changes, by the phase entered",
            "phase",
            entered,
        )
        yield _family(
            "canary_bot_rollbacks",
            "Rollbacks started, by who started them (a person, or the bot on a breach)",
            "started_by",
            rollbacks,
        )
        yield _family(
            "canary_bot_refusals",
            "Commands and clicks refused (permission, policy, state), by action",
            "action",
            refusals,
        )

    def _catch_up(self) -> None:
        try:
            rows = self._read(self._last_id)
        except Exception as error:  # the database is away: serve the counts as they stand
            logging.getLogger(__name__).warning("audit counts not updated: %s", error)
            return
        for row in rows:
            row_id, actor, action = row["id"], row["actor"], row["action"]
            before, after = _phase(row["before"]), _phase(row["after"])
            self._last_id = int(row_id)
            if action.startswith("refused:"):
                self._refusals[action.removeprefix("refused:").strip()] += 1
            if after is None or after == before:
                continue
            self._entered[after] += 1
            if after == "rolling_back":
                self._rollbacks["bot" if actor == BOT_ACTOR else "person"] += 1


def _phase(view: str | None) -> str | None:
    """The phase of an audit row's before/after view (JSON), if it has one."""
    phase = json.loads(view).get("phase") if view else None
    return str(phase) if phase is not None else None


def _family(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class _ErrorLogCounter(logging.Handler):
    """Counts WARNING+ records of the modules that talk to a dependency, for every live
    `BotMetrics` in the process (weakly held: a stopped bot's metrics simply go away)."""

    _instance: _ErrorLogCounter | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._targets: weakref.WeakSet[BotMetrics] = weakref.WeakSet()

    @classmethod
    def attach(cls, metrics: BotMetrics) -> None:
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls()
                for name in DEPENDENCY_OF_LOGGER:
                    logging.getLogger(name).addHandler(cls._instance)
            cls._instance._targets.add(metrics)

    def emit(self, record: logging.LogRecord) -> None:
        dependency = _record_dependency(record)
        if dependency is None:
            return
        for metrics in list(self._targets):
            metrics.count_error(dependency)


def _record_dependency(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        return dependency_of(record.exc_info[1])
    name = record.name
    while name:
        if name in DEPENDENCY_OF_LOGGER:
            return DEPENDENCY_OF_LOGGER[name]
        name = name.rpartition(".")[0]
    return None
