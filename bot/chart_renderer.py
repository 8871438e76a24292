"""Charts rendered in a process of their own, so matplotlib never holds the bot's GIL.

A chart is about 0.2 s of CPU, nearly all of it Python holding the interpreter lock. Rendered
on a thread of the bot, that is 0.2 s in which the HTTP server's threads answering Slack get
the interpreter only in turns: the acknowledgements of a burst of commands waited behind it
(bench/ack.py). One worker process renders them instead, one at a time; the bot's thread only
reads the history and step marks from the store (milliseconds) and waits for the PNG.

The worker runs only on CPU time nothing else wants (Linux's SCHED_IDLE; elsewhere a niceness
of +10): the cores are shared with the bot's own process, and a chart rendered while a burst of
commands was being answered took the core the answers needed (bench/ack.py records the chart
process's CPU in each round: during a rollout the slowest rounds were the ones beside a chart,
also with the worker at niceness +10). A chart may arrive a little later; an acknowledgement
may not.

The worker is started with `spawn` (never `fork` from a process full of threads) on the first
chart and again after it died; `close()` stops it. A bot killed outright (SIGKILL, the OOM
killer) never calls `close()`, and the pool's worker would wait on its queue for ever: so the
worker watches its parent and exits once the parent is gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from handlers.charts import chart_title, rollout_chart, step_marks_from_audit
from rollout.model import Rollout
from rollout.observer import Observer
from rollout.stores import Store

# A chart that takes longer than this is given up on (its table is in the thread already).
RENDER_TIMEOUT_S = 60.0
# How often the worker looks whether the bot that started it is still there.
PARENT_CHECK_S = 1.0
# Added to the worker's niceness: when the cores are busy, the bot's threads run first.
RENDER_NICENESS = 10


def start_worker(parent: int) -> None:
    """The worker's start: behind the bot for the CPU, and gone when the bot is."""
    os.nice(RENDER_NICENESS)
    # Linux: run only on CPU time nothing else in the container wants. Elsewhere, or when
    # refused, the niceness alone.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    exit_with_parent(parent)


def exit_with_parent(parent: int) -> None:
    """In the worker: leave as soon as `parent` is gone (the worker is then re-parented)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ChartRenderer:
    def __init__(self, *, store: Store, observer: Observer) -> None:
        self._store = store
        self._observer = observer
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, rollout: Rollout, at: datetime, title: str) -> bytes:
        """The rollout's chart as it stood at `at` (PNG bytes)."""
        history = self._observer.history(rollout, since=rollout.created_at, until=at)
        steps = step_marks_from_audit(self._store.audit_rows(rollout.id))
        future = self._executor().submit(
            rollout_chart,
            measurements=history,
            steps=steps,
            title=chart_title(rollout),
            now=at,
        )
        try:
            return future.result(timeout=RENDER_TIMEOUT_S)
        except BrokenProcessPool:
            with self._lock:
                self._pool = None  # the worker died: the next chart starts a new one
            raise

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=start_worker,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
