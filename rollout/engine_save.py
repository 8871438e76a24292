"""Read, decide, save: the one way the engine records a decision and queues its messages.

Split out of rollout/engine.py because it is the engine's transaction discipline, apart from
what a tick or a gate decides: under a rollout's record lock (database work only, never a
cluster call) the record is read, the decision taken on it, and the new record saved with its
outbox messages in one transaction. A save refused as stale (another replica saved in between)
is decided again on a fresh read.

A beat has already read every active rollout (`Store.active`), so its ticks decide on that
record (`known`) instead of reading it again: at 1,000 rollouts that was 1,000 reads a beat
(plus the tick's own and one after it). Such a record may be older than the stored one (a
command saved since the beat read it). A save from it is refused as stale like any other and
decided again; a decision that changes nothing saves nothing, so before it acts on the cluster
or releases held messages on an old record's say-so, the stored version is checked (one read,
only then), and a newer one is decided again the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from rollout import outbox
from rollout.cluster import OUTCOME, outcome_name
from rollout.machine import ClusterAction, Decision
from rollout.machine.ticks import HOLD_BOOKKEEPING
from rollout.model import Phase, Rollout
from rollout.pool import Locks
from rollout.stores import Message, StaleRollout, Store

# The engine's logger: bot/metrics.py counts its reports as the engine's.
log = logging.getLogger("rollout.engine")

BOT = "canary-bot"
ALL = 2**62  # an outbox mark above every row
Decide = Callable[[Rollout], Decision]
Extra = Callable[[Rollout, Decision], list[Message]]
# A record already read (by the beat) and whether the rollout had held messages at that read.
Known = tuple[Rollout, bool]
T = TypeVar("T")
# A save refused as stale is retried on a fresh read this many times in all: each refusal means
# another replica saved in between, which happens once in a while, not in a loop.
STALE_ATTEMPTS = 5


# The hold's bookkeeping (rollout/machine/ticks.py) is audited when the hold begins and ends
# (`no_data_since`), not at a tick that saves it with another change: 1,000 rollouts held
# through a Prometheus outage wrote 1,000 audit rows a tick (bench/scale.py).


def worth_auditing(before: Rollout, after: Rollout) -> bool:
    """A change the audit log records: anything but the verdict shown on the card and, on a
    tick that found no data, the hold's bookkeeping."""
    unaudited: dict[str, Any] = {"verdict": before.verdict}
    if after.no_data_seen_at is not None and after.no_data_seen_at != before.no_data_seen_at:
        unaudited |= {name: getattr(before, name) for name in HOLD_BOOKKEEPING}
    return replace(after, **unaudited) != before


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
        known: Known | None = None,
    ) -> tuple[Decision, int]:
        """Read the rollout, decide, save the decision with its messages: under the record
        lock, database work only. Returns the decision (its rollout at the version it is
        stored at) and the outbox mark to release up to.

        `known`: the record as the caller read it, and whether it had held messages then; the
        first attempt decides on it rather than reading again (see the module docstring).

        `settle`: a tick's decision that asks for no cluster action means none is outstanding
        (the machine asks again for every one until it holds), so every held message may go;
        this frees what a crash between an action and its release left held.

        Another replica may save the rollout between our read and our save (a command it
        recorded): the store refuses the stale save, and we read again and decide again."""
        first = [known] if known is not None else []
        once = partial(
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
        with self._records.of(rollout_id):
            # Only the first attempt may use the known record; a retry reads afresh.
            return again_if_stale(lambda: once(known=first.pop() if first else None))

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
        known: Known | None,
    ) -> tuple[Decision, int]:
        before, may_hold = known if known is not None else (self._store.get(rollout_id), True)
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
            may_hold=may_hold,
            read_earlier=known is not None,
        )
        if mark.saved:
            # The store's version went up by one with the save (`Store.save`).
            decision = replace(
                decision, rollout=replace(decision.rollout, version=before.version + 1)
            )
        return decision, mark.mark

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
        may_hold: bool = True,
        read_earlier: bool = False,
    ) -> Saved:
        """Save the decision taken on `before` with its messages. `may_hold`: False when the
        rollout had no held message when `before` was read, so a decision that changes
        nothing need not look for any to release. `read_earlier`: `before` was not read under
        the record lock (a beat's), so it is checked to be current before a decision that
        changes nothing acts on it (StaleRollout otherwise)."""
        after = decision.rollout
        messages = [] if quiet else outbox.messages(before, decision, extra=extra)
        if after == before and not messages:
            acts = any(isinstance(a, ClusterAction) for a in decision.actions)
            release = release_upto is not None and may_hold
            if read_earlier and (acts or release):
                self._check_current(before)
            if (
                release_upto is not None
                and release
                and self._store.release(after.id, upto=release_upto)
            ):
                self._on_queued()
            if not acts:
                # Nothing is released after this decision, so its mark is never used: no
                # query for it on every quiet tick.
                return Saved(ALL, saved=False)
            return Saved(self._store.outbox_mark(after.id), saved=False)
        audited = worth_auditing(before, after)
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
        return Saved(mark, saved=True)

    def _check_current(self, before: Rollout) -> None:
        stored = self._store.get(before.id)
        if stored is None or stored.version != before.version:
            found = None if stored is None else stored.version
            raise StaleRollout(before.id, read=before.version, stored=found)


@dataclass(frozen=True)
class Saved:
    """What `Recorder.save` did: the outbox mark to release up to, and whether it wrote."""

    mark: int
    saved: bool
