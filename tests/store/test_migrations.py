"""Schema versions: a file written before versions existed upgrades in place, a fresh database
of either kind starts at the newest version, and a database newer than the code is refused."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from rollout.audit_chain import first_break
from rollout.model import Phase
from rollout.stores import SqliteStore, Store, open_store
from rollout.stores.migrations import SchemaTooNew
from rollout.stores.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from rollout.stores.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from tests.builders import NOW
from tests.store.conftest import Raw

OLD_FILE = Path(__file__).parents[1] / "fixtures" / "store" / "before_versions.sql"


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """A SQLite file as canary-bot wrote it before schema versions (its dump, loaded back)."""
    path = tmp_path / "canary.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(OLD_FILE.read_text())
    return path


def test_a_file_from_before_versions_upgrades_in_place_and_keeps_everything(
    old_file: Path,
) -> None:
    store = SqliteStore(old_file)
    try:
        assert store.schema_version == max(m.version for m in SQLITE_MIGRATIONS) == 2
        [running] = store.active()
        assert (running.id, running.phase, running.version) == ("r-old-1", Phase.PROGRESSING, 0)
        assert [row.key for row in store.unsent()] == ["card"]
        assert store.delivery_seen("delivery-1")
        assert store.measurements("r-old-1", since=NOW) == [{"verdict": "healthy"}]
        assert store.leadership() == (0, None)
        # Old rows and new ones make one chain; the old ones have no epoch.
        store.save(
            running,
            running.evolve(now=NOW + timedelta(minutes=1), phase=Phase.PAUSED),
            actor="U02BOB",
            action="pause",
        )
        rows = store.audit_rows()
        assert [row["id"] for row in rows] == [1, 2, 3, 4]
        assert [row["epoch"] for row in rows] == [None] * 4
        assert first_break(store.audit_export()) is None
        paused = store.get("r-old-1")
        assert paused is not None and (paused.phase, paused.version) == (Phase.PAUSED, 1)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store._db.execute("DELETE FROM audit")  # the triggers survived the upgrade
    finally:
        store.close()
    with closing(sqlite3.connect(old_file)) as connection:
        applied = connection.execute("SELECT version FROM schema_migrations ORDER BY 1")
        assert applied.fetchall() == [(1,), (2,)]


def test_opening_an_upgraded_file_again_applies_nothing(old_file: Path) -> None:
    SqliteStore(old_file).close()
    with closing(sqlite3.connect(old_file)) as connection:
        first = connection.execute("SELECT * FROM schema_migrations").fetchall()
    store = SqliteStore(old_file)
    store.close()
    with closing(sqlite3.connect(old_file)) as connection:
        assert connection.execute("SELECT * FROM schema_migrations").fetchall() == first


def test_a_new_database_starts_at_the_newest_version(store: Store, raw: Raw, kind: str) -> None:
    newest = max(
        m.version for m in (SQLITE_MIGRATIONS if kind == "sqlite" else POSTGRES_MIGRATIONS)
    )
    assert store.schema_version == newest
    assert raw("SELECT max(version) FROM schema_migrations") == [(newest,)]


def test_a_database_newer_than_this_code_is_refused(
    store: Store, raw: Raw, kind: str, where: str
) -> None:
    raw("INSERT INTO schema_migrations (version, applied_at, what) VALUES (99, 'x', 'future')")
    store.close()
    with pytest.raises(SchemaTooNew, match="schema version 99, newer than this canary-bot"):
        open_store(path=where, url=None) if kind == "sqlite" else open_store(path="", url=where)
