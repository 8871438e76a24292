"""The shared store: PostgreSQL through SQLAlchemy 2 (core only) and psycopg 3, for several
replicas.

Statements are the shared ones of rollout/stores/sql.py, run with `exec_driver_sql` (the `?`
placeholders become psycopg's `%s`); SQLAlchemy gives the connection pool, pre-ping after a
database restart, and the URL handling APScheduler's job store shares. Reads run on a pooled
connection at READ COMMITTED; each write is one transaction. Audit appenders take a
transaction-level advisory lock, so two replicas never compute the same link of the hash chain;
the fencing check reads the leadership row `FOR SHARE`, so `take_leadership` (an UPDATE of that
row) waits for fenced writes in flight, and no fenced write starts on an old epoch after it.

The password comes from `CANARY_STORE_URL` (or a Secret mounted into it), never from the config
file (rollout/config_ha.py refuses a `store.url` with one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from sqlalchemy import exc
from sqlalchemy.engine import make_url

from rollout.stores.migrations import Migration, migrate
from rollout.stores.sql import IDEMPOTENCY_KEYS as _IDEMPOTENCY_KEYS
from rollout.stores.sql import SqlStore
from rollout.stores.tx import Tx

# Advisory lock keys (any constant bigint, unique to this application).
_AUDIT_LOCK = 0x43414E4152590001
_MIGRATE_LOCK = 0x43414E4152590002


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` (what people write) as SQLAlchemy's `postgresql+psycopg://…`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class PostgresTx:
    def __init__(self, connection: sqlalchemy.Connection) -> None:
        self._connection = connection

    def _execute(self, sql: str, params: Sequence[Any]) -> sqlalchemy.CursorResult[Any]:
        if params:
            return self._connection.exec_driver_sql(sql.replace("?", "%s"), tuple(params))
        return self._connection.exec_driver_sql(sql)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._execute(sql, params).mappings()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._execute(sql, params).rowcount)


class PostgresStore(SqlStore):
    SENT_AGG = "json_object_agg(o.key, o.ts)::text"
    STALE_PAGE = (
        "(entry::jsonb ->> 'kind') = 'page' "
        "AND (entry::jsonb #>> '{event,fields,traffic_on_stable}') = 'true'"
    )
    GREATEST = "GREATEST"
    FENCE_READ = "SELECT epoch FROM leadership WHERE id = 1 FOR SHARE"
    INTEGRITY_ERRORS = (exc.IntegrityError,)

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self._url = sqlalchemy_url(url)
        self._engine = sqlalchemy.create_engine(
            self._url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True
        )
        where = make_url(self._url).render_as_string(hide_password=True)
        with self._begin() as tx:
            tx.run("SELECT pg_advisory_xact_lock(?)", [_MIGRATE_LOCK])
            self.schema_version = migrate(tx, MIGRATIONS, where=where)

    @contextmanager
    def _begin(self) -> Iterator[Tx]:
        with self._engine.begin() as connection:
            yield PostgresTx(connection)

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        with self._engine.connect() as connection:
            yield PostgresTx(connection)

    def _serialise_audit(self, tx: Tx) -> None:
        tx.run("SELECT pg_advisory_xact_lock(?)", [_AUDIT_LOCK])

    @property
    def scheduler_url(self) -> str:
        return self._url

    def close(self) -> None:
        self._engine.dispose()


_APPEND_ONLY = """CREATE OR REPLACE FUNCTION canary_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$"""

MIGRATIONS = (
    Migration(
        1,
        "rollouts (versioned), audit (hash chain, epoch, append-only), outbox, deliveries, "
        "samples, leadership",
        (
            # Times are ISO-8601 text compared as bytes (COLLATE "C"), as on SQLite: the audit
            # chain hashes them as text, and a locale's collation must not reorder them.
            """CREATE TABLE rollouts (
                id TEXT PRIMARY KEY, service TEXT NOT NULL, phase TEXT NOT NULL,
                active INTEGER NOT NULL, created_at TEXT COLLATE "C" NOT NULL,
                updated_at TEXT COLLATE "C" NOT NULL, data TEXT NOT NULL,
                version INTEGER NOT NULL DEFAULT 0)""",
            "CREATE INDEX rollouts_service ON rollouts (service, active)",
            """CREATE UNIQUE INDEX one_active_rollout_per_service
                ON rollouts (service) WHERE active = 1""",
            """CREATE TABLE audit (
                id BIGINT PRIMARY KEY, at TEXT COLLATE "C" NOT NULL, rollout_id TEXT,
                actor TEXT NOT NULL, action TEXT NOT NULL, before TEXT, after TEXT,
                detail TEXT, prev_hash TEXT, hash TEXT, epoch BIGINT)""",
            "CREATE INDEX audit_rollout ON audit (rollout_id)",
            _APPEND_ONLY,
            """CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
                FOR EACH ROW EXECUTE FUNCTION canary_audit_append_only()""",
            """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
                FOR EACH STATEMENT EXECUTE FUNCTION canary_audit_append_only()""",
            """CREATE TABLE outbox (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rollout_id TEXT NOT NULL,
                key TEXT NOT NULL, entry TEXT NOT NULL, state TEXT NOT NULL,
                unsure INTEGER NOT NULL DEFAULT 0, ts TEXT, UNIQUE (rollout_id, key))""",
            "CREATE INDEX outbox_state ON outbox (state, rollout_id, seq)",
            "CREATE TABLE deliveries (key TEXT PRIMARY KEY, at TEXT NOT NULL)",
            """CREATE TABLE measurements (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rollout_id TEXT NOT NULL,
                at TEXT COLLATE "C" NOT NULL, data TEXT NOT NULL)""",
            "CREATE INDEX measurements_rollout ON measurements (rollout_id, at)",
            """CREATE TABLE leadership (
                id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL,
                holder TEXT, since TEXT)""",
            "INSERT INTO leadership (id, epoch) VALUES (1, 0)",
        ),
    ),
    Migration(2, "pipeline API idempotency keys", (_IDEMPOTENCY_KEYS,)),
)
