"""The Slack budget: the outbox paces itself under Slack's limits, most urgent first.

The sender talks to the Slack emulator through the real `SlackNotifier` and WebClient, with the
emulator enforcing Slack's limits (Tier 3 on `chat.update`, one message a second per channel on
`chat.postMessage`: 429 with Retry-After). Sender, budget and emulator share one hand-moved
monotonic clock, so a minute of Slack's time passes in milliseconds and nothing sleeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.notifier import SlackNotifier
from emulators.slack import SlackEmulator, SlackRateLimits
from rollout.budget import SlackBudget
from rollout.config import Config
from rollout.config import SlackRateLimits as BudgetLimits
from rollout.events import Alert, StepReached
from rollout.machine import Announce, Decision, Page
from rollout.model import Rollout
from rollout.outbox import CARD, messages
from rollout.sender import OutboxSender
from rollout.store import SqliteStore
from tests.builders import NOW, progressing_rollout
from tests.fakes import FakeClock

TOKEN = "xoxb-budget-test"
CHANNEL = "C0RELEASES"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator(bot_token=TOKEN) as emulator:
        yield emulator


def sender_for(
    store: SqliteStore, slack: SlackEmulator, clock: Monotonic, limits: BudgetLimits
) -> OutboxSender:
    client = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])
    return OutboxSender(
        store=store,
        notifier=SlackNotifier(client=client, config=Config()),
        clock=FakeClock(),
        snapshots=lambda rollout, at: None,
        monotonic=clock,
        budget=SlackBudget(limits, monotonic=clock),
    )


def send_all(store: SqliteStore, sender: OutboxSender, clock: Monotonic) -> None:
    """Rounds of the sender, moving the clock by what each round says to wait."""
    for _ in range(20_000):
        wait = sender.send_due()
        if not store.unsent():
            return
        clock.now += wait if wait > 0 else 0.01
    raise AssertionError(f"still unsent: {store.unsent()[:3]}")


def with_cards(store: SqliteStore, count: int) -> list[Rollout]:
    """`count` rollouts at step 2 in one channel, each with its card queued."""
    made = []
    for index in range(count):
        rollout = progressing_rollout(id=f"r-{index:04d}", service=f"svc-{index:04d}")
        store.create(rollout, actor="U01ALICE")
        store.queue(rollout.id, [CARD])
        made.append(rollout)
    return made


def step_reached(store: SqliteStore, rollout: Rollout) -> None:
    """Step 3 reached: a thread message, and a card refresh (the weight shown changed)."""
    before = store.get(rollout.id)
    assert before is not None
    after = before.evolve(now=NOW + timedelta(minutes=1), step_index=2, weight=50.0)
    decision = Decision(after, (Announce(StepReached(step=3, steps=3, weight=50.0)),))
    store.save(
        before, after, actor="canary-bot", action="tick", messages=messages(before, decision)
    )


def paged(store: SqliteStore, rollout: Rollout) -> None:
    before = store.get(rollout.id)
    assert before is not None
    alert = Alert(title="breach", detail="error rate 9%", traffic_on_stable=True, at=NOW)
    decision = Decision(before, (Page(alert),))
    store.save(
        before, before, actor="canary-bot", action="tick", messages=messages(before, decision)
    )


def posted_keys(slack: SlackEmulator) -> list[tuple[str, str]]:
    """(rollout, key) of every message Slack accepted, in the order it accepted them."""
    keys = []
    for call in slack.calls_to("chat.postMessage"):
        if call.ok:
            payload = call.response["message"]["metadata"]["event_payload"]
            keys.append((payload["rollout"], payload["key"]))
    return keys


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param(BudgetLimits(), id="budget-as-configured-by-default"),
        pytest.param(
            BudgetLimits(chat_update_per_minute=600, post_message_per_channel_per_second=10),
            id="budget-above-slacks-limits",
        ),
    ],
)
def test_pages_go_first_and_no_message_is_lost_under_slacks_limits(
    tmp_path: Path, slack: SlackEmulator, limits: BudgetLimits
) -> None:
    clock = Monotonic()
    slack.limits = SlackRateLimits(clock=clock)
    store = SqliteStore(tmp_path / "canary.db")
    rollouts = with_cards(store, 30)
    sender = sender_for(store, slack, clock, limits)
    send_all(store, sender, clock)
    cards = len(posted_keys(slack))
    assert cards == 30

    for rollout in rollouts[2:]:
        step_reached(store, rollout)
    for rollout in rollouts[:2]:  # queued last, in the same channel as every step message
        paged(store, rollout)
    send_all(store, sender, clock)

    after_cards = posted_keys(slack)[cards:]
    assert [key.split(":")[0] for _, key in after_cards[:2]] == ["alert", "alert"]
    expected = {(r.id, "step:3") for r in rollouts[2:]}
    assert Counter(after_cards[2:]) == Counter(expected)  # every one, each once
    updates = [c for c in slack.calls_to("chat.update") if c.ok]
    assert len(updates) == 28  # one refresh per changed card
    for rollout in rollouts[2:]:
        card = slack.message(CHANNEL, store.sent_messages(rollout.id)["card"] or "")
        assert card is not None and "50%" in card.text
    if limits == BudgetLimits():
        assert slack.limits.refused == 0  # paced under the limits: Slack never had to refuse
    else:
        assert slack.limits.refused > 0  # refused, waited for Retry-After, sent all the same


def test_a_page_behind_its_own_unposted_card_overtakes_every_other_card(
    tmp_path: Path, slack: SlackEmulator
) -> None:
    """A rollout breached before its card was posted, while 30 other cards wait their turn
    at one message a second: its card goes first (the page's thread), then the page, then
    the other cards; nothing is lost."""
    clock = Monotonic()
    slack.limits = SlackRateLimits(clock=clock)
    store = SqliteStore(tmp_path / "canary.db")
    others = with_cards(store, 30)
    breached = progressing_rollout(id="r-breached", service="svc-breached")
    store.create(breached, actor="U01ALICE")
    store.queue(breached.id, [CARD])
    paged(store, breached)
    send_all(store, sender_for(store, slack, clock, BudgetLimits()), clock)

    posted = posted_keys(slack)
    assert [(rollout, key.split(":")[0]) for rollout, key in posted[:2]] == [
        ("r-breached", "card"),
        ("r-breached", "alert"),
    ]
    assert Counter(posted[2:]) == Counter((r.id, "card") for r in others)
    assert slack.limits.refused == 0


def test_pending_card_refreshes_coalesce_into_one_showing_the_latest_state(
    tmp_path: Path, slack: SlackEmulator
) -> None:
    clock = Monotonic()
    store = SqliteStore(tmp_path / "canary.db")
    (rollout,) = with_cards(store, 1)
    sender = sender_for(store, slack, clock, BudgetLimits())
    send_all(store, sender, clock)
    for weight in (30.0, 40.0, 45.0):  # three changes while the refresh waits its turn
        before = store.get(rollout.id)
        assert before is not None
        after = before.evolve(now=NOW + timedelta(seconds=weight), weight=weight)
        store.save(
            before,
            after,
            actor="canary-bot",
            action="tick",
            messages=messages(before, Decision(after)),
        )
    assert [row.key for row in store.unsent()] == ["card:update"]
    send_all(store, sender, clock)
    updates = [c for c in slack.calls_to("chat.update") if c.ok]
    assert len(updates) == 1
    card = slack.message(CHANNEL, store.sent_messages(rollout.id)["card"] or "")
    assert card is not None and "45%" in card.text


def test_the_emulator_refuses_over_slacks_limits_with_retry_after(slack: SlackEmulator) -> None:
    clock = Monotonic()
    slack.limits = SlackRateLimits(clock=clock, chat_update_per_minute=2)
    client = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])
    first = client.chat_postMessage(channel=CHANNEL, text="one")
    again = client.chat_postMessage(channel="C0OTHER", text="other channel: its own second")
    assert first["ok"] and again["ok"]
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=CHANNEL, text="two in the same second")
    response = refused.value.response
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    clock.now += 1
    assert client.chat_postMessage(channel=CHANNEL, text="a second later")["ok"]
    for _ in range(2):
        client.chat_update(channel=CHANNEL, ts=first["ts"], text="edited")
    with pytest.raises(SlackApiError) as tier3:
        client.chat_update(channel=CHANNEL, ts=first["ts"], text="third in a minute")
    assert tier3.value.response.headers["Retry-After"] == "60"  # the two updates were just now
    assert slack.limits.refused == 2
