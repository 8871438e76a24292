"""Strategy `service` (blue/green): the canary is previewed, then takes all traffic at once.

During the steps the canary Deployment runs beside stable and is reached only through the
preview Service `<service>-canary`; live traffic stays 100 % on stable, so every step weight
below 100 reads back as 0. A step's weight sizes the preview (its share of the stable replica
count, at least one pod): it needs no full capacity while it serves no live traffic.

On promotion the canary is scaled to the stable replica count and, once all its pods are
ready, the main Service's selector is switched to the canary pods in one write (live traffic
100 % canary). Then the stable Deployment gets the new image; once it has rolled out, the
selector is switched back to the original (now new-image stable pods) and the preview Service
and the canary Deployment are deleted. The original selector is kept in `router_state`
from `prepare` on, so a rollback at any point puts it back exactly.

Where the Service selects only labels the canary pods share (`app: checkout`), "on stable"
means the original selector pinned to the stable ReplicaSet's `pod-template-hash`, read afresh
each time (so after promotion it is the new ReplicaSet's); the unpinned original comes back
once the canary pods are gone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rollout.kube import KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.drift import check_canary_image, workload_drift
from rollout.traffic.pinning import (
    stable_only,
)
from rollout.traffic.workloads import (
    RouterError,
    canary_capacity,
    canary_selector,
    canary_service_name,
    check_selects_stable,
    container_image,
    delete_canary,
    delete_canary_service,
    deployment_rolled_out,
    ensure_canary,
    ensure_canary_service,
    our_canary,
    read_canary,
    read_service,
    read_stable,
    refuse_foreign_canaries,
    scale_canary,
    selector_of,
    selector_patch,
    set_stable_image,
    show_labels,
    stable_container,
    target_service,
)

# router_state key: the main Service's selector before the rollout, restored at the end.
ORIGINAL_SELECTOR = "service_selector"


class ServiceRouter:
    def __init__(self, gateway: KubeGateway) -> None:
        self._kube = gateway

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        # Checked before anything is created, so a setup the bot cannot switch is refused at
        # `/canary start` with the reason, instead of failing half-way through.
        stable = read_stable(self._kube, rollout)
        main = self._main(rollout)
        check_selects_stable(main, stable)
        stable_only(self._kube, selector_of(main), stable=stable)  # pinnable, if it must be
        refuse_foreign_canaries(self._kube, rollout, service=target_service(rollout))
        return stable_container(stable, rollout)

    def prepare(self, rollout: Rollout) -> Rollout:
        stable = read_stable(self._kube, rollout)
        service = self._main(rollout)
        state = dict(rollout.router_state)
        if ORIGINAL_SELECTOR not in state:
            # Only on the first prepare: later the selector may already be switched.
            check_selects_stable(service, stable)
            state[ORIGINAL_SELECTOR] = selector_of(service)
        prepared = (
            rollout if state == rollout.router_state else replace(rollout, router_state=state)
        )
        if prepared.original_replicas is None:  # what drift checks stable's count against
            count = int(stable.get("spec", {}).get("replicas", 1))
            prepared = replace(prepared, original_replicas=count)
        # Live traffic kept off the canary pods before they exist.
        self._point_at(prepared, self._on_stable(prepared, stable), reason="Pinned")
        ensure_canary(self._kube, prepared, stable=stable)
        ensure_canary_service(self._kube, prepared, service=service)
        return prepared

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        """Below 100: preview only (selector on stable). 100: switch, once the full-size canary
        is ready; until then the call only scales it and may be repeated."""
        stable = read_stable(self._kube, rollout)
        canary = read_canary(self._kube, rollout)
        count = canary_capacity(int(stable["spec"].get("replicas", 1)), weight)
        if weight < 100:
            # Live traffic off the canary before the preview may shrink under it.
            on_stable = self._on_stable(rollout, stable)
            switched_back = self._point_at(rollout, on_stable, reason="PreviewOnly")
            return scale_canary(self._kube, rollout, canary=canary, count=count) or switched_back
        if scale_canary(self._kube, rollout, canary=canary, count=count):
            return True
        if not deployment_rolled_out(canary):
            return False
        return self._point_at(rollout, canary_selector(_original(rollout)), reason="Switched")

    def drift(self, rollout: Rollout) -> str | None:
        count = rollout.original_replicas
        return workload_drift(
            self._kube, rollout, stable_replicas=None if count is None else (count, count)
        )

    def status(self, rollout: Rollout) -> TrafficStatus:
        service = self._main(rollout)
        original = rollout.router_state.get(ORIGINAL_SELECTOR)
        live = original is not None and selector_of(service) == canary_selector(dict(original))
        canary = our_canary(self._kube, rollout)
        if canary is None:
            weight = 100.0 if live else 0.0
            return TrafficStatus(weight=weight, canary_ready=False, detail="no canary Deployment")
        wanted = int(canary["spec"].get("replicas", 0))
        ready_pods = int(canary.get("status", {}).get("readyReplicas", 0) or 0)
        where = "live (main Service switched)" if live else "preview only"
        return TrafficStatus(
            weight=100.0 if live else 0.0,
            canary_ready=wanted > 0 and deployment_rolled_out(canary),
            detail=(
                f"canary {where}, via Service {canary_service_name(service['metadata']['name'])}; "
                f"{ready_pods}/{wanted} canary pods ready"
            ),
        )

    def promote(self, rollout: Rollout) -> bool:
        check_canary_image(self._kube, rollout)  # never promote what was not measured
        stable = read_stable(self._kube, rollout)
        container, _ = stable_container(stable, rollout)
        if container_image(stable, container) != rollout.canary_image:
            # Traffic to the (full-size, ready) canary first, then stable may restart.
            if not self._switched(rollout):
                self.set_weight(rollout, 100)
                if not self._switched(rollout):
                    return False
            set_stable_image(self._kube, rollout, stable=stable, image=rollout.canary_image)
            self._kube.emit_event(
                involved=stable,
                reason="Promoting",
                message=f"canary-bot set {rollout.deployment} to {rollout.canary_image}",
            )
            return False
        if not deployment_rolled_out(stable, image=rollout.canary_image):
            return False
        # Stable runs the new image: traffic back to it, then the canary may go, then the
        # Service's own selector comes back.
        self._point_at(rollout, self._on_stable(rollout, stable), reason="Promoted")
        removed = delete_canary_service(self._kube, rollout, service=target_service(rollout))
        removed = delete_canary(self._kube, rollout) or removed
        self._point_at(rollout, _original(rollout), reason="Restored")
        if removed:
            self._kube.emit_event(
                involved=stable,
                reason="Promoted",
                message=f"{rollout.canary_image} promoted; canary removed (rollout {rollout.id})",
            )
        return True

    def rollback(self, rollout: Rollout) -> None:
        stable = read_stable(self._kube, rollout)
        changed = False
        if ORIGINAL_SELECTOR in rollout.router_state:
            on_stable = self._on_stable(rollout, stable)
            changed = self._point_at(rollout, on_stable, reason="RolledBack")
        if rollout.target.service:
            changed |= delete_canary_service(self._kube, rollout, service=rollout.target.service)
        changed |= delete_canary(self._kube, rollout)
        if ORIGINAL_SELECTOR in rollout.router_state:  # no canary pod left
            changed |= self._point_at(rollout, _original(rollout), reason="Restored")
        # A rollback during promotion finds stable already moved to the canary image.
        container, _ = stable_container(stable, rollout)
        if rollout.stable_image and container_image(stable, container) == rollout.canary_image:
            changed |= set_stable_image(
                self._kube, rollout, stable=stable, image=rollout.stable_image
            )
        if changed:
            self._kube.emit_event(
                involved=stable,
                reason="RolledBack",
                message=f"canary-bot rolled back {rollout.canary_image}: {rollout.reason or ''}",
                warning=True,
            )

    # ----------------------------------------------------------------- helpers

    def _main(self, rollout: Rollout) -> dict[str, Any]:
        return read_service(self._kube, rollout, name=target_service(rollout))

    def _on_stable(self, rollout: Rollout, stable: dict[str, Any]) -> dict[str, str]:
        """The selector that sends live traffic to the stable pods only."""
        return stable_only(self._kube, _original(rollout), stable=stable)

    def _switched(self, rollout: Rollout) -> bool:
        return selector_of(self._main(rollout)) == canary_selector(_original(rollout))

    def _point_at(self, rollout: Rollout, selector: dict[str, str], *, reason: str) -> bool:
        """Sets the main Service's selector in one write; True if it had to change."""
        service = self._main(rollout)
        current = selector_of(service)
        if current == selector:
            return False
        self._kube.patch_service(
            rollout.namespace, service["metadata"]["name"], selector_patch(current, selector)
        )
        self._kube.emit_event(
            involved=service,
            reason=reason,
            message=f"canary-bot set the selector to {show_labels(selector)} ({rollout.id})",
        )
        return True


def _original(rollout: Rollout) -> dict[str, str]:
    selector = rollout.router_state.get(ORIGINAL_SELECTOR)
    if not selector:
        raise RouterError("the rollout was not prepared (no original Service selector)")
    return dict(selector)
