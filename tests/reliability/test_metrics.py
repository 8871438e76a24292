"""GET /metrics tells an operator what the bot is doing and what is failing.

After one rollout promoted, one rolled back by a person, a refused command, a failed Slack call
and a failed cluster write, the bot's own metrics show the active rollouts, the phase
transitions, the rollbacks, the refusals, the errors by dependency and the acknowledgement
latency of every Slack request; the counts kept in the audit log survive a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from canary_sandbox.sandbox import (
    ALICE,
    BOB,
    CAROL,
    MALLORY,
    RELEASE_CHANNEL,
    Sandbox,
    stable_deployment,
)
from tests.reliability.support import active_rollout, open_approval, sandbox_config, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=sandbox_config(services=["checkout", "cart"], steps=[50], step_interval="1s"),
    )
    box.start()
    box.kube.seed(stable_deployment(name="cart"))
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def scrape(sandbox: Sandbox) -> Samples:
    assert sandbox.admin is not None
    answer = requests.get(f"{sandbox.admin.url}/metrics", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def audited(sandbox: Sandbox, detail: str) -> bool:
    assert sandbox.runtime is not None
    return any(detail in (row["detail"] or "") for row in sandbox.runtime.store.audit_rows())


@pytest.mark.timeout(60)
def test_metrics_show_rollouts_transitions_rollbacks_errors_and_ack_latency(
    sandbox: Sandbox,
) -> None:
    driver = sandbox.driver
    sent = [driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)]
    sent.append(driver.command("start cart v2.3.5", user=BOB, channel=RELEASE_CHANNEL))
    sent.append(driver.command("start cart v2.3.6", user=MALLORY, channel=RELEASE_CHANNEL))
    ready = partial(active_rollout, where=lambda r: r.step_ready)
    wait_for(partial(ready, sandbox, "cart"), what="cart's step")
    assert value(scrape(sandbox), "canary_bot_active_rollouts") == 2

    # A cluster write fails (the rollback is retried on the next beat) ...
    sandbox.kube.faults.error_rate = 1.0
    sent.append(driver.command("rollback cart", user=ALICE, channel=RELEASE_CHANNEL))
    wait_for(partial(audited, sandbox, "rollback attempt failed"), what="a failed rollback write")
    sandbox.kube.faults.reset()
    # ... and so does a Slack call (the card update is retried too).
    sandbox.slack.faults.methods = frozenset({"chat.update"})
    sandbox.slack.faults.error_next = 1
    checkout = wait_for(
        partial(active_rollout, sandbox, "checkout", where=lambda r: r.approval_ts),
        what="checkout's approval request",
    )
    approval = wait_for(lambda: open_approval(sandbox, checkout.thread_ts), what="the approval")
    sent.append(driver.click(message=approval, action_id="approve", user=CAROL))
    assert sandbox.runtime is not None
    store = sandbox.runtime.store
    wait_for(lambda: not store.active() and not store.unsent(), what="both rollouts to end")
    assert [a.status for a in sent] == [200] * len(sent)

    samples = scrape(sandbox)
    assert value(samples, "canary_bot_active_rollouts") == 0
    transitions = {
        dict(labels)["phase"]: count
        for (name, labels), count in samples.items()
        if name == "canary_bot_transitions_total"
    }
    assert transitions == {
        "pending": 2,
        "progressing": 2,
        "awaiting_approval": 1,
        "promoting": 1,
        "succeeded": 1,
        "rolling_back": 1,
        "rolled_back": 1,
    }
    assert value(samples, "canary_bot_rollbacks_total", started_by="person") == 1
    assert value(samples, "canary_bot_refusals_total", action="start") == 1
    for dependency in ("kubernetes", "slack"):
        errors = value(samples, "canary_bot_errors_total", dependency=dependency)
        assert errors is not None and errors >= 1, (dependency, errors)
    assert value(samples, "canary_bot_errors_total", dependency="prometheus") == 0
    count = value(samples, "canary_bot_slack_ack_seconds_count")
    # Every answer is in the histogram; how fast they were is bench/ack.py's figure.
    every = value(samples, "canary_bot_slack_ack_seconds_bucket", le="+Inf")
    assert count == len(sent) and every == len(sent), samples
    assert (
        value(samples, "canary_bot_slack_ack_seconds_bucket", le="3.0") is not None
    )  # Slack's limit
    assert value(samples, "canary_bot_slack_requests_total", status="200") == len(sent)

    # The audit-backed counts are the record's, so a restarted bot reports the same.
    sandbox.stop_bot()
    sandbox.start_bot()
    again = scrape(sandbox)
    for name in ("canary_bot_transitions_total", "canary_bot_rollbacks_total"):
        before = {k: v for k, v in samples.items() if k[0] == name}
        assert before == {k: v for k, v in again.items() if k[0] == name}
