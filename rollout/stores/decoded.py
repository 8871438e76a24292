"""Rollout rows as last decoded, so an unchanged row is not decoded again every beat.

Kept apart from rollout/stores/sql.py because it is a cache, not SQL: every beat loads every
active rollout (`Store.active`), and most have not changed since the last beat; decoding their
JSON into a Rollout again was about a tenth of a second of CPU a beat at 1,000 rollouts
(bench/scale.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rollout.model import Rollout

Row = dict[str, Any]


class Decoded:
    """The active rollouts as last decoded, by id, with the row they were decoded from.

    A row that is the same as last time (data, version and sent messages) gives back the same,
    immutable, Rollout; `load_all` keeps only the rollouts it loaded, so the ones that ended
    are dropped with the next beat."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[tuple[Any, ...], Rollout]] = {}

    def load(self, row: Row, decode: Callable[[Row], Rollout]) -> Rollout:
        entry = self._entry(row, decode)
        if entry[1].phase.is_terminal:
            # Ended rollouts (a command's or an API client's read) are not kept: on a replica
            # that does not lead, no beat's `load_all` would ever drop them.
            self._by_id.pop(row["id"], None)
        else:
            self._by_id[row["id"]] = entry
        return entry[1]

    def load_all(self, rows: Sequence[Row], decode: Callable[[Row], Rollout]) -> list[Rollout]:
        fresh = {row["id"]: self._entry(row, decode) for row in rows}
        self._by_id = fresh  # one assignment: a reader on another thread sees old or new
        return [rollout for _, rollout in fresh.values()]

    def _entry(self, row: Row, decode: Callable[[Row], Rollout]) -> tuple[tuple[Any, ...], Rollout]:
        key = (row["data"], row["version"], row["sent"])
        cached = self._by_id.get(row["id"])
        if cached is not None and cached[0] == key:
            return cached
        return key, decode(row)
