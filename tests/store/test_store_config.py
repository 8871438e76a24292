"""Choosing the store: `store.url` in the config (no password there, ever), overridden by
`CANARY_STORE_URL`, else the SQLite file at `store.path`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config_loader import ConfigError, load_config_text
from rollout.stores import STORE_URL_ENV, SqliteStore, open_store, store_url
from rollout.stores.postgres import PostgresStore


def store_problem(section: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_text(f"store:\n{section}")
    [problem] = caught.value.problems
    return str(problem)


def test_a_password_in_the_config_file_is_refused_with_where_it_goes() -> None:
    said = store_problem("  url: postgresql://canary:hunter2@db:5432/canary\n")
    assert said.startswith("store.url (line 2): store.url holds a password"), said
    assert "CANARY_STORE_URL" in said and "hunter2" not in said
    said = store_problem("  url: postgresql://canary@db/canary?password=hunter2\n")
    assert "holds a password" in said and "hunter2" not in said


def test_a_url_of_another_database_is_refused() -> None:
    said = store_problem("  url: mysql://canary@db/canary\n")
    assert "must be a PostgreSQL URL like postgresql://" in said, said


def test_a_url_without_a_password_is_taken() -> None:
    config = load_config_text("store:\n  url: postgresql://canary@db.internal:5432/canary\n")
    assert config.store.url == "postgresql://canary@db.internal:5432/canary"


def test_the_environment_overrides_the_config_and_carries_the_password() -> None:
    configured = "postgresql://canary@db/canary"
    secret = "postgresql://canary:s3cret@db/canary"
    assert store_url(configured, {STORE_URL_ENV: secret}) == secret
    assert store_url(configured, {}) == configured
    assert store_url(None, {STORE_URL_ENV: ""}) is None


def test_open_store_picks_postgres_for_a_url_and_sqlite_otherwise(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite = open_store(path=tmp_path / "canary.db", url=None)
    postgres = open_store(path=tmp_path / "unused.db", url=postgres_url)
    try:
        assert isinstance(sqlite, SqliteStore) and isinstance(postgres, PostgresStore)
        assert sqlite.scheduler_url == f"sqlite:///{tmp_path / 'canary.db'}"
        assert postgres.scheduler_url.startswith("postgresql+psycopg://canary:")
        assert not (tmp_path / "unused.db").exists()
    finally:
        sqlite.close()
        postgres.close()
