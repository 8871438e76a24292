"""Every Kubernetes call has one deadline, retries included (DESIGN.md "Bounded calls").

Before this, one `read_deployment` against an API server that accepted the connection but never
answered took 242 s: six tenacity attempts, each over urllib3's own three retries of a 10 s
read timeout. These tests hold the emulator's answers and check that the call ends at its one
deadline: the time bound in the first test is deliberately loose (twice the deadline) because
it only has to tell "one deadline" from "a stack of retries" (24 times the deadline before).
"""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest

from bot.kube import without_retries
from bot.metrics import BotMetrics
from canary_sandbox.sandbox import stable_deployment
from emulators.kube import KubeEmulator
from rollout.kube import KubeDeadlineExceeded, KubeGateway

DEADLINE = 1.0


@pytest.mark.timeout(30)
def test_a_call_to_an_api_that_never_answers_ends_at_its_deadline() -> None:
    metrics = BotMetrics(active_rollouts=lambda: 0)
    attempts: list[str] = []
    with KubeEmulator() as kube:
        kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        kube.seed(stable_deployment())
        gateway = KubeGateway(
            without_retries(kube.api_client()),
            request_timeout=DEADLINE,
            on_call=lambda verb, what: attempts.append(what),
            on_deadline=lambda what: metrics.deadlines.labels(dependency="kubernetes").inc(),
        )
        kube.faults.hold("checkout")
        began = time.monotonic()
        with pytest.raises(KubeDeadlineExceeded, match="no answer within 1s"):
            gateway.read_deployment("shop", "checkout")
        took = time.monotonic() - began
        kube.faults.release()
        # The same gateway carries on as soon as the API answers again.
        assert gateway.read_deployment("shop", "checkout") is not None
    assert took < 2 * DEADLINE, took
    # The first attempt was given the whole budget, so nothing was left to retry with.
    assert attempts.count("deployment shop/checkout") == 2, attempts
    scraped = generate_latest(metrics.registry).decode()
    assert 'canary_bot_deadlines_exceeded_total{dependency="kubernetes"} 1.0' in scraped


@pytest.mark.timeout(30)
def test_urllib3_does_not_retry_under_the_gateway() -> None:
    """One attempt of the gateway is one HTTP request: the client's pool retries nothing."""
    with KubeEmulator() as kube:
        client = without_retries(kube.api_client())
        retries = client.rest_client.pool_manager.connection_pool_kw["retries"]
        assert retries.total == 0
