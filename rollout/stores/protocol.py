"""The one contract every store keeps: what the engine, sender, handlers and audit CLI may ask.

Two implementations (rollout/stores/sqlite.py, the embedded default; rollout/stores/postgres.py
for several replicas) share their SQL in rollout/stores/sql.py and pass one conformance suite
(tests/store/). Code outside this package names `Store`, never an implementation, so a replica
runs the same way on either database.

Concurrency, in the database rather than in one process's memory:
- a rollout carries the `version` it was read at; `save(before, after)` refuses with
  `StaleRollout` when the stored row is no longer at `before.version` (someone else saved in
  between), changing nothing; the caller reads again and decides again;
- a leader calls `take_leadership` for a fencing token and `fence(token)`; from then on every
  write through that store object checks, inside its own transaction, that no one has taken
  leadership since, or raises `FencedOut` and changes nothing. See rollout/stores/sql.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from rollout.model import Rollout

# (key, entry) of a message to queue with a decision (see rollout/outbox.py).
Message = tuple[str, dict[str, Any]]

# A message key whose row is sent again whenever it is queued again (the card's update shows
# the rollout as it is when sent, so one queued update stands for any number of changes).
REFRESHED_KEYS = frozenset({"card:update"})
# The sent messages whose ts the rollout record carries.
TS_FIELDS = {"card": "thread_ts", "approval": "approval_ts"}


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    rollout_id: str
    key: str
    entry: dict[str, Any]
    state: str
    unsure: bool


class ActiveRolloutExists(Exception):
    """A service may have one active rollout at a time."""

    def __init__(self, existing: Rollout) -> None:
        super().__init__(f"{existing.service} already has an active rollout ({existing.id})")
        self.existing = existing


class StaleRollout(Exception):
    """The rollout was saved by someone else since it was read; nothing was written."""

    def __init__(self, rollout_id: str, *, read: int, stored: int | None) -> None:
        now = "is gone" if stored is None else f"is at version {stored}"
        super().__init__(
            f"rollout {rollout_id} was read at version {read} but {now}: read it again "
            "and decide again"
        )
        self.rollout_id = rollout_id
        self.read = read
        self.stored = stored


class FencedOut(Exception):
    """This store's fencing token is no longer the leadership epoch: another replica took
    over, so this one must not write. Nothing was written."""

    def __init__(self, token: int, epoch: int) -> None:
        super().__init__(
            f"fenced out: this replica writes as leader epoch {token}, but epoch {epoch} "
            "has taken over; it must stop acting as leader"
        )
        self.token = token
        self.epoch = epoch


class Store(Protocol):
    """Durable state: rollouts, the append-only audit log, the outbox, deliveries, samples."""

    # ----------------------------------------------------------------- rollouts
    def create(
        self,
        rollout: Rollout,
        *,
        actor: str,
        detail: str | None = None,
        idempotency: tuple[str, str] | None = None,
    ) -> None: ...

    def idempotent(self, key: str) -> tuple[str, str] | None: ...

    def save(
        self,
        before: Rollout,
        after: Rollout,
        *,
        actor: str,
        action: str,
        detail: str | None = None,
        audit: bool = True,
        messages: Sequence[Message] = (),
        hold: bool = False,
        release_upto: int | None = None,
        drop_stale_pages: bool = False,
    ) -> int: ...

    def get(self, rollout_id: str) -> Rollout | None: ...
    def active(self) -> list[Rollout]: ...
    def active_for(self, service: str) -> Rollout | None: ...
    def history(self, service: str, *, limit: int = 10) -> list[Rollout]: ...

    # ----------------------------------------------------------------- audit
    def audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        rollout_id: str | None = None,
        detail: str | None = None,
    ) -> None: ...

    def audit_rows(self, rollout_id: str | None = None) -> list[dict[str, Any]]: ...
    def audit_after(self, last_id: int, *, limit: int = 5000) -> list[dict[str, Any]]: ...
    def audit_export(
        self, *, since: datetime | None = None, service: str | None = None
    ) -> list[dict[str, Any]]: ...

    # ----------------------------------------------------------------- outbox
    def release(self, rollout_id: str, *, upto: int) -> int: ...
    def holding(self) -> set[str]: ...
    def outbox_mark(self, rollout_id: str) -> int: ...
    def queue(self, rollout_id: str, messages: Sequence[Message]) -> None: ...
    def outbox(
        self, *, states: Sequence[str] = ("held", "queued", "sending")
    ) -> list[OutboxRow]: ...
    def unsent(self, rollout_id: str | None = None) -> list[OutboxRow]: ...
    def sent_messages(self, rollout_id: str) -> dict[str, str | None]: ...
    def mark_sending(self, seq: int) -> bool: ...
    def mark_sent(self, seq: int, ts: str | None) -> None: ...
    def mark_unsent(self, seq: int, *, unsure: bool) -> None: ...
    def mark_dropped(self, seq: int) -> None: ...
    def recover_sending(self) -> None: ...

    # ----------------------------------------------------------------- deliveries, samples
    def delivery_seen(self, key: str) -> bool: ...
    def first_delivery(self, key: str, *, at: datetime) -> bool: ...
    def add_measurement(self, rollout_id: str, *, at: datetime, data: dict[str, Any]) -> None: ...
    def add_measurements(self, rows: Sequence[tuple[str, datetime, dict[str, Any]]]) -> None: ...
    def measurements(
        self, rollout_id: str, *, since: datetime, until: datetime | None = None
    ) -> list[dict[str, Any]]: ...
    def measurements_of(
        self, since: Mapping[str, datetime], *, until: datetime
    ) -> dict[str, list[dict[str, Any]]]: ...
    def stored_measurements_of(
        self, since: Mapping[str, datetime], *, until: datetime
    ) -> dict[str, list[tuple[str, str]]]: ...

    # ----------------------------------------------------------------- leadership
    def take_leadership(self, holder: str, *, at: datetime | None = None) -> int: ...
    def fence(self, token: int | None) -> None: ...
    def leadership(self) -> tuple[int, str | None]: ...

    # ----------------------------------------------------------------- the database itself
    @property
    def scheduler_url(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...
