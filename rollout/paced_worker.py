"""A worker on a thread of its own that runs rounds when told or when work may be due.

The outbox sender (rollout/sender.py) and the chart worker (rollout/chart_worker.py) work the
same way: a round does what is due without ever sleeping, and says how many seconds until more
may be due; the thread then waits that long (at most `IDLE_WAIT`, so work queued by another
replica or left by a crash is found soon) or until `wake` says something was queued. A round
that fails is logged on the worker's own logger (its failures count against the dependency its
module talks to, bot/metrics.py) and tried again after `IDLE_WAIT`. What a round does, and its
pacing within the Slack budget, stay in each worker's module; `Retries` is the growing delay
both give a row whose call failed.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

IDLE_WAIT = 1.0
MAX_BACKOFF = 60.0
STOP_JOIN_TIMEOUT = 30.0


class PacedWorker(ABC):
    """`start`, `stop` and `wake` for a worker whose `_round` returns the seconds until work
    may be due again (0 when nothing waits)."""

    def __init__(self, *, name: str, log: logging.Logger, what: str) -> None:
        self._name = name  # the thread's name
        self._log = log
        self._what = what  # "outbox", "chart": the failed round's log line says which
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _round(self) -> float:
        """Do what is due now, never sleeping; the seconds until more may be due (0: none)."""

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the round under way (a round checks `_stopping` where it can stop early)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_JOIN_TIMEOUT)
            self._thread = None

    def wake(self) -> None:
        """Something was queued: work on it now rather than at the next idle check."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self._round()
            except Exception:
                self._log.exception("%s round failed", self._what)
                wait = IDLE_WAIT
            self._wake.wait(timeout=min(wait, IDLE_WAIT) if wait > 0 else IDLE_WAIT)
            self._wake.clear()


class Retries:
    """When each outbox row (by `seq`) may be tried again: after a failure, 0.5 s doubling up to
    `MAX_BACKOFF`; after a rate limit, its Retry-After. Forgotten once the row went."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._retry_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}

    def due_in(self, seq: int) -> float:
        """Seconds until the row may be tried again (0 or less: now)."""
        return self._retry_at.get(seq, 0.0) - self._monotonic()

    def failed(self, seq: int) -> float:
        """Count one more failure of the row; the delay before it is tried again."""
        failures = self._failures.get(seq, 0) + 1
        self._failures[seq] = failures
        delay = min(MAX_BACKOFF, 0.5 * 2.0 ** (failures - 1))
        self.wait(seq, delay)
        return delay

    def wait(self, seq: int, seconds: float) -> None:
        self._retry_at[seq] = self._monotonic() + seconds

    def succeeded(self, seq: int) -> None:
        self._retry_at.pop(seq, None)
        self._failures.pop(seq, None)
