"""Strategy `replicas`: the traffic split is the canary's share of the pods behind one Service.

The canary Deployment `<deployment>-canary` is a clone of the stable one with the new image and
the pod label `track: canary`, so the Service (which selects the stable pods' labels) sends it
a share of requests proportional to its ready pods. Total capacity is kept: canary + stable =
the stable replica count when the rollout started. With a single stable replica that is
impossible without leaving stable empty, so stable keeps one pod and the weight reported is the
real 50 %, not the one asked for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rollout.kube import KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.drift import check_canary_image, workload_drift

# The canary clone is shared with the other Deployment-based routers; these names stay
# importable from here for the modules that already use them.
from rollout.traffic.workloads import ROLLOUT_ANNOTATION as ROLLOUT_ANNOTATION
from rollout.traffic.workloads import TRACK_LABEL as TRACK_LABEL
from rollout.traffic.workloads import RouterError as RouterError
from rollout.traffic.workloads import (
    canary_name,
    ensure_canary,
    our_canary,
    read_stable,
    refuse_foreign_canaries,
    set_stable_image,
    stable_container,
    uid_of,
)
from rollout.traffic.workloads import deployment_rolled_out as deployment_rolled_out


def split_replicas(total: int, weight: int) -> tuple[int, int]:
    """(canary, stable) replica counts for a weight, keeping `total` where possible."""
    if weight <= 0:
        return 0, max(total, 1)
    if weight >= 100:
        return total, 0
    canary = max(1, round(total * weight / 100))
    if total >= 2:
        canary = min(canary, total - 1)
    return canary, max(total - canary, 1)


def canary_weight(canary: int, stable: int) -> float:
    """The share of ready pods that are canary pods, in percent, one decimal."""
    if canary + stable == 0:
        return 0.0
    return round(100 * canary / (canary + stable), 1)


class ReplicasRouter:
    def __init__(self, gateway: KubeGateway) -> None:
        self._kube = gateway

    def prepare(self, rollout: Rollout) -> Rollout:
        stable = self._stable(rollout)
        original = rollout.original_replicas
        if original is None:
            original = int(stable.get("spec", {}).get("replicas", 1))
        ensure_canary(self._kube, rollout, stable=stable)
        return replace(rollout, original_replicas=original)

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        stable = self._stable(rollout)
        refuse_foreign_canaries(self._kube, rollout)
        return stable_container(stable, rollout)

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        total = _original(rollout)
        canary_count, stable_count = split_replicas(total, weight)
        stable = self._stable(rollout)
        canary = our_canary(self._kube, rollout)
        if canary is None:
            raise RouterError(f"canary Deployment {canary_name(rollout)} is missing")
        changed = False
        # Canary up before stable down, so capacity never dips below the total.
        if canary["spec"].get("replicas") != canary_count:
            self._kube.scale_deployment(rollout.namespace, canary_name(rollout), canary_count)
            changed = True
        if stable["spec"].get("replicas") != stable_count:
            self._kube.scale_deployment(rollout.namespace, rollout.deployment, stable_count)
            changed = True
        if changed:
            self._kube.emit_event(
                involved=stable,
                reason="CanaryWeight",
                message=(
                    f"canary weight {weight}%: {canary_count} canary, {stable_count} stable "
                    f"replicas (rollout {rollout.id})"
                ),
            )
        return changed

    def drift(self, rollout: Rollout) -> str | None:
        """This strategy scales stable itself: its count may be anywhere from the current
        step's share (a step being applied lowers it) up to the original total."""
        total = rollout.original_replicas
        if total is None:
            return workload_drift(self._kube, rollout, stable_replicas=None)
        low = split_replicas(total, rollout.target_weight)[1]
        return workload_drift(self._kube, rollout, stable_replicas=(low, total))

    def status(self, rollout: Rollout) -> TrafficStatus:
        stable = self._stable(rollout)
        canary = our_canary(self._kube, rollout)
        if canary is None:
            return TrafficStatus(weight=0.0, canary_ready=False, detail="no canary Deployment")
        canary_ready = int(canary.get("status", {}).get("readyReplicas", 0) or 0)
        stable_ready = int(stable.get("status", {}).get("readyReplicas", 0) or 0)
        wanted = int(canary["spec"].get("replicas", 0))
        ready = wanted > 0 and deployment_rolled_out(canary)
        return TrafficStatus(
            weight=canary_weight(canary_ready, stable_ready),
            canary_ready=ready,
            detail=f"{canary_ready}/{wanted} canary pods ready, {stable_ready} stable",
        )

    def promote(self, rollout: Rollout) -> bool:
        check_canary_image(self._kube, rollout)  # never promote what was not measured
        stable = self._stable(rollout)
        container = rollout.container
        total = _original(rollout)
        spec = stable["spec"]
        images = {c["name"]: c.get("image") for c in spec["template"]["spec"]["containers"]}
        if images.get(container) != rollout.canary_image or spec.get("replicas") != total:
            self._kube.patch_deployment(
                rollout.namespace,
                rollout.deployment,
                {
                    "spec": {
                        "replicas": total,
                        "template": {
                            "spec": {
                                "containers": [{"name": container, "image": rollout.canary_image}]
                            }
                        },
                    }
                },
            )
            self._kube.emit_event(
                involved=stable,
                reason="Promoting",
                message=f"canary-bot set {container} to {rollout.canary_image}",
            )
            return False
        if not deployment_rolled_out(stable, image=rollout.canary_image):
            return False
        canary = our_canary(self._kube, rollout)
        if canary is not None:
            self._kube.delete_deployment(
                rollout.namespace, canary_name(rollout), uid=uid_of(canary)
            )
            self._kube.emit_event(
                involved=stable,
                reason="Promoted",
                message=f"{rollout.canary_image} promoted; canary removed (rollout {rollout.id})",
            )
        return True

    def rollback(self, rollout: Rollout) -> None:
        stable = self._stable(rollout)
        # Unprepared (the canary was never made): there is no replica count to restore.
        total = rollout.original_replicas
        if total is not None and stable["spec"].get("replicas") != total:
            self._kube.scale_deployment(rollout.namespace, rollout.deployment, total)
        # A rollback during promotion: stable may already run the canary image.
        if rollout.stable_image and rollout.container:
            set_stable_image(self._kube, rollout, stable=stable, image=rollout.stable_image)
        canary = our_canary(self._kube, rollout)
        if canary is not None:
            if canary["spec"].get("replicas") != 0:
                self._kube.scale_deployment(rollout.namespace, canary_name(rollout), 0)
            self._kube.delete_deployment(
                rollout.namespace, canary_name(rollout), uid=uid_of(canary)
            )
            self._kube.emit_event(
                involved=stable,
                reason="RolledBack",
                message=f"canary-bot rolled back {rollout.canary_image}: {rollout.reason or ''}",
                warning=True,
            )

    def _stable(self, rollout: Rollout) -> dict[str, Any]:
        return read_stable(self._kube, rollout)


def _original(rollout: Rollout) -> int:
    if rollout.original_replicas is None:
        raise RouterError("the rollout was not prepared (no original replica count)")
    return rollout.original_replicas
