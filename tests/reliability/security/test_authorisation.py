"""Every command that changes a rollout, and every button, checks the channel and the person;
each refusal is an ephemeral explanation and an audit row naming who tried.
"""

from __future__ import annotations

import json
from functools import partial

import pytest

from canary_sandbox.sandbox import BOB, MALLORY, RELEASE_CHANNEL, Sandbox
from emulators.slack import DriverResponse
from rollout.model import Rollout
from tests.reliability.security.conftest import refusals, store_of
from tests.reliability.support import (
    FORM,
    active_rollout,
    card_of,
    click_body,
    open_approval,
    wait_for,
)

ELSEWHERE = "C0ELSEWHERE"
CHANGING = ("pause checkout", "resume checkout", "promote checkout", "rollback checkout")


def step_one(sandbox: Sandbox) -> Rollout:
    reply = sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body

    return wait_for(
        partial(active_rollout, sandbox, "checkout", where=lambda r: r.step_ready), what="step 1"
    )


# --------------------------------------------------------------------------- authorisation


@pytest.mark.timeout(60)
def test_every_command_and_click_checks_channel_and_person(sandbox: Sandbox) -> None:
    rollout = step_one(sandbox)
    sandbox.kube.clear_writes()
    driver = sandbox.driver

    def refused(answer: DriverResponse, why: str) -> None:
        assert answer.status == 200, answer.body
        assert answer.json and answer.json["response_type"] == "ephemeral", answer.body
        assert why in answer.body, answer.body

    for text in ("start web v1.0.1", *CHANGING):
        refused(driver.command(text, user=MALLORY, channel=RELEASE_CHANNEL), "not a deployer")
        refused(driver.command(text, user=BOB, channel=ELSEWHERE), "release channel")

    def click_refused(body: bytes, why: str) -> None:
        seen = len(sandbox.slack.responses)
        assert sandbox.driver.post_raw(body, content_type=FORM).status == 200
        wait_for(lambda: len(sandbox.slack.responses) > seen, what="the refusal")
        reply = sandbox.slack.responses[seen]
        assert why in reply.text and reply.response_type == "ephemeral", reply.body

    card = card_of(sandbox, rollout.id)
    assert card is not None
    for button in ("pause", "rollback"):
        click_refused(
            click_body(sandbox, message=card, action_id=button, user=MALLORY), "Only deployers"
        )
        click_refused(
            click_body(sandbox, message=card, action_id=button, user=BOB, channel=ELSEWHERE),
            "not on the message the bot posted it in",
        )

    assert driver.command("promote checkout", user=BOB, channel=RELEASE_CHANNEL).status == 200
    approval = wait_for(lambda: open_approval(sandbox, rollout.thread_ts), what="the approval")
    click_refused(
        click_body(sandbox, message=approval, action_id="approve", user=MALLORY), "Only approvers"
    )
    click_refused(
        click_body(sandbox, message=approval, action_id="approve", user=BOB), "cannot approve"
    )
    click_refused(
        click_body(sandbox, message=approval, action_id="reject", user=MALLORY), "Only approvers"
    )

    after = store_of(sandbox).get(rollout.id)
    assert after is not None and after.phase == "awaiting_approval" and after.approvals == ()
    assert sandbox.kube.writes_snapshot() == []
    verbs = ("start", "pause", "resume", "promote", "rollback")
    assert sorted(refusals(sandbox)) == sorted(
        [(MALLORY, f"refused: {verb}") for verb in verbs]
        + [(BOB, f"refused: {verb}") for verb in verbs]
        + [(MALLORY, "refused: pause"), (MALLORY, "refused: rollback")]
        + [(BOB, "refused: pause"), (BOB, "refused: rollback")]
        + [(MALLORY, "refused: approve"), (BOB, "refused: approve"), (MALLORY, "refused: reject")]
    )


@pytest.mark.timeout(60)
def test_a_reject_submitted_by_someone_not_allowed_is_refused(sandbox: Sandbox) -> None:
    rollout = step_one(sandbox)
    sandbox.driver.command("promote checkout", user=BOB, channel=RELEASE_CHANNEL)
    wait_for(lambda: open_approval(sandbox, rollout.thread_ts), what="the approval")
    view = {
        "id": "V0FORGED",
        "type": "modal",
        "callback_id": "canary_reject_reason",
        "private_metadata": json.dumps({"rollout_id": rollout.id, "channel": RELEASE_CHANNEL}),
    }
    values = {"reason": {"text": {"type": "plain_text_input", "value": "because"}}}
    assert sandbox.driver.submit_view(view=view, user=MALLORY, values=values).status == 200
    sandbox.drain()
    after = store_of(sandbox).get(rollout.id)
    assert after is not None and after.phase == "awaiting_approval", after
    assert (MALLORY, "refused: reject") in refusals(sandbox)
