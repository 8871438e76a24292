"""Answers to commands: help, errors, `/canary list` and `/canary history`, at any length."""

from __future__ import annotations

from datetime import timedelta

from handlers.blocks import error_message, help_message, history_message, list_message
from rollout.model import Phase
from tests.blocks_support import HUGE, NOW, all_text, payload
from tests.builders import progressing_rollout

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
