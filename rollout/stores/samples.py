"""The measurements table's side of the store: what each analysis tick measured, per rollout.

A mixin of the stores (rollout/stores/sql.py), kept apart so each file stays one idea. A beat
stores every rollout's measurement in one transaction (`add_measurements`) and reads what its
ticks judge a group of rollouts per query (`stored_measurements_of`, left undecoded); the
chart and a snapshot read one rollout's (`measurements`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from rollout.stores.tx import Tx


class SampleMethods:
    """The measurement methods; the store provides the transactions."""

    def _tx(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def _read(self) -> AbstractContextManager[Tx]:
        raise NotImplementedError

    def add_measurement(self, rollout_id: str, *, at: datetime, data: dict[str, Any]) -> None:
        self.add_measurements([(rollout_id, at, data)])

    def add_measurements(self, rows: Sequence[tuple[str, datetime, dict[str, Any]]]) -> None:
        """A beat's measurements of every rollout (rollout id, at, data), in one transaction
        rather than one each."""
        if not rows:
            return
        with self._tx() as tx:
            for rollout_id, at, data in rows:
                tx.run(
                    "INSERT INTO measurements (rollout_id, at, data) VALUES (?, ?, ?)",
                    [rollout_id, at.isoformat(), json.dumps(data)],
                )

    def measurements(
        self, rollout_id: str, *, since: datetime, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        upto = until.isoformat() if until is not None else "9999"
        with self._read() as tx:
            rows = tx.rows(
                "SELECT data FROM measurements WHERE rollout_id = ? AND at >= ? AND at <= ? "
                "ORDER BY at, id",
                [rollout_id, since.isoformat(), upto],
            )
        return [json.loads(row["data"]) for row in rows]

    def measurements_of(
        self, since: Mapping[str, datetime], *, until: datetime
    ) -> dict[str, list[dict[str, Any]]]:
        """Each rollout's measurements from its own `since` (rollout id -> since) up to
        `until`, in time order: one query for a group of rollouts instead of one each."""
        return {
            rollout_id: [json.loads(text) for _, text in rows]
            for rollout_id, rows in self.stored_measurements_of(since, until=until).items()
        }

    def stored_measurements_of(
        self, since: Mapping[str, datetime], *, until: datetime
    ) -> dict[str, list[tuple[str, str]]]:
        """`measurements_of` as stored, (at, JSON text) per row, for a reader that decodes
        only the rows it reads (a beat's ticks: `Measurement.stored`)."""
        if not since:
            return {}
        marks = ", ".join("?" for _ in since)
        with self._read() as tx:
            rows = tx.rows(
                "SELECT rollout_id, at, data FROM measurements "
                f"WHERE rollout_id IN ({marks}) AND at >= ? AND at <= ? ORDER BY at, id",
                [*since, min(since.values()).isoformat(), until.isoformat()],
            )
        found: dict[str, list[tuple[str, str]]] = {rollout_id: [] for rollout_id in since}
        starts = {rollout_id: at.isoformat() for rollout_id, at in since.items()}
        for row in rows:
            if row["at"] >= starts[row["rollout_id"]]:
                found[row["rollout_id"]].append((row["at"], row["data"]))
        return found
