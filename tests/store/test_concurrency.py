"""Several writers on one database, on SQLite and PostgreSQL alike: optimistic concurrency on
save, fencing of a deposed leader, and appenders that keep the audit chain whole.

`another` is a second store object on the same database: to the database, another replica.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from rollout.audit_chain import first_break
from rollout.model import Phase
from rollout.stores import ActiveRolloutExists, FencedOut, StaleRollout, Store, open_store
from rollout.stores.postgres import PostgresStore
from tests.builders import NOW, rollout
from tests.reliability.support import wait_for
from tests.store.conftest import Opener, Raw

LATER = NOW + timedelta(minutes=1)


def snapshot(store: Store, raw: Raw) -> tuple[Any, ...]:
    """Everything a write could have changed."""
    return (
        raw("SELECT id, version, data FROM rollouts ORDER BY id"),
        raw("SELECT count(*) FROM audit"),
        raw("SELECT seq, state FROM outbox ORDER BY seq"),
        raw("SELECT key FROM deliveries ORDER BY key"),
        raw("SELECT count(*) FROM measurements"),
    )


# ----------------------------------------------------------------- optimistic concurrency


def test_a_save_from_a_stale_read_is_refused_and_changes_nothing(
    store: Store, another: Store, raw: Raw
) -> None:
    store.create(rollout(id="r-1"), actor="U01ALICE")
    mine, theirs = store.get("r-1"), another.get("r-1")
    assert mine is not None and theirs is not None and mine.version == theirs.version == 0
    another.save(
        theirs, theirs.evolve(now=LATER, phase=Phase.PAUSED), actor="U02BOB", action="pause"
    )
    before = snapshot(store, raw)
    with pytest.raises(StaleRollout, match="read at version 0 but is at version 1") as refused:
        store.save(
            mine,
            mine.evolve(now=LATER, phase=Phase.PROGRESSING, step_index=0),
            actor="canary-bot",
            action="tick",
            messages=[("card", {"kind": "card"})],
        )
    assert (refused.value.read, refused.value.stored) == (0, 1)
    assert snapshot(store, raw) == before  # no row, no audit entry, no message
    fresh = store.get("r-1")
    assert fresh is not None and (fresh.phase, fresh.version) == (Phase.PAUSED, 1)
    store.save(fresh, fresh.evolve(now=LATER, reason="x"), actor="canary-bot", action="tick")
    saved = store.get("r-1")
    assert saved is not None and saved.version == 2


def test_racing_saves_from_one_read_let_exactly_one_through(store: Store, opener: Opener) -> None:
    store.create(rollout(id="r-1"), actor="U01ALICE")
    replicas = [opener() for _ in range(4)]
    reads = [replica.get("r-1") for replica in replicas]

    def save(index: int) -> str:
        read = reads[index]
        assert read is not None
        try:
            replicas[index].save(
                read, read.evolve(now=LATER, reason=f"by {index}"), actor="x", action="note"
            )
        except StaleRollout:
            return "stale"
        return "saved"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(save, range(4)))
    assert sorted(outcomes) == ["saved", "stale", "stale", "stale"]
    final = store.get("r-1")
    assert final is not None and final.version == 1
    assert final.reason == f"by {outcomes.index('saved')}"


# ----------------------------------------------------------------- fencing


def test_a_deposed_leader_writes_nothing_once_another_took_over(
    store: Store, another: Store, raw: Raw
) -> None:
    store.create(rollout(id="r-1"), actor="U01ALICE")  # unfenced: epoch NULL
    old = store.take_leadership("bot-0", at=NOW)
    store.fence(old)
    store.audit(at=NOW, actor="canary-bot", action="set weight 5%", rollout_id="r-1")
    read = store.get("r-1")
    assert read is not None
    new = another.take_leadership("bot-1", at=LATER)
    assert new == old + 1 and store.leadership() == (new, "bot-1")
    another.fence(new)
    before = snapshot(store, raw)
    writes = [
        lambda: store.save(read, read.evolve(now=LATER, weight=25.0), actor="b", action="tick"),
        lambda: store.audit(at=LATER, actor="canary-bot", action="set weight 25%"),
        lambda: store.queue("r-1", [("late", {"kind": "x"})]),
        lambda: store.first_delivery("d-late", at=LATER),
        lambda: store.add_measurement("r-1", at=LATER, data={"late": True}),
        lambda: store.create(rollout(id="r-2", service="cart"), actor="U01ALICE"),
    ]
    for write in writes:
        with pytest.raises(FencedOut, match=f"epoch {old}, but epoch {new}"):
            write()
    assert snapshot(store, raw) == before
    another.audit(at=LATER, actor="canary-bot", action="set weight 25%", rollout_id="r-1")
    epochs = [row["epoch"] for row in store.audit_rows()]
    assert epochs == [None, old, new]  # no write of the old leader after the new one's first
    assert first_break(store.audit_export()) is None


def test_a_replica_without_a_token_still_records_commands(store: Store, another: Store) -> None:
    store.create(rollout(id="r-1"), actor="U01ALICE")
    store.fence(store.take_leadership("bot-0"))
    read = another.get("r-1")  # `another` never fenced: a follower recording a pause
    assert read is not None
    another.save(read, read.evolve(now=LATER, phase=Phase.PAUSED), actor="U02BOB", action="pause")
    assert another.first_delivery("d-1", at=LATER)
    store.audit(at=LATER, actor="canary-bot", action="tick")  # the leader is still the leader
    assert [row["epoch"] for row in store.audit_rows()][-2:] == [None, 1]


def test_unfencing_stops_the_check(store: Store, another: Store) -> None:
    store.fence(store.take_leadership("bot-0"))
    another.take_leadership("bot-1")
    with pytest.raises(FencedOut):
        store.first_delivery("d-1", at=NOW)
    store.fence(None)  # stepped down on purpose: from now on it only records commands
    assert store.first_delivery("d-1", at=NOW)


# ----------------------------------------------------------------- many writers at once


def test_concurrent_appenders_keep_one_unbroken_chain(store: Store, opener: Opener) -> None:
    replicas = [store, *(opener() for _ in range(3))]

    def append(index: int) -> None:
        for n in range(10):
            replicas[index].audit(at=NOW, actor=f"bot-{index}", action=f"write {n}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(append, range(4)))
    rows = store.audit_export()
    assert [row["id"] for row in rows] == list(range(1, 41))
    assert first_break(rows) is None


def test_concurrent_starts_of_one_service_make_one_rollout(store: Store, opener: Opener) -> None:
    replicas = [store, *(opener() for _ in range(3))]

    def start(index: int) -> str:
        try:
            replicas[index].create(rollout(id=f"r-{index}"), actor="U01ALICE")
        except ActiveRolloutExists as refused:
            return f"refused for {refused.existing.id}"
        return "created"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(start, range(4)))
    [active] = store.active()
    assert outcomes.count("created") == 1
    assert sorted(outcomes)[1:] == [f"refused for {active.id}"] * 3


# ----------------------------------------------------------------- the scheduler's job store


def test_the_scheduler_job_store_lives_in_the_same_database(store: Store, raw: Raw) -> None:
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=store.scheduler_url)}, timezone="UTC"
    )
    scheduler.start(paused=True)
    try:
        scheduler.add_job("rollout.scheduler:run_beat", "interval", seconds=5, id="beat")
    finally:
        scheduler.shutdown(wait=False)
    assert raw("SELECT id FROM apscheduler_jobs") == [("beat",)]


def test_postgres_takeover_waits_for_a_fenced_write_in_flight(postgres_url: str) -> None:
    """A write that checked the old epoch commits before the new epoch exists: the fencing
    read holds the leadership row FOR SHARE, which the takeover's UPDATE must wait for."""
    store = open_store(path="unused.db", url=postgres_url)
    try:
        with psycopg.connect(postgres_url) as in_flight:  # the old leader, mid-transaction
            epoch = in_flight.execute(PostgresStore.FENCE_READ.encode()).fetchall()
            assert epoch == [(0,)]
            with ThreadPoolExecutor(max_workers=1) as pool:
                takeover = pool.submit(store.take_leadership, "bot-1")
                wait_for(
                    lambda: waiting_on_a_lock(postgres_url), what="the takeover to wait", timeout=30
                )
                assert not takeover.done()
                in_flight.commit()
                assert takeover.result(timeout=30) == 1
    finally:
        store.close()


def waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as probe:
        rows = probe.execute(
            b"SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            b"AND query LIKE 'UPDATE leadership%'"
        ).fetchall()
    return bool(rows)
