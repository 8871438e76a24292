"""Charts off the beat: a worker of their own renders and uploads each snapshot's chart.

A chart costs about 0.2 s of CPU (matplotlib) and an upload of two Slack calls. Neither may hold
up a tick, a request, or another rollout's page: so a snapshot is two outbox rows, queued
together by the decision (rollout/outbox.py): the table, which the outbox sender posts in the
thread's order like any message, and its chart (`kind: chart`), which the sender leaves alone.
This worker, on its own thread, takes a chart row once its table is in the thread, renders it
with the injected `render` (in production in a separate process, bot/chart_renderer.py, so the
bot's own threads do not wait for the GIL either), and uploads it within the budget for file
uploads, after everything else (it is the lowest priority of the outbox).

A chart that fails to render is dropped with a log line: its table is in the thread already.
An upload that fails is tried again with a growing delay; Slack's 429 is honoured. A chart
whose upload was cut short by a crash is uploaded again (files have no key to look for).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from rollout.budget import UPLOAD, WORKSPACE, Call, SlackBudget
from rollout.model import Rollout
from rollout.outbox_table import OutboxRow
from rollout.paced_worker import PacedWorker, Retries
from rollout.ports import Notifier, RateLimited
from rollout.stores import Store

log = logging.getLogger(__name__)

CHART = "chart"
# Renders a rollout's chart as it stood at `at`, with this title: PNG bytes.
Render = Callable[[Rollout, datetime, str], bytes]


class ChartWorker(PacedWorker):
    def __init__(
        self,
        *,
        store: Store,
        notifier: Notifier,
        render: Render,
        budget: SlackBudget | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="chart-worker", log=log, what="chart")
        self._store = store
        self._notifier = notifier
        self._render = render
        self._budget = budget
        self._retries = Retries(monotonic)

    def _round(self) -> float:
        return self.work_due()

    def work_due(self) -> float:
        """Render and upload every chart whose table is in its thread; returns the seconds
        until one may be due again (0 when none waits)."""
        waits: list[float] = []
        for row in self._store.outbox(states=("queued",)):
            if row.entry.get("kind") != CHART or self._stopping.is_set():
                continue
            due = self._retries.due_in(row.seq)
            if self._budget is not None:
                due = max(due, self._budget.wait(Call(UPLOAD, WORKSPACE)))
            if due > 0:
                waits.append(due)
                continue
            wait = self._one(row)
            if wait > 0:
                waits.append(wait)
        return min(waits, default=0.0)

    def _one(self, row: OutboxRow) -> float:
        sent = self._store.sent_messages(row.rollout_id)
        table = str(row.entry["snapshot"])
        if table not in sent:
            return 0.0  # the table is not in the thread yet; the sender's next round posts it
        rollout = self._store.get(row.rollout_id)
        if not self._store.mark_sending(row.seq):
            return 0.0
        if rollout is None or rollout.thread_ts is None or sent[table] is None:
            self._store.mark_sent(row.seq, None)  # no table was posted: no chart either
            return 0.0
        title = str(row.entry["title"])
        at = datetime.fromisoformat(str(row.entry["at"]))
        try:
            png = self._render(rollout, at, title)
        except Exception as error:
            log.error("chart of %s not rendered: %s: %s", rollout.id, type(error).__name__, error)
            self._store.mark_dropped(row.seq)
            return 0.0
        return self._upload(rollout, row, png, title=title, at=at)

    def _upload(
        self, rollout: Rollout, row: OutboxRow, png: bytes, *, title: str, at: datetime
    ) -> float:
        if self._budget is not None:
            self._budget.spend(Call(UPLOAD, WORKSPACE))
        try:
            self._notifier.upload_chart(rollout, png, title=title, at=at)
        except RateLimited as limited:
            self._store.mark_unsent(row.seq, unsure=False)
            if self._budget is not None:
                self._budget.refused(Call(UPLOAD, WORKSPACE), retry_after=limited.retry_after)
            self._retries.wait(row.seq, limited.retry_after)
            return limited.retry_after
        except Exception as error:
            self._store.mark_unsent(row.seq, unsure=True)
            delay = self._retries.failed(row.seq)
            log.warning("chart upload for %s failed (again in %gs): %s", rollout.id, delay, error)
            return delay
        self._store.mark_sent(row.seq, None)
        self._retries.succeeded(row.seq)
        return 0.0
