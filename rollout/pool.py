"""How rollouts are worked on at once: per-rollout locks and a bounded pool of ticks.

Kept apart from the engine because it is about threads, not rollouts. A rollout has at most
one tick running; a beat leaves out a rollout whose last tick still runs (its calls hang until
their deadline), and the pool's size bounds how many run together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

log = logging.getLogger(__name__)


class Locks:
    """One lock per rollout, made on first use."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def of(self, rollout_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(rollout_id, threading.Lock())


class TickPool:
    def __init__(self, *, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tick")
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def running(self) -> set[str]:
        with self._lock:
            return set(self._running)

    def launch(self, rollout_id: str, work: Callable[[], None]) -> None:
        """Run `work` on the pool unless this rollout's previous work still runs."""

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("tick of %s failed", rollout_id)
            finally:
                with self._lock:
                    self._running.pop(rollout_id, None)

        with self._lock:
            if self._closed:  # stopping: whatever is left is done after the next start-up
                log.info("not starting work on %s: stopping", rollout_id)
                return
            if rollout_id not in self._running:
                self._running[rollout_id] = self._pool.submit(run)

    def drain(self) -> None:
        """Wait for everything running now (tests, benchmarks, shutdown)."""
        with self._lock:
            running = list(self._running.values())
        wait(running)

    def close(self, timeout: float | None = None) -> list[str]:
        """Take no more work, drop what has not begun, and wait up to `timeout` seconds (for
        ever with None) for what runs; returns the rollouts whose work still runs then."""
        with self._lock:
            self._closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)
            for rollout_id, future in list(self._running.items()):
                if future.cancelled():
                    del self._running[rollout_id]
            running = {future: rollout_id for rollout_id, future in self._running.items()}
        _, not_done = wait(running, timeout=timeout)
        return sorted(running[f] for f in not_done)
