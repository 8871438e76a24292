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
import threading
import time
from collections.abc import Callable
from datetime import datetime

from rollout.budget import UPLOAD, WORKSPACE, Call, SlackBudget
from rollout.model import Rollout
from rollout.outbox_table import OutboxRow
from rollout.ports import Notifier, RateLimited
from rollout.stores import Store

log = logging.getLogger(__name__)

CHART = "chart"
IDLE_WAIT = 1.0
MAX_BACKOFF = 60.0
# Renders a rollout's chart as it stood at `at`, with this title: PNG bytes.
Render = Callable[[Rollout, datetime, str], bytes]


class ChartWorker:
    def __init__(
        self,
        *,
        store: Store,
        notifier: Notifier,
        render: Render,
        budget: SlackBudget | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._render = render
        self._budget = budget
        self._monotonic = monotonic
        self._retry_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="chart-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self.work_due()
            except Exception:
                log.exception("chart round failed")
                wait = IDLE_WAIT
            self._wake.wait(timeout=min(wait, IDLE_WAIT) if wait > 0 else IDLE_WAIT)
            self._wake.clear()

    def work_due(self) -> float:
        """Render and upload every chart whose table is in its thread; returns the seconds
        until one may be due again (0 when none waits)."""
        waits: list[float] = []
        for row in self._store.outbox(states=("queued",)):
            if row.entry.get("kind") != CHART or self._stopping.is_set():
                continue
            due = self._retry_at.get(row.seq, 0.0) - self._monotonic()
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
            self._retry_at[row.seq] = self._monotonic() + limited.retry_after
            return limited.retry_after
        except Exception as error:
            self._store.mark_unsent(row.seq, unsure=True)
            failures = self._failures.get(row.seq, 0) + 1
            self._failures[row.seq] = failures
            delay = min(MAX_BACKOFF, 0.5 * 2.0 ** (failures - 1))
            self._retry_at[row.seq] = self._monotonic() + delay
            log.warning("chart upload for %s failed (again in %gs): %s", rollout.id, delay, error)
            return delay
        self._store.mark_sent(row.seq, None)
        self._retry_at.pop(row.seq, None)
        self._failures.pop(row.seq, None)
        return 0.0
