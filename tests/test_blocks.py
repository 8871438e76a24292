"""Every Slack message: what it says, which buttons it offers, and that Slack would accept it.

`Message.payload()` runs slack_sdk's own validation (text lengths, element counts, button
text), so each test that builds a payload also proves the message fits Slack's limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import DividerBlock

from handlers.blocks import (
    Message,
    alert_message,
    approval_closed,
    approval_request,
    error_message,
    event_message,
    help_message,
    history_message,
    list_message,
    mention,
    progress_bar,
    slack_date,
    status_card,
    status_message,
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
from tests.builders import progressing_rollout

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HUGE = "x" * 10_000
NASTY = "<!channel> & <@U999> *bold* `tick` " * 300
ACTIVE_PHASES = [phase for phase in Phase if phase.is_active]


def payload(message: Message) -> dict[str, Any]:
    data = message.payload()
    assert len(data["blocks"]) <= 50
    assert 0 < len(data["text"]) <= 3000
    # Limits slack_sdk does not check itself: section fields and context texts.
    for block in data["blocks"]:
        assert all(0 < len(cell["text"]) <= 2000 for cell in block.get("fields", []))
        if block["type"] == "context":
            assert all(0 < len(element["text"]) <= 3000 for element in block["elements"])
    return data


def texts(data: Any) -> Iterator[str]:
    """Every `text` string anywhere in a payload, buttons and confirmations included."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from texts(value)
    elif isinstance(data, list):
        for item in data:
            yield from texts(item)


def all_text(message: Message) -> str:
    return "\n".join(texts(payload(message)))


def buttons(message: Message) -> dict[str, dict[str, Any]]:
    found = {}
    for block in payload(message)["blocks"]:
        if block["type"] == "actions":
            for element in block["elements"]:
                found[element["action_id"]] = element
    return found


# --- common pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("U01ALICE", "<@U01ALICE>"),
        ("W0ENTERPRISE", "<@W0ENTERPRISE>"),
        ("S0SRE", "<!subteam^S0SRE>"),
        ("canary-bot", "canary-bot"),
        ("<!channel>", "&lt;!channel&gt;"),
    ],
)
def test_mention(principal: str, expected: str) -> None:
    assert mention(principal) == expected


@pytest.mark.parametrize(
    ("weight", "bar"),
    [
        (0, "░░░░░░░░░░ 0%"),
        (0.5, "▓░░░░░░░░░ 0.5%"),
        (5, "▓░░░░░░░░░ 5%"),
        (25, "▓▓▓░░░░░░░ 25%"),
        (33.333, "▓▓▓░░░░░░░ 33.3%"),
        (99, "▓▓▓▓▓▓▓▓▓░ 99%"),
        (100, "▓▓▓▓▓▓▓▓▓▓ 100%"),
        (140, "▓▓▓▓▓▓▓▓▓▓ 100%"),
        (float("nan"), "░░░░░░░░░░ 0%"),
    ],
)
def test_progress_bar_reflects_the_weight(weight: float, bar: str) -> None:
    assert progress_bar(weight) == bar


def test_dates_render_in_the_readers_time_zone_with_a_utc_fallback() -> None:
    assert (
        slack_date(NOW) == "<!date^1714564800^{date_short_pretty} at {time}|2024-05-01 12:00 UTC>"
    )
    # A naive datetime is read as UTC, never as the server's local time.
    assert slack_date(NOW.replace(tzinfo=None)) == slack_date(NOW)


def test_a_message_refuses_more_than_fifty_blocks() -> None:
    with pytest.raises(ValueError, match="50 blocks"):
        Message(text="x", blocks=tuple(DividerBlock() for _ in range(51)))


# --- status card -----------------------------------------------------------------------------


def test_card_tells_the_whole_story() -> None:
    card = status_card(
        progressing_rollout(now=NOW),
        cluster_name="prod-eu-1",
        next_step_at=NOW + timedelta(minutes=20),
        verdict="healthy: error_rate 0.1% (limit 1%)",
    )
    text = all_text(card)
    assert "checkout" in text and "prod-eu-1" in text
    assert "`registry:5000/shop/checkout:v1` → `registry:5000/shop/checkout:v2`" in text
    assert ":arrows_counterclockwise: Progressing" in text
    assert "▓▓▓░░░░░░░ 25%" in text
    assert "2 of 3" in text
    assert slack_date(NOW + timedelta(minutes=20)) in text
    assert "<@U01ALICE>" in text
    assert ":large_green_circle: healthy: error_rate 0.1% (limit 1%)" in text


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.PENDING, {"pause", "rollback"}),
        (Phase.PROGRESSING, {"pause", "rollback"}),
        (Phase.AWAITING_APPROVAL, {"pause", "rollback"}),
        (Phase.PAUSED, {"resume", "rollback"}),
        (Phase.PROMOTING, {"rollback"}),
        (Phase.ROLLING_BACK, set()),
        (Phase.SUCCEEDED, set()),
        (Phase.ROLLED_BACK, set()),
        (Phase.FAILED, {"rollback"}),  # retries a rollback that failed
    ],
)
def test_card_buttons_follow_the_phase(phase: Phase, expected: set[str]) -> None:
    card = status_card(
        progressing_rollout(now=NOW, phase=phase), cluster_name="prod", next_step_at=None
    )
    found = buttons(card)
    assert set(found) == expected
    assert all(button["value"] == "r-123" for button in found.values())
    if "rollback" in found:
        assert found["rollback"]["style"] == "danger"
        assert found["rollback"]["confirm"]["confirm"]["text"] == "Roll back"


def test_every_phase_has_its_own_symbol() -> None:
    symbols = set()
    for phase in Phase:
        card = status_card(
            progressing_rollout(now=NOW, phase=phase), cluster_name="prod", next_step_at=None
        )
        header = payload(card)["blocks"][0]["text"]["text"]
        symbols.add(header.split()[0])
    assert len(symbols) == len(Phase)


@pytest.mark.parametrize("phase", [Phase.PAUSED, Phase.ROLLED_BACK, Phase.FAILED])
def test_card_shows_why_it_stopped_escaped_and_clipped(phase: Phase) -> None:
    card = status_card(
        progressing_rollout(now=NOW, phase=phase, reason=NASTY),
        cluster_name="prod",
        next_step_at=None,
    )
    text = all_text(card)
    # A broadcast in a reason is shown, never sent; a user mention stays a mention.
    assert "&lt;!channel&gt; &amp; <@U999>" in text
    assert "<!channel>" not in text
    assert "…" in text


def test_card_with_extreme_inputs_stays_within_slack_limits() -> None:
    rollout = progressing_rollout(
        now=NOW,
        service="s" * 300,
        stable_image="registry:5000/" + "a" * 5000 + ":v1",
        canary_image="registry:5000/" + "b" * 5000 + ":v2",
        id="r" * 300,
        approvals=tuple(f"U{index:08d}" for index in range(500)),
        phase=Phase.PAUSED,
        reason=HUGE,
    )
    for message in (
        status_card(rollout, cluster_name=HUGE, next_step_at=NOW, verdict=HUGE),
        status_message(rollout, cluster_name=HUGE, next_step_at=NOW, verdict=HUGE),
    ):
        text = all_text(message)
        assert "more" in text  # the approvers that did not fit are counted


def test_status_reply_has_the_facts_but_no_buttons() -> None:
    reply = status_message(
        progressing_rollout(now=NOW), cluster_name="prod-eu-1", next_step_at=None
    )
    assert buttons(reply) == {}
    text = all_text(reply)
    assert "▓▓▓░░░░░░░ 25%" in text and "<#C0RELEASES>" in text


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


# --- lists and replies -----------------------------------------------------------------------


def test_help_shows_copyable_examples() -> None:
    text = all_text(help_message())
    for example in ("/canary start checkout v2.3.5", "--steps 5,25,50", "/canary rollback"):
        assert example in text


def test_error_message_escapes_user_text_and_adds_the_bots_mentions_after() -> None:
    text = all_text(
        error_message("Usage: `/canary pause <service>`; <@U04EVE> & co, ask ", then="<@U02BOB>")
    )
    assert text.startswith(":warning: ")
    assert "&lt;service&gt;" in text and "&lt;@U04EVE&gt;" in text and "&amp; co" in text
    assert "<@U02BOB>" in text and "<@U04EVE>" not in text
    payload(error_message(HUGE))


def test_list_shows_active_rollouts_one_line_each() -> None:
    rollouts = [
        progressing_rollout(now=NOW, id="a", service="checkout"),
        progressing_rollout(
            now=NOW, id="b", service="cart", phase=Phase.PAUSED, weight=5.0, step_index=0
        ),
        progressing_rollout(now=NOW, id="c", service="gone", phase=Phase.SUCCEEDED),
    ]
    text = all_text(list_message(rollouts, now=NOW))
    assert "2 active rollouts" in text
    assert "gone" not in text
    cart_line = next(line for line in text.splitlines() if "*cart*" in line)
    assert "`checkout:v2`" in cart_line and "▓░░░░░░░░░ 5%" in cart_line
    assert "step 1/3" in cart_line and "paused" in cart_line and "1h ago" in cart_line


def test_list_when_nothing_runs_says_how_to_start() -> None:
    assert "/canary start" in all_text(list_message([], now=NOW))


def test_list_of_thousands_stays_within_fifty_blocks() -> None:
    rollouts = [
        progressing_rollout(now=NOW, id=str(index), service=f"svc-{index}") for index in range(5000)
    ]
    text = all_text(list_message(rollouts, now=NOW))
    assert "more" in text


def test_history_newest_first_with_outcome_people_and_reason() -> None:
    old = progressing_rollout(
        now=NOW,
        id="old",
        canary_image="shop/checkout:v1",
        phase=Phase.SUCCEEDED,
        created_at=NOW - timedelta(days=2),
        finished_at=NOW - timedelta(days=2) + timedelta(hours=2),
        approvals=("U02BOB",),
    )
    new = progressing_rollout(
        now=NOW,
        id="new",
        phase=Phase.ROLLED_BACK,
        created_at=NOW - timedelta(hours=3),
        finished_at=NOW - timedelta(hours=3) + timedelta(minutes=12),
        reason="latency_avg_ms 800 > 500",
    )
    text = all_text(history_message("checkout", [old, new]))
    assert text.index("rolled back") < text.index("succeeded")
    assert "in 12m" in text and "in 2h" in text
    assert "Approved by <@U02BOB>" in text and "Started by <@U01ALICE>" in text
    assert "latency_avg_ms 800 &gt; 500" in text


def test_history_of_many_rollouts_shows_the_latest() -> None:
    rollouts = [
        progressing_rollout(
            now=NOW, id=str(i), created_at=NOW - timedelta(hours=i), reason=HUGE, phase=Phase.FAILED
        )
        for i in range(200)
    ]
    assert "latest 15 of 200" in all_text(history_message("checkout", rollouts))
    assert "No rollouts" in all_text(history_message("checkout", []))


# --- anything a user or the cluster can put into a message ------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    service=st.text(min_size=1, max_size=400),
    image=st.text(min_size=1, max_size=4000),
    reason=st.text(max_size=6000),
    cluster=st.text(min_size=1, max_size=400),
    phase=st.sampled_from(list(Phase)),
    weight=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_text_makes_valid_messages(
    service: str, image: str, reason: str, cluster: str, phase: Phase, weight: float
) -> None:
    rollout = progressing_rollout(
        now=NOW, service=service, canary_image=image, reason=reason, phase=phase, weight=weight
    )
    alert = Alert(title=reason or "t", detail=reason, traffic_on_stable=False, at=NOW)
    for message in (
        status_card(rollout, cluster_name=cluster, next_step_at=NOW, verdict=reason or None),
        status_message(rollout, cluster_name=cluster, next_step_at=None),
        approval_request(rollout, approvers=["U02BOB"]),
        approval_closed(rollout),
        alert_message(rollout, alert, oncall="U1AB", permalink=None, cluster_name=cluster),
        event_message(rollout, Paused(by=service, reason=reason)),
        list_message([rollout], now=NOW),
        history_message(service, [rollout]),
        error_message(reason or "x"),
    ):
        payload(message)
