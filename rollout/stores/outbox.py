"""The outbox table's side of the store: every message a rollout sends, one row per key.

A mixin of the stores (rollout/stores/sql.py), kept apart so each file stays one idea. Rows are
queued in the same transaction as the decision they belong to (`save`); the sender
(rollout/sender.py) moves them through `held` -> `queued` -> `sending` -> `sent`; a held page
that a failed rollback made false is `dropped` (see `save`). A row is `held` while its
decision's cluster actions are not yet carried out, `sending` while a post may be on its way
(after a crash, look before posting again), `sent` with Slack's `ts`. The rollout's `thread_ts`
and `approval_ts` are read from the sent rows of its card and approval request, so the sender
never writes the rollout record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import ClassVar

from rollout.stores.protocol import REFRESHED_KEYS, Message, OutboxRow
from rollout.stores.tx import Tx


class OutboxMethods:
    """The outbox methods; the store provides the transactions."""

    # The larger of two integers (SQLite's two-argument MAX, PostgreSQL's GREATEST).
    GREATEST: ClassVar[str]

    def _tx(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def release(self, rollout_id: str, *, upto: int) -> int:
        """Free the rollout's held messages up to `upto` (nothing else changed); how many."""
        with self._read() as tx:
            held = tx.rows(
                "SELECT 1 AS held FROM outbox WHERE rollout_id = ? AND state = 'held' LIMIT 1",
                [rollout_id],
            )
        if not held:
            return 0  # the usual case: no write at all
        with self._tx() as tx:
            return tx.run(
                "UPDATE outbox SET state = 'queued' "
                "WHERE rollout_id = ? AND state = 'held' AND seq <= ?",
                [rollout_id, upto],
            )

    def holding(self) -> set[str]:
        """Every rollout with a held message: one query for a whole beat, so the quiet
        ticks of the others need not look (`release`) one by one."""
        with self._read() as tx:
            rows = tx.rows("SELECT DISTINCT rollout_id FROM outbox WHERE state = 'held'")
        return {row["rollout_id"] for row in rows}

    def outbox_mark(self, rollout_id: str) -> int:
        """The newest outbox row of the rollout: a decision saved now releases up to here."""
        with self._read() as tx:
            return mark(tx, rollout_id)

    def queue(self, rollout_id: str, messages: Sequence[Message]) -> None:
        """Queue messages that go with no change of the rollout (a snapshot on request)."""
        with self._tx() as tx:
            queue(tx, rollout_id, messages, state="queued")

    def outbox(self, *, states: Sequence[str] = ("held", "queued", "sending")) -> list[OutboxRow]:
        """Messages in the given states, in the order they were queued."""
        marks = ", ".join("?" for _ in states)
        with self._read() as tx:
            rows = tx.rows(
                "SELECT seq, rollout_id, key, entry, state, unsure FROM outbox "
                f"WHERE state IN ({marks}) ORDER BY seq",
                list(states),
            )
        return [
            OutboxRow(
                seq=int(row["seq"]),
                rollout_id=row["rollout_id"],
                key=row["key"],
                entry=json.loads(row["entry"]),
                state=row["state"],
                unsure=bool(row["unsure"]),
            )
            for row in rows
        ]

    def unsent(self, rollout_id: str | None = None) -> list[OutboxRow]:
        """Messages not yet sent (held, queued or on their way), of one rollout or all."""
        rows = self.outbox()
        return [row for row in rows if rollout_id is None or row.rollout_id == rollout_id]

    def sent_messages(self, rollout_id: str) -> dict[str, str | None]:
        """key -> ts of every message of the rollout that Slack has."""
        with self._read() as tx:
            rows = tx.rows(
                "SELECT key, ts FROM outbox WHERE rollout_id = ? AND state = 'sent'",
                [rollout_id],
            )
        return {row["key"]: row["ts"] for row in rows}

    def mark_sending(self, seq: int) -> bool:
        """About to call Slack: if the bot dies now, a restart looks before posting again.
        False if the row is no longer queued (held again by a newer decision)."""
        with self._tx() as tx:
            return bool(
                tx.run(
                    "UPDATE outbox SET state = 'sending' WHERE seq = ? AND state = 'queued'",
                    [seq],
                )
            )

    def mark_sent(self, seq: int, ts: str | None) -> None:
        """Sent. A row queued again meanwhile (a refreshed card) stays queued."""
        with self._tx() as tx:
            tx.run(
                "UPDATE outbox SET state = 'sent', ts = ?, unsure = 0 "
                "WHERE seq = ? AND state = 'sending'",
                [ts, seq],
            )

    def mark_dropped(self, seq: int) -> None:
        """Given up on for good (a chart that cannot be rendered): never sent, never retried."""
        with self._tx() as tx:
            tx.run("UPDATE outbox SET state = 'dropped' WHERE seq = ? AND state = 'sending'", [seq])

    def mark_unsent(self, seq: int, *, unsure: bool) -> None:
        """The call failed: queued again; `unsure` when it may have landed all the same."""
        with self._tx() as tx:
            tx.run(
                f"UPDATE outbox SET state = 'queued', unsure = {self.GREATEST}(unsure, ?) "
                "WHERE seq = ? AND state = 'sending'",
                [int(unsure), seq],
            )

    def recover_sending(self) -> None:
        """At start: a row left `sending` by a crash may or may not have reached Slack."""
        with self._tx() as tx:
            tx.run("UPDATE outbox SET state = 'queued', unsure = 1 WHERE state = 'sending'")


def mark(tx: Tx, rollout_id: str) -> int:
    rows = tx.rows("SELECT MAX(seq) AS seq FROM outbox WHERE rollout_id = ?", [rollout_id])
    return int(rows[0]["seq"] or 0)


def queue(tx: Tx, rollout_id: str, messages: Sequence[Message], *, state: str) -> None:
    """Queue each message once per key; a refreshed key that was sent is queued again."""
    for key, entry in messages:
        if key in REFRESHED_KEYS:
            tx.run(
                "INSERT INTO outbox (rollout_id, key, entry, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rollout_id, key) DO UPDATE SET state = excluded.state "
                "WHERE outbox.state != 'held'",
                [rollout_id, key, json.dumps(entry), state],
            )
        else:
            tx.run(
                "INSERT INTO outbox (rollout_id, key, entry, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rollout_id, key) DO NOTHING",
                [rollout_id, key, json.dumps(entry), state],
            )
