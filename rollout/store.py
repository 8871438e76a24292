"""Durable state: rollouts, the append-only audit log, the message outbox and seen deliveries.

One SQLite file (shared with APScheduler's job store) through sqlite-utils. Every state change is
written together with its audit row and the messages it decided on in one transaction, so the
log never disagrees with the state and no decided message can be lost. The audit table refuses
UPDATE and DELETE at the database level, and each row carries a hash chained to the row before
it (`rollout/audit_chain.py`), computed in the same transaction, so an exported copy can be
checked for changed, deleted or inserted rows.

The `outbox` table is the one record of every Slack message a rollout sends (see
`rollout/outbox.py` for the sender): one row per (rollout, key), so queueing the same key twice
is one message. A row is `held` (its decision's cluster actions have not been carried out
yet), `queued`, `sending` (a post may be on its way: after a crash, look before posting again)
or `sent` with Slack's `ts`. The rollout's `thread_ts` and `approval_ts` are read from the sent
rows of its card and approval request, so the sender never writes the rollout record.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from rollout.audit_chain import EXPORT_FIELDS, GENESIS, row_hash
from rollout.model import Rollout
from rollout.outbox_table import TS_FIELDS, Message, OutboxTable, _mark, _queue
from rollout.serialize import rollout_from_dict, rollout_to_dict


class ActiveRolloutExists(Exception):
    """A service may have one active rollout at a time."""

    def __init__(self, existing: Rollout) -> None:
        super().__init__(f"{existing.service} already has an active rollout ({existing.id})")
        self.existing = existing


_NO_UPDATE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    phase TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_service ON rollouts (service, active);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_rollout_per_service
    ON rollouts (service) WHERE active = 1;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    rollout_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    before TEXT,
    after TEXT,
    detail TEXT,
    prev_hash TEXT,
    hash TEXT
);
CREATE INDEX IF NOT EXISTS audit_rollout ON audit (rollout_id);
"""
    + _NO_UPDATE_TRIGGER
    + """;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    key TEXT NOT NULL,
    entry TEXT NOT NULL,
    state TEXT NOT NULL,
    unsure INTEGER NOT NULL DEFAULT 0,
    ts TEXT,
    UNIQUE (rollout_id, key)
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, rollout_id, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_rollout ON measurements (rollout_id, at);
"""
)


class SqliteStore(OutboxTable):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=30000")
        connection.executescript(_SCHEMA)
        self._db = sqlite_utils.Database(connection)
        # One connection shared by the bot's threads; SQLite serialises writers anyway.
        self._lock = threading.RLock()
        # Request-path reads (see `_reader`): one connection per thread that asks.
        self._readers = threading.local()
        self._reader_dbs: list[sqlite_utils.Database] = []
        self._chain_audit_rows()

    def _reader(self) -> sqlite_utils.Database:
        """This thread's own connection, for the reads a Slack request makes before its
        acknowledgement. Through the one shared connection, fifty requests at once queued on
        its lock behind each other and behind every tick's and sender's writes (bench/ack.py:
        most of a request's time went there); under WAL a reader on its own connection never
        waits for the writer, and SQLite runs the query without holding the GIL."""
        db: sqlite_utils.Database | None = getattr(self._readers, "db", None)
        if db is None:
            connection = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
            connection.execute("PRAGMA busy_timeout=30000")
            db = sqlite_utils.Database(connection)
            self._readers.db = db
            with self._lock:
                self._reader_dbs.append(db)
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ----------------------------------------------------------------- rollouts

    def create(self, rollout: Rollout, *, actor: str, detail: str | None = None) -> None:
        """Insert a new rollout; refuses a second active rollout of the same service."""
        with self._transaction() as db:
            existing = self._active_for(db, rollout.service)
            if existing is not None:
                raise ActiveRolloutExists(existing)
            _insert(db, "rollouts", _row(rollout))
            _audit(db, rollout.updated_at, rollout.id, actor, "start", None, rollout, detail)

    def save(
        self,
        before: Rollout,
        after: Rollout,
        *,
        actor: str,
        action: str,
        detail: str | None = None,
        audit: bool = True,
        messages: Sequence[Message] = (),
        hold: bool = False,
        release_upto: int | None = None,
        drop_stale_pages: bool = False,
    ) -> int:
        """Replace the stored rollout, log the change and queue its messages, in one
        transaction; returns the rollout's outbox mark (see `outbox_mark`).

        `hold` queues the messages held until their decision's cluster actions are done;
        `release_upto` frees the rollout's held messages queued up to that mark (the actions
        of their decisions are done). `audit=False` is for bookkeeping that changes nothing a
        reader of the log cares about (the verdict shown on the card).
        """
        with self._transaction() as db:
            _insert(db, "rollouts", _row(after), replace=True)
            if audit:
                _audit(db, after.updated_at, after.id, actor, action, before, after, detail)
            _queue(db, after.id, messages, state="held" if hold else "queued")
            if release_upto is not None and drop_stale_pages:
                # A held page that says traffic is back on stable, from a rollback that failed
                # for good: it would now be false; the failure's own page replaces it.
                db.execute(
                    "UPDATE outbox SET state = 'dropped' WHERE rollout_id = ? AND state = 'held' "
                    "AND seq <= ? AND json_extract(entry, '$.kind') = 'page' "
                    "AND json_extract(entry, '$.event.fields.traffic_on_stable') = 1",
                    [after.id, release_upto],
                )
            if release_upto is not None:
                db.execute(
                    "UPDATE outbox SET state = 'queued' "
                    "WHERE rollout_id = ? AND state = 'held' AND seq <= ?",
                    [after.id, release_upto],
                )
            return _mark(db, after.id)

    def get(self, rollout_id: str) -> Rollout | None:
        with self._lock:
            rows = list(self._db.query(f"{_SELECT} WHERE id = ?", [rollout_id]))
        return _load(rows[0]) if rows else None

    def active(self) -> list[Rollout]:
        with self._lock:
            rows = list(self._db.query(f"{_SELECT} WHERE active = 1 ORDER BY created_at"))
        return [_load(row) for row in rows]

    def active_for(self, service: str) -> Rollout | None:
        return self._active_for(self._reader(), service)

    def history(self, service: str, *, limit: int = 10) -> list[Rollout]:
        rows = list(
            self._reader().query(
                f"{_SELECT} WHERE service = ? ORDER BY created_at DESC LIMIT ?",
                [service, limit],
            )
        )
        return [_load(row) for row in rows]

    @staticmethod
    def _active_for(db: sqlite_utils.Database, service: str) -> Rollout | None:
        rows = list(db.query(f"{_SELECT} WHERE service = ? AND active = 1", [service]))
        return _load(rows[0]) if rows else None

    # ----------------------------------------------------------------- audit

    def audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        rollout_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Log something that changed no rollout: a refusal, a cluster write, a click."""
        with self._transaction() as db:
            _audit(db, at, rollout_id, actor, action, None, None, detail)

    def audit_rows(self, rollout_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit"
        params: list[Any] = []
        if rollout_id is not None:
            sql += " WHERE rollout_id = ?"
            params.append(rollout_id)
        with self._lock:
            return list(self._db.query(sql + " ORDER BY id", params))

    def audit_export(
        self, *, since: datetime | None = None, service: str | None = None
    ) -> list[dict[str, Any]]:
        """Audit rows with their chain (`prev_hash`, `hash`), oldest first, for an archive."""
        sql = f"SELECT {', '.join(EXPORT_FIELDS)} FROM audit WHERE 1 = 1"
        params: list[Any] = []
        if since is not None:
            sql += " AND at >= ?"
            params.append(since.isoformat())
        if service is not None:
            sql += " AND rollout_id IN (SELECT id FROM rollouts WHERE service = ?)"
            params.append(service)
        with self._lock:
            return list(self._db.query(sql + " ORDER BY id", params))

    def _chain_audit_rows(self) -> None:
        """A database from before the chain: add its columns and seal the rows it has, once.

        The only UPDATE the audit table ever sees, with its trigger lifted for the length of
        one transaction and put back before it commits.
        """
        columns = {column.name for column in self._db["audit"].columns}
        if "hash" in columns:
            return
        with self._transaction() as db:
            db.execute("ALTER TABLE audit ADD COLUMN prev_hash TEXT")
            db.execute("ALTER TABLE audit ADD COLUMN hash TEXT")
            db.execute("DROP TRIGGER audit_no_update")
            prev = GENESIS
            for row in list(db.query("SELECT * FROM audit ORDER BY id")):
                sealed = row_hash(row, prev_hash=prev)
                db.execute(
                    "UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?",
                    [prev, sealed, row["id"]],
                )
                prev = sealed
            db.execute(_NO_UPDATE_TRIGGER)

    # ----------------------------------------------------------------- idempotency

    def delivery_seen(self, key: str) -> bool:
        return bool(list(self._reader().query("SELECT 1 FROM deliveries WHERE key = ?", [key])))

    def first_delivery(self, key: str, *, at: datetime) -> bool:
        """True the first time `key` is seen: Slack may deliver one request several times."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (key, at) VALUES (?, ?)", [key, at.isoformat()]
            )
            return bool(cursor.rowcount)

    # ----------------------------------------------------------------- measurements

    def add_measurement(self, rollout_id: str, *, at: datetime, data: dict[str, Any]) -> None:
        with self._transaction() as db:
            _insert(
                db,
                "measurements",
                {"rollout_id": rollout_id, "at": at.isoformat(), "data": json.dumps(data)},
            )

    def measurements(
        self, rollout_id: str, *, since: datetime, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        upto = until.isoformat() if until is not None else "9999"
        with self._lock:
            rows = list(
                self._db.query(
                    "SELECT data FROM measurements WHERE rollout_id = ? AND at >= ? AND at <= ? "
                    "ORDER BY at",
                    [rollout_id, since.isoformat(), upto],
                )
            )
        return [json.loads(row["data"]) for row in rows]

    def close(self) -> None:
        with self._lock:
            for reader in self._reader_dbs:
                reader.conn.close()
            self._db.conn.close()


_SELECT = (
    "SELECT data, (SELECT json_group_object(key, ts) FROM outbox o WHERE o.rollout_id = r.id "
    "AND o.state = 'sent' AND o.key IN ('card', 'approval')) AS sent FROM rollouts r"
)


def _load(row: dict[str, Any]) -> Rollout:
    """The stored rollout with the ts of its sent card and approval request (see the module
    docstring: the outbox, not the rollout record, knows what Slack has)."""
    rollout = rollout_from_dict(json.loads(row["data"]))
    sent = json.loads(row["sent"] or "{}")
    found = {field: sent[key] for key, field in TS_FIELDS.items() if sent.get(key)}
    return replace(rollout, **found) if found else rollout


def _insert(
    db: sqlite_utils.Database, table: str, row: dict[str, Any], *, replace: bool = False
) -> None:
    """A plain INSERT inside the caller's transaction.

    sqlite-utils' `Table.insert` commits on its own (`with conn:`), which would end our
    transaction half-way and split a state change from its audit row.
    """
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    db.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", list(row.values()))


def _row(rollout: Rollout) -> dict[str, Any]:
    return {
        "id": rollout.id,
        "service": rollout.service,
        "phase": rollout.phase.value,
        "active": int(rollout.phase.is_active),
        "created_at": rollout.created_at.isoformat(),
        "updated_at": rollout.updated_at.isoformat(),
        "data": json.dumps(rollout_to_dict(rollout)),
    }


def _audit(
    db: sqlite_utils.Database,
    at: datetime,
    rollout_id: str | None,
    actor: str,
    action: str,
    before: Rollout | None,
    after: Rollout | None,
    detail: str | None,
) -> None:
    # Inside the caller's BEGIN IMMEDIATE: no other writer can take the same place in the chain.
    last = list(db.query("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1"))
    row: dict[str, Any] = {
        "id": last[0]["id"] + 1 if last else 1,
        "at": at.isoformat(),
        "rollout_id": rollout_id,
        "actor": actor,
        "action": action,
        "before": json.dumps(_audit_view(before)) if before else None,
        "after": json.dumps(_audit_view(after)) if after else None,
        "detail": detail,
    }
    row["prev_hash"] = last[0]["hash"] if last else GENESIS
    row["hash"] = row_hash(row, prev_hash=row["prev_hash"])
    _insert(db, "audit", row)


def _audit_view(rollout: Rollout) -> dict[str, Any]:
    """The fields a reader of the audit log cares about, not the whole record."""
    return {
        "phase": rollout.phase.value,
        "step": rollout.step_index + 1,
        "weight": rollout.weight,
        "target_weight": rollout.target_weight,
        "approvals": list(rollout.approvals),
    }
