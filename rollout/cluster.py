"""The engine's hands on the cluster: carry out one action and report what came of it.

Nothing here decides: each method does its cluster calls (through the strategy's router, each
call bounded by its deadline in rollout/kube.py), writes what changed to the audit log, and
returns an observation for the state machine: an `Outcome`, or a function that turns the
freshly read rollout into the machine's `Decision` (the engine applies it under the rollout's
record lock, so a command that landed meanwhile is decided on too).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from rollout import machine
from rollout.config import Config
from rollout.machine import (
    ClusterAction,
    Decision,
    Outcome,
    PromoteStable,
    RollBackCanary,
    SetWeight,
)
from rollout.model import Phase, Rollout
from rollout.ports import Clock
from rollout.start import canary_image_for
from rollout.stores import Store
from rollout.traffic.base import TrafficRouter

log = logging.getLogger(__name__)

BOT = "canary-bot"
Decide = Callable[[Rollout], Decision]
_FAILED: dict[type, str] = {
    SetWeight: "set weight failed",
    PromoteStable: "promotion step failed",
    RollBackCanary: "rollback attempt failed",
}


class Cluster:
    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        routers: Mapping[str, TrafficRouter],
        clock: Clock,
    ) -> None:
        self._config = config
        self._store = store
        self._routers = routers
        self._clock = clock

    def resolve(self, rollout: Rollout) -> tuple[Decide, str]:
        """Read the stable workload and work out the canary's image; (decide, audit name)."""
        try:
            container, stable = self._routers[rollout.strategy].stable_image(rollout)
        except Exception as error:
            reason = f"cannot read the stable workload: {error}"
            return (
                lambda fresh: machine.start_refused(fresh, reason, now=self._clock.now()),
                "start refused",
            )
        service = self._config.services[rollout.service]
        image, problem = canary_image_for(rollout, service, stable_image=stable)
        return (
            lambda fresh: machine.resolved(
                fresh,
                container=container,
                stable_image=stable,
                canary_image=image,
                problem=problem,
                now=self._clock.now(),
            ),
            "resolve image" if problem is None else "start refused",
        )

    def prepare(self, rollout: Rollout) -> tuple[Decide, str] | None:
        """Create the canary objects (idempotent); None when nothing had to be created."""
        try:
            prepared = self._routers[rollout.strategy].prepare(rollout)
        except Exception as error:
            log.warning("preparing %s failed: %s", rollout.id, error)
            failed = str(error)
            return (
                lambda fresh: machine.prepare_failed(fresh, failed, now=self._clock.now()),
                "prepare failed",
            )
        if prepared == rollout:
            return None
        self.audit(rollout, f"canary {rollout.deployment}-canary created")
        made = _changes(rollout, prepared)
        return lambda fresh: machine.canary_created(dataclasses.replace(fresh, **made)), "prepare"

    def execute(self, rollout: Rollout, action: ClusterAction) -> Outcome:
        router = self._routers[rollout.strategy]
        try:
            match action:
                case SetWeight(weight=weight):
                    if router.set_weight(rollout, weight):
                        self.audit(rollout, f"set canary weight {weight}%")
                case PromoteStable():
                    if not router.promote(rollout):
                        return Outcome(action=action, done=False)
                    self.audit(rollout, f"stable runs {rollout.canary_image}; canary removed")
                case RollBackCanary():
                    router.rollback(rollout)
                    self.audit(rollout, "all traffic on stable; canary removed")
        except Exception as error:
            log.warning("%s of %s failed: %s", type(action).__name__, rollout.id, error)
            if not (isinstance(action, RollBackCanary) and rollout.phase == Phase.FAILED):
                self.audit(rollout, f"{_FAILED[type(action)]}: {error}")
            return Outcome(action=action, error=str(error))
        return Outcome(action=action)

    def reapply(self, rollout: Rollout) -> None:
        """At start-up: the stored weight back on the cluster (idempotent)."""
        if self._routers[rollout.strategy].set_weight(rollout, rollout.target_weight):
            self.audit(rollout, f"re-applied weight {rollout.target_weight}%")

    def audit(self, rollout: Rollout, detail: str) -> None:
        self._store.audit(
            at=self._clock.now(),
            actor=BOT,
            action="cluster change",
            rollout_id=rollout.id,
            detail=detail,
        )


def _changes(before: Rollout, after: Rollout) -> dict[str, Any]:
    """The fields a router's `prepare` changed, to apply to a fresher copy of the record."""
    return {
        field.name: getattr(after, field.name)
        for field in dataclasses.fields(Rollout)
        if getattr(after, field.name) != getattr(before, field.name)
    }


OUTCOME = "outcome"  # the audit name of an outcome's decision is worked out from it
_ENDINGS = {
    Phase.SUCCEEDED: "promoted",
    Phase.ROLLED_BACK: "rolled back",
    Phase.FAILED: "rollback failed",
}


def outcome_name(before: Rollout, after: Rollout) -> str:
    """The audit log's name for what an outcome led to."""
    if after.phase != before.phase:
        return _ENDINGS.get(after.phase, "tick")
    return "rollback retry" if after.failures > before.failures else "tick"
