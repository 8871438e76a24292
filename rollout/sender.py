"""The one way a message reaches Slack: the outbox sender, exactly once per key.

Decisions queue their messages in the store's `outbox` table in the same transaction as the
decision (rollout/store.py). This sender, on its own thread, posts them in the order queued,
rollout by rollout. "Exactly once" rests on three facts, all here:
- a key is one row, so queueing a message again is a no-op;
- before each call the row is marked `sending`; a row found `sending` (a crash) or whose call
  failed in a way that may have landed (a timeout) is `unsure`, and an unsure post is first
  looked for in Slack by the key its metadata carries (`Notifier.find_message`);
- a row is marked `sent` only after Slack answered.
When several messages may go, the most urgent goes first (rollout/budget.py): pages and
rollback notices, then thread messages, then card refreshes, each within the Slack budget of
its method; a card refresh shows the rollout as it is when sent, so any number of changes
queued meanwhile are one call. A rate limit (`RateLimited`) closes that method's bucket for its
Retry-After (without a budget: all sending) and nothing else: the loop never sleeps inside a
tick or a request, it just waits for the next round. Other failures put the message back with
a growing delay; a rollout's later messages wait behind it, so the thread keeps its order,
while other rollouts' messages go on. Charts are not sent here but by the chart worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from rollout.analysis import Analysis, Measurement
from rollout.budget import POST, REFRESH, UPDATE, WORKSPACE, Call, SlackBudget, priority
from rollout.chart_worker import CHART
from rollout.events import Alert
from rollout.machine import Announce, CloseApproval, Page, RequestApproval
from rollout.model import Rollout
from rollout.outbox import from_json
from rollout.paced_worker import PacedWorker, Retries
from rollout.ports import Clock, Notifier, RateLimited
from rollout.stores import OutboxRow, Store

log = logging.getLogger(__name__)

BOT = "canary-bot"
# Posts that can be looked for by key after a crash; updates are simply done again.
SEARCHABLE = frozenset({"card", "announce", "page", "request_approval", "snapshot"})
PAUSED = -1.0
# Judges a snapshot as it was at `at`: the analysis and the history for its chart.
SnapshotSource = Callable[[Rollout, datetime], tuple[Analysis, Sequence[Measurement]] | None]


class OutboxSender(PacedWorker):
    def __init__(
        self,
        *,
        store: Store,
        notifier: Notifier,
        clock: Clock,
        snapshots: SnapshotSource,
        monotonic: Callable[[], float] = time.monotonic,
        on_deadline: Callable[[str], None] | None = None,
        budget: SlackBudget | None = None,
        alert_channel: str | None = None,
    ) -> None:
        super().__init__(name="outbox-sender", log=log, what="outbox")
        self._budget = budget  # None: no pacing of our own (Slack's 429s pause everything)
        self._alert_channel = alert_channel
        self._on_deadline = on_deadline or (lambda what: None)
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._snapshots = snapshots
        self._monotonic = monotonic
        self._paused_until = 0.0
        self._retries = Retries(monotonic)
        self._round_lock = threading.Lock()

    def start(self) -> None:
        """Rows left `sending` by a crash become `unsure` before the first round."""
        self._store.recover_sending()
        super().start()

    def _round(self) -> float:
        return self.send_due()

    def send_due(self) -> float:
        """Send what is due, most urgent first, within the Slack budget; returns the seconds
        until something may be due again (0 when nothing waits). Never sleeps."""
        with self._round_lock:
            if self._monotonic() < self._paused_until:
                return self._paused_until - self._monotonic()
            round_ = _Round(self._store.outbox(states=("held", "queued")))
            waits: list[float] = []
            while True:
                row, wait = self._pick(round_)
                if wait > 0:
                    waits.append(wait)
                if row is None:
                    return min(waits, default=0.0)
                outcome = self._send_row(row, round_)
                if outcome == PAUSED:
                    return self._paused_until - self._monotonic()
                if outcome > 0:
                    waits.append(outcome)

    def _pick(self, round_: _Round) -> tuple[OutboxRow | None, float]:
        """The most urgent row that may go now, and the shortest wait of those that may not."""
        wait = float("inf")
        for row in sorted(round_.candidates(), key=lambda r: (round_.urgency(r), r.seq)):
            rollout = round_.rollout(row.rollout_id, self._store)
            if rollout is None:
                round_.skip(row)
                continue
            due = self._retries.due_in(row.seq)
            if self._budget is not None:
                due = max(due, self._budget.wait(self._cost(rollout, row)))
            if due <= 0:
                return row, 0.0
            wait = min(wait, due)
        return None, (0.0 if wait == float("inf") else wait)

    def _send_row(self, row: OutboxRow, round_: _Round) -> float:
        """Send one row; 0 when it went (its rollout's next row may follow), the seconds
        until it may be tried again otherwise (its rollout waits behind it), or PAUSED."""
        rollout = round_.rollout(row.rollout_id, self._store)
        assert rollout is not None
        cost = self._cost(rollout, row)
        if self._budget is not None:
            self._budget.spend(cost)
        try:
            self._send(rollout, row)
        except RateLimited as limited:
            self._store.mark_unsent(row.seq, unsure=False)
            log.warning("Slack rate limit: sending again in %gs", limited.retry_after)
            round_.skip(row)
            if self._budget is None:
                self._paused_until = self._monotonic() + limited.retry_after
                return PAUSED
            self._budget.refused(cost, retry_after=limited.retry_after)
            return limited.retry_after
        except Exception as error:
            round_.skip(row)
            return self._failed(rollout, row, error)
        self._retries.succeeded(row.seq)
        round_.sent(row)
        return 0.0

    def _failed(self, rollout: Rollout, row: OutboxRow, error: Exception) -> float:
        self._store.mark_unsent(row.seq, unsure=True)
        if _timed_out(error):
            self._on_deadline(f"{row.key} of {rollout.id}")
        delay = self._retries.failed(row.seq)
        log.warning(
            "Slack call for %s %s failed (again in %gs): %s: %s",
            rollout.id,
            row.key,
            delay,
            type(error).__name__,
            error,
        )
        return delay

    def _cost(self, rollout: Rollout, row: OutboxRow) -> Call:
        """The Slack method a row's call is counted against, and in which scope."""
        kind = row.entry["kind"]
        if kind == "close_approval" or (kind == "card" and row.key != "card"):
            return Call(UPDATE, WORKSPACE)
        if kind == "page":
            return Call(POST, self._alert_channel or rollout.channel)
        return Call(POST, rollout.channel)

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
            # The table only: its chart is a row of its own, rendered and uploaded by the
            # chart worker (rollout/chart_worker.py), so no message waits for matplotlib.
            judged = self._snapshots(rollout, datetime.fromisoformat(row.entry["at"]))
            if judged is None or rollout.thread_ts is None:
                return None
            analysis, _history = judged
            return self._notifier.post_snapshot(
                rollout, analysis, title=str(row.entry["title"]), key=key
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


class _Round:
    """One round's view of the outbox: each rollout's messages in the order queued (only the
    first unsent one is a candidate, so a thread keeps its order) and the card refreshes,
    which wait for nothing but the budget. Chart rows belong to the chart worker."""

    def __init__(self, rows: Sequence[OutboxRow]) -> None:
        self._chains: dict[str, list[OutboxRow]] = {}
        self._refreshes: dict[int, OutboxRow] = {}
        self._rollouts: dict[str, Rollout | None] = {}
        # Worked out once a round, not once per sort key: a round sorts its candidates for
        # every row it sends, and a backlog is thousands of rows.
        self._priority: dict[int, int] = {}
        self._chain_urgency: dict[str, int] = {}
        for row in rows:
            if row.entry.get("kind") == CHART:
                continue
            self._priority[row.seq] = priority(row.key, row.entry)
            if self._priority[row.seq] == REFRESH:
                if row.state != "held":  # held: its decision's cluster work is not done
                    self._refreshes[row.seq] = row
                continue
            self._chains.setdefault(row.rollout_id, []).append(row)
        for rollout_id in self._chains:
            self._rank_chain(rollout_id)

    def candidates(self) -> list[OutboxRow]:
        heads = [rows[0] for rows in self._chains.values() if rows and rows[0].state != "held"]
        return heads + list(self._refreshes.values())

    def urgency(self, row: OutboxRow) -> int:
        """A chain's head is as urgent as the most urgent row behind it: a page queued behind
        its rollout's unposted card must not wait for every other rollout's card to go first
        (at one message a second per channel, a thousand cards are a quarter of an hour)."""
        chain = self._chains.get(row.rollout_id)
        if chain and chain[0].seq == row.seq:
            return self._chain_urgency[row.rollout_id]
        return self._priority[row.seq]

    def _rank_chain(self, rollout_id: str) -> None:
        chain = self._chains[rollout_id]
        if chain:
            self._chain_urgency[rollout_id] = min(self._priority[r.seq] for r in chain)

    def rollout(self, rollout_id: str, store: Store) -> Rollout | None:
        if rollout_id not in self._rollouts:
            self._rollouts[rollout_id] = store.get(rollout_id)
        return self._rollouts[rollout_id]

    def sent(self, row: OutboxRow) -> None:
        if self._refreshes.pop(row.seq, None) is None:
            self._chains[row.rollout_id].pop(0)
            self._rank_chain(row.rollout_id)
        self._rollouts.pop(row.rollout_id, None)  # a sent card gives the rollout its thread

    def skip(self, row: OutboxRow) -> None:
        """Nothing more of this row this round; a rollout's later messages wait behind it."""
        if self._refreshes.pop(row.seq, None) is None:
            self._chains[row.rollout_id] = []
