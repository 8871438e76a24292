"""Buttons and dialogs act only from the message the bot posted them in (DESIGN.md "Messages").

Each forged payload here is validly signed and comes from someone who may do the action
(CAROL is an approver and a deployer); what is wrong is where it claims to come from: another
channel, or another message of the same rollout. Each gets an ephemeral refusal, and nothing
changes: no approval, no phase change, no cluster write, no dialog opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, Sandbox
from emulators.slack import payloads
from emulators.slack.blocks import find_button
from emulators.slack.records import Message
from rollout.model import Phase, Rollout
from tests.reliability.support import (
    FORM,
    active_rollout,
    card_of,
    open_approval,
    sandbox_config,
    wait_for,
)

ELSEWHERE = "C0ELSEWHERE"
MOVED = "the bot posted it in"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    config = sandbox_config(services=["checkout"], steps=[50], step_interval="1s")
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=config)
    box.start()
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def forged_click(
    sandbox: Sandbox,
    *,
    button_from: Message,
    action_id: str,
    channel: str | None = None,
    message_ts: str | None = None,
) -> bytes:
    """CAROL's click on `button_from`'s button, claiming another channel or message."""
    current = sandbox.slack.as_slack_json(button_from)
    found = find_button(current.get("blocks", []), action_id)
    assert found is not None
    block_id, button = found
    if message_ts is not None:
        current = {**current, "ts": message_ts}
    app = payloads.AppIdentity(
        team_id=sandbox.slack.team_id,
        team_domain=sandbox.slack.team_domain,
        api_app_id="A0CANARY",
        verification_token="canary-verification-token",
    )
    where = channel or button_from.channel
    payload = payloads.block_actions(
        app,
        user=payloads.user_object(app, user=CAROL, user_name=sandbox.slack.user_name(CAROL)),
        channel=where,
        channel_name=sandbox.slack.channel_name(where),
        message=current,
        block_id=block_id,
        button=button,
        response_url=sandbox.slack.new_response_url(
            channel=where, user=CAROL, message_ts=current["ts"]
        ),
        trigger=payloads.trigger_id(),
    )
    return urlencode({"payload": json.dumps(payload)}).encode()


def refused(sandbox: Sandbox, body: bytes) -> None:
    seen = len(sandbox.slack.responses)
    assert sandbox.driver.post_raw(body, content_type=FORM).status == 200
    wait_for(lambda: len(sandbox.slack.responses) > seen, what="the refusal")
    reply = sandbox.slack.responses[seen]
    assert MOVED in reply.text and reply.response_type == "ephemeral", reply.body


def awaiting(sandbox: Sandbox) -> tuple[Rollout, Message, Message]:
    assert sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    rollout = wait_for(
        lambda: active_rollout(
            sandbox, "checkout", where=lambda r: r.approval_ts is not None
        ),  # stored once posted: a click before that is refused as out of place
        what="the approval gate",
    )
    approval = wait_for(lambda: open_approval(sandbox, rollout.thread_ts), what="the request")
    card = card_of(sandbox, rollout.id)
    assert card is not None
    return rollout, card, approval


@pytest.mark.timeout(60)
def test_clicks_from_another_channel_or_message_change_nothing(sandbox: Sandbox) -> None:
    rollout, card, approval = awaiting(sandbox)
    sandbox.kube.clear_writes()
    forged = [
        forged_click(sandbox, button_from=approval, action_id="approve", channel=ELSEWHERE),
        forged_click(sandbox, button_from=approval, action_id="approve", message_ts=card.ts),
        forged_click(sandbox, button_from=approval, action_id="reject", channel=ELSEWHERE),
        forged_click(sandbox, button_from=approval, action_id="reject", message_ts=card.ts),
        forged_click(sandbox, button_from=card, action_id="rollback", message_ts=approval.ts),
        forged_click(sandbox, button_from=card, action_id="rollback", channel=ELSEWHERE),
    ]
    for body in forged:
        refused(sandbox, body)
    assert sandbox.runtime is not None
    sandbox.runtime.drain()
    after = sandbox.runtime.store.get(rollout.id)
    assert after is not None and after.phase == Phase.AWAITING_APPROVAL and after.approvals == ()
    assert sandbox.kube.writes_snapshot() == []
    assert sandbox.slack.calls_to("views.open") == []
    audit = sandbox.runtime.store.audit_rows(rollout.id)
    assert [row["action"] for row in audit if MOVED in (row["detail"] or "")] == [
        "refused: approve",
        "refused: approve",
        "refused: reject",
        "refused: reject",
        "refused: rollback",
        "refused: rollback",
    ]


@pytest.mark.timeout(60)
def test_the_reject_dialog_acts_only_for_the_message_it_was_opened_from(
    sandbox: Sandbox,
) -> None:
    rollout, card, approval = awaiting(sandbox)
    sandbox.kube.clear_writes()
    values = {"reason": {"text": {"type": "plain_text_input", "value": "not today"}}}
    forged_view = {
        "id": "V0FORGED",
        "type": "modal",
        "callback_id": "canary_reject_reason",
        "private_metadata": json.dumps(
            {"rollout_id": rollout.id, "channel": RELEASE_CHANNEL, "message_ts": card.ts}
        ),
    }
    assert sandbox.driver.submit_view(view=forged_view, user=CAROL, values=values).status == 200
    assert sandbox.runtime is not None
    sandbox.runtime.drain()
    after = sandbox.runtime.store.get(rollout.id)
    assert after is not None and after.phase == Phase.AWAITING_APPROVAL
    assert sandbox.kube.writes_snapshot() == []
    assert ("refused: reject", rollout.id) in [
        (row["action"], row["rollout_id"]) for row in sandbox.runtime.store.audit_rows()
    ]

    # The real dialog, opened from the approval request, rejects.
    assert sandbox.driver.click(message=approval, action_id="reject", user=CAROL).status == 200
    opened = wait_for(lambda: sandbox.slack.views, what="the reject dialog")
    reply = sandbox.driver.submit_view(view=opened[-1], user=CAROL, values=values)
    assert reply.status == 200
    store = sandbox.runtime.store
    done = wait_for(
        lambda: (r := store.get(rollout.id)) is not None and r.phase.is_terminal and r,
        what="the rollback",
    )
    assert done.phase == Phase.ROLLED_BACK and done.rejected_by == CAROL
