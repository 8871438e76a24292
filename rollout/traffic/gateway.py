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
`nginx`. All of that is the workload side (`canary.CanaryWorkload`); this module is the
HTTPRoute side.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from rollout.kube import CustomKind, KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.canary import CanaryWorkload
from rollout.traffic.routes import choose_route, entry_label
from rollout.traffic.workloads import RouterError, canary_service_name, target_service

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
    """The traffic side: the HTTPRoute's backendRefs. The canary Deployment, its Service and
    the stable Service's pin are the `CanaryWorkload`'s."""

    def __init__(self, gateway: KubeGateway) -> None:
        self._kube = gateway
        self._workload = CanaryWorkload(gateway)

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        # Checked before anything is created, so `/canary start` refuses a setup the bot
        # cannot split, with the reason.
        found = self._workload.check(rollout)
        self._original(rollout)
        return found

    def prepare(self, rollout: Rollout) -> Rollout:
        saved = self._original(rollout)
        # Pods, then the Service that reaches them; the route names it only in set_weight.
        rollout = self._workload.create(rollout)
        if rollout.router_state.get(STATE) == saved:
            return rollout
        return replace(rollout, router_state={**rollout.router_state, STATE: saved})

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        saved = _saved(rollout)

        def route() -> bool:
            if not self._route(rollout, saved, weight=weight):
                return False
            self._kube.emit_event(
                involved=self._workload.stable(rollout),
                reason="CanaryWeight",
                message=(
                    f"HTTPRoute {_route_name(rollout)}: "
                    f"{canary_service_name(target_service(rollout))} weight {weight}% "
                    f"(rollout {rollout.id})"
                ),
            )
            return True

        return self._workload.resize(rollout, weight, route=route)

    def drift(self, rollout: Rollout) -> str | None:
        return self._workload.drift(rollout)

    def status(self, rollout: Rollout) -> TrafficStatus:
        route = self._kube.read_custom(HTTP_ROUTE, rollout.namespace, _route_name(rollout))
        spec = (route or {}).get("spec") or {}
        weight = canary_weight(spec, service=target_service(rollout))
        pods = self._workload.pods(rollout)
        split = "not split" if weight is None else f"canary backend {weight:g}%"
        return TrafficStatus(
            weight=weight or 0.0,
            canary_ready=weight is not None and pods.ready,
            detail=f"HTTPRoute {_route_name(rollout)} {split}; {pods}",
        )

    def promote(self, rollout: Rollout) -> bool:
        return self._workload.promote(
            rollout,
            all_to_canary=lambda: self.set_weight(rollout, 100),
            remove=lambda: self._remove(rollout),
        )

    def rollback(self, rollout: Rollout) -> None:
        self._workload.rollback(rollout, remove=lambda: self._remove(rollout))

    # ----------------------------------------------------------------- helpers

    def _original(self, rollout: Rollout) -> dict[str, Any]:
        """What to restore: the saved spec once prepared, else the cluster's (checked)."""
        if STATE in rollout.router_state:
            saved: dict[str, Any] = rollout.router_state[STATE]
            return saved
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

    def _remove(self, rollout: Rollout) -> bool:
        """The route as it was (all traffic to `<service>`), then the canary Service and pods."""

        def unroute() -> bool:
            saved = rollout.router_state.get(STATE)
            if saved is None:
                return False
            return self._kube.set_custom_spec(
                HTTP_ROUTE, rollout.namespace, _route_name(rollout), saved["http_route"]
            )

        return self._workload.remove(rollout, unroute=unroute)


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
