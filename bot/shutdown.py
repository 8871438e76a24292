"""A graceful stop with a deadline.

`serve` stops its parts one after another on SIGTERM: start-up, the beat, the pick-up poll,
the after-acknowledgement workers, the ticks and gates in flight, the sender, the chart worker,
the Lease (only once nothing of this replica acts any more), the render process and the
store. Each waits for work in flight, and under load one of them can wait a long time (a
command gate runs up to its timeout; a render process being spawned imports matplotlib).
Kubernetes kills a pod `terminationGracePeriodSeconds` (30 s) after SIGTERM anyway, so a stop
that waits longer only loses the log line saying what it waited on.

So the steps run in a worker thread, the caller waits for them up to a deadline, and what did
not finish is named in the log. The ticks and gates stop waiting early enough to leave the
later steps `ACTING_RESERVE_S`: a gate still running then is abandoned (its result is not
recorded), so that the Lease can be handed back with nothing of this replica acting after it.
Nothing is lost by stopping early: every decision is already in the store (ticks save before
they act, and the outbox keeps unsent messages), and a restarted bot, or the next leader,
reconciles the cluster with it and runs an abandoned gate again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

# Below Kubernetes' default terminationGracePeriodSeconds (30 s), with room for the process to
# flush its logs and exit before the kubelet's SIGKILL.
STOP_DEADLINE_S = 20.0
# What the ticks and gates in flight leave of the deadline for the steps after them: the senders
# and, with several replicas, handing the Lease back (two API calls of at most 2 s each).
ACTING_RESERVE_S = 5.0
# A step slower than this is logged with its time, so a slow stop says where it went.
SLOW_STEP_S = 1.0

Step = tuple[str, Callable[[], object]]


class StopSteps:
    """Runs `steps` in order in a daemon thread; `run` waits up to `deadline` seconds and
    returns the names of the steps that had not finished (empty when all did)."""

    def __init__(self, steps: Sequence[Step], *, clock: Callable[[], float] = time.monotonic):
        self._steps = list(steps)
        self._clock = clock
        self._lock = threading.Lock()
        self._unfinished = [name for name, _ in self._steps]

    def run(self, deadline: float = STOP_DEADLINE_S) -> list[str]:
        worker = threading.Thread(target=self._run_all, name="graceful-stop", daemon=True)
        worker.start()
        worker.join(timeout=deadline)
        with self._lock:
            unfinished = list(self._unfinished)
        if unfinished:
            log.warning(
                "graceful stop not finished after %.0f s; still waiting on: %s",
                deadline,
                ", ".join(unfinished),
            )
        return unfinished

    def _run_all(self) -> None:
        for name, step in self._steps:
            began = self._clock()
            try:
                step()
            except Exception:
                # One part failing to stop must not keep the others (and the store) open.
                log.exception("stopping %s failed", name)
            took = self._clock() - began
            if took >= SLOW_STEP_S:
                log.info("stopping %s took %.1f s", name, took)
            with self._lock:
                self._unfinished.remove(name)
