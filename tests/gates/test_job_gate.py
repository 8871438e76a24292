"""The `job` gate: a Kubernetes Job (run by the emulator's Job controller) against the canary
before its traffic is raised to `at_step`; pass shows its last log lines, failure and timeout
roll back. Driven through the signed Slack path."""

from __future__ import annotations

from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox
from rollout.model import Phase
from tests.gates.conftest import (
    MakeSandbox,
    canary_exists,
    gate_config,
    only_rollout,
    thread_texts,
    wait_for_reply,
    wait_until,
)


def job_gate(script: str, *, timeout: str = "30s") -> dict[str, Any]:
    container = {"name": "k6", "image": "grafana/k6:0.52.0", "command": ["sh", "-c", script]}
    template = {"spec": {"template": {"spec": {"containers": [container]}}}}
    return {"job": {"template": template, "at_step": 2, "timeout": timeout}}


def start_with(make_sandbox: MakeSandbox, gate: dict[str, Any]) -> Sandbox:
    box = make_sandbox(gate_config(preflight=[gate], steps=[25, 50], step_interval="1s"))
    reply = box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    return box


def jobs(box: Sandbox) -> list[dict[str, Any]]:
    return box.kube.list("batch/v1", "Job", "shop")


def index_of(texts: list[str], needle: str) -> int:
    return next(i for i, text in enumerate(texts) if needle in text)


def assert_rolled_back(box: Sandbox, message: str) -> None:
    wait_until(lambda: only_rollout(box).phase == Phase.ROLLED_BACK, what="the rollback")
    rollout = only_rollout(box)
    assert "gate job" in (rollout.reason or "") and message in (rollout.reason or "")
    assert not canary_exists(box)
    stable = box.kube.get("apps/v1", "Deployment", "shop", "checkout")
    assert stable is not None and stable["spec"]["replicas"] == 4
    assert jobs(box) == []  # the Job went with its result
    assert message in wait_for_reply(box, "failed")
    texts = thread_texts(box)
    assert not any("Step 2 of 2" in text for text in texts)  # 50% was never applied


@pytest.mark.timeout(90)
def test_job_gate_passes_before_its_step_and_shows_its_log(make_sandbox: MakeSandbox) -> None:
    script = "echo running k6 against {{ canary_deployment }}; echo 'checks: 100.00%'; exit 0"
    box = make_sandbox(
        gate_config(preflight=[job_gate(script)], steps=[25, 50], step_interval="1s")
    )
    created: list[dict[str, Any]] = []  # every Job the cluster stores, as it is created

    def on_change(kind: Any, old: Any, new: Any) -> None:
        if kind.kind == "Job" and old is None and new is not None:
            created.append(new)

    box.kube.store.listeners.append(on_change)
    box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: only_rollout(box).phase == Phase.SUCCEEDED, what="the promotion")
    texts = thread_texts(box)
    passed = texts[index_of(texts, "passed")]
    assert "running k6 against checkout-canary" in passed and "checks: 100.00%" in passed
    # Step 1 (25%), then the gate, then step 2 (50%): the traffic waited for the Job.
    assert index_of(texts, "Step 1 of 2") < index_of(texts, "passed") < index_of(texts, "Step 2")
    assert jobs(box) == []
    # While the Job ran, the card said which gate the rollout waited for.
    card = box.slack.messages(RELEASE_CHANNEL)[0]
    assert any("Gate running" in str(v.blocks) and "job:2" in str(v.blocks) for v in card.history)
    assert len(created) == 1
    job = created[0]
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "canary-bot"
    assert job["metadata"]["annotations"]["canary-bot.io/rollout-id"] == only_rollout(box).id
    assert job["spec"]["backoffLimit"] == 0


@pytest.mark.timeout(90)
def test_job_gate_failure_rolls_back_with_its_log(make_sandbox: MakeSandbox) -> None:
    box = start_with(make_sandbox, job_gate("echo 'http_req_failed: 12%'; exit 1"))
    assert_rolled_back(box, "the Job failed")
    assert "http_req_failed: 12%" in (only_rollout(box).reason or "")


@pytest.mark.timeout(90)
def test_job_gate_timeout_rolls_back(make_sandbox: MakeSandbox) -> None:
    box = start_with(make_sandbox, job_gate("echo started; sleep 3600", timeout="2s"))
    assert_rolled_back(box, "did not finish within 2s")


@pytest.mark.timeout(90)
def test_rollback_while_the_job_runs_deletes_the_job(make_sandbox: MakeSandbox) -> None:
    box = start_with(make_sandbox, job_gate("echo started; sleep 3600", timeout="10m"))
    wait_until(lambda: jobs(box), what="the Job")
    box.driver.command("rollback checkout not today", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: only_rollout(box).phase == Phase.ROLLED_BACK, what="the rollback")
    wait_until(lambda: not jobs(box), what="the Job deleted")
    assert not canary_exists(box)
    assert box.runtime is not None
    audit = box.runtime.store.audit_rows(only_rollout(box).id)
    assert any("deleted: the rollout is rolling_back" in (row["detail"] or "") for row in audit)


@pytest.mark.timeout(60)
def test_steps_override_may_not_drop_the_gated_step(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox(gate_config(preflight=[job_gate("exit 0")], steps=[25, 50]))
    reply = box.driver.command(
        "start checkout v2.3.5 --steps 50", user=BOB, channel=RELEASE_CHANNEL
    )
    assert reply.json is not None
    assert "runs a job gate before step 2" in str(reply.json.get("text"))
    assert box.runtime is not None and box.runtime.store.history("checkout") == []
    assert box.kube.writes == []


@pytest.mark.timeout(90)
def test_restarted_bot_adopts_the_running_job(make_sandbox: MakeSandbox) -> None:
    """The Job is named after the rollout and step: a bot restarted while it runs reads the
    same Job (never a second one) and carries on from its result."""
    box = make_sandbox(
        gate_config(
            preflight=[job_gate("echo soak started; sleep 3; echo soak ok; exit 0")],
            steps=[25, 50],
            step_interval="1s",
        )
    )
    created: list[str] = []
    box.kube.store.listeners.append(
        lambda kind, old, new: (
            created.append(new["metadata"]["name"])
            if kind.kind == "Job" and old is None and new is not None
            else None
        )
    )
    box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: jobs(box), what="the Job")
    box.stop_bot()  # the bot goes away while the Job runs
    box.start_bot()
    wait_until(lambda: only_rollout(box).phase == Phase.SUCCEEDED, what="the promotion")
    assert len(created) == 1
    assert "soak ok" in wait_for_reply(box, "passed")
