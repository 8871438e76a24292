"""Overrides stay inside the service's policy (`allow_overrides`, `min_step_interval`).

A production service with the default policy: deployers may use no override, approvers may
change steps and interval (never below the floor), nobody may skip approval or promote. A
refusal is an ephemeral answer naming the policy key, and the cluster sees no write at all.
A staging service lets everyone use all four; `/canary promote` there still stops at the
approval gate the policy requires.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from canary_sandbox.sandbox import ALICE, BOB, RELEASE_CHANNEL, Sandbox, stable_deployment
from emulators.slack import DriverResponse
from rollout.model import Phase, Rollout
from tests.reliability.support import active_rollout, open_approval, sandbox_config, wait_for

# ALICE deploys; BOB deploys and is in S0SRE, the approvers' group.


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    config = sandbox_config(
        services=["checkout", "web"],
        steps=[25, 50],
        step_interval="1h",
        staging=["web"],
        allow_overrides="{}",  # the environment defaults
    )
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=config)
    box.start()
    box.kube.seed(stable_deployment(name="web", image="registry.example.com/shop/web:v1.0.0"))
    box.start_bot()
    box.kube.clear_writes()
    try:
        yield box
    finally:
        box.stop()


def refused(answer: DriverResponse, *fragments: str) -> str:
    assert answer.status == 200, answer.body
    assert answer.json and answer.json["response_type"] == "ephemeral", answer.body
    for fragment in fragments:
        assert fragment in answer.body, answer.body
    return answer.body


def nothing_started(sandbox: Sandbox) -> None:
    """Refusals come in the acknowledgement, before anything is recorded or queued."""
    assert sandbox.runtime is not None
    assert sandbox.runtime.store.history("checkout") == []
    assert sandbox.kube.writes_snapshot() == []


@pytest.mark.timeout(60)
def test_a_deployer_cannot_skip_approval_or_reshape_a_production_rollout(
    sandbox: Sandbox,
) -> None:
    command = sandbox.driver.command
    for flags, named in (
        ("--no-approval --steps 50 --interval 1s", "`--steps`, `--interval`, `--no-approval`"),
        ("--no-approval", "`--no-approval`"),
        ("--steps 50", "`--steps`"),
        ("--interval 2h", "`--interval`"),
    ):
        answer = command(f"start checkout v2.3.5 {flags}", user=ALICE, channel=RELEASE_CHANNEL)
        refused(answer, named, "allow_overrides", "deployers none", "Start without")
    # Approvers may change steps and interval, but not skip approval or go below the floor.
    refused(
        command("start checkout v2.3.5 --no-approval", user=BOB, channel=RELEASE_CHANNEL),
        "`--no-approval` is not allowed",
        "allow_overrides",
    )
    refused(
        command("start checkout v2.3.5 --interval 10s", user=BOB, channel=RELEASE_CHANNEL),
        "min_step_interval",
        "1m",
    )
    nothing_started(sandbox)
    assert sandbox.runtime is not None
    audit = sandbox.runtime.store.audit_rows()
    details = [row["detail"] for row in audit if row["action"] == "refused: start"]
    assert len(details) == 6
    assert all("allow_overrides" in d or "min_step_interval" in d for d in details), details

    answer = command(
        "start checkout v2.3.5 --steps 50 --interval 2m", user=BOB, channel=RELEASE_CHANNEL
    )
    assert "Starting a canary" in answer.body, answer.body
    rollout = wait_for(lambda: active_rollout(sandbox, "checkout"), what="the rollout")
    assert rollout.plan.steps == (50,) and rollout.plan.step_interval == timedelta(minutes=2)
    assert rollout.plan.approval is True


@pytest.mark.timeout(60)
def test_promote_needs_a_grant_and_never_skips_the_approval_gate(sandbox: Sandbox) -> None:
    command = sandbox.driver.command
    assert command("start checkout v2.3.5", user=ALICE, channel=RELEASE_CHANNEL).status == 200
    first = wait_for(
        lambda: active_rollout(sandbox, "checkout", where=lambda r: r.step_ready), what="step 1"
    )
    sandbox.kube.clear_writes()
    for user in (ALICE, BOB):  # the default grants promote to nobody on production
        refused(
            command("promote checkout", user=user, channel=RELEASE_CHANNEL),
            "`/canary promote` is not allowed",
            "allow_overrides",
        )
    assert sandbox.kube.writes_snapshot() == []
    still = active_rollout(sandbox, "checkout")
    assert still is not None and still.phase == Phase.PROGRESSING
    assert still.step_index == first.step_index

    # Staging: everyone may use all four, and promote still stops at the approval gate.
    answer = command("start web v1.0.1", user=ALICE, channel=RELEASE_CHANNEL)
    assert "Starting a canary" in answer.body, answer.body
    web = wait_for(
        lambda: active_rollout(sandbox, "web", where=lambda r: r.step_ready), what="web step 1"
    )
    assert command("promote web", user=ALICE, channel=RELEASE_CHANNEL).status == 200
    waiting: Rollout = wait_for(
        lambda: active_rollout(sandbox, "web", where=lambda r: r.phase == Phase.AWAITING_APPROVAL),
        what="the approval gate",
    )
    assert wait_for(lambda: open_approval(sandbox, waiting.thread_ts), what="the approval")
    stable = sandbox.kube.get("apps/v1", "Deployment", "shop", "web")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.0.0")
    assert web.plan.approval is True
