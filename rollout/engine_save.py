"""Read, decide, save: the one way the engine records a decision and queues its messages.

Split out of rollout/engine.py because it is the engine's transaction discipline, apart from
what a tick or a gate decides: under a rollout's record lock (database work only, never a
cluster call) the record is read, the decision taken on it, and the new record saved with its
outbox messages in one transaction. A save refused as stale (another replica saved in between)
is decided again on a fresh read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from rollout import outbox
from rollout.cluster import OUTCOME, outcome_name
from rollout.machine import ClusterAction, Decision
from rollout.model import Phase, Rollout
from rollout.pool import Locks
from rollout.stores import Message, StaleRollout, Store

# The engine's logger: bot/metrics.py counts its reports as the engine's.
log = logging.getLogger("rollout.engine")

BOT = "canary-bot"
ALL = 2**62  # an outbox mark above every row
Decide = Callable[[Rollout], Decision]
Extra = Callable[[Rollout, Decision], list[Message]]
T = TypeVar("T")
# A save refused as stale is retried on a fresh read this many times in all: each refusal means
# another replica saved in between, which happens once in a while, not in a loop.
STALE_ATTEMPTS = 5


def again_if_stale(attempt: Callable[[], T]) -> T:
    """Run read-decide-save again while the store refuses the save as stale."""
    retrying = Retrying(
        retry=retry_if_exception_type(StaleRollout),
        stop=stop_after_attempt(STALE_ATTEMPTS),
        before_sleep=lambda state: log.info("stale save, deciding again: %s", state.outcome),
        reraise=True,
    )
    return retrying(attempt)


class Recorder:
    """Saves decisions under each rollout's record lock; wakes the senders when it queued."""

    def __init__(self, *, store: Store, records: Locks, on_queued: Callable[[], None]) -> None:
        self._store = store
        self._records = records
        self._on_queued = on_queued

    def decide(
        self,
        rollout_id: str,
        decide: Decide,
        *,
        action: str = "tick",
        extra: Extra | None = None,
        quiet: bool = False,
        settle: bool = False,
        release_upto: int | None = None,
        released: bool = False,
    ) -> tuple[Decision, int]:
        """Read the rollout, decide, save the decision with its messages: under the record
        lock, database work only. Returns the decision and the outbox mark to release up to.

        `settle`: a tick's decision that asks for no cluster action means none is outstanding
        (the machine asks again for every one until it holds), so every held message may go;
        this frees what a crash between an action and its release left held.

        Another replica may save the rollout between our read and our save (a command it
        recorded): the store refuses the stale save, and we read again and decide again."""
        with self._records.of(rollout_id):
            return again_if_stale(
                partial(
                    self._decide_once,
                    rollout_id,
                    decide,
                    action=action,
                    extra=extra,
                    quiet=quiet,
                    settle=settle,
                    release_upto=release_upto,
                    released=released,
                )
            )

    def _decide_once(
        self,
        rollout_id: str,
        decide: Decide,
        *,
        action: str,
        extra: Extra | None,
        quiet: bool,
        settle: bool,
        release_upto: int | None,
        released: bool,
    ) -> tuple[Decision, int]:
        before = self._store.get(rollout_id)
        assert before is not None
        decision = decide(before)
        if settle and not any(isinstance(a, ClusterAction) for a in decision.actions):
            release_upto, released = ALL, True
        # A rollback the machine gave up on is paged about at once, however it stands.
        release = release_upto is not None and (released or decision.rollout.phase == Phase.FAILED)
        mark = self.save(
            before,
            decision,
            actor=BOT,
            action=outcome_name(before, decision.rollout) if action == OUTCOME else action,
            quiet=quiet,
            extra=extra(before, decision) if extra is not None else [],
            release_upto=release_upto if release else None,
        )
        return decision, mark

    def save(
        self,
        before: Rollout,
        decision: Decision,
        *,
        actor: str,
        action: str,
        detail: str | None = None,
        quiet: bool = False,
        extra: Sequence[Message] = (),
        release_upto: int | None = None,
    ) -> int:
        after = decision.rollout
        messages = [] if quiet else outbox.messages(before, decision, extra=extra)
        if after == before and not messages:
            if release_upto is not None and self._store.release(after.id, upto=release_upto):
                self._on_queued()
            if not any(isinstance(a, ClusterAction) for a in decision.actions):
                # Nothing is released after this decision, so its mark is never used: no
                # query for it on every quiet tick.
                return ALL
            return self._store.outbox_mark(after.id)
        audited = replace(after, verdict=before.verdict) != before
        mark = self._store.save(
            before,
            after,
            actor=actor,
            action=action,
            detail=detail,
            audit=audited,
            messages=messages,
            hold=any(isinstance(a, ClusterAction) for a in decision.actions),
            release_upto=release_upto,
            drop_stale_pages=after.phase == Phase.FAILED and before.phase != Phase.FAILED,
        )
        if messages or release_upto is not None:
            self._on_queued()
        return mark
