"""The store contract, on SQLite and on PostgreSQL alike: rollouts, the audit log and its hash
chain, the outbox, deliveries and measurements (concurrency and fencing: test_concurrency.py)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import psycopg
import pytest

from rollout.audit_chain import GENESIS, first_break
from rollout.model import Phase
from rollout.stores import ActiveRolloutExists, Store, open_store
from tests.builders import NOW, rollout
from tests.postgres_server import PostgresServer
from tests.store.conftest import Raw

LATER = NOW + timedelta(minutes=1)


def started(store: Store, rollout_id: str = "r-1", service: str = "checkout") -> None:
    store.create(rollout(id=rollout_id, service=service), actor="U01ALICE")


def advance(store: Store, rollout_id: str, **changes: object) -> None:
    before = store.get(rollout_id)
    assert before is not None
    store.save(before, before.evolve(now=LATER, **changes), actor="canary-bot", action="tick")


# ----------------------------------------------------------------- rollouts


def test_a_created_rollout_reads_back_whole_and_active(store: Store) -> None:
    original = rollout(id="r-1", target=rollout().target, router_state={"annotations": {"a": 1}})
    store.create(original, actor="U01ALICE")
    assert store.get("r-1") == original
    assert [r.id for r in store.active()] == ["r-1"]
    assert store.active_for("checkout") == original
    assert store.get("r-nope") is None and store.active_for("cart") is None


def test_a_save_replaces_the_rollout_and_a_finished_one_leaves_the_active_list(
    store: Store,
) -> None:
    started(store)
    advance(store, "r-1", phase=Phase.PROGRESSING, step_index=0, weight=5.0)
    saved = store.get("r-1")
    assert saved is not None and (saved.phase, saved.weight) == (Phase.PROGRESSING, 5.0)
    advance(store, "r-1", phase=Phase.SUCCEEDED)
    assert store.active() == [] and store.active_for("checkout") is None
    assert [r.phase for r in store.history("checkout")] == [Phase.SUCCEEDED]


def test_a_request_read_decodes_a_stored_row_once_and_sees_every_change(store: Store) -> None:
    """`active_for` (what `/canary status` reads) keeps the decoded record per stored row: the
    same row is one shared value, and a save, or a card that reached Slack, is read anew."""
    started(store)
    first = store.active_for("checkout")
    assert first is not None and store.active_for("checkout") is first
    advance(store, "r-1", phase=Phase.PROGRESSING, step_index=0, weight=5.0)
    moved = store.active_for("checkout")
    assert moved is not None and moved == store.get("r-1")
    assert (moved.phase, moved.weight, moved.version) == (Phase.PROGRESSING, 5.0, first.version + 1)
    # The card's ts lives in the outbox, not in the row: the row's text alone is no key.
    store.queue("r-1", [("card", {"kind": "card"})])
    [card] = store.unsent("r-1")
    store.mark_sending(card.seq)
    store.mark_sent(card.seq, "1700000000.000100")
    sent = store.active_for("checkout")
    assert sent is not None and sent.thread_ts == "1700000000.000100" and moved.thread_ts is None


def test_a_request_read_sees_what_another_store_object_wrote(store: Store, another: Store) -> None:
    """What a store object kept for `active_for` is not kept past a write made through any
    other store object on the same database (another replica, or another part of the bot)."""
    started(store)
    first = store.active_for("checkout")
    assert first is not None and first.weight == 0.0
    advance(another, "r-1", phase=Phase.PROGRESSING, step_index=0, weight=5.0)
    moved = store.active_for("checkout")
    assert moved is not None and (moved.phase, moved.weight) == (Phase.PROGRESSING, 5.0)
    advance(another, "r-1", phase=Phase.SUCCEEDED)
    assert store.active_for("checkout") is None


def test_an_idempotency_key_is_kept_with_the_rollout_it_started(store: Store) -> None:
    store.create(rollout(id="r-1"), actor="ci:github-actions", idempotency=("k-1", "sha-a"))
    assert store.idempotent("k-1") == ("sha-a", "r-1")
    assert store.idempotent("k-2") is None
    # A start refused for the service's active rollout records no key.
    with pytest.raises(ActiveRolloutExists):
        store.create(rollout(id="r-2"), actor="ci:github-actions", idempotency=("k-2", "sha-b"))
    assert store.idempotent("k-2") is None


def test_history_is_newest_first_and_limited(store: Store) -> None:
    for day in range(3):
        store.create(
            rollout(id=f"r-{day}", at=NOW + timedelta(days=day), phase=Phase.SUCCEEDED),
            actor="U01ALICE",
        )
    assert [r.id for r in store.history("checkout")] == ["r-2", "r-1", "r-0"]
    assert [r.id for r in store.history("checkout", limit=2)] == ["r-2", "r-1"]
    assert store.history("cart") == []


def test_one_active_rollout_per_service(store: Store) -> None:
    started(store, "r-1")
    with pytest.raises(ActiveRolloutExists) as refused:
        started(store, "r-2")
    assert refused.value.existing.id == "r-1"
    assert store.get("r-2") is None
    started(store, "r-3", service="cart")  # another service is free
    advance(store, "r-1", phase=Phase.ROLLED_BACK)
    started(store, "r-4")  # and so is checkout once its rollout has ended
    assert sorted(r.id for r in store.active()) == ["r-3", "r-4"]


# ----------------------------------------------------------------- audit


def test_every_change_is_audited_with_a_hash_chain_that_holds(store: Store) -> None:
    started(store)
    advance(store, "r-1", phase=Phase.PROGRESSING, step_index=0)
    store.audit(at=LATER, actor="U02BOB", action="refused: approve", rollout_id="r-1")
    store.audit(at=LATER, actor="canary-bot", action="set weight 5%", detail="ünïcode «x»")
    rows = store.audit_export()
    assert [row["action"] for row in rows] == ["start", "tick", "refused: approve", "set weight 5%"]
    assert [row["id"] for row in rows] == [1, 2, 3, 4]
    assert rows[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    assert first_break(rows) is None
    assert [row["action"] for row in store.audit_rows("r-1")] == [
        "start",
        "tick",
        "refused: approve",
    ]
    assert [row["id"] for row in store.audit_after(2)] == [3, 4]


def test_the_audit_export_filters_by_time_and_service(store: Store) -> None:
    started(store, "r-1")
    started(store, "r-2", service="cart")
    store.audit(at=LATER, actor="U02BOB", action="pause", rollout_id="r-2")
    assert [row["rollout_id"] for row in store.audit_export(service="cart")] == ["r-2", "r-2"]
    assert [row["action"] for row in store.audit_export(since=LATER)] == ["pause"]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET actor = 'U0MALLORY' WHERE id = 1",
        "DELETE FROM audit WHERE id = 1",
    ],
)
def test_the_database_itself_refuses_to_change_the_audit_log(
    store: Store, raw: Raw, statement: str
) -> None:
    started(store)
    with pytest.raises(Exception, match="append-only"):
        raw(statement)
    assert raw("SELECT actor FROM audit") == [("U01ALICE",)]
    assert first_break(store.audit_export()) is None


def test_postgres_refuses_to_truncate_the_audit_log(postgres_url: str) -> None:
    store = open_store(path="unused.db", url=postgres_url)  # SQLite has no TRUNCATE
    try:
        started(store)
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                connection.execute(b"TRUNCATE audit")
            assert connection.execute(b"SELECT count(*) FROM audit").fetchall() == [(1,)]
    finally:
        store.close()


# ----------------------------------------------------------------- outbox


def test_a_message_key_is_queued_once_and_a_refreshed_one_again_after_it_was_sent(
    store: Store,
) -> None:
    started(store)
    store.queue("r-1", [("card", {"kind": "card"}), ("card", {"kind": "card", "dup": True})])
    [card] = store.unsent("r-1")
    assert (card.key, card.entry, card.state) == ("card", {"kind": "card"}, "queued")
    assert store.mark_sending(card.seq) and not store.mark_sending(card.seq)
    store.mark_sent(card.seq, "1700000000.000100")
    assert store.unsent() == []
    assert store.sent_messages("r-1") == {"card": "1700000000.000100"}
    rollout_now = store.get("r-1")
    assert rollout_now is not None and rollout_now.thread_ts == "1700000000.000100"
    store.queue("r-1", [("card:update", {"kind": "card"})])
    [update] = store.unsent("r-1")
    store.mark_sending(update.seq)
    store.mark_sent(update.seq, None)
    store.queue("r-1", [("card:update", {"kind": "card"})])
    assert [row.seq for row in store.unsent("r-1")] == [update.seq]  # the same row, again


def test_a_failed_send_is_queued_again_and_a_crash_mid_send_is_unsure(store: Store) -> None:
    started(store)
    store.queue("r-1", [("a", {"kind": "x"}), ("b", {"kind": "y"})])
    first, second = store.unsent()
    store.mark_sending(first.seq)
    store.mark_unsent(first.seq, unsure=False)
    store.mark_sending(second.seq)
    store.recover_sending()  # the bot restarted with `b` on its way
    states = {row.key: (row.state, row.unsure) for row in store.outbox()}
    assert states == {"a": ("queued", False), "b": ("queued", True)}
    store.mark_sending(second.seq)
    store.mark_unsent(second.seq, unsure=False)  # unsure stays: it may have landed once
    assert [row.unsure for row in store.unsent()] == [False, True]


def test_held_messages_wait_for_their_release_and_a_false_page_is_dropped(store: Store) -> None:
    started(store)
    before = store.get("r-1")
    assert before is not None
    page = {"kind": "page", "event": {"type": "X", "fields": {"traffic_on_stable": True}}}
    other = {"kind": "page", "event": {"type": "X", "fields": {"traffic_on_stable": False}}}
    mark = store.save(
        before,
        before.evolve(now=LATER, phase=Phase.ROLLING_BACK),
        actor="canary-bot",
        action="rollback",
        messages=[("page:back", page), ("page:other", other)],
        hold=True,
    )
    assert {row.state for row in store.outbox()} == {"held"} and store.outbox_mark("r-1") == mark
    assert store.release("r-2", upto=mark) == 0
    failing = store.get("r-1")
    assert failing is not None
    store.save(
        failing,
        failing.evolve(now=LATER, phase=Phase.FAILED),
        actor="canary-bot",
        action="rollback failed",
        release_upto=mark,
        drop_stale_pages=True,
    )
    states = {row.key: row.state for row in store.outbox(states=("queued", "dropped"))}
    assert states == {"page:back": "dropped", "page:other": "queued"}


def test_release_frees_held_messages_up_to_the_mark_only(store: Store) -> None:
    started(store)
    before = store.get("r-1")
    assert before is not None
    mark = store.save(
        before, before, actor="canary-bot", action="tick", messages=[("a", {})], hold=True
    )
    again = store.get("r-1")
    assert again is not None
    store.save(again, again, actor="canary-bot", action="tick", messages=[("b", {})], hold=True)
    assert store.release("r-1", upto=mark) == 1
    assert {row.key: row.state for row in store.unsent()} == {"a": "queued", "b": "held"}


def test_holding_names_every_rollout_with_a_held_message_and_no_other(store: Store) -> None:
    started(store, "r-1", "checkout")
    started(store, "r-2", "payments")
    one, two = store.get("r-1"), store.get("r-2")
    assert one is not None and two is not None
    mark = store.save(one, one, actor="canary-bot", action="tick", messages=[("a", {})], hold=True)
    store.save(two, two, actor="canary-bot", action="tick", messages=[("b", {})])
    assert store.holding() == {"r-1"}
    store.release("r-1", upto=mark)
    assert store.holding() == set()


# ----------------------------------------------------------------- deliveries, samples


def test_a_delivery_is_seen_once(store: Store) -> None:
    assert not store.delivery_seen("d-1")
    assert store.first_delivery("d-1", at=NOW)
    assert not store.first_delivery("d-1", at=LATER)
    assert store.delivery_seen("d-1") and not store.delivery_seen("d-2")


def test_measurements_come_back_in_time_order_within_the_range(store: Store) -> None:
    for second in (30, 10, 20, 40):
        store.add_measurement("r-1", at=NOW + timedelta(seconds=second), data={"s": second})
    store.add_measurement("r-2", at=NOW, data={"s": 0})
    since, until = NOW + timedelta(seconds=15), NOW + timedelta(seconds=35)
    assert store.measurements("r-1", since=since, until=until) == [{"s": 20}, {"s": 30}]
    assert [m["s"] for m in store.measurements("r-1", since=NOW)] == [10, 20, 30, 40]


def test_a_beats_measurements_go_in_at_once_and_come_back_per_rollout_from_its_own_start(
    store: Store,
) -> None:
    def at(second: int) -> datetime:
        return NOW + timedelta(seconds=second)

    store.add_measurements(
        [("r-1", at(30), {"s": 30}), ("r-1", at(10), {"s": 10}), ("r-2", at(0), {"s": 0})]
    )
    store.add_measurements([("r-1", at(20), {"s": 20}), ("r-3", at(20), {"s": 20})])
    found = store.measurements_of({"r-1": at(15), "r-2": at(0), "r-4": at(0)}, until=at(25))
    assert found == {"r-1": [{"s": 20}], "r-2": [{"s": 0}], "r-4": []}
    assert store.measurements("r-1", since=NOW) == [{"s": 10}, {"s": 20}, {"s": 30}]


def test_ping_answers_while_the_database_does_and_raises_once_it_is_gone(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.database()
    store = open_store(path="unused.db", url=url)
    try:
        store.ping()
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
        with pytest.raises(Exception, match=name):
            store.ping()
    finally:
        store.close()
