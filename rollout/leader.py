"""Leader election on a Lease, with client-go's semantics (`tools/leaderelection`).

A candidate tries every `retry_period` to take the Lease: it may when there is none, when no
one holds it, or when the holder has not renewed for `lease_duration` as measured on this
replica's own monotonic clock from when it last saw the Lease change (so clock skew between
nodes does not matter). The leader renews every `retry_period`; one that has not renewed
within `renew_deadline` steps down at once. Since `renew_deadline < lease_duration`, a leader
cut off from the API server stops before anyone else may take over: every renewal attempt's
deadline is the time left before `renew_deadline`, so a hanging call cannot carry it past.

`on_started` runs on a thread of its own (taking over may take long: reconciling the cluster)
while this loop keeps renewing; `on_stopped` runs on this thread as soon as the Lease is lost,
and then `run` returns: a replica that lost the Lease is done leading for good (`canary-bot
serve` exits and its pod restarts as a follower, as Argo Rollouts' controller does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from rollout.lease import LeaseLock, LeaseRecord

log = logging.getLogger(__name__)

# One Lease call never waits longer than this, whatever is left of the renew deadline.
MAX_CALL_S = 10.0


@dataclass(frozen=True, kw_only=True)
class Timing:
    lease_duration: timedelta
    renew_deadline: timedelta
    retry_period: timedelta


class Elector:
    def __init__(
        self,
        lock: LeaseLock,
        *,
        identity: str,
        timing: Timing,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = lock
        self.identity = identity
        self._timing = timing
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._monotonic = monotonic
        self._stopping = threading.Event()
        self._leading = threading.Event()
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._thread: threading.Thread | None = None
        self.holder: str | None = None  # who held the Lease when last read, for /readyz
        self.connected = False  # the last Lease call was answered, for /readyz

    @property
    def leading(self) -> bool:
        """Holding the Lease, renewed within `renew_deadline`: checked against the clock, so
        a process that was paused (or starved) longer than that does not act on waking up
        before its renew loop has had a chance to step down."""
        fresh = self._monotonic() < self._renewed_at + self._timing.renew_deadline.total_seconds()
        return self._leading.is_set() and fresh

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop campaigning; a leader hands the Lease back so another takes over at once."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=MAX_CALL_S + 1)
        if self._leading.is_set():
            self._leading.clear()
            self._release()

    def run(self) -> None:
        if self._campaign():
            self._lead()

    # ----------------------------------------------------------------- the two phases

    def _campaign(self) -> bool:
        """Until this replica holds the Lease (True) or is stopped (False)."""
        retry = self._timing.retry_period.total_seconds()
        while not self._stopping.is_set():
            started = self._monotonic()
            if self._attempt(budget=MAX_CALL_S):
                self._renewed_at = started
                self._leading.set()
                log.info("%s: %s now leads", self.lock.describe, self.identity)
                threading.Thread(target=self._on_started, name="took-over", daemon=True).start()
                return True
            self._stopping.wait(retry)
        return False

    def _lead(self) -> None:
        """Renew every `retry_period`; step down once `renew_deadline` passes unrenewed."""
        retry = self._timing.retry_period.total_seconds()
        deadline_s = self._timing.renew_deadline.total_seconds()
        renewed_at = self._renewed_at
        while not self._stopping.wait(retry):
            while True:
                started = self._monotonic()
                left = renewed_at + deadline_s - started
                if left > 0 and self._attempt(budget=min(left, MAX_CALL_S)):
                    renewed_at = self._renewed_at = started
                    break
                if self._monotonic() >= renewed_at + deadline_s:
                    self._step_down(deadline_s)
                    return
                if self._stopping.wait(min(retry, renewed_at + deadline_s - self._monotonic())):
                    return

    def _step_down(self, deadline_s: float) -> None:
        self._leading.clear()
        log.error(
            "%s: not renewed within %gs; %s steps down",
            self.lock.describe,
            deadline_s,
            self.identity,
        )
        self._on_stopped()

    # ----------------------------------------------------------------- one attempt

    def _attempt(self, *, budget: float) -> bool:
        """Take or renew the Lease within `budget` seconds; False on any failure."""
        deadline = self._monotonic() + budget
        try:
            taken = self._take_or_renew(deadline)
        except Exception as error:  # unreachable API server, deadline: just not renewed
            self.connected = False
            log.warning("%s: %s: %s", self.lock.describe, type(error).__name__, error)
            return False
        self.connected = True
        return taken

    def _take_or_renew(self, deadline: float) -> bool:
        now = datetime.now(UTC)
        duration = max(1, round(self._timing.lease_duration.total_seconds()))
        current = self.lock.get(budget=self._left(deadline))
        if current is None:
            fresh = LeaseRecord(
                holder=self.identity, duration_s=duration, acquired=now, renewed=now, transitions=0
            )
            taken = self.lock.create(fresh, budget=self._left(deadline))
            self.holder = self.identity if taken else None
            return taken
        self._observe(current)
        mine = current.holder == self.identity
        if current.holder and not mine and not self._expired():
            return False
        wanted = replace(
            current,
            holder=self.identity,
            duration_s=duration,
            acquired=current.acquired if mine else now,
            renewed=now,
            transitions=current.transitions if mine else current.transitions + 1,
        )
        if not self.lock.update(wanted, budget=self._left(deadline)):
            return False
        self.holder = self.identity
        return True

    def _observe(self, record: LeaseRecord) -> None:
        """Expiry counts from when this replica saw the Lease last change."""
        self.holder = record.holder
        if self._observed is None or self._observed.version != record.version:
            self._observed = record
            self._observed_at = self._monotonic()

    def _expired(self) -> bool:
        duration = self._timing.lease_duration.total_seconds()
        return self._monotonic() >= self._observed_at + duration

    def _left(self, deadline: float) -> float:
        left = deadline - self._monotonic()
        if left <= 0.01:
            raise TimeoutError("no time left for the Lease call")
        return left

    def _release(self) -> None:
        """Hand the Lease back (holder emptied), as client-go's ReleaseOnCancel does."""
        try:
            current = self.lock.get(budget=2.0)
            if current is not None and current.holder == self.identity:
                released = replace(current, holder=None, renewed=datetime.now(UTC))
                self.lock.update(released, budget=2.0)
        except Exception as error:
            log.warning("%s: not released: %s", self.lock.describe, error)
