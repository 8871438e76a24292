"""The one mechanism behind "each message exactly once": the outbox rows and their sender.

Driven with a fake Slack (tests/fakes.py) and a fake monotonic clock, so a Retry-After of
10 s is a number the test moves past, never a wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.events import Paused
from rollout.machine import Announce, Decision
from rollout.outbox import CARD, messages
from rollout.sender import OutboxSender
from rollout.stores import Store, open_store
from tests.fakes import FakeClock, FakeNotifier, World
from tests.test_machine import new_rollout

ROLLOUT_ID = new_rollout().id


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same outbox on both stores (the rest of the store contract: tests/store/)."""
    if request.param == "sqlite":
        store = open_store(path=tmp_path / "canary.db")
    else:
        store = open_store(path=tmp_path / "unused.db", url=request.getfixturevalue("postgres_url"))
    store.create(new_rollout(), actor="UALICE")
    yield store
    store.close()


def sender(store: Store, world: World, monotonic: Monotonic) -> OutboxSender:
    return OutboxSender(
        store=store,
        notifier=FakeNotifier(world),
        clock=FakeClock(),
        snapshots=lambda rollout, at: None,
        monotonic=monotonic,
    )


def queue_pause(store: Store, *, hold: bool = False) -> None:
    """A decision with one message, saved the way the engine saves it."""
    before = store.get(ROLLOUT_ID)
    assert before is not None
    decision = Decision(before, (Announce(Paused(by="UBOB", reason=None)),))
    store.save(
        before, before, actor="UBOB", action="pause", messages=messages(before, decision), hold=hold
    )


def test_a_message_queued_twice_is_posted_once(store: Store) -> None:
    world, clock = World(), Monotonic()
    queue_pause(store)
    queue_pause(store)  # the same decision saved again (a replay after a crash)
    assert sender(store, world, clock).send_due() == 0
    assert sorted(what for _, what in world.posts.values()) == ["Paused", "card"]
    assert not store.unsent()


def test_the_card_ts_becomes_the_rollouts_thread(store: Store) -> None:
    world = World()
    store.queue(ROLLOUT_ID, [CARD])
    sender(store, world, Monotonic()).send_due()
    rollout = store.get(ROLLOUT_ID)
    assert rollout is not None and rollout.thread_ts == world.posts["card"][0]


def test_a_rate_limit_pauses_sending_without_sleeping_then_sends_once(
    store: Store,
) -> None:
    world, clock = World(rate_limit_next=1), Monotonic()
    queue_pause(store)
    out = sender(store, world, clock)
    assert out.send_due() == pytest.approx(10)  # told when to come back; returned at once
    assert world.posts == {}
    clock.now += 9.9
    assert out.send_due() == pytest.approx(0.1)  # Retry-After honoured: nothing called
    assert world.log == ["post card"]
    clock.now += 0.1
    assert out.send_due() == 0
    assert sorted(what for _, what in world.posts.values()) == ["Paused", "card"]
    assert out.send_due() == 0 and len(world.posts) == 2


def test_a_post_that_landed_but_timed_out_is_found_not_posted_again(store: Store) -> None:
    world, clock = World(land_then_fail_next=1), Monotonic()
    queue_pause(store)
    out = sender(store, world, clock)
    wait = out.send_due()
    assert wait > 0 and list(world.posts) == ["card"]
    clock.now += wait
    out.send_due()
    assert world.log.count("post card") == 1 and "find card" in world.log
    assert not store.unsent()
    rollout = store.get(ROLLOUT_ID)
    assert rollout is not None and rollout.thread_ts == world.posts["card"][0]


@pytest.mark.parametrize("landed", [True, False])
def test_a_crash_mid_post_is_settled_by_looking_first(store: Store, landed: bool) -> None:
    world = World()
    store.queue(ROLLOUT_ID, [CARD])
    (row,) = store.unsent()
    assert store.mark_sending(row.seq)  # the bot died with this call in flight
    if landed:
        world.posts["card"] = ("1.000", "card")
    store.recover_sending()  # what a restarted sender does first
    sender(store, world, Monotonic()).send_due()
    assert list(world.posts) == ["card"]
    assert world.log.count("post card") == (0 if landed else 1)
    assert not store.unsent()


def test_held_messages_wait_for_their_cluster_actions(store: Store) -> None:
    world, clock = World(), Monotonic()
    queue_pause(store, hold=True)
    out = sender(store, world, clock)
    out.send_due()
    assert world.posts == {}
    assert store.release(ROLLOUT_ID, upto=store.outbox_mark(ROLLOUT_ID)) == 2
    out.send_due()
    assert sorted(what for _, what in world.posts.values()) == ["Paused", "card"]
