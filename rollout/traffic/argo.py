"""Strategy `argo`: the service is an Argo Rollouts `Rollout`; Argo moves traffic, the bot steers.

The bot creates nothing. It changes the Rollout (argoproj.io/v1alpha1, config `argo_rollout`)
the way `kubectl argo rollouts` does, and reads what Argo did from its status:
- the first step puts the new image in the Rollout's pod template; Argo starts its canary
  and walks its own `spec.strategy.canary.steps` up to its first pause;
- a step asking for weight w moves Argo on to its first `setWeight` step of at least w (its
  highest one when none is that high), never further: when Argo waits at the pause just
  before that step the bot clears `status.pauseConditions` (`promote`), otherwise it writes
  `status.currentStepIndex` (`promote` of a Rollout that is not paused, once per step
  skipped). Argo then stops at the pause that follows, and the bot's step is ready;
- the weight in effect is `status.canary.weights.canary.weight` (with traffic routing), else
  the last `setWeight` Argo has completed;
- approval: `status.promoteFull: true` (`promote --full`); promoted once `stableRS` is the
  current pod hash and the Rollout is Healthy;
- rollback: `status.abort: true` (`abort`: all traffic to stable at once), then the pod
  template's image back as it was, which Argo takes as a rollback to its stable ReplicaSet.
The Rollout's steps should end with an indefinite `pause: {}` so that the bot's approval gate
holds the last weight; without it Argo promotes on its own, which the bot reports as 100 %.
A person's `kubectl argo rollouts pause` (`spec.paused`) is respected: the bot waits.
"""

from __future__ import annotations

import copy
from typing import Any

from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from rollout.kube import CustomKind, KubeConflict, KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.workloads import RouterError

ROLLOUT = CustomKind("argoproj.io", "v1alpha1", "rollouts", "Rollout")
PAUSE_STEP = "CanaryPauseStep"


def steps_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    strategy = obj.get("spec", {}).get("strategy") or {}
    steps: list[dict[str, Any]] = (strategy.get("canary") or {}).get("steps") or []
    return steps


def target_step(steps: list[dict[str, Any]], weight: int) -> int | None:
    """The index of the first `setWeight` step of at least `weight`, else of the highest one;
    None when the steps set no weight at all."""
    weighted = [(i, int(step["setWeight"])) for i, step in enumerate(steps) if "setWeight" in step]
    if not weighted:
        return None
    for index, value in weighted:
        if value >= weight:
            return index
    return max(weighted, key=lambda pair: pair[1])[0]


def weight_in_effect(obj: dict[str, Any]) -> float:
    """The canary's weight as Argo reports it (see the module docstring)."""
    status = obj.get("status") or {}
    weights = (status.get("canary") or {}).get("weights") or {}
    if "canary" in weights:
        return float(weights["canary"].get("weight", 0))
    done = steps_of(obj)[: int(status.get("currentStepIndex") or 0)]
    reached = [int(step["setWeight"]) for step in done if "setWeight" in step]
    return float(reached[-1]) if reached else 0.0


def observed(obj: dict[str, Any]) -> bool:
    """Argo has seen the current spec (its status is about this generation)."""
    status = obj.get("status") or {}
    return str(status.get("observedGeneration", "")) == str(obj["metadata"].get("generation"))


def promoted(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(
        observed(obj)
        and status.get("stableRS")
        and status.get("stableRS") == status.get("currentPodHash")
        and status.get("phase", "Healthy") == "Healthy"
    )


def paused_at_step(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("pauseConditions") or []
    return any(condition.get("reason") == PAUSE_STEP for condition in conditions)


class ArgoRouter:
    def __init__(self, gateway: KubeGateway, *, observe_timeout: float = 5.0) -> None:
        self._kube = gateway
        # How long a step waits for Argo to take in a new template before moving it on.
        self._observe_timeout = observe_timeout

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        containers = _containers(self._read(rollout))
        if not rollout.container:
            return containers[0]["name"], containers[0]["image"]
        for container in containers:
            if container["name"] == rollout.container:
                return container["name"], container["image"]
        names = ", ".join(c["name"] for c in containers)
        raise RouterError(
            f"Rollout {rollout.namespace}/{_name(rollout)} has no container "
            f"{rollout.container!r} (it has: {names})"
        )

    def prepare(self, rollout: Rollout) -> Rollout:
        # Nothing to create: Argo makes the canary when the image changes (first set_weight),
        # and what is restored, the stable image, is already in the record.
        obj = self._read(rollout)
        if target_step(steps_of(obj), 100) is None:
            raise RouterError(
                f"Rollout {_name(rollout)} has no canary `setWeight` steps for the bot to drive"
            )
        return rollout

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        changed = self._set_image(rollout, rollout.canary_image)
        for attempt in range(3):
            obj = self._await_observed(rollout)
            if changed and attempt == 0:
                self._event(obj, rollout, "CanaryStarted", f"image {rollout.canary_image} set")
            patch = _advance_patch(obj, weight)
            if patch is None:
                return changed
            try:
                self._kube.patch_custom(
                    ROLLOUT, rollout.namespace, _name(rollout), patch, status=True
                )
            except KubeConflict:
                # Argo moved in between (the patch carries the resourceVersion read): look again.
                if attempt == 2:
                    raise
                continue
            self._event(obj, rollout, "CanaryWeight", f"Argo moved on towards {weight}%")
            return True
        return changed

    def drift(self, rollout: Rollout) -> str | None:
        """Argo Rollouts owns this workload's pods and replica counts and reports its own
        aborts; the bot does not second-guess them."""
        return None

    def status(self, rollout: Rollout) -> TrafficStatus:
        obj = self._read(rollout)
        status = obj.get("status") or {}
        if _image(obj, rollout) != rollout.canary_image:
            return TrafficStatus(weight=0.0, canary_ready=False, detail="new image not set yet")
        if not observed(obj):
            return TrafficStatus(
                weight=weight_in_effect(obj),
                canary_ready=False,
                detail="waiting for the Argo controller to take in the new template",
            )
        if status.get("abort"):
            return TrafficStatus(
                weight=0.0,
                canary_ready=False,
                detail=f"Argo aborted the rollout: {status.get('message') or 'no reason given'}",
            )
        if promoted(obj):
            return TrafficStatus(weight=100.0, canary_ready=True, detail="Argo promoted it")
        weight = weight_in_effect(obj)
        index = int(status.get("currentStepIndex") or 0)
        paused = "manually paused (spec.paused)" if obj["spec"].get("paused") else ""
        return TrafficStatus(
            weight=weight,
            canary_ready=paused_at_step(obj),
            detail=(
                f"Argo step {min(index + 1, len(steps_of(obj)))}/{len(steps_of(obj))}, "
                f"phase {status.get('phase', 'unknown')}, canary weight {weight:g}% {paused}"
            ).strip(),
        )

    def promote(self, rollout: Rollout) -> bool:
        if self._set_image(rollout, rollout.canary_image):
            return False
        obj = self._read(rollout)
        status = obj.get("status") or {}
        if promoted(obj):
            return True
        if status.get("abort"):
            raise RouterError(
                f"Argo aborted Rollout {_name(rollout)} ({status.get('message', '')}); "
                "roll back, or retry it in Argo"
            )
        if not status.get("promoteFull"):
            self._patch_status(rollout, {"promoteFull": True})
            self._event(obj, rollout, "Promoting", f"full promotion of {rollout.canary_image}")
        return False

    def rollback(self, rollout: Rollout) -> None:
        obj = self._read(rollout)
        if not rollout.stable_image or _image(obj, rollout) == rollout.stable_image:
            return
        if not (obj.get("status") or {}).get("abort"):
            self._patch_status(rollout, {"abort": True})
        self._set_image(rollout, rollout.stable_image)
        self._event(
            obj,
            rollout,
            "RolledBack",
            f"aborted {rollout.canary_image}, image put back: {rollout.reason or ''}",
            warning=True,
        )

    # ----------------------------------------------------------------- helpers

    def _read(self, rollout: Rollout) -> dict[str, Any]:
        obj = self._kube.read_custom(ROLLOUT, rollout.namespace, _name(rollout))
        if obj is None:
            raise RouterError(f"Argo Rollout {rollout.namespace}/{_name(rollout)} does not exist")
        if not _containers(obj):
            raise RouterError(
                f"Rollout {_name(rollout)} has no pod template of its own (workloadRef?); "
                "the bot changes the image in `spec.template`"
            )
        return obj

    def _await_observed(self, rollout: Rollout) -> dict[str, Any]:
        """The Rollout once Argo has taken in its spec (or as it is after the timeout): a
        status written before that would be reset by Argo when it does."""
        waiting = retry(
            retry=retry_if_result(lambda obj: not observed(obj)),
            stop=stop_after_delay(self._observe_timeout),
            wait=wait_fixed(0.05),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )(self._read)
        obj: dict[str, Any] = waiting(rollout)
        return obj

    def _set_image(self, rollout: Rollout, image: str) -> bool:
        """Sets the released container's image in the pod template; True if it changed."""

        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            if _image(obj, rollout) == image:
                return None
            updated = copy.deepcopy(obj)
            for container in _containers(updated):
                if container["name"] == _released(obj, rollout):
                    container["image"] = image
            return updated

        return self._kube.update_custom(ROLLOUT, rollout.namespace, _name(rollout), change)

    def _patch_status(self, rollout: Rollout, fields: dict[str, Any]) -> None:
        self._kube.patch_custom(
            ROLLOUT, rollout.namespace, _name(rollout), {"status": fields}, status=True
        )

    def _event(
        self,
        obj: dict[str, Any],
        rollout: Rollout,
        reason: str,
        message: str,
        *,
        warning: bool = False,
    ) -> None:
        self._kube.emit_event(
            involved=obj,
            reason=reason,
            message=f"canary-bot: {message} (rollout {rollout.id})",
            warning=warning,
        )


def _advance_patch(obj: dict[str, Any], weight: int) -> dict[str, Any] | None:
    """The status patch that moves Argo on towards `weight`, or None if nothing is to be done:
    Argo is not running this canary (yet), is aborted or paused by a person, or is already
    at or on its way to the step that gives the weight."""
    status = obj.get("status") or {}
    if not observed(obj) or status.get("abort") or obj["spec"].get("paused") or promoted(obj):
        return None
    target = target_step(steps_of(obj), weight)
    index = int(status.get("currentStepIndex") or 0)
    if target is None or index >= target:
        return None
    moved: dict[str, Any] = {"pauseConditions": None}
    if not (paused_at_step(obj) and index + 1 == target):
        moved["currentStepIndex"] = target
    return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": moved}


def _name(rollout: Rollout) -> str:
    return rollout.target.argo_rollout or rollout.deployment


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    template = obj.get("spec", {}).get("template") or {}
    containers: list[dict[str, Any]] = (template.get("spec") or {}).get("containers") or []
    return containers


def _released(obj: dict[str, Any], rollout: Rollout) -> str:
    """The name of the container being released (`rollout.container`, else the first)."""
    containers = _containers(obj)
    return rollout.container or (str(containers[0]["name"]) if containers else "")


def _image(obj: dict[str, Any], rollout: Rollout) -> str | None:
    for item in _containers(obj):
        if item["name"] == _released(obj, rollout):
            return str(item.get("image"))
    return None
