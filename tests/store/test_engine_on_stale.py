"""The engine on a store another replica writes to: a tick whose save is refused as stale reads
the rollout again and decides again, so a command recorded in between is never overwritten.

The race is made deterministic with the real store of either kind: its first save of the
tick first lets "another replica" (a second store object on the same database) record a pause.
Before optimistic concurrency the tick's `INSERT OR REPLACE` wiped the pause out and moved to
the next step; now the stale save is refused and the fresh decision, on a paused rollout, is
to do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.config_loader import load_config_text
from rollout.commands import Pause
from rollout.engine import Engine
from rollout.model import Phase, Rollout
from rollout.start import StartRequest
from rollout.stores import SqliteStore
from rollout.stores.postgres import PostgresStore
from tests.fakes import FakeClock, FakeRouter, World
from tests.test_engine import CONFIG


class Racing:
    """A store whose next save first lets another replica act (`interloper`, once)."""

    interloper: Callable[[str], object] | None = None

    def save(self, before: Rollout, after: Rollout, **kwargs: Any) -> int:
        if self.interloper is not None:
            act, self.interloper = self.interloper, None
            act(before.id)
        return super().save(before, after, **kwargs)  # type: ignore[misc]


class RacingSqlite(Racing, SqliteStore):
    pass


class RacingPostgres(Racing, PostgresStore):
    pass


@dataclass
class Replicas:
    leader: Engine
    follower: Engine
    leader_store: Racing
    follower_store: Racing
    world: World
    rollout_id: str


@pytest.fixture
def replicas(kind: str, where: str) -> Iterator[Replicas]:
    """Two engines on one database, the rollout at its first step, ready to advance."""
    stores = [RacingSqlite(where) if kind == "sqlite" else RacingPostgres(where) for _ in "ab"]
    world, clock = World(), FakeClock()
    config = load_config_text(CONFIG)
    leader, follower = (
        Engine(config=config, store=store, routers={"replicas": FakeRouter(world)}, clock=clock)
        for store in stores
    )
    try:
        accepted = leader.accept(
            StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
        )
        assert accepted is not None
        for _ in range(3):  # the first step's weight applied, then found in effect
            leader.tick_all(wait_for_ticks=True)
            clock.advance(1)
        at_step_one = stores[0].get(accepted.id)
        assert at_step_one is not None and at_step_one.step_index == 0 and at_step_one.step_ready
        clock.advance(11)  # past the step interval: the next tick advances
        world.log.clear()
        yield Replicas(leader, follower, stores[0], stores[1], world, accepted.id)
    finally:
        leader.close()
        follower.close()
        for store in stores:
            store.close()


def pause(engine: Engine) -> Callable[[str], object]:
    return lambda rollout_id: engine.command(
        rollout_id, Pause(by="U02BOB", reason="hold on"), action="pause"
    )


def test_a_tick_that_lost_a_race_with_a_command_decides_again(
    replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    store, world = replicas.leader_store, replicas.world
    store.interloper = pause(replicas.follower)
    replicas.leader.tick_all(wait_for_ticks=True)
    assert "tick of" not in caplog.text  # the tick did not fail: it decided again
    final = store.get(replicas.rollout_id)
    assert final is not None
    assert (final.phase, final.paused_from, final.step_index) == (
        Phase.PAUSED,
        Phase.PROGRESSING,
        0,
    )
    assert "set weight 50" not in world.log
    actions = [row["action"] for row in store.audit_rows(replicas.rollout_id)]
    assert actions.count("pause") == 1 and actions[-1] == "pause", actions


def test_a_command_that_lost_a_race_with_a_tick_is_applied_to_the_newer_state(
    replicas: Replicas,
) -> None:
    """The follower records a pause while the leader's tick moves to the next step: the pause
    is decided again on the newer record and lands on top of the step, not instead of it."""
    leader = replicas.leader
    replicas.follower_store.interloper = lambda _: leader.tick_all(wait_for_ticks=True)
    paused = pause(replicas.follower)(replicas.rollout_id)
    assert isinstance(paused, Rollout)
    assert (paused.phase, paused.step_index) == (Phase.PAUSED, 1)
    stored = replicas.leader_store.get(replicas.rollout_id)
    assert stored is not None and (stored.phase, stored.step_index) == (Phase.PAUSED, 1)
    assert "set weight 50" in replicas.world.log
