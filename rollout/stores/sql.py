"""The SQL both stores share: rollouts, the audit log, deliveries, measurements, leadership.

Every state change is written together with its audit row and the messages it decided on in
one transaction, so the log never disagrees with the state and no decided message can be lost.
The audit table refuses UPDATE and DELETE at the database level (triggers on both databases),
and each row carries a hash chained to the row before it (rollout/audit_chain.py), computed in
the same transaction: appenders are serialised (SQLite's BEGIN IMMEDIATE; a transaction-level
advisory lock on PostgreSQL) so no two take the same place in the chain.

Optimistic concurrency: `rollouts.version` goes up by one on every save; `save(before, after)`
updates the row only `WHERE version = before.version` and raises `StaleRollout` otherwise.

Fencing. `leadership` is one row (epoch, holder, since). `take_leadership` adds one to the epoch
and returns it: the fencing token. After `fence(token)` every write through this store object
first reads the epoch inside its own write transaction (PostgreSQL: `FOR SHARE`, so a
`take_leadership` waits for writes in flight and every write after it sees the new epoch;
SQLite: under BEGIN IMMEDIATE, which already excludes every other writer) and raises
`FencedOut`, writing nothing, when it is no longer the token. Audit rows record the writer's
token in `epoch` (not covered by the hash chain, whose format predates it), so a test can check
that no write of a deposed leader landed after its successor took over.

The rule for writes without a token: a store that was never fenced (`fence(None)`) writes
freely. That is what a replica that is not the leader does: it only records what people asked
(commands, clicks, deliveries), and optimistic concurrency keeps those from overwriting a
leader's decision (the leader's stale save is refused; it reads again and decides again). A
replica that loses leadership keeps its token: writes it has not yet noticed it must not make
are refused, not applied, and `canary-bot serve` then exits (bot/ha.py) and comes back as an
unfenced follower.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from rollout.audit_chain import EXPORT_FIELDS, GENESIS, row_hash
from rollout.model import Rollout
from rollout.serialize import rollout_from_dict, rollout_to_dict
from rollout.stores.decoded import Decoded
from rollout.stores.outbox import OutboxMethods, mark, queue
from rollout.stores.protocol import (
    TS_FIELDS,
    ActiveRolloutExists,
    FencedOut,
    Message,
    StaleRollout,
)
from rollout.stores.samples import SampleMethods
from rollout.stores.tx import Tx

# The pipeline API's Idempotency-Key: the request's fingerprint and the rollout it started,
# written in the transaction that creates the rollout (same SQL on both databases).
IDEMPOTENCY_KEYS = """CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, rollout_id TEXT NOT NULL,
    at TEXT NOT NULL)"""


class SqlStore(OutboxMethods, SampleMethods):
    """The shared methods; a subclass supplies transactions and a few dialect fragments."""

    # JSON object {key: ts} of a rollout's sent card and approval rows (correlated on r.id).
    SENT_AGG: ClassVar[str]
    # A held page saying traffic is back on stable (see `save`'s drop_stale_pages).
    STALE_PAGE: ClassVar[str]
    # Reads the leadership epoch inside a write transaction (see the module docstring).
    FENCE_READ: ClassVar[str] = "SELECT epoch FROM leadership WHERE id = 1"
    INTEGRITY_ERRORS: ClassVar[tuple[type[Exception], ...]]

    _token: int | None = None

    def _begin(self) -> AbstractContextManager[Tx]:
        """A write transaction that excludes other writers where the database needs it."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _request_read(self) -> AbstractContextManager[Tx]:
        """For the reads a Slack request makes before its acknowledgement: a store whose
        `_read` waits behind its writers gives these a way around them."""
        return self._read()

    def _serialise_audit(self, tx: Tx) -> None:
        """Make appenders to the audit chain take turns (inside the write transaction)."""

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        """Every write of the store: a transaction that first checks the fencing token."""
        with self._begin() as tx:
            token = self._token
            if token is not None:
                epoch = int(tx.rows(self.FENCE_READ)[0]["epoch"])
                if epoch != token:
                    raise FencedOut(token, epoch)
            yield tx

    # ----------------------------------------------------------------- rollouts

    def create(
        self,
        rollout: Rollout,
        *,
        actor: str,
        detail: str | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> None:
        """Insert a new rollout; refuses a second active rollout of the same service.

        `idempotency` (key, fingerprint of the request) is recorded in the same transaction,
        so a retried API request finds the rollout it started, or nothing at all."""
        try:
            with self._tx() as tx:
                existing = self._active_for(tx, rollout.service)
                if existing is not None:
                    raise ActiveRolloutExists(existing)
                _insert(tx, "rollouts", {**_row(rollout), "version": rollout.version})
                self._audit(
                    tx, rollout.updated_at, rollout.id, actor, "start", None, rollout, detail
                )
                if idempotency is not None:
                    key, fingerprint = idempotency
                    row = {"key": key, "fingerprint": fingerprint, "rollout_id": rollout.id}
                    _insert(tx, "idempotency_keys", {**row, "at": rollout.created_at.isoformat()})
        except self.INTEGRITY_ERRORS:
            # Another replica created one between our check and our insert: the unique index
            # of active rollouts per service refused ours.
            found = self.active_for(rollout.service)
            if found is None:
                raise
            raise ActiveRolloutExists(found) from None

    def idempotent(self, key: str) -> tuple[str, str] | None:
        """The fingerprint and rollout of the request first made with `key`, if any."""
        with self._read() as tx:
            rows = tx.rows(
                "SELECT fingerprint, rollout_id FROM idempotency_keys WHERE key = ?", [key]
            )
        return (rows[0]["fingerprint"], rows[0]["rollout_id"]) if rows else None

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

        Refused with `StaleRollout` when the row is no longer at `before.version`. `hold`
        queues the messages held until their decision's cluster actions are done;
        `release_upto` frees the rollout's held messages queued up to that mark.
        `audit=False` is for bookkeeping no reader of the log cares about (the card's verdict).
        """
        with self._tx() as tx:
            row = _row(after)
            changed = tx.run(
                "UPDATE rollouts SET service = ?, phase = ?, active = ?, created_at = ?, "
                "updated_at = ?, data = ?, version = version + 1 WHERE id = ? AND version = ?",
                [*(row[name] for name in _COLUMNS[1:]), after.id, before.version],
            )
            if changed != 1:
                found = tx.rows("SELECT version FROM rollouts WHERE id = ?", [after.id])
                stored = int(found[0]["version"]) if found else None
                raise StaleRollout(after.id, read=before.version, stored=stored)
            if audit:
                self._audit(tx, after.updated_at, after.id, actor, action, before, after, detail)
            queue(tx, after.id, messages, state="held" if hold else "queued")
            if release_upto is not None and drop_stale_pages:
                # A held page that says traffic is back on stable, from a rollback that failed
                # for good: it would now be false; the failure's own page replaces it.
                tx.run(
                    "UPDATE outbox SET state = 'dropped' WHERE rollout_id = ? AND state = 'held' "
                    f"AND seq <= ? AND {self.STALE_PAGE}",
                    [after.id, release_upto],
                )
            if release_upto is not None:
                tx.run(
                    "UPDATE outbox SET state = 'queued' "
                    "WHERE rollout_id = ? AND state = 'held' AND seq <= ?",
                    [after.id, release_upto],
                )
            return mark(tx, after.id)

    def get(self, rollout_id: str) -> Rollout | None:
        with self._read() as tx:
            rows = tx.rows(f"{self._select} WHERE id = ?", [rollout_id])
        return self._decoded.load(rows[0], _load) if rows else None

    def active(self) -> list[Rollout]:
        with self._read() as tx:
            rows = tx.rows(f"{self._select} WHERE active = 1 ORDER BY created_at, id")
        return self._decoded.load_all(rows, _load)

    @property
    def _decoded(self) -> Decoded:
        """Made on first use: the stores' own `__init__`s open the database."""
        found: Decoded = self.__dict__.setdefault("_decoded_rollouts", Decoded())
        return found

    def active_for(self, service: str) -> Rollout | None:
        with self._request_read() as tx:
            rows = tx.rows(f"{self._select} WHERE service = ? AND active = 1", [service])
        # A request path read (`/canary status`, clicks): fifty people asking about a rollout
        # ask about the same stored row, decoded once (rollout/stores/decoded.py).
        return self._decoded.load(rows[0], _load) if rows else None

    def history(self, service: str, *, limit: int = 10) -> list[Rollout]:
        with self._request_read() as tx:
            rows = tx.rows(
                f"{self._select} WHERE service = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                [service, limit],
            )
        return [_load(row) for row in rows]

    @property
    def _select(self) -> str:
        return (
            f"SELECT id, data, version, (SELECT {self.SENT_AGG} FROM outbox o "
            "WHERE o.rollout_id = r.id AND o.state = 'sent' AND o.key IN ('card', 'approval')) "
            "AS sent FROM rollouts r"
        )

    def _active_for(self, tx: Tx, service: str) -> Rollout | None:
        rows = tx.rows(f"{self._select} WHERE service = ? AND active = 1", [service])
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
        with self._tx() as tx:
            self._audit(tx, at, rollout_id, actor, action, None, None, detail)

    def audit_rows(self, rollout_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit"
        params: list[Any] = []
        if rollout_id is not None:
            sql += " WHERE rollout_id = ?"
            params.append(rollout_id)
        with self._read() as tx:
            return tx.rows(sql + " ORDER BY id", params)

    def audit_after(self, last_id: int, *, limit: int = 5000) -> list[dict[str, Any]]:
        """Rows after `last_id`, oldest first: how the bot's metrics count transitions."""
        with self._read() as tx:
            return tx.rows(
                "SELECT id, actor, action, before, after FROM audit WHERE id > ? "
                "ORDER BY id LIMIT ?",
                [last_id, limit],
            )

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
        with self._read() as tx:
            return tx.rows(sql + " ORDER BY id", params)

    def _audit(
        self,
        tx: Tx,
        at: datetime,
        rollout_id: str | None,
        actor: str,
        action: str,
        before: Rollout | None,
        after: Rollout | None,
        detail: str | None,
    ) -> None:
        self._serialise_audit(tx)
        last = tx.rows("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
        row: dict[str, Any] = {
            "id": int(last[0]["id"]) + 1 if last else 1,
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
        row["epoch"] = self._token
        _insert(tx, "audit", row)

    # ----------------------------------------------------------------- idempotency

    def delivery_seen(self, key: str) -> bool:
        with self._request_read() as tx:
            return bool(tx.rows("SELECT 1 AS seen FROM deliveries WHERE key = ?", [key]))

    def first_delivery(self, key: str, *, at: datetime) -> bool:
        """True the first time `key` is seen: Slack may deliver one request several times."""
        with self._tx() as tx:
            return bool(
                tx.run(
                    "INSERT INTO deliveries (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    [key, at.isoformat()],
                )
            )

    # ----------------------------------------------------------------- leadership

    def take_leadership(self, holder: str, *, at: datetime | None = None) -> int:
        """A new epoch for `holder`: its fencing token. Every earlier token stops working."""
        since = (at or datetime.now(UTC)).isoformat()
        with self._begin() as tx:
            tx.run(
                "UPDATE leadership SET epoch = epoch + 1, holder = ?, since = ? WHERE id = 1",
                [holder, since],
            )
            return int(tx.rows("SELECT epoch FROM leadership WHERE id = 1")[0]["epoch"])

    def fence(self, token: int | None) -> None:
        """Check `token` on every later write of this store object (None: stop checking)."""
        self._token = token

    def leadership(self) -> tuple[int, str | None]:
        """The current epoch and who holds it."""
        with self._read() as tx:
            row = tx.rows("SELECT epoch, holder FROM leadership WHERE id = 1")[0]
        return int(row["epoch"]), row["holder"]

    # ----------------------------------------------------------------- health

    def ping(self) -> None:
        """Raise if the database cannot answer a query now (`/readyz` with a database server)."""
        with self._read() as tx:
            tx.rows("SELECT 1 AS ok")


_COLUMNS = ("id", "service", "phase", "active", "created_at", "updated_at", "data")


def _load(row: dict[str, Any]) -> Rollout:
    """The stored rollout at its stored version, with the ts of its sent card and approval
    request (the outbox, not the rollout record, knows what Slack has)."""
    rollout = rollout_from_dict(json.loads(row["data"]))
    sent = json.loads(row["sent"] or "{}")
    found = {field: sent[key] for key, field in TS_FIELDS.items() if sent.get(key)}
    return replace(rollout, version=int(row["version"]), **found)


def _insert(tx: Tx, table: str, row: dict[str, Any]) -> None:
    """A plain INSERT inside the caller's transaction (sqlite-utils' `Table.insert` would
    commit on its own half-way through ours)."""
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    tx.run(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))


def _row(rollout: Rollout) -> dict[str, Any]:
    data = rollout_to_dict(rollout)
    data.pop("version", None)  # the row's own column is the one that counts
    return {
        "id": rollout.id,
        "service": rollout.service,
        "phase": rollout.phase.value,
        "active": int(rollout.phase.is_active),
        "created_at": rollout.created_at.isoformat(),
        "updated_at": rollout.updated_at.isoformat(),
        "data": json.dumps(data),
    }


def _audit_view(rollout: Rollout) -> dict[str, Any]:
    """The fields a reader of the audit log cares about, not the whole record."""
    return {
        "phase": rollout.phase.value,
        "step": rollout.step_index + 1,
        "weight": rollout.weight,
        "target_weight": rollout.target_weight,
        "approvals": list(rollout.approvals),
    }
