"""The workload side of a split made in front of the pods: the canary Deployment and its Service.

After Flagger, which keeps "the canary workload" (create, scale, promote, remove) apart from
"the router" (set, read and restore the split). The strategies whose proxy divides requests
between two sets of pods (`nginx`, `istio`, `gateway`, `alb`) all need the same workload work,
in the same order, and differ only in the routing object they change:

- start: the stable Deployment has the released container, the stable Service selects its
  pods and can be pinned, and no `-canary` object the bot did not create is in the way;
- prepare: the stable Service pinned off the canary pods before they exist, then the canary
  Deployment (zero replicas), then `<service>-canary` reaching only its pods;
- each step: the canary sized for the weight, pods up before the share goes up and the share
  down before pods go down (`resize`, around the router's own change);
- promotion: stable gets the new image; when its traffic is pinned to the ReplicaSet the new
  image replaces, all traffic first goes to the full-size canary, and the pin follows stable;
- the end: the router puts its object back, then the canary Service and Deployment go and the
  stable Service's own selector comes back.

A router holds one `CanaryWorkload` and passes in what touches its routing object; it never
scales, creates or deletes a Deployment or Service itself. `fronted=False` is for a strategy
that reaches the canary pods without a Service of their own (Istio subsets): no canary Service
and no Service pin; the router pins in its own object and says so at promotion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from rollout.kube import KubeGateway
from rollout.model import Rollout
from rollout.traffic.drift import check_canary_image, workload_drift
from rollout.traffic.pinning import (
    PINNED_SERVICES,
    needs_pin,
    original_selector,
    pin_stable_service,
    remember_selector,
    stable_only,
    unpin_stable_service,
)
from rollout.traffic.workloads import (
    canary_capacity,
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
    set_stable_image,
    stable_container,
    target_service,
)

Change = Callable[[], bool]


@dataclass(frozen=True)
class CanaryPods:
    """The canary Deployment's pods as a router's status reports them."""

    wanted: int
    ready_pods: int
    rolled_out: bool

    @property
    def ready(self) -> bool:
        return self.wanted > 0 and self.rolled_out

    def __str__(self) -> str:
        return f"{self.ready_pods}/{self.wanted} canary pods ready"


class CanaryWorkload:
    def __init__(self, kube: KubeGateway, *, fronted: bool = True) -> None:
        self._kube = kube
        self._fronted = fronted

    def stable(self, rollout: Rollout) -> dict[str, Any]:
        return read_stable(self._kube, rollout)

    def check(self, rollout: Rollout, *, ingress: str | None = None) -> tuple[str, str]:
        """The start checks of the workload side; (container, image) of stable. `ingress`
        names a `<ingress>-canary` the strategy would create, which must be free too."""
        stable = self.stable(rollout)
        service = None
        if self._fronted:
            found = self.service(rollout)
            check_selects_stable(found, stable)
            stable_only(self._kube, original_selector(rollout, found), stable=stable)  # pinnable
            service = target_service(rollout)
        refuse_foreign_canaries(self._kube, rollout, service=service, ingress=ingress)
        return stable_container(stable, rollout)

    def service(self, rollout: Rollout) -> dict[str, Any]:
        """The stable Service (config `service`)."""
        return read_service(self._kube, rollout, name=target_service(rollout))

    def create(self, rollout: Rollout) -> Rollout:
        """Pin, canary Deployment, canary Service, in that order: nothing ever selects or
        names an object that is not ready for it. Returns the rollout with what to restore."""
        stable = self.stable(rollout)
        if rollout.original_replicas is None:  # what drift checks stable's count against
            count = int(stable.get("spec", {}).get("replicas", 1))
            rollout = replace(rollout, original_replicas=count)
        service = self.service(rollout) if self._fronted else None
        if service is not None:
            if needs_pin(original_selector(rollout, service), stable):
                rollout = remember_selector(rollout, service)
            pin_stable_service(self._kube, rollout, service=service, stable=stable)
        ensure_canary(self._kube, rollout, stable=stable)
        if service is not None:
            ensure_canary_service(self._kube, rollout, service=service)
        return rollout

    def resize(self, rollout: Rollout, weight: int, *, route: Change) -> bool:
        """Sizes the canary for `weight` around `route` (the router's change of the split):
        pods up before the share goes up, share down before pods go down. New pods take a
        moment to be ready; meanwhile the ready ones carry the share. True if anything changed."""
        stable = self.stable(rollout)
        canary = read_canary(self._kube, rollout)
        self.repin(rollout, stable)
        count = canary_capacity(int(stable["spec"].get("replicas", 1)), weight)
        raising = count > int(canary["spec"].get("replicas", 0))
        changed = raising and scale_canary(self._kube, rollout, canary=canary, count=count)
        changed |= route()
        if not raising:
            changed |= scale_canary(self._kube, rollout, canary=canary, count=count)
        return changed

    def pods(self, rollout: Rollout) -> CanaryPods:
        canary = our_canary(self._kube, rollout) or {}
        return CanaryPods(
            wanted=int(canary.get("spec", {}).get("replicas", 0)),
            ready_pods=int(canary.get("status", {}).get("readyReplicas", 0) or 0),
            rolled_out=bool(canary) and deployment_rolled_out(canary),
        )

    def drift(self, rollout: Rollout) -> str | None:
        """A hand edit of the canary's image or stable's image or replica count, or None."""
        count = rollout.original_replicas
        return workload_drift(
            self._kube, rollout, stable_replicas=None if count is None else (count, count)
        )

    def exists(self, rollout: Rollout) -> bool:
        return our_canary(self._kube, rollout) is not None

    def pinned(self, rollout: Rollout) -> bool:
        """Whether stable traffic is pinned to the stable ReplicaSet (by the Service pin)."""
        return self._fronted and PINNED_SERVICES in rollout.router_state

    def repin(self, rollout: Rollout, stable: dict[str, Any]) -> bool:
        """Moves the stable Service's pin to stable's current ReplicaSet; True if it changed."""
        if not self.pinned(rollout):
            return False
        service = self.service(rollout)
        return pin_stable_service(self._kube, rollout, service=service, stable=stable)

    def remove(self, rollout: Rollout, *, unroute: Change, restore: Change | None = None) -> bool:
        """`unroute` (the router's object: all traffic to stable), then the canary Service and
        Deployment, then the stable Service's own selector, then `restore` (what the router
        puts back once no canary pod is left). True if anything changed."""
        changed = unroute()
        service = rollout.target.service if self._fronted else None
        if service:
            changed |= delete_canary_service(self._kube, rollout, service=service)
        changed |= delete_canary(self._kube, rollout)
        if service:
            changed |= unpin_stable_service(self._kube, rollout, name=service)
        if restore is not None:
            changed |= restore()
        return changed

    def promote(
        self,
        rollout: Rollout,
        *,
        all_to_canary: Change,
        remove: Change,
        pinned: bool | None = None,
        repin: Callable[[dict[str, Any]], bool] | None = None,
    ) -> bool:
        """Stable to the new image, then `remove` (the canary objects); True when done, safe
        to call again. `pinned`/`repin` default to the Service pin; a router that pins in its
        own object passes them."""
        check_canary_image(self._kube, rollout)  # never promote what was not measured
        if pinned if pinned is not None else self.pinned(rollout):
            return self._promote_through_canary(
                rollout,
                all_to_canary=all_to_canary,
                repin=repin or (lambda stable: self.repin(rollout, stable)),
                remove=remove,
            )
        return self._promote_then_remove(rollout, remove=remove)

    def rollback(self, rollout: Rollout, *, remove: Change) -> None:
        """The canary objects go first (all traffic to stable), then a stable that a promotion
        had already moved to the canary image is put back."""
        stable = self.stable(rollout)
        removed = remove()
        container, _ = stable_container(stable, rollout)
        restored = False
        if rollout.stable_image and container_image(stable, container) == rollout.canary_image:
            restored = set_stable_image(
                self._kube, rollout, stable=stable, image=rollout.stable_image
            )
        if removed or restored:
            self._kube.emit_event(
                involved=stable,
                reason="RolledBack",
                message=f"canary-bot rolled back {rollout.canary_image}: {rollout.reason or ''}",
                warning=True,
            )

    # ----------------------------------------------------------------- promotion

    def _promote_then_remove(self, rollout: Rollout, *, remove: Change) -> bool:
        """Stable traffic reaches stable's pods whatever their ReplicaSet: stable gets the new
        image; once it has rolled out, the canary objects go (their share returns to the
        now-updated stable)."""
        stable = self.stable(rollout)
        if set_stable_image(self._kube, rollout, stable=stable, image=rollout.canary_image):
            self._event(
                stable,
                "Promoting",
                f"canary-bot set {rollout.deployment} to {rollout.canary_image}",
            )
            return False
        if not deployment_rolled_out(stable, image=rollout.canary_image):
            return False
        if remove():
            self._promoted(stable, rollout)
        return True

    def _promote_through_canary(
        self,
        rollout: Rollout,
        *,
        all_to_canary: Change,
        repin: Callable[[dict[str, Any]], bool],
        remove: Change,
    ) -> bool:
        """Stable traffic is pinned to stable's ReplicaSet, which the new image is about to
        replace: if stable rolled out under the pin, its traffic would have no pods for a
        while. So the full-size canary takes all traffic first; then stable gets the new
        image; once it has rolled out the pin follows its new ReplicaSet, and removing the
        canary objects sends the traffic back."""
        stable = self.stable(rollout)
        container, _ = stable_container(stable, rollout)
        if container_image(stable, container) != rollout.canary_image:
            canary = read_canary(self._kube, rollout)
            total = max(int(stable["spec"].get("replicas", 1)), 1)
            if scale_canary(self._kube, rollout, canary=canary, count=total):
                return False
            if not deployment_rolled_out(canary) or all_to_canary():
                return False
            set_stable_image(self._kube, rollout, stable=stable, image=rollout.canary_image)
            self._event(
                stable,
                "Promoting",
                f"canary-bot set {rollout.deployment} to {rollout.canary_image} while the "
                "canary carries all traffic",
            )
            return False
        if not deployment_rolled_out(stable, image=rollout.canary_image):
            return False
        repin(stable)
        if remove():
            self._promoted(stable, rollout)
        return True

    def _promoted(self, stable: dict[str, Any], rollout: Rollout) -> None:
        self._event(
            stable,
            "Promoted",
            f"{rollout.canary_image} promoted; canary removed (rollout {rollout.id})",
        )

    def _event(self, stable: dict[str, Any], reason: str, message: str) -> None:
        self._kube.emit_event(involved=stable, reason=reason, message=message)
