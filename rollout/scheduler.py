"""The analysis beat: one persistent APScheduler job that ticks every active rollout.

Why one job and not one timer per rollout: analysis queries are batched across all rollouts
(the same few PromQL queries per tick, however many rollouts run), which needs every due
rollout in hand at once. Step deadlines, readiness deadlines and approval timeouts are stored
with each rollout in the store, and each beat compares them with the clock, so nothing about a
rollout's progress lives in the scheduler's memory. The job itself lives in APScheduler's
SQLAlchemy job store in the store's own database (`Store.scheduler_url`: the SQLite file,
or the PostgreSQL database), with coalescing (a bot that was down runs one
catch-up beat, not one per missed second) and a misfire grace time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)

JOB_ID = "canary-bot-analysis-beat"
_beat: Callable[[], None] | None = None


def run_beat() -> None:
    """The job's target, referenced by name in the job store so it survives restarts."""
    if _beat is None:
        log.warning("analysis beat fired before the engine was wired; skipped")
        return
    _beat()


class _BeatExecutor(ThreadPoolExecutor):  # type: ignore[misc]  # untyped library
    """APScheduler's thread pool executor, which lets a stop race its wake-up quietly.

    `BackgroundScheduler.shutdown` marks the scheduler stopped, then shuts its executor down
    under the job store's lock, waiting for a beat that is running. A wake-up of the scheduler's
    thread in that time (its timer, the next beat due) is past the only check for a stopped
    or paused scheduler and waits for that lock; once it has it, it submits the beat to the
    shut-down pool, which raises, and APScheduler logs "Error submitting job" with a traceback
    although nothing is wrong: the bot is stopping. Both happen under that lock, so a beat
    submitted after the shutdown is simply not run."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self._shut_down = False

    def shutdown(self, wait: bool = True) -> None:
        self._shut_down = True
        super().shutdown(wait)

    def _do_submit_job(self, job: Any, run_times: Any) -> None:
        if self._shut_down:
            log.debug("the beat was due as the scheduler stopped: not run")
            return
        super()._do_submit_job(job, run_times)


class BeatScheduler:
    def __init__(self, *, url: str, interval: timedelta, beat: Callable[[], None]) -> None:
        self._interval = max(interval.total_seconds(), 1.0)
        self._beat = beat
        self._scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=url)},
            executors={"default": _BeatExecutor()},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(max(30, 3 * self._interval)),
            },
            timezone="UTC",
        )

    def start(self) -> None:
        global _beat
        _beat = self._beat
        self._scheduler.start()
        # replace_existing keeps one job across restarts and picks up a changed interval.
        self._scheduler.add_job(
            "rollout.scheduler:run_beat",
            trigger="interval",
            seconds=self._interval,
            id=JOB_ID,
            replace_existing=True,
        )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def stop(self) -> None:
        global _beat
        if self._scheduler.running:
            # Pause first so that no new beat begins while a running one finishes; a wake-up
            # already under way when it stops is `_BeatExecutor`'s.
            self._scheduler.pause()
            self._scheduler.shutdown(wait=True)
        _beat = None
