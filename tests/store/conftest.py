"""Every store test runs on both stores: SQLite (a file of the test's own) and PostgreSQL (a
database of the test's own on the real server of tests/postgres_server.py).

`store` is the store under test; `another` opens a second store object on the same database
(another replica, as far as the database can tell); `raw` runs SQL on a connection of its own,
outside the store, the way someone with database access would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rollout.stores import Store, open_store

Opener = Callable[[], Store]
Raw = Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def where(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The SQLite file's path, or the PostgreSQL database's URL."""
    if kind == "sqlite":
        return str(tmp_path / "canary.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def opener(kind: str, where: str) -> Iterator[Opener]:
    opened: list[Store] = []

    def open_one() -> Store:
        store = (
            open_store(path=where, url=None)
            if kind == "sqlite"
            else open_store(path="unused.db", url=where)
        )
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


@pytest.fixture
def another(opener: Opener, store: Store) -> Store:
    return opener()


@pytest.fixture
def raw(kind: str, where: str, store: Store) -> Raw:
    def run(sql: str) -> list[tuple[Any, ...]]:
        if kind == "sqlite":
            with closing(sqlite3.connect(where, isolation_level=None)) as connection:
                return list(connection.execute(sql).fetchall())
        with psycopg.connect(where, autocommit=True) as connection:
            cursor = connection.execute(sql.encode())
            return list(cursor.fetchall()) if cursor.description else []

    return run
