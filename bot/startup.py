"""Start-up of a runtime: reconcile the cluster with the store, then start the beat.

Split out of bot/runtime.py (which wires the parts) because this is the runtime's life over
time: reconciliation runs in the background and is retried with back-off until every active
rollout holds its stored weight again, `/readyz` reports the attempts meanwhile, ticking starts
after the first pass whatever came of it, and stop() cuts a back-off short. With several
replicas it runs each time this replica takes the Lease (bot/ha.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tenacity import Retrying, retry_if_result, wait_exponential

# The runtime's logger, as before the split (operators' log filters name it).
log = logging.getLogger("bot.runtime")

# Start-up reconciliation is retried with back-off up to this many seconds between attempts.
RECONCILE_BACKOFF_MAX_S = 30.0
# stop() waits this long for a reconciliation attempt in flight (its calls have deadlines).
STARTUP_JOIN_TIMEOUT_S = 15.0


class Startup:
    """Reconciles (on a thread of its own, or when called), then begins ticking once."""

    def __init__(
        self,
        *,
        reconcile: Callable[[], bool],
        begin_ticking: Callable[[], None],
        before: Callable[[], None],
    ) -> None:
        self._reconcile = reconcile
        self._begin_ticking = begin_ticking
        self._before = before
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()
        self._ticking = False
        self.attempts = 0
        self._thread = threading.Thread(target=self._run, name="startup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def readiness(self) -> str:
        if self.ready.is_set():
            return "reconciled"
        return f"reconciling active rollouts (attempt {self.attempts})"

    def _run(self) -> None:
        # Group memberships first (one round, then in the background), so the first commands
        # find the approver groups known; on this thread, so a slow Slack delays readiness,
        # never serving.
        self._before()
        self.reconcile_then_tick()

    def reconcile_then_tick(self) -> None:
        """Reconcile (retried with back-off), then tick; with several replicas this runs when
        this replica takes the Lease (bot/ha.py)."""
        retrying = Retrying(
            retry=retry_if_result(lambda reconciled: not reconciled),
            wait=wait_exponential(multiplier=0.5, max=RECONCILE_BACKOFF_MAX_S),
            stop=lambda state: self._stopping.is_set(),
            sleep=self._pause,
            retry_error_callback=lambda state: False,
        )
        if retrying(self._reconcile_once):
            self.ready.set()
            log.info("reconciled after %d attempt(s); ready", self.attempts)

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # stop() cuts a back-off short

    def _reconcile_once(self) -> bool:
        self.attempts += 1
        try:
            return self._reconcile()
        except Exception as error:  # the store itself failed; try again like any fault
            log.error("reconciliation failed: %s: %s", type(error).__name__, error)
            return False
        finally:
            # Ticking starts after the first pass whatever came of it, as it always did: one
            # rollout that cannot be reconciled must not keep the others from being watched.
            self._start_ticking()

    def _start_ticking(self) -> None:
        with self._lifecycle:
            if not self._stopping.is_set() and not self._ticking:
                self._begin_ticking()
                self._ticking = True

    def stop(self) -> None:
        """No ticking begins after this; wait a while for an attempt in flight."""
        with self._lifecycle:
            self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STARTUP_JOIN_TIMEOUT_S)
