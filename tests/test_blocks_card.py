"""The status card and its common pieces (mentions, the progress bar, dates, the 50-block
limit): what it says, which buttons each phase offers, and that it stays within Slack's limits.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from slack_sdk.models.blocks import DividerBlock

from handlers.blocks import Message, mention, progress_bar, slack_date, status_card, status_message
from rollout.model import Phase
from tests.blocks_support import HUGE, NASTY, NOW, all_text, buttons, payload
from tests.builders import progressing_rollout

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
