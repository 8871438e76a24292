"""A card is redrawn only when something it shows changes.

At a thousand rollouts a redraw per rollout per tick is a thousand `chat.update` calls a tick,
against Slack's fifty a minute. A rollout held for missing metrics changes nothing a reader
sees from one tick to the next (its next-step time moves with every tick, so while it is held
the card says since when instead), and a next-step time that moves by seconds shows the same.
Driven through the real engine and sender, with the cluster and Slack faked (tests/fakes.py)
and time moved by hand.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.config_loader import load_config_text
from rollout.analysis import Analyzer, Series
from rollout.engine import Engine
from rollout.model import Phase
from rollout.outbox import CARD, card_view
from rollout.sender import OutboxSender
from rollout.store import SqliteStore
from tests.builders import NOW, many_services_config, progressing_rollout, rollout_plan
from tests.fakes import FakeClock, FakeNotifier, FakeRouter, World

ROLLOUTS = 1000


class NoMetrics:
    """Prometheus answering every query with an empty result: "no data" for every rollout."""

    def __init__(self) -> None:
        self.queries = 0

    def query(self, promql: str) -> list[Series]:
        self.queries += 1
        return []


def test_rollouts_held_for_missing_data_update_their_cards_once(tmp_path: Path) -> None:
    services = [f"svc-{index:04d}" for index in range(ROLLOUTS)]
    store, clock = SqliteStore(tmp_path / "canary.db"), FakeClock()
    world = World(weight=25)
    plan = rollout_plan(analysis_interval=timedelta(seconds=30))
    for name in services:  # at step 2 of 3, ready, counting down to step 3
        rollout = progressing_rollout(
            id=f"r-{name}",
            service=name,
            deployment=name,
            plan=plan,
            step_ready=True,
            step_started_at=NOW - timedelta(minutes=1),
            step_applied_at=NOW - timedelta(minutes=1),
        )
        store.create(rollout, actor="U01ALICE")
        store.queue(rollout.id, [CARD])
    notifier = FakeNotifier(world)
    sender = OutboxSender(store=store, notifier=notifier, clock=clock, snapshots=lambda r, at: None)
    sender.send_due()
    assert world.updates == 0 and world.posted.count("card") == ROLLOUTS  # every card posted

    metrics = NoMetrics()
    engine = Engine(
        config=load_config_text(
            many_services_config(
                services,
                on_no_data="hold",
                rules=[{"metric": "error_rate", "above": 0.05, "for": "0s"}],
            )
        ),
        store=store,
        routers={"replicas": FakeRouter(world)},
        clock=clock,
        analyzer=Analyzer(metrics),
    )
    audited = len(store.audit_rows(f"r-{services[0]}"))
    updates = []
    try:
        for _ in range(4):
            clock.advance(30)
            engine.tick_all(wait_for_ticks=True)
            sender.send_due()
            updates.append(world.updates)
    finally:
        engine.close()
    assert metrics.queries > 0  # the ticks did measure, and found nothing
    held = store.active()
    assert len(held) == ROLLOUTS
    assert all(r.phase == Phase.PROGRESSING and r.held_for_data for r in held)
    # The first no-data tick changes each card (the verdict, and the step shown as held);
    # the next ones move only the hidden next-step time: not one more chat.update.
    assert updates == [ROLLOUTS] * 4
    # The audit records the hold once, when it began, not every tick of it.
    for name in services:
        assert len(store.audit_rows(f"r-{name}")) == audited + 1, name


def test_a_next_step_time_that_moves_by_seconds_is_not_a_change() -> None:
    step_at = NOW.replace(second=5)
    rollout = progressing_rollout(step_ready=True, step_started_at=step_at)
    assert rollout.next_step_at is not None
    later = rollout.evolve(now=NOW, step_started_at=step_at + timedelta(seconds=20))
    assert card_view(later) == card_view(rollout)  # shown to the minute: the same card
    much_later = rollout.evolve(now=NOW, step_started_at=step_at + timedelta(minutes=2))
    assert card_view(much_later) != card_view(rollout)
