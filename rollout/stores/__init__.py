"""Durable state behind one `Store` protocol: SQLite (embedded, one replica) or PostgreSQL
(several replicas). `open_store` picks one from the config's `store.url`, which
`CANARY_STORE_URL` overrides (the variable holds the password; the config file never does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rollout.stores.protocol import (
    ActiveRolloutExists,
    FencedOut,
    Message,
    OutboxRow,
    StaleRollout,
    Store,
)
from rollout.stores.sqlite import SqliteStore

STORE_URL_ENV = "CANARY_STORE_URL"

__all__ = [
    "STORE_URL_ENV",
    "ActiveRolloutExists",
    "FencedOut",
    "Message",
    "OutboxRow",
    "SqliteStore",
    "StaleRollout",
    "Store",
    "open_store",
    "store_url",
]


def store_url(configured: str | None, env: Mapping[str, str]) -> str | None:
    """The database URL: `CANARY_STORE_URL` when set, else the config's `store.url`."""
    return env.get(STORE_URL_ENV) or configured or None


def open_store(*, path: str | Path, url: str | None = None) -> Store:
    """PostgreSQL when a URL is given, else the SQLite file at `path`."""
    if url:
        from rollout.stores.postgres import PostgresStore  # SQLAlchemy's engine only when used

        return PostgresStore(url)
    return SqliteStore(path)
