"""Several replicas: a follower decides and saves, only the leader acts (`Engine.pick_up`).

Two engines on one database, through the fake ports of tests/fakes.py: the follower's command
is saved (and audited) but touches no cluster; the leader's next pick-up carries it out, and a
pick-up with nothing new saved elsewhere does nothing.
"""

from __future__ import annotations

from pathlib import Path

from bot.config_loader import load_config_text
from rollout.commands import Rollback
from rollout.engine import Engine
from rollout.model import Phase, Rollout
from rollout.start import StartRequest
from rollout.stores import SqliteStore
from tests.fakes import FakeClock, FakeRouter, World
from tests.test_engine import CONFIG


def engines(tmp_path: Path) -> tuple[Engine, Engine, World, FakeClock]:
    world, clock, config = World(), FakeClock(), load_config_text(CONFIG)
    path = tmp_path / "shared.db"

    def engine(*, leads: bool) -> Engine:
        return Engine(
            config=config,
            store=SqliteStore(path),
            routers={"replicas": FakeRouter(world)},
            clock=clock,
            leading=lambda: leads,
        )

    return engine(leads=True), engine(leads=False), world, clock


def test_a_followers_command_is_saved_and_the_leader_carries_it_out(tmp_path: Path) -> None:
    leader, follower, world, clock = engines(tmp_path)
    accepted = follower.accept(
        StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
    )
    assert accepted is not None
    follower.tick_all(wait_for_ticks=True)  # a follower's beat (were one to fire) does nothing
    assert (world.calls, world.canary) == (0, False)

    leader.pick_up()  # the start was saved elsewhere: the leader starts it at once
    leader.drain()
    assert world.canary and world.weight == 25

    outcome = follower.command(accepted.id, Rollback(by="UBOB", reason="bad"), action="rollback")
    assert isinstance(outcome, Rollout)
    follower.carry_on(accepted.id)
    follower.drain()
    stored = leader.store.get(accepted.id)
    assert stored is not None and stored.phase == Phase.ROLLING_BACK
    assert world.weight == 25, "the follower touched the cluster"
    assert ("UBOB", "rollback") in [(r["actor"], r["action"]) for r in leader.store.audit_rows()]

    clock.advance(1)
    leader.pick_up()
    leader.drain()
    done = leader.store.get(accepted.id)
    assert done is not None and done.phase == Phase.ROLLED_BACK
    assert (world.weight, world.canary) == (0, False)

    calls = world.calls
    leader.pick_up()  # nothing new saved elsewhere: no tick, no call
    leader.drain()
    assert world.calls == calls


def test_a_replica_that_does_not_lead_creates_nothing_even_when_told_to_tick(
    tmp_path: Path,
) -> None:
    # A gate worker ticks its rollout when its gate ends; on a replica that has just lost the
    # Lease, that tick must not create the canary: only the leader acts on the cluster.
    _, follower, world, _ = engines(tmp_path)
    accepted = follower.accept(
        StartRequest(service="checkout", image="v2", by="UALICE", channel="C0RELEASES")
    )
    assert accepted is not None
    follower.tick(accepted.id)
    assert (world.calls, world.canary) == (0, False)
    stored = follower.store.get(accepted.id)
    assert stored is not None and stored.phase == Phase.PENDING
