"""The bot's own Prometheus metrics, served at GET /metrics.

A private registry (not the process-global default) so several bots in one test process, or
the demo beside the tests, never share counters.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
            "Errors by dependency",
            ["dependency"],
            registry=self.registry,
        )
        active = Gauge(
            "canary_bot_active_rollouts", "Rollouts not yet finished", registry=self.registry
        )
        active.set_function(lambda: float(active_rollouts()))
