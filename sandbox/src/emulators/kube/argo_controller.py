"""A small Argo Rollouts controller, so that a `Rollout` behaves as the bot expects it to.

The bot's `argo` strategy never moves traffic itself: it changes a Rollout's image and then
promotes or aborts it, exactly as `kubectl argo rollouts` does, and reads the outcome from the
Rollout's status. Without something playing the controller, that status would never change.
The emulator runs this one whenever the Rollout CRD is installed (`crd_dir`).

What it does, for `spec.strategy.canary.steps`, in the status fields the real controller writes:
- first sight of a Rollout: the template is stable (`stableRS` = `currentPodHash` = its hash,
  `currentStepIndex` = number of steps, phase `Healthy`);
- a new template: `currentPodHash` changes and the steps start again at index 0;
- `setWeight`: after `step_delay` seconds (the canary pods starting) the weight is in effect in
  `status.canary.weights` and the next step begins;
- `pause`: adds a `CanaryPauseStep` pause condition (phase `Paused`, `controllerPause: true`);
  it ends when its `duration` has passed, or when someone clears `status.pauseConditions`
  (`kubectl argo rollouts promote`); a written `currentStepIndex` is obeyed as it is found
  (`promote` when not paused);
- past the last step, or on `status.promoteFull`: after `step_delay` the new template becomes
  stable (phase `Healthy`, canary weight 0);
- `status.abort: true`: canary weight 0, phase `Degraded`, `abortedAt`; a template put back to
  the stable one ends the abort and leaves the Rollout `Healthy` (Argo's fast rollback);
- `spec.paused: true`: no progress until it is false again.
Unlike the real controller it creates no ReplicaSets or Pods, always writes `canary.weights`
(the real one does only with `trafficRouting`), treats analysis, experiment and other step
kinds as passed at once, and ignores `blueGreen`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from emulators.kube.deployment_objects import template_hash
from emulators.kube.objects import ObjectStore, clone, timestamp
from emulators.kube.reconcile_loop import JSON, Key, ReconcileLoop
from emulators.kube.resources import ResourceKind

API_VERSION = "argoproj.io/v1alpha1"
PAUSE_REASON = "CanaryPauseStep"
_DURATION = re.compile(r"^(\d+)(s|m|h)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, None: 1}


def pause_seconds(duration: Any) -> float | None:
    """A pause step's `duration` (`30`, `"30s"`, `"5m"`, `"1h"`) in seconds; None: indefinite."""
    if duration is None:
        return None
    match = _DURATION.match(str(duration))
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


class ArgoRolloutController(ReconcileLoop):
    def __init__(
        self,
        store: ObjectStore,
        kind: ResourceKind,
        *,
        step_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, clock=clock, name="kube-argo-rollouts", kind_name="Rollout")
        self.kind = kind
        self.step_delay = step_delay
        # (namespace, name) -> (pod hash, step index, when that step was entered)
        self._entered: dict[Key, tuple[str, int, float]] = {}
        store.listeners.append(self._on_change)

    @classmethod
    def if_served(cls, store: ObjectStore, *, step_delay: float) -> ArgoRolloutController | None:
        """A controller when the Rollout CRD is installed, else None."""
        found = store.registry.by_kind(API_VERSION, "Rollout")
        return None if found is None else cls(store, found[0], step_delay=step_delay)

    def _on_change(self, rk: ResourceKind, old: JSON | None, new: JSON | None) -> None:
        """Store listener (the store lock is held): only takes note of what to reconcile."""
        if self._writing or rk is not self.kind:
            return
        meta = (new if new is not None else old or {})["metadata"]
        with self._cond:
            self._mark((meta["namespace"], meta["name"]))

    # --- reconciling ------------------------------------------------------------------------

    def _reconcile(self, key: Key) -> None:
        rollout = self.store.get(self.kind, *key)
        if rollout is None:
            self._entered.pop(key, None)
            return
        spec = rollout.get("spec") or {}
        steps: list[JSON] = ((spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
        status: JSON = clone(rollout.get("status") or {})
        current = template_hash(spec.get("template"))
        if "stableRS" not in status:
            status.update(stableRS=current, currentPodHash=current, currentStepIndex=len(steps))
        if status.get("currentPodHash") != current:
            status.update(currentPodHash=current, currentStepIndex=0, promoteFull=False)
            status.pop("pauseConditions", None)
        if current == status["stableRS"]:
            self._settle(status, steps, current)
        elif status.get("abort"):
            self._abort(status, current)
        elif spec.get("paused"):
            status.update(phase="Paused", message="manually paused")
        else:
            self._step(key, status, steps, current)
        status["observedGeneration"] = str(rollout["metadata"]["generation"])
        if status != rollout.get("status"):
            new = clone(rollout)
            new["status"] = status
            self.store.update(self.kind, rollout, new)

    def _settle(self, status: JSON, steps: list[JSON], current: str) -> None:
        """Stable runs the template: fully promoted, or rolled back by reverting the template."""
        status.update(currentStepIndex=len(steps), phase="Healthy", abort=False)
        status.update(promoteFull=False, controllerPause=False)
        status.pop("pauseConditions", None)
        status.pop("message", None)
        status.pop("abortedAt", None)
        status["canary"] = {"weights": _weights(0, canary=current, stable=current)}

    def _abort(self, status: JSON, current: str) -> None:
        status.update(phase="Degraded", message="RolloutAborted: Rollout aborted update")
        status.setdefault("abortedAt", timestamp())
        status.pop("pauseConditions", None)
        status["controllerPause"] = False
        status["canary"] = {"weights": _weights(0, canary=current, stable=status["stableRS"])}

    def _step(self, key: Key, status: JSON, steps: list[JSON], current: str) -> None:
        """Walks the steps from `currentStepIndex` as far as it can go right now."""
        now = self.clock()
        while True:
            if status.get("promoteFull"):
                status["currentStepIndex"] = len(steps)
            index = int(status.get("currentStepIndex") or 0)
            hash_, entered_index, entered = self._entered.get(key, ("", -1, now))
            if (hash_, entered_index) != (current, index):
                entered = now
                self._entered[key] = (current, index, now)
            if index >= len(steps):
                if now - entered < self.step_delay:
                    self._progressing(status, "more replicas need to be updated")
                    self._at(entered + self.step_delay, key)
                    return
                status["stableRS"] = current
                self._settle(status, steps, current)
                return
            step = steps[index]
            if "setWeight" in step:
                if now - entered < self.step_delay:
                    self._progressing(status, "canary pods are starting")
                    self._at(entered + self.step_delay, key)
                    return
                # As the real controller: `controllerPause` outlives no pause condition, so
                # the next pause step is not mistaken for one that was promoted.
                status["controllerPause"] = False
                weight = int(step["setWeight"])
                status["canary"] = {
                    "weights": _weights(weight, canary=current, stable=status["stableRS"])
                }
            elif "pause" in step and not self._pause_done(key, status, step["pause"], now):
                return
            status["currentStepIndex"] = index + 1

    def _pause_done(self, key: Key, status: JSON, pause: JSON, now: float) -> bool:
        conditions = [c for c in status.get("pauseConditions") or [] if c["reason"] == PAUSE_REASON]
        if not conditions:
            if status.get("controllerPause"):
                # Paused here before and the condition is gone: someone promoted.
                status["controllerPause"] = False
                status.pop("pauseConditions", None)
                return True
            started = timestamp()
            status["pauseConditions"] = [{"reason": PAUSE_REASON, "startTime": started}]
            status.update(controllerPause=True, phase="Paused", message=PAUSE_REASON)
        seconds = pause_seconds((pause or {}).get("duration"))
        entered = self._entered[key][2]
        if seconds is not None and now - entered >= seconds:
            status.pop("pauseConditions", None)
            status["controllerPause"] = False
            return True
        if seconds is not None:
            self._at(entered + seconds, key)
        status.update(phase="Paused", message=PAUSE_REASON)
        return False

    @staticmethod
    def _progressing(status: JSON, message: str) -> None:
        status.update(phase="Progressing", message=message)


def _weights(weight: int, *, canary: str, stable: str) -> JSON:
    return {
        "canary": {"weight": weight, "podTemplateHash": canary},
        "stable": {"weight": 100 - weight, "podTemplateHash": stable},
    }
