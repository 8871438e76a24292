"""Gates before a rollout's first step: pre-flight checks and Kubernetes Jobs.

Split out of rollout/engine.py because gates live on their own time: a pre-flight gate blocks
for up to its timeout, so it runs on gate workers of its own, never inside a tick, and its end
ticks the rollout again; a Job gate is looked at once per tick (the Job runs in the cluster).
Either way the result is audited and fed to the machine through the engine's recorder.
"""

from __future__ import annotations

import logging
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
    ) -> None:
        self._store = store
        self._clock = clock
        self._recorder = recorder
        self._runner = GateRunner(config=config, registry=registry)
        self._pool = TickPool(workers=4)
        self._jobs = jobs
        self._tick = tick

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
        self._record(rollout, result, image=image)
        self._tick(rollout_id)

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

    def close(self) -> None:
        self._pool.close()
