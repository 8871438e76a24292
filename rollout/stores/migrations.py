"""Versioned schema migrations: a numbered list per database and a `schema_migrations` table.

Why not Alembic: the schema is five small tables plus one row of leadership, on two databases
whose differences (SQLite triggers with RAISE, PostgreSQL trigger functions, identity columns)
are hand-written SQL anyway. Alembic would add a dependency, a migrations environment and
script directory to ship inside the wheel, and on SQLite its batch mode rebuilds a table to
alter it, which would drop and recreate the audit table under its append-only triggers. A
numbered tuple of statements, applied in order in one transaction and recorded in
`schema_migrations (version, applied_at, what)`, is a few dozen lines and easy to read.

Rules: a migration is never edited once released; a new one gets the next number. SQLite's
version 1 is the schema as it was before versions existed (every statement `IF NOT EXISTS`),
so a file written by an older canary-bot, which has no `schema_migrations` table, is brought up
to date in place on open. Opening a database whose version is newer than this code knows is
refused (an older replica must not write to a newer schema).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rollout.stores.tx import Tx


class SchemaTooNew(Exception):
    """The database was migrated by a newer canary-bot."""


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    statements: tuple[str, ...]
    # Python work after the statements, in the same transaction (data that SQL cannot fix).
    then: Callable[[Tx], None] | None = None


def migrate(tx: Tx, migrations: Sequence[Migration], *, where: str) -> int:
    """Apply the migrations `tx`'s database lacks, in order; its schema version afterwards.

    The caller holds a transaction that excludes other migrators (SQLite: BEGIN IMMEDIATE;
    PostgreSQL: an advisory lock), so replicas starting together migrate once.
    """
    tx.run(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, what TEXT NOT NULL)"
    )
    done = {int(row["version"]) for row in tx.rows("SELECT version FROM schema_migrations")}
    known = max(migration.version for migration in migrations)
    if done and max(done) > known:
        raise SchemaTooNew(
            f"the store {where} is at schema version {max(done)}, newer than this canary-bot "
            f"knows (up to {known}): run the newer canary-bot, or restore a backup"
        )
    for migration in migrations:
        if migration.version in done:
            continue
        for statement in migration.statements:
            tx.run(statement)
        if migration.then is not None:
            migration.then(tx)
        tx.run(
            "INSERT INTO schema_migrations (version, applied_at, what) VALUES (?, ?, ?)",
            [migration.version, datetime.now(UTC).isoformat(), migration.what],
        )
    return known
