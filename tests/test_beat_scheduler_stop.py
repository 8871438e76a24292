"""Stopping the beat while it runs logs no error (rollout/scheduler.py `_BeatExecutor`).

The crash-safety test once failed on the bot's log holding APScheduler's "Error submitting job
run_beat to executor default" (RuntimeError: cannot schedule new futures after shutdown) from
its final SIGTERM: the stop shut the executor down, waiting for the beat that was running, and
the scheduler's thread woke for the next beat in that time and submitted it once the executor
was gone. Here the real APScheduler in its SQLite job store is driven into that moment
deterministically: the beat blocks until the test lets it end, and the test lets it end only
once the scheduler's thread has woken for the next beat (its debug line "Looking for jobs to
run", written right before it waits for the job store's lock that the shutdown holds).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from rollout.scheduler import BeatScheduler

SCHEDULER_LOG = "apscheduler.scheduler"


class WokeUp(logging.Handler):
    """Sets `event` when the scheduler's thread looks for due jobs once it is stopped."""

    def __init__(self, scheduler: BeatScheduler) -> None:
        super().__init__(level=logging.DEBUG)
        self.scheduler = scheduler
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "Looking for jobs to run" and not self.scheduler.running:
            self.event.set()


def parked(name: str) -> bool:
    """Is the thread called `name` in its main loop's wait for the next beat (Event.wait right
    under `_main_loop`, not a wait inside the round that submitted the last beat)?"""
    thread = next(t for t in threading.enumerate() if t.name == name)
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None and frame.f_code.co_name == "wait":
        frame = frame.f_back
    return frame is not None and frame.f_code.co_name == "_main_loop"


def wait_until(probe: Callable[[], bool], *, what: str) -> None:
    deadline = time.monotonic() + 10
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.timeout(30)
def test_a_beat_due_while_the_scheduler_stops_is_not_submitted_and_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running, release = threading.Event(), threading.Event()

    def beat() -> None:
        running.set()
        release.wait(timeout=20)

    scheduler = BeatScheduler(
        url=f"sqlite:///{tmp_path / 'beat.db'}", interval=timedelta(seconds=1), beat=beat
    )
    woke = WokeUp(scheduler)
    logger = logging.getLogger(SCHEDULER_LOG)
    logger.addHandler(woke)
    caplog.set_level(logging.DEBUG, logger=SCHEDULER_LOG)
    stopping = threading.Thread(target=scheduler.stop, name="stop")
    try:
        scheduler.start()
        assert running.wait(timeout=10), "the first beat did not run"
        # The scheduler's thread submitted that beat and now waits for the next, due in a
        # second; the stop marks the scheduler stopped and waits for the running beat.
        wait_until(lambda: parked("APScheduler"), what="the scheduler to wait for the next beat")
        stopping.start()
        wait_until(lambda: not scheduler.running, what="the scheduler to be marked stopped")
        assert woke.event.wait(timeout=10), "the scheduler did not wake for the next beat"
    finally:
        release.set()
        if stopping.ident is not None:
            stopping.join(timeout=10)
        logger.removeHandler(woke)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [(r.getMessage(), r.exc_text or r.exc_info) for r in errors]
