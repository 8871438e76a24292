"""Fixtures every test directory may use: a real PostgreSQL server (tests/postgres_server.py).

The server starts once per session, on first use, and each test gets a database of its own.
Without PostgreSQL these tests skip locally with the install command, and fail in CI (`CI`
set), where scripts/test installs it: a real-PostgreSQL test must never silently not run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except PostgresUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL (password included) of a fresh, migrated database for this test alone."""
    return postgres_server.database()
