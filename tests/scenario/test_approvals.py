"""Approvals a team can trust: simultaneous clicks, several approvers, decided messages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from canary_sandbox.sandbox import ALICE, BOB, CAROL, RELEASE_CHANNEL, SANDBOX_CONFIG, Sandbox
from rollout.model import Phase
from tests.scenario.test_rollout_flow import approval_message, deployment, only_rollout, wait_until

DAVE = "U05DAVE"


@pytest.fixture
def two_approvals(tmp_path: Path) -> Iterator[Sandbox]:
    config = SANDBOX_CONFIG.replace(
        "  rules: []\n", "  rules: []\n  approvals_required: 2\n"
    ).replace("steps: [25, 50, 75]", "steps: [50]")
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=config)
    box.start()
    box.slack.usergroups["S0SRE"] = [BOB, CAROL, DAVE]
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


@pytest.mark.timeout(60)
def test_two_approvers_clicking_at_once_promote_exactly_once(sandbox: Sandbox) -> None:
    sandbox.driver.command("start checkout v2.3.5 --steps 50", user=ALICE, channel=RELEASE_CHANNEL)
    approval = wait_until(lambda: approval_message(sandbox), what="the approval request")
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def click(user: str) -> None:
        barrier.wait()
        statuses.append(
            sandbox.driver.click(message=approval, action_id="approve", user=user).status
        )

    threads = [threading.Thread(target=click, args=(user,)) for user in (BOB, CAROL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert statuses == [200, 200]
    wait_until(lambda: only_rollout(sandbox).phase == Phase.SUCCEEDED, what="promotion")
    sandbox.drain()  # both clicks' after-ack work is done: a second promotion would show now

    rollout = only_rollout(sandbox)
    assert len(rollout.approvals) == 1
    assert sandbox.runtime is not None
    audit = sandbox.runtime.store.audit_rows(rollout.id)
    approvals = [row for row in audit if row["action"] == "approve"]
    refusals = [row for row in audit if row["action"] == "refused: approve"]
    assert len(approvals) == 1 and len(refusals) == 1
    assert "no longer open" in refusals[0]["detail"]
    promoting = [
        row
        for row in audit
        if row["after"]
        and '"phase": "promoting"' in row["after"]
        and (not row["before"] or '"phase": "promoting"' not in row["before"])
    ]
    assert len(promoting) == 1
    started = [
        m
        for m in sandbox.slack.thread(RELEASE_CHANNEL, rollout.thread_ts or "")
        if "Promotion started" in m.text
    ]
    assert len(started) == 1


@pytest.mark.timeout(60)
def test_approvals_required_two_needs_two_different_people(two_approvals: Sandbox) -> None:
    box = two_approvals
    box.driver.command("start checkout v2.3.5", user=ALICE, channel=RELEASE_CHANNEL)
    approval = wait_until(lambda: approval_message(box), what="the approval request")
    assert "*2* approvals from different people" in str(approval.blocks)

    box.driver.click(message=approval, action_id="approve", user=BOB)
    wait_until(lambda: only_rollout(box).approvals == (BOB,), what="the first approval")
    seen = len(box.slack.responses)
    box.driver.click(message=approval, action_id="approve", user=BOB)
    wait_until(lambda: len(box.slack.responses) > seen, what="the refusal")
    assert "already approved" in str(box.slack.responses[seen].body.get("text"))
    box.drain()  # a promotion the repeated click wrongly set off would have run by now
    assert only_rollout(box).phase == Phase.AWAITING_APPROVAL
    stable = deployment(box, "checkout")
    assert stable is not None and stable["spec"]["template"]["spec"]["containers"][0][
        "image"
    ].endswith(":v2.3.4")

    box.driver.click(message=approval, action_id="approve", user=CAROL)
    wait_until(lambda: only_rollout(box).phase == Phase.SUCCEEDED, what="promotion")
    assert only_rollout(box).approvals == (BOB, CAROL)
    closed = box.slack.message(RELEASE_CHANNEL, approval.ts)
    assert closed is not None
    assert BOB in closed.text + str(closed.blocks) and CAROL in closed.text + str(closed.blocks)
    assert not any(block.get("type") == "actions" for block in closed.blocks)
