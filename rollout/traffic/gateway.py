"""Strategy `gateway`: a Gateway API HTTPRoute weighs two Services, stable and canary.

The canary pods run in `<deployment>-canary` behind `<service>-canary`, a ClusterIP Service
with the stable Service's ports that selects only them (see `workloads`). Each rule of the
HTTPRoute (config `http_route`) whose only backend is `<service>` gets two `backendRefs`:
`<service>` with weight 100 - w and `<service>-canary` with weight w. The route's original spec
is kept in `router_state` and put back exactly after promotion or rollback, before the canary
Service and Deployment are deleted, so the route never names a Service that is gone.

The weight is set at the route, so `<service>` must reach only the stable pods: its selector
must ask for a label the canary pods do not share (e.g. `track: stable`), which
the bot pins to the stable ReplicaSet when its selector would reach the canary pods, as for
`nginx` (`workloads.pin_stable_service`).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from rollout.kube import CustomKind, KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.routes import choose_route, entry_label
from rollout.traffic.workloads import (
    PINNED_SERVICES,
    RouterError,
    canary_capacity,
    canary_pods,
    canary_service_name,
    check_selects_stable,
    delete_canary,
    delete_canary_service,
    ensure_canary,
    ensure_canary_service,
    needs_pin,
    original_selector,
    pin_stable_service,
    promote_then_remove,
    promote_through_canary,
    read_canary,
    read_service,
    read_stable,
    refuse_foreign_canaries,
    remember_selector,
    remove_then_restore,
    scale_canary,
    stable_container,
    stable_only,
    target_service,
    unpin_stable_service,
)

HTTP_ROUTE = CustomKind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
STATE = "gateway"  # router_state key: {"http_route": the route's original spec}


def refers_to(ref: dict[str, Any], *, service: str, namespace: str) -> bool:
    """Whether a backendRef names the core Service `service` of the route's namespace."""
    return (
        ref.get("group", "") == ""
        and ref.get("kind", "Service") == "Service"
        and ref.get("name") == service
        and ref.get("namespace", namespace) == namespace
    )


def split_backends(
    rules: list[dict[str, Any]],
    *,
    service: str,
    namespace: str,
    weight: int,
    route: str | None = None,
    owner: str = "the HTTPRoute",
    config_service: str = "",
) -> list[dict[str, Any]]:
    """`rules` with the one rule that carries the Service's traffic weighted between it and
    `<service>-canary`; every other rule exactly as it was. Raises if no rule, or several
    without `route` naming one, reach the Service, or the chosen one already shares its
    traffic between backends."""

    def reaches(rule: dict[str, Any]) -> bool:
        refs = rule.get("backendRefs") or []
        return any(refers_to(ref, service=service, namespace=namespace) for ref in refs)

    chosen = choose_route(
        rules,
        reaches=reaches,
        wanted=route,
        kind="rule",
        owner=owner,
        service=service,
        config_service=config_service,
    )
    picked = rules[chosen]
    refs = picked.get("backendRefs") or []
    if len(refs) > 1:
        raise RouterError(
            f"rule {entry_label(picked, chosen)} of the HTTPRoute already divides its "
            f"traffic between backends; the bot only splits a rule whose one backend is "
            f"{service}"
        )
    stable = copy.deepcopy(refs[0])
    canary = copy.deepcopy(refs[0])
    stable["weight"] = 100 - weight
    canary["name"] = canary_service_name(service)
    canary["weight"] = weight
    result = [copy.deepcopy(rule) for rule in rules]
    result[chosen] = {**copy.deepcopy(picked), "backendRefs": [stable, canary]}
    return result


def canary_weight(spec: dict[str, Any], *, service: str) -> float | None:
    """The canary's share (percent) in the first split rule; None if no rule is split."""
    for rule in spec.get("rules") or []:
        weights = {
            ref.get("name"): int(ref.get("weight", 1)) for ref in rule.get("backendRefs") or []
        }
        canary = canary_service_name(service)
        if set(weights) == {service, canary}:
            total = weights[service] + weights[canary]
            return round(100 * weights[canary] / total, 1) if total else 0.0
    return None


class GatewayRouter:
    def __init__(self, gateway: KubeGateway) -> None:
        self._kube = gateway

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        # Checked before anything is created, so `/canary start` refuses a setup the bot
        # cannot split, with the reason.
        stable = read_stable(self._kube, rollout)
        self._original(rollout, stable)
        refuse_foreign_canaries(self._kube, rollout, service=target_service(rollout))
        return stable_container(stable, rollout)

    def prepare(self, rollout: Rollout) -> Rollout:
        stable = read_stable(self._kube, rollout)
        saved = self._original(rollout, stable)
        service = read_service(self._kube, rollout, name=target_service(rollout))
        if needs_pin(original_selector(rollout, service), stable):
            rollout = remember_selector(rollout, service)
        # The stable Service off the canary pods before they exist; then pods, then the
        # Service that reaches them; the route names it only in set_weight.
        pin_stable_service(self._kube, rollout, service=service, stable=stable)
        ensure_canary(self._kube, rollout, stable=stable)
        ensure_canary_service(self._kube, rollout, service=service)
        if rollout.router_state.get(STATE) == saved:
            return rollout
        return replace(rollout, router_state={**rollout.router_state, STATE: saved})

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        saved = _saved(rollout)
        stable = read_stable(self._kube, rollout)
        canary = read_canary(self._kube, rollout)
        count = canary_capacity(int(stable["spec"].get("replicas", 1)), weight)
        self._repin(rollout, stable)
        # Pods up before the share goes up, share down before pods go down.
        raising = count > int(canary["spec"].get("replicas", 0))
        changed = raising and scale_canary(self._kube, rollout, canary=canary, count=count)
        if self._route(rollout, saved, weight=weight):
            self._kube.emit_event(
                involved=stable,
                reason="CanaryWeight",
                message=(
                    f"HTTPRoute {_route_name(rollout)}: "
                    f"{canary_service_name(target_service(rollout))} weight {weight}% "
                    f"(rollout {rollout.id})"
                ),
            )
            changed = True
        if not raising:
            changed |= scale_canary(self._kube, rollout, canary=canary, count=count)
        return changed

    def status(self, rollout: Rollout) -> TrafficStatus:
        route = self._kube.read_custom(HTTP_ROUTE, rollout.namespace, _route_name(rollout))
        spec = (route or {}).get("spec") or {}
        weight = canary_weight(spec, service=target_service(rollout))
        pods = canary_pods(self._kube, rollout)
        split = "not split" if weight is None else f"canary backend {weight:g}%"
        return TrafficStatus(
            weight=weight or 0.0,
            canary_ready=weight is not None and pods.ready,
            detail=f"HTTPRoute {_route_name(rollout)} {split}; {pods}",
        )

    def promote(self, rollout: Rollout) -> bool:
        def remove() -> bool:
            return self._remove_canary(rollout)

        if PINNED_SERVICES in rollout.router_state:
            return promote_through_canary(
                self._kube,
                rollout,
                all_to_canary=lambda: self.set_weight(rollout, 100),
                repin=lambda stable: self._repin(rollout, stable),
                remove_canary=remove,
            )
        return promote_then_remove(self._kube, rollout, remove_canary=remove)

    def rollback(self, rollout: Rollout) -> None:
        remove_then_restore(self._kube, rollout, remove_canary=lambda: self._remove_canary(rollout))

    # ----------------------------------------------------------------- helpers

    def _original(self, rollout: Rollout, stable: dict[str, Any]) -> dict[str, Any]:
        """What to restore: the saved spec once prepared, else the cluster's (checked)."""
        if STATE in rollout.router_state:
            saved: dict[str, Any] = rollout.router_state[STATE]
            return saved
        service = read_service(self._kube, rollout, name=target_service(rollout))
        check_selects_stable(service, stable)
        stable_only(self._kube, original_selector(rollout, service), stable=stable)  # pinnable
        route = self._kube.read_custom(HTTP_ROUTE, rollout.namespace, _route_name(rollout))
        if route is None:
            raise RouterError(
                f"HTTPRoute {rollout.namespace}/{_route_name(rollout)} does not exist"
            )
        split_backends(
            route["spec"].get("rules") or [],
            service=target_service(rollout),
            namespace=rollout.namespace,
            weight=0,
            **_which(rollout),
        )
        return {"http_route": route["spec"]}

    def _route(self, rollout: Rollout, saved: dict[str, Any], *, weight: int) -> bool:
        original = saved["http_route"]
        wanted = {
            **original,
            "rules": split_backends(
                original.get("rules") or [],
                service=target_service(rollout),
                namespace=rollout.namespace,
                weight=weight,
                **_which(rollout),
            ),
        }
        return self._kube.set_custom_spec(
            HTTP_ROUTE, rollout.namespace, _route_name(rollout), wanted
        )

    def _remove_canary(self, rollout: Rollout) -> bool:
        """The route as it was (all traffic to `<service>`), then the canary Service and pods."""
        saved = rollout.router_state.get(STATE)
        changed = False
        if saved is not None:
            changed |= self._kube.set_custom_spec(
                HTTP_ROUTE, rollout.namespace, _route_name(rollout), saved["http_route"]
            )
        if rollout.target.service:
            changed |= delete_canary_service(self._kube, rollout, service=rollout.target.service)
        changed |= delete_canary(self._kube, rollout)
        if rollout.target.service:  # no canary pod left: the stable Service's own selector
            changed |= unpin_stable_service(self._kube, rollout, name=rollout.target.service)
        return changed

    def _repin(self, rollout: Rollout, stable: dict[str, Any]) -> bool:
        if PINNED_SERVICES not in rollout.router_state:
            return False
        service = read_service(self._kube, rollout, name=target_service(rollout))
        return pin_stable_service(self._kube, rollout, service=service, stable=stable)


def _which(rollout: Rollout) -> dict[str, Any]:
    """The `route` choice and how messages name it, for `split_backends`."""
    return {
        "route": rollout.target.route,
        "owner": f"HTTPRoute {rollout.namespace}/{_route_name(rollout)}",
        "config_service": rollout.service,
    }


def _saved(rollout: Rollout) -> dict[str, Any]:
    saved = rollout.router_state.get(STATE)
    if saved is None:
        raise RouterError("the rollout was not prepared (no saved HTTPRoute)")
    return dict(saved)


def _route_name(rollout: Rollout) -> str:
    if not rollout.target.http_route:
        raise RouterError(
            f"strategy gateway needs `http_route:` in the config of {rollout.service}"
        )
    return rollout.target.http_route
