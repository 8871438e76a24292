"""What the bot posts in a rollout's thread: step and outcome replies, the approval request
and its closing, and the on-call alert; each within Slack's limits whatever the input size.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from handlers.blocks import (
    alert_message,
    approval_closed,
    approval_request,
    event_message,
    slack_date,
)
from rollout.events import (
    Alert,
    ApprovalRecorded,
    Event,
    Finished,
    Paused,
    PromotionStarted,
    Resumed,
    RollbackStarted,
    StepReached,
)
from rollout.model import Phase
from tests.blocks_support import HUGE, NASTY, NOW, all_text, buttons
from tests.builders import progressing_rollout

# --- thread ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "fragments"),
    [
        (StepReached(step=2, steps=3, weight=25.0), ("Step 2 of 3", "*25%*", "▓▓▓░")),
        (Paused(by="U01ALICE", reason="db migration"), ("Paused by <@U01ALICE>", "db migration")),
        (Paused(by="canary-bot", reason=None), ("Paused by canary-bot",)),
        (Resumed(by="U02BOB"), ("Resumed by <@U02BOB>",)),
        (ApprovalRecorded(by="U02BOB", have=1, need=2), ("<@U02BOB>", "1 of 2", "1 more")),
        (PromotionStarted(by=None), ("Promotion started:", "checkout:v2")),
        (PromotionStarted(by="U02BOB"), ("Promotion started by <@U02BOB>",)),
        (
            RollbackStarted(by=None, reason="error_rate 3% > 1%"),
            ("Rolling back: error_rate 3% &gt; 1%", "checkout:v1"),
        ),
        (
            Finished(phase="succeeded", reason=None, duration=timedelta(hours=1, minutes=5)),
            ("Released", "1h 5m"),
        ),
        (
            Finished(phase="rolled_back", reason="latency", duration=timedelta(minutes=12)),
            ("Rolled back after 12m: latency", "checkout:v1"),
        ),
        (
            Finished(phase="failed", reason="api down", duration=timedelta(seconds=40)),
            ("could not be completed after 40s: api down",),
        ),
    ],
)
def test_thread_replies(event: Event, fragments: tuple[str, ...]) -> None:
    text = all_text(event_message(progressing_rollout(now=NOW), event))
    for fragment in fragments:
        assert fragment in text


def test_thread_replies_with_huge_reasons_fit() -> None:
    rollout = progressing_rollout(now=NOW, stable_image="r/" + "a" * 5000)
    for event in (
        Paused(by="U1AB", reason=NASTY),
        RollbackStarted(by="U1AB", reason=NASTY),
        Finished(phase="rolled_back", reason=NASTY, duration=timedelta(days=3)),
    ):
        assert "<!channel>" not in all_text(event_message(rollout, event))


# --- approval --------------------------------------------------------------------------------


def test_approval_request_mentions_approvers_and_carries_the_rollout_id() -> None:
    plan = progressing_rollout(now=NOW).plan
    rollout = progressing_rollout(
        now=NOW,
        phase=Phase.AWAITING_APPROVAL,
        step_index=2,
        weight=50.0,
        plan=type(plan)(**{**plan.__dict__, "approvals_required": 2}),
    )
    message = approval_request(rollout, approvers=["U02BOB", "S0SRE"])
    text = all_text(message)
    assert "<@U02BOB>" in text and "<!subteam^S0SRE>" in text
    assert "<@U02BOB>" in message.text  # the notification pings too
    assert "last step" in text and "100%" in text
    assert "*2* approvals" in text
    assert "<@U01ALICE> started this rollout and cannot approve it alone" in text
    found = buttons(message)
    assert set(found) == {"approve", "reject"}
    assert found["approve"]["style"] == "primary" and found["reject"]["style"] == "danger"
    assert found["approve"]["value"] == found["reject"]["value"] == "r-123"


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_approval_request_with_any_number_of_approvers_fits(count: int) -> None:
    approvers = [f"U{index:08d}" for index in range(count)]
    text = all_text(
        approval_request(
            progressing_rollout(now=NOW, phase=Phase.AWAITING_APPROVAL), approvers=approvers
        )
    )
    if count == 1000:
        assert "more" in text
    if count == 0:
        assert "<@U" not in text.replace("<@U01ALICE>", "")


def test_approval_closed_names_every_approver_and_when() -> None:
    plan = progressing_rollout(now=NOW).plan
    rollout = progressing_rollout(
        now=NOW,
        phase=Phase.PROMOTING,
        plan=type(plan)(**{**plan.__dict__, "approvals_required": 2}),
        approvals=("U02BOB", "U03CAROL"),
        decided_at=NOW,
    )
    message = approval_closed(rollout)
    assert buttons(message) == {}
    assert f"Approved by <@U02BOB> <@U03CAROL>, {slack_date(NOW)}" in all_text(message)


def test_approval_closed_after_a_rejection_keeps_the_reason() -> None:
    rollout = progressing_rollout(
        now=NOW,
        phase=Phase.ROLLING_BACK,
        rejected_by="U02BOB",
        decided_at=NOW,
        reason="not on a Friday",
    )
    text = all_text(approval_closed(rollout))
    assert f"Rejected by <@U02BOB>, {slack_date(NOW)}: not on a Friday" in text


@pytest.mark.parametrize("phase", [Phase.ROLLED_BACK, Phase.FAILED, Phase.PAUSED])
def test_approval_closed_when_the_rollout_moved_on(phase: Phase) -> None:
    rollout = progressing_rollout(now=NOW, phase=phase, reason="error_rate 3% > 1%")
    message = approval_closed(rollout)
    assert buttons(message) == {}
    label = phase.value.replace("_", " ")
    assert f"Approval no longer needed: {label} — error_rate 3% &gt; 1%" in all_text(message)


# --- alert -----------------------------------------------------------------------------------


def test_alert_pages_oncall_and_links_the_thread() -> None:
    alert = Alert(
        title="Rolled back: error_rate breached",
        detail="error_rate 3.2% > 1% for 2m",
        traffic_on_stable=True,
        at=NOW,
    )
    message = alert_message(
        progressing_rollout(now=NOW, phase=Phase.ROLLED_BACK),
        alert,
        oncall="S0ONCALL",
        permalink="https://team.slack.com/archives/C0RELEASES/p1714564800000100",
        cluster_name="prod-eu-1",
    )
    text = all_text(message)
    assert message.text.startswith("<!subteam^S0ONCALL>")
    assert "*checkout* on *prod-eu-1*" in text
    assert "error_rate 3.2% &gt; 1% for 2m" in text
    assert "All traffic is back on stable `registry:5000/shop/checkout:v1`" in text
    assert "<https://team.slack.com/archives/C0RELEASES/p1714564800000100|rollout thread>" in text


def test_alert_without_oncall_or_permalink_and_traffic_not_yet_safe() -> None:
    alert = Alert(title=HUGE, detail=NASTY, traffic_on_stable=False, at=NOW)
    message = alert_message(
        progressing_rollout(now=NOW, phase=Phase.ROLLING_BACK, weight=50.0),
        alert,
        oncall=None,
        permalink="https://evil.example/|click>",
        cluster_name="prod-eu-1",
    )
    text = all_text(message)
    assert "not* back on stable" in text and "50%" in text
    assert "<#C0RELEASES>" in text
    assert "evil" not in text and "<!channel>" not in text
