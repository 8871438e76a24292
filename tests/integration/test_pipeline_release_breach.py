"""`canary-bot release --wait` when the canary breaches a rule, measured by a real Prometheus.

The bot runs in a sandbox whose cluster the synthetic traffic exporter follows (as in
test_rollout_analysis); the pipeline starts the rollout through the API as a subprocess, the
canary's error rate is then raised, and the release must exit 2 naming the rule and the value
the bot measured, which the API's rollout JSON carries as `breach`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from canary_sandbox.sandbox import Sandbox
from emulators.prometheus import PrometheusServer
from emulators.traffic import TrafficExporter
from rollout.analysis import PrometheusProvider
from tests.integration.rollout_analysis_support import (
    CANARY_REQUEST_RATE,
    NS,
    SERVICE,
    WINDOW,
    has_canary_data,
    query_value,
    steps_announced,
    wait_until,
)
from tests.integration.test_rollout_analysis import (
    FollowedCluster,
    analysis_config,
    cluster,
    traffic,
    weight_of,
)
from tests.scenario.pipeline_support import (
    TOKEN_ENV,
    lines,
    pipeline_config,
    release_env,
    start_release,
)

pytestmark = pytest.mark.prometheus
__all__ = ["cluster", "traffic", "weight_of"]  # fixtures shared with test_rollout_analysis


@pytest.fixture
def sandbox(
    tmp_path: Path,
    traffic: TrafficExporter,
    prometheus: PrometheusServer,
    cluster: FollowedCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Sandbox]:
    for name, value in TOKEN_ENV.items():
        monkeypatch.setenv(name, value)
    for track in ("canary", "stable"):
        traffic.set_track(NS, SERVICE, track, error_rate=0.0, latency_ms=50.0)
    prometheus.wait_until_scraped()
    provider = PrometheusProvider(prometheus.url)
    wait_until(
        lambda: not query_value(provider, CANARY_REQUEST_RATE),
        timeout=WINDOW + 10,
        what="no canary traffic of an earlier test left in the query window",
    )
    config = pipeline_config(analysis_config(prometheus.url))
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=config)
    try:
        box.start()
        cluster.follow(box.kube)
        box.start_bot()
        yield box
    finally:
        cluster.follow(None)
        box.stop()


@pytest.mark.timeout(90)
def test_release_exits_2_with_the_breached_rule_and_its_value(
    sandbox: Sandbox, traffic: TrafficExporter
) -> None:
    process = start_release(
        sandbox, "checkout", "v2.3.5", "--wait", "--timeout", "60s", env=release_env()
    )
    wait_until(lambda: steps_announced(sandbox), timeout=20, what="step 1")
    wait_until(lambda: has_canary_data(sandbox), timeout=15, what="canary metrics")
    traffic.set_track(NS, SERVICE, "canary", error_rate=0.3)

    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, (out, err)
    printed = lines(out)
    assert "step 1/3: canary at 25%" in printed
    assert "analysis: breached" in printed
    last = printed[-1]
    assert last.startswith("rolled back: rule breached: error_rate "), printed
    assert "(threshold > 5.00%, for 3s" in last, last
    assert sandbox.runtime is not None
    (rollout,) = sandbox.runtime.store.history("checkout")
    assert rollout.breach is not None and last.endswith(rollout.breach)
