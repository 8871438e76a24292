"""The one thing the shared SQL needs of a database: run a statement inside a transaction.

Statements are written once with `?` placeholders and the SQL both SQLite and PostgreSQL
understand (`ON CONFLICT ... DO NOTHING`, correlated subqueries); each store's `Tx` adapts the
placeholders to its driver, and the few fragments that differ are class attributes of the
store (rollout/stores/sql.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Tx(Protocol):
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a query, as dicts by column name."""
        ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it changed."""
        ...
