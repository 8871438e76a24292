"""The outbox table's side of the store: every message a rollout sends, one row per key.

A mixin of `SqliteStore` (rollout/store.py), kept apart so each file stays one idea. Rows are
queued in the same transaction as the decision they belong to (`SqliteStore.save`); the
sender (rollout/sender.py) moves them through `held` -> `queued` -> `sending` -> `sent`; a held
page that a failed rollback made false is `dropped` (see `SqliteStore.save`), and so is a chart
that cannot be rendered (rollout/chart_worker.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import sqlite_utils

# A message key whose row is sent again whenever it is queued again (the card's update shows
# the rollout as it is when sent, so one queued update stands for any number of changes).
REFRESHED_KEYS = frozenset({"card:update"})
# The sent messages whose ts the rollout record carries.
TS_FIELDS = {"card": "thread_ts", "approval": "approval_ts"}


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    rollout_id: str
    key: str
    entry: dict[str, Any]
    state: str
    unsure: bool


# (key, entry) of a message to queue with a decision (see rollout/outbox.py).
Message = tuple[str, dict[str, Any]]


class OutboxTable:
    """The outbox methods of `SqliteStore`; it provides the connection and transactions."""

    _lock: threading.RLock
    _db: sqlite_utils.Database

    def _transaction(self) -> AbstractContextManager[sqlite_utils.Database]:
        raise NotImplementedError

    def release(self, rollout_id: str, *, upto: int) -> int:
        """Free the rollout's held messages up to `upto` (nothing else changed); how many."""
        with self._lock:
            held = list(
                self._db.query(
                    "SELECT 1 FROM outbox WHERE rollout_id = ? AND state = 'held' LIMIT 1",
                    [rollout_id],
                )
            )
        if not held:
            return 0  # the usual case: no write at all
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET state = 'queued' "
                "WHERE rollout_id = ? AND state = 'held' AND seq <= ?",
                [rollout_id, upto],
            )
            return int(cursor.rowcount)

    def outbox_mark(self, rollout_id: str) -> int:
        """The newest outbox row of the rollout: a decision saved now releases up to here."""
        with self._lock:
            return _mark(self._db, rollout_id)

    def queue(self, rollout_id: str, messages: Sequence[Message]) -> None:
        """Queue messages that go with no change of the rollout (a snapshot on request)."""
        with self._transaction() as db:
            _queue(db, rollout_id, messages, state="queued")

    # ----------------------------------------------------------------- the outbox

    def outbox(self, *, states: Sequence[str] = ("held", "queued", "sending")) -> list[OutboxRow]:
        """Messages in the given states, in the order they were queued."""
        marks = ", ".join("?" for _ in states)
        with self._lock:
            rows = list(
                self._db.query(
                    "SELECT seq, rollout_id, key, entry, state, unsure FROM outbox "
                    f"WHERE state IN ({marks}) ORDER BY seq",
                    list(states),
                )
            )
        return [
            OutboxRow(
                seq=row["seq"],
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
        with self._lock:
            rows = list(
                self._db.query(
                    "SELECT key, ts FROM outbox WHERE rollout_id = ? AND state = 'sent'",
                    [rollout_id],
                )
            )
        return {row["key"]: row["ts"] for row in rows}

    def mark_sending(self, seq: int) -> bool:
        """About to call Slack: if the bot dies now, a restart looks before posting again.
        False if the row is no longer queued (held again by a newer decision)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET state = 'sending' WHERE seq = ? AND state = 'queued'", [seq]
            )
            return bool(cursor.rowcount)

    def mark_sent(self, seq: int, ts: str | None) -> None:
        """Sent. A row queued again meanwhile (a refreshed card) stays queued."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET state = 'sent', ts = ?, unsure = 0 "
                "WHERE seq = ? AND state = 'sending'",
                [ts, seq],
            )

    def mark_dropped(self, seq: int) -> None:
        """Given up on for good (a chart that cannot be rendered): never sent, never retried."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET state = 'dropped' WHERE seq = ? AND state = 'sending'", [seq]
            )

    def mark_unsent(self, seq: int, *, unsure: bool) -> None:
        """The call failed: queued again; `unsure` when it may have landed all the same."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET state = 'queued', unsure = MAX(unsure, ?) "
                "WHERE seq = ? AND state = 'sending'",
                [int(unsure), seq],
            )

    def recover_sending(self) -> None:
        """At start: a row left `sending` by a crash may or may not have reached Slack."""
        with self._transaction() as db:
            db.execute("UPDATE outbox SET state = 'queued', unsure = 1 WHERE state = 'sending'")


def _mark(db: sqlite_utils.Database, rollout_id: str) -> int:
    rows = list(db.query("SELECT MAX(seq) AS seq FROM outbox WHERE rollout_id = ?", [rollout_id]))
    return int(rows[0]["seq"] or 0)


def _queue(
    db: sqlite_utils.Database, rollout_id: str, messages: Sequence[Message], *, state: str
) -> None:
    """Queue each message once per key; a refreshed key that was sent is queued again."""
    for key, entry in messages:
        if key in REFRESHED_KEYS:
            db.execute(
                "INSERT INTO outbox (rollout_id, key, entry, state) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rollout_id, key) DO UPDATE SET state = excluded.state "
                "WHERE outbox.state != 'held'",
                [rollout_id, key, json.dumps(entry), state],
            )
        else:
            db.execute(
                "INSERT OR IGNORE INTO outbox (rollout_id, key, entry, state) VALUES (?, ?, ?, ?)",
                [rollout_id, key, json.dumps(entry), state],
            )
