"""The audit log's hash chain: each row seals its own fields and the row before it.

The store computes a row's hash when it inserts the row, in the same transaction; an export
carries every row with `prev_hash` and `hash`, so whoever holds the file can check it without
the database. A changed field breaks that row's own hash; a deleted, inserted or reordered
row breaks the link to its neighbour.

Canonical serialisation (what the hash covers), version 1: the JSON array

    [1, id, at, rollout_id, actor, action, before, after, detail, prev_hash]

with `id` an integer and every other field a string, an absent field (NULL) written as ""
(so a CSV export, which cannot tell NULL from "", verifies the same), serialised with
`json.dumps(..., ensure_ascii=False, separators=(",", ":"))` and encoded as UTF-8. `hash` is
the lower-case hex SHA-256 of those bytes. The first row's `prev_hash` is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHAIN_VERSION = 1
GENESIS = "0" * 64
# The columns the hash covers, in order; an export has these plus `prev_hash` and `hash`.
FIELDS = ("id", "at", "rollout_id", "actor", "action", "before", "after", "detail")
EXPORT_FIELDS = (*FIELDS, "prev_hash", "hash")


def canonical(row: Mapping[str, Any], *, prev_hash: str) -> bytes:
    values: list[Any] = [CHAIN_VERSION, int(row["id"])]
    values += ["" if row.get(name) is None else str(row[name]) for name in FIELDS[1:]]
    values.append(prev_hash)
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def row_hash(row: Mapping[str, Any], *, prev_hash: str) -> str:
    return hashlib.sha256(canonical(row, prev_hash=prev_hash)).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain breaks: the row (by its `id`), its place in the file, and why."""

    row_id: str
    position: int  # 1-based among the file's rows
    reason: str

    def __str__(self) -> str:
        return f"row {self.row_id} (record {self.position} of the file): {self.reason}"


def first_break(rows: Iterable[Mapping[str, Any]], *, partial: bool = False) -> ChainBreak | None:
    """The first row of an export at which the chain does not hold, or None when it holds.

    A full export's rows follow each other id by id: a gap is a deleted row. With `partial`
    (an export of one service) gaps are expected; each row's own hash is still checked, and
    links are checked between rows whose ids follow each other.
    """
    previous: Mapping[str, Any] | None = None
    for position, row in enumerate(rows, start=1):
        row_id = str(row.get("id", "?"))
        problem = _own_problem(row)
        if problem is None and previous is not None:
            problem = _link_problem(previous, row, partial=partial)
        if problem is not None:
            return ChainBreak(row_id, position, problem)
        previous = row
    return None


def _own_problem(row: Mapping[str, Any]) -> str | None:
    missing = [name for name in ("id", "prev_hash", "hash") if not row.get(name)]
    if missing:
        return f"no {', '.join(missing)}: not a row of a canary-bot audit export"
    try:
        expected = row_hash(row, prev_hash=str(row["prev_hash"]))
    except ValueError:
        return f"id {row['id']!r} is not a number"
    if expected != row["hash"]:
        return "its hash does not match its contents: a field of this row was changed"
    return None


def _link_problem(
    previous: Mapping[str, Any], row: Mapping[str, Any], *, partial: bool
) -> str | None:
    before, this = int(previous["id"]), int(row["id"])
    if this <= before:
        return f"it comes after row {before}: rows were reordered or repeated"
    if this != before + 1:
        if partial:
            return None
        gone = f"row {before + 1}" if this == before + 2 else f"rows {before + 1}-{this - 1}"
        return f"{gone} before it {'is' if this == before + 2 else 'are'} missing"
    if row["prev_hash"] != previous["hash"]:
        return f"its prev_hash is not the hash of row {before}: the chain was re-linked"
    return None
