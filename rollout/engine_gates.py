"""Gates before a rollout's first step: pre-flight checks and Kubernetes Jobs.

Split out of rollout/engine.py because gates live on their own time: a pre-flight gate blocks
for up to its timeout, so it runs on gate workers of its own, never inside a tick, and its end
ticks the rollout again; a Job gate is looked at once per tick (the Job runs in the cluster).
Either way the result is audited and fed to the machine through the engine's recorder.

Only a replica that leads records a pre-flight gate's result and carries the rollout on: a gate
that ends after its replica lost or handed back the Lease, or after the stop gave up waiting
for it (`close`), is dropped. The record still names the gate as running, so the leader's next
tick of the rollout runs it again (gates are checks, safe to repeat).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial

from rollout import machine
from rollout.config import Config
from rollout.engine_save import BOT, Recorder
from rollout.gates.job import JobGates
from rollout.gates.run import GateRunner
from rollout.model import GateResult, Phase, Rollout
from rollout.oci import ImageRegistry
from rollout.pool import TickPool
from rollout.ports import Clock
from rollout.stores import Store

# The engine's logger: bot/metrics.py counts its reports as cluster ones.
log = logging.getLogger("rollout.engine")


class Gates:
    """Runs a rollout's gates and records their results; `tick` carries the rollout on."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        clock: Clock,
        recorder: Recorder,
        registry: ImageRegistry | None,
        jobs: JobGates | None,
        tick: Callable[[str], None],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._clock = clock
        self._recorder = recorder
        self._runner = GateRunner(config=config, registry=registry)
        self._pool = TickPool(workers=4)
        self._jobs = jobs
        self._tick = tick
        self._leading = leading
        # Gate ends being recorded right now, and whether the stop has abandoned the rest.
        self._acting = 0
        self._abandoned = False
        self._acted = threading.Condition()

    def preflight(self, rollout: Rollout, key: str) -> Rollout:
        """Record that gate `key` started (once), then launch it on a gate worker."""
        if rollout.gate is None:
            now = self._clock.now()
            started = self._recorder.decide(
                rollout.id,
                lambda fresh: machine.gate_started(fresh, key, now=now),
                action="gate",
            )
            rollout = started[0].rollout
        if rollout.gate is not None and rollout.phase == Phase.PENDING:
            gate = rollout.gate
            self._pool.launch(f"{rollout.id}:{gate}", partial(self._run, rollout.id, gate))
        return rollout

    def _run(self, rollout_id: str, key: str) -> None:
        """On a gate worker: run the gate the record names, save its result, carry on."""
        rollout = self._store.get(rollout_id)
        if rollout is None or rollout.gate != key:
            return
        result, image = self._runner.run(rollout, key)
        with self._acted:
            if self._abandoned or not self._leading():
                log.info("gate %s of %s ended on a replica that no longer acts", key, rollout_id)
                return
            self._acting += 1
        try:
            self._record(rollout, result, image=image)
            self._tick(rollout_id)
        finally:
            with self._acted:
                self._acting -= 1
                self._acted.notify_all()

    def check_job(self, rollout: Rollout, *, now: datetime) -> Rollout:
        """Within a tick: has the rollout's Job gate finished? Record it if so."""
        if self._jobs is None:
            return rollout
        try:
            if rollout.phase not in machine.GATE_PHASES:  # rolled back while the Job ran
                self._jobs.discard(rollout)
                return rollout
            result = self._jobs.check(rollout, now=now)
        except Exception as error:  # the next tick looks again
            log.warning("job gate of %s: %s", rollout.id, error)
            return rollout
        if result is None:
            return rollout
        return self._record(rollout, result, image=None)

    def _record(self, rollout: Rollout, result: GateResult, *, image: str | None) -> Rollout:
        verdict = "passed" if result.passed else "failed"
        self._store.audit(
            at=self._clock.now(),
            actor=BOT,
            action=f"gate {verdict}",
            rollout_id=rollout.id,
            detail=f"{result.name}: {result.detail}",
        )
        now = self._clock.now()
        decided = self._recorder.decide(
            rollout.id,
            lambda fresh: machine.gate_finished(fresh, result, now=now, canary_image=image),
            action=f"gate {verdict}",
        )
        return decided[0].rollout

    def running(self) -> bool:
        return bool(self._pool.running())

    def drain(self) -> None:
        self._pool.drain()

    def close(self, timeout: float | None = None) -> float | None:
        """Launch no more gates and wait up to `timeout` seconds for those running; then
        abandon the rest (their results are dropped, see the module docstring), once the ends
        being recorded at that moment are saved (within what is left of `timeout`). Returns
        what is left of `timeout`."""
        end = None if timeout is None else time.monotonic() + timeout
        unfinished = self._pool.close(timeout)
        with self._acted:
            self._abandoned = True
            left = None if end is None else max(0.0, end - time.monotonic())
            self._acted.wait_for(lambda: self._acting == 0, timeout=left)
        if unfinished:
            log.warning(
                "stopping with gates still running, abandoned (the leader runs them again): %s",
                ", ".join(unfinished),
            )
        return None if end is None else max(0.0, end - time.monotonic())
