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


class BeatScheduler:
    def __init__(self, *, url: str, interval: timedelta, beat: Callable[[], None]) -> None:
        self._interval = max(interval.total_seconds(), 1.0)
        self._beat = beat
        self._scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=url)},
            executors={"default": ThreadPoolExecutor(max_workers=1)},
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

    def stop(self) -> None:
        global _beat
        if self._scheduler.running:
            # Pause first so no beat is submitted to an executor that is shutting down.
            self._scheduler.pause()
            self._scheduler.shutdown(wait=True)
        _beat = None
