"""The one way a message reaches Slack: the outbox sender, exactly once per key.

Decisions queue their messages in the store's `outbox` table in the same transaction as the
decision (rollout/store.py). This sender, on its own thread, posts them in the order queued,
rollout by rollout. "Exactly once" rests on three facts, all here:
- a key is one row, so queueing a message again is a no-op;
- before each call the row is marked `sending`; a row found `sending` (a crash) or whose call
  failed in a way that may have landed (a timeout) is `unsure`, and an unsure post is first
  looked for in Slack by the key its metadata carries (`Notifier.find_message`);
- a row is marked `sent` only after Slack answered.
A rate limit (`RateLimited`) pauses sending for its Retry-After and nothing else: the loop
never sleeps inside a tick or a request, it just waits for the next round. Other failures put
the message back with a growing delay; a rollout's later messages wait behind it, so the thread
keeps its order, while other rollouts' messages go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from rollout.analysis import Analysis, Measurement
from rollout.events import Alert
from rollout.machine import Announce, CloseApproval, Page, RequestApproval
from rollout.model import Rollout
from rollout.outbox import from_json
from rollout.ports import Clock, Notifier, RateLimited
from rollout.stores import OutboxRow, Store

log = logging.getLogger(__name__)

BOT = "canary-bot"
# Posts that can be looked for by key after a crash; updates are simply done again.
SEARCHABLE = frozenset({"card", "announce", "page", "request_approval", "snapshot"})
MAX_BACKOFF = 60.0
IDLE_WAIT = 1.0
PAUSED = -1.0
# Judges a snapshot as it was at `at`: the analysis and the history for its chart.
SnapshotSource = Callable[[Rollout, datetime], tuple[Analysis, Sequence[Measurement]] | None]


class OutboxSender:
    def __init__(
        self,
        *,
        store: Store,
        notifier: Notifier,
        clock: Clock,
        snapshots: SnapshotSource,
        monotonic: Callable[[], float] = time.monotonic,
        on_deadline: Callable[[str], None] | None = None,
    ) -> None:
        self._on_deadline = on_deadline or (lambda what: None)
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._snapshots = snapshots
        self._monotonic = monotonic
        self._paused_until = 0.0
        self._retry_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._round = threading.Lock()

    # ----------------------------------------------------------------- the thread

    def start(self) -> None:
        self._store.recover_sending()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        """Something was queued: send it now rather than at the next idle check."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self.send_due()
            except Exception:
                log.exception("outbox round failed")
                wait = IDLE_WAIT
            self._wake.wait(timeout=min(wait, IDLE_WAIT) if wait > 0 else IDLE_WAIT)
            self._wake.clear()

    # ----------------------------------------------------------------- one round

    def send_due(self) -> float:
        """Send every message that is due; returns the seconds until one may be due again
        (0 when nothing waits). Never sleeps."""
        with self._round:
            now = self._monotonic()
            if now < self._paused_until:
                return self._paused_until - now
            by_rollout: dict[str, list[OutboxRow]] = {}
            for row in self._store.outbox(states=("held", "queued")):
                by_rollout.setdefault(row.rollout_id, []).append(row)
            next_due = 0.0
            for rollout_id, rows in by_rollout.items():
                outcome = self._send_rollout(rollout_id, rows)
                if outcome == PAUSED:
                    return self._paused_until - self._monotonic()
                if outcome > 0:
                    next_due = outcome if next_due == 0 else min(next_due, outcome)
            return next_due

    def _send_rollout(self, rollout_id: str, rows: list[OutboxRow]) -> float:
        """Send the rollout's messages in order, stopping at the first that cannot go yet;
        returns the seconds until it may go (0: nothing waits), or PAUSED on a rate limit."""
        for row in rows:
            if row.state == "held":
                return 0.0  # its cluster actions are not done; the release wakes us
            due = self._retry_at.get(row.seq, 0.0) - self._monotonic()
            if due > 0:
                return due
            rollout = self._store.get(rollout_id)
            if rollout is None:
                return 0.0
            try:
                self._send(rollout, row)
            except RateLimited as limited:
                self._store.mark_unsent(row.seq, unsure=False)
                self._paused_until = self._monotonic() + limited.retry_after
                log.warning("Slack rate limit: sending again in %gs", limited.retry_after)
                return PAUSED
            except Exception as error:
                self._store.mark_unsent(row.seq, unsure=True)
                if _timed_out(error):
                    self._on_deadline(f"{row.key} of {rollout_id}")
                failures = self._failures.get(row.seq, 0) + 1
                self._failures[row.seq] = failures
                delay = min(MAX_BACKOFF, 0.5 * 2.0 ** (failures - 1))
                self._retry_at[row.seq] = self._monotonic() + delay
                log.warning(
                    "Slack call for %s %s failed (again in %gs): %s: %s",
                    rollout_id,
                    row.key,
                    delay,
                    type(error).__name__,
                    error,
                )
                return delay
            self._retry_at.pop(row.seq, None)
            self._failures.pop(row.seq, None)
        return 0.0

    def _send(self, rollout: Rollout, row: OutboxRow) -> None:
        kind = row.entry["kind"]
        if row.unsure and kind in SEARCHABLE:
            found = self._notifier.find_message(rollout, row.key)
            if found is not None:
                if self._store.mark_sending(row.seq):
                    self._store.mark_sent(row.seq, found)
                return
        if not self._store.mark_sending(row.seq):
            return  # held again meanwhile (a new decision); its release brings it back
        ts = self._call(rollout, row)
        self._store.mark_sent(row.seq, ts)

    def _call(self, rollout: Rollout, row: OutboxRow) -> str | None:
        """The one Slack call (or few, for a chart) that this row stands for."""
        kind, key = row.entry["kind"], row.key
        if kind == "card":
            if key != "card" and rollout.thread_ts is None:
                return None  # nothing posted to update yet; the card's own post shows it all
            return self._notifier.show_card(rollout, key="card")
        if kind == "snapshot":
            judged = self._snapshots(rollout, datetime.fromisoformat(row.entry["at"]))
            if judged is None or rollout.thread_ts is None:
                return None
            analysis, history = judged
            title = str(row.entry["title"])
            return self._notifier.post_snapshot(
                rollout, analysis, title=title, history=history, key=key
            )
        _, action = from_json(row.entry)
        match action:
            case Announce(event=event):
                return self._notifier.post_event(rollout, event, key=key)
            case Page(alert=alert):
                ts = self._notifier.alert(rollout, alert, key=key)
                self._audit_page(rollout, alert)
                return ts
            case RequestApproval():
                return self._notifier.request_approval(rollout, key=key)
            case CloseApproval():
                if rollout.approval_ts is not None:
                    self._notifier.close_approval(rollout)
                return None
        raise AssertionError(f"unknown outbox entry {row.entry!r}")

    def _audit_page(self, rollout: Rollout, alert: Alert) -> None:
        self._store.audit(
            at=alert.at,
            actor=BOT,
            action="paged on-call",
            rollout_id=rollout.id,
            detail=f"{alert.title}: {alert.detail}",
        )


def _timed_out(error: BaseException) -> bool:
    """A call that ran past its deadline (the client's timeout), however it is wrapped."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, TimeoutError) or isinstance(
            getattr(seen, "reason", None), TimeoutError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
