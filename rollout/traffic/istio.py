"""Strategy `istio`: the mesh splits requests between two subsets of the same Service's pods.

The canary pods run in `<deployment>-canary` (the workload side, `canary.CanaryWorkload`;
this module is the VirtualService and DestinationRule side). The DestinationRule (config
`destination_rule`, default: the VirtualService's name) gets two subsets, `stable` with the
stable pod template's labels and `canary` with the canary's (the same labels with
`track: canary`); if there is no such DestinationRule the bot creates one and deletes it after.
Each HTTP route of the VirtualService that sends everything to the Service is rewritten into
two weighted destinations, `subset: stable` and `subset: canary`, summing to 100. With header
routing (`/canary start ... --header name=value`, kept in `router_state["header"]`) a copy of
each such route, matching that header as well, comes first and sends its requests to the canary
whatever the weight.

A subset selects pods whose labels include all of its labels, so a stable subset of just the
stable pods' labels (`app: checkout`) would select the canary pods too. Then the bot pins the
`stable` subset to the stable ReplicaSet's `pod-template-hash`, and promotes through the
canary: all traffic to the full-size canary, stable updated, the pin moved to stable's new
ReplicaSet, traffic back. Pods that carry a `track` label other than `canary` (say
`track: stable`) need no pin. The original
VirtualService and DestinationRule specs are kept in `router_state` and put back exactly after
promotion or rollback, once all traffic is on stable and the canary is gone.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from rollout.kube import MANAGED_BY, CustomKind, KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.canary import CanaryWorkload
from rollout.traffic.pinning import (
    needs_pin,
    stable_only,
)
from rollout.traffic.routes import choose_route, entry_label
from rollout.traffic.workloads import (
    ROLLOUT_ANNOTATION,
    RouterError,
    canary_pod_labels,
    ours,
    pod_labels,
    target_service,
    uid_of,
)

VIRTUAL_SERVICE = CustomKind("networking.istio.io", "v1", "virtualservices", "VirtualService")
DESTINATION_RULE = CustomKind("networking.istio.io", "v1", "destinationrules", "DestinationRule")
STABLE, CANARY = "stable", "canary"
STATE = "istio"  # router_state key: {"virtual_service": spec, "destination_rule": spec | None}


def names_service(host: str, *, service: str, namespace: str) -> bool:
    """Whether a mesh host (`checkout`, `checkout.shop`, `checkout.shop.svc.cluster.local`)
    names the Service `service` in `namespace`."""
    parts = host.split(".")
    if parts[0] != service:
        return False
    return len(parts) == 1 or (parts[1] == namespace and (len(parts) == 2 or parts[2] == "svc"))


def parse_header(header: Any) -> tuple[str, str] | None:
    """`"x-user-tier=premium"` -> ("x-user-tier", "premium"); Istio wants lower-case names."""
    if not header:
        return None
    name, _, value = str(header).partition("=")
    if not name.strip() or not value.strip():
        raise RouterError(f"header routing {header!r} must be `name=value` for Istio")
    return name.strip().lower(), value.strip()


def split_routes(
    http: list[dict[str, Any]],
    *,
    service: str,
    namespace: str,
    weight: int,
    header: tuple[str, str] | None,
    route: str | None = None,
    owner: str = "the VirtualService",
    config_service: str = "",
) -> list[dict[str, Any]]:
    """`http` with the one route that carries the Service's traffic split between the subsets
    (and preceded by its header-matching copy); every other route exactly as it was. Raises if
    no route, or several without `route` naming one, reach the Service, or if the chosen route
    already splits its traffic some other way."""

    def reaches(entry: dict[str, Any]) -> bool:
        return any(
            names_service(_host(t), service=service, namespace=namespace)
            for t in entry.get("route") or []
        )

    chosen = choose_route(
        http,
        reaches=reaches,
        wanted=route,
        kind="http route",
        owner=owner,
        service=service,
        config_service=config_service,
    )
    picked = http[chosen]
    targets = picked.get("route") or []
    if len(targets) > 1 or targets[0]["destination"].get("subset"):
        raise RouterError(
            f"HTTP route {entry_label(picked, chosen)} already divides the traffic of "
            f"{service} between destinations; the bot only splits a route with one "
            "destination and no subset"
        )
    result = [copy.deepcopy(entry) for entry in http[:chosen]]
    if header is not None:
        result.append(_header_route(picked, header))
    split = copy.deepcopy(picked)
    split["route"] = [
        _to_subset(targets[0], STABLE, 100 - weight),
        _to_subset(targets[0], CANARY, weight),
    ]
    result.append(split)
    result.extend(copy.deepcopy(entry) for entry in http[chosen + 1 :])
    return result


def canary_weight(spec: dict[str, Any]) -> float | None:
    """The canary subset's weight in a split VirtualService spec; None if it is not split."""
    for route in spec.get("http") or []:
        targets = {t["destination"].get("subset"): t for t in route.get("route") or []}
        if set(targets) == {STABLE, CANARY}:
            return float(targets[CANARY].get("weight", 0))
    return None


def with_subsets(
    original: dict[str, Any] | None, *, host: str, stable: dict[str, str], canary: dict[str, str]
) -> dict[str, Any]:
    """A DestinationRule spec: the original's, with subsets `stable` and `canary` (replacing
    any of those names), or a new one for `host`."""
    spec: dict[str, Any] = copy.deepcopy(original) if original is not None else {"host": host}
    kept = [s for s in spec.get("subsets") or [] if s.get("name") not in (STABLE, CANARY)]
    spec["subsets"] = [
        *kept,
        {"name": STABLE, "labels": stable},
        {"name": CANARY, "labels": canary},
    ]
    return spec


class IstioRouter:
    """The traffic side: the VirtualService's weights and the DestinationRule's subsets. The
    canary Deployment is the `CanaryWorkload`'s (without a Service of its own: the subsets
    reach its pods, and the `stable` subset carries the pin)."""

    def __init__(self, gateway: KubeGateway) -> None:
        self._kube = gateway
        self._workload = CanaryWorkload(gateway, fronted=False)

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        # Checked before anything is created, so `/canary start` refuses a setup the bot
        # cannot split, with the reason.
        self._originals(rollout, self._workload.stable(rollout))
        return self._workload.check(rollout)

    def prepare(self, rollout: Rollout) -> Rollout:
        saved = self._originals(rollout, self._workload.stable(rollout))
        rollout = self._workload.create(rollout)
        if rollout.router_state.get(STATE) == saved:
            return rollout
        return replace(rollout, router_state={**rollout.router_state, STATE: saved})

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        saved = _saved(rollout)
        header = parse_header(rollout.router_state.get("header"))

        def route() -> bool:
            stable = self._workload.stable(rollout)
            changed = self._subsets(rollout, saved, stable)
            if not self._route(rollout, saved, weight=weight, header=header):
                return changed
            self._kube.emit_event(
                involved=stable,
                reason="CanaryWeight",
                message=(
                    f"VirtualService {_vs_name(rollout)}: canary subset {weight}%"
                    + (f", {header[0]}={header[1]} to canary" if header else "")
                    + f" (rollout {rollout.id})"
                ),
            )
            return True

        return self._workload.resize(rollout, weight, route=route)

    def drift(self, rollout: Rollout) -> str | None:
        return self._workload.drift(rollout)

    def status(self, rollout: Rollout) -> TrafficStatus:
        service = self._kube.read_custom(VIRTUAL_SERVICE, rollout.namespace, _vs_name(rollout))
        weight = canary_weight((service or {}).get("spec") or {})
        pods = self._workload.pods(rollout)
        split = "not split" if weight is None else f"canary subset {weight:g}%"
        return TrafficStatus(
            weight=weight or 0.0,
            canary_ready=weight is not None and pods.ready,
            detail=f"VirtualService {_vs_name(rollout)} {split}; {pods}",
        )

    def promote(self, rollout: Rollout) -> bool:
        stable = self._workload.stable(rollout)
        return self._workload.promote(
            rollout,
            all_to_canary=lambda: self.set_weight(rollout, 100),
            remove=lambda: self._remove(rollout),
            # The `stable` subset is pinned to a ReplicaSet the new image replaces.
            pinned=needs_pin(pod_labels(stable), stable),
            repin=lambda now: self._subsets(rollout, _saved(rollout), now),
        )

    def rollback(self, rollout: Rollout) -> None:
        self._workload.rollback(rollout, remove=lambda: self._remove(rollout))

    # ----------------------------------------------------------------- helpers

    def _originals(self, rollout: Rollout, stable: dict[str, Any]) -> dict[str, Any]:
        """What to restore: the saved specs once prepared, else the cluster's (checked)."""
        if STATE in rollout.router_state:
            saved: dict[str, Any] = rollout.router_state[STATE]
            return saved
        service = target_service(rollout)
        # Pods labelled only like the canary's (`app: checkout`) get the `stable` subset pinned
        # to stable's ReplicaSet; that needs its current ReplicaSet to be found.
        stable_only(self._kube, pod_labels(stable), stable=stable)
        virtual = self._kube.read_custom(VIRTUAL_SERVICE, rollout.namespace, _vs_name(rollout))
        if virtual is None:
            raise RouterError(
                f"VirtualService {rollout.namespace}/{_vs_name(rollout)} does not exist"
            )
        split_routes(
            virtual["spec"].get("http") or [],
            service=service,
            namespace=rollout.namespace,
            weight=0,
            header=parse_header(rollout.router_state.get("header")),
            **_which(rollout),
        )
        rule = self._kube.read_custom(DESTINATION_RULE, rollout.namespace, _dr_name(rollout))
        if rule is not None:
            host = rule["spec"]["host"]
            if not names_service(host, service=service, namespace=rollout.namespace):
                raise RouterError(
                    f"DestinationRule {_dr_name(rollout)} is for host {host}, not Service "
                    f"{service}; name the right one in `destination_rule:`"
                )
        return {
            "virtual_service": virtual["spec"],
            "destination_rule": None if rule is None else rule["spec"],
        }

    def _subsets(self, rollout: Rollout, saved: dict[str, Any], stable: dict[str, Any]) -> bool:
        wanted = with_subsets(
            saved["destination_rule"],
            host=_service_host(rollout, saved),
            # Read afresh, so the pin follows stable to a new ReplicaSet on promotion.
            stable=stable_only(self._kube, pod_labels(stable), stable=stable),
            canary=canary_pod_labels(stable),
        )
        name = _dr_name(rollout)
        if (
            saved["destination_rule"] is None
            and self._kube.read_custom(DESTINATION_RULE, rollout.namespace, name) is None
        ):
            self._kube.create_custom(
                DESTINATION_RULE,
                rollout.namespace,
                {
                    "apiVersion": DESTINATION_RULE.api_version,
                    "kind": DESTINATION_RULE.kind,
                    "metadata": {
                        "name": name,
                        "namespace": rollout.namespace,
                        "labels": dict(MANAGED_BY),
                        "annotations": {ROLLOUT_ANNOTATION: rollout.id},
                    },
                    "spec": wanted,
                },
            )
            return True
        return self._kube.set_custom_spec(DESTINATION_RULE, rollout.namespace, name, wanted)

    def _route(
        self,
        rollout: Rollout,
        saved: dict[str, Any],
        *,
        weight: int,
        header: tuple[str, str] | None,
        only_if_split: bool = False,
    ) -> bool:
        original = saved["virtual_service"]
        wanted = {
            **original,
            "http": split_routes(
                original.get("http") or [],
                service=target_service(rollout),
                namespace=rollout.namespace,
                weight=weight,
                header=header,
                **_which(rollout),
            ),
        }
        return self._kube.set_custom_spec(
            VIRTUAL_SERVICE,
            rollout.namespace,
            _vs_name(rollout),
            wanted,
            unless=original if only_if_split else None,
        )

    def _remove(self, rollout: Rollout) -> bool:
        """All traffic to stable, canary deleted, then the VirtualService and the
        DestinationRule as they were (a VirtualService never names a missing subset)."""
        saved = rollout.router_state.get(STATE)

        def unroute() -> bool:
            if saved is None or not self._workload.exists(rollout):
                return False
            return self._route(rollout, saved, weight=0, header=None, only_if_split=True)

        def restore() -> bool:
            return saved is not None and self._restore(rollout, saved)

        return self._workload.remove(rollout, unroute=unroute, restore=restore)

    def _restore(self, rollout: Rollout, saved: dict[str, Any]) -> bool:
        changed = self._kube.set_custom_spec(
            VIRTUAL_SERVICE,
            rollout.namespace,
            _vs_name(rollout),
            saved["virtual_service"],
        )
        name = _dr_name(rollout)
        if saved["destination_rule"] is not None:
            changed |= self._kube.set_custom_spec(
                DESTINATION_RULE, rollout.namespace, name, saved["destination_rule"]
            )
            return changed
        # Created by the bot for this rollout (none existed): it goes, and only that one.
        rule = ours(self._kube.read_custom(DESTINATION_RULE, rollout.namespace, name), rollout)
        if rule is not None:
            self._kube.delete_custom(DESTINATION_RULE, rollout.namespace, name, uid=uid_of(rule))
            changed = True
        return changed


def _which(rollout: Rollout) -> dict[str, Any]:
    """The `route` choice and how messages name it, for `split_routes`."""
    return {
        "route": rollout.target.route,
        "owner": f"VirtualService {rollout.namespace}/{_vs_name(rollout)}",
        "config_service": rollout.service,
    }


def _saved(rollout: Rollout) -> dict[str, Any]:
    saved = rollout.router_state.get(STATE)
    if saved is None:
        raise RouterError("the rollout was not prepared (no saved VirtualService)")
    return dict(saved)


def _vs_name(rollout: Rollout) -> str:
    if not rollout.target.virtual_service:
        raise RouterError(
            f"strategy istio needs `virtual_service:` in the config of {rollout.service}"
        )
    return rollout.target.virtual_service


def _dr_name(rollout: Rollout) -> str:
    return rollout.target.destination_rule or _vs_name(rollout)


def _host(target: dict[str, Any]) -> str:
    return str((target.get("destination") or {}).get("host", ""))


def _service_host(rollout: Rollout, saved: dict[str, Any]) -> str:
    """The host the VirtualService uses for the Service (a new DestinationRule uses it too)."""
    service = target_service(rollout)
    for route in saved["virtual_service"].get("http") or []:
        for target in route.get("route") or []:
            if names_service(_host(target), service=service, namespace=rollout.namespace):
                return _host(target)
    return service


def _to_subset(target: dict[str, Any], subset: str, weight: int) -> dict[str, Any]:
    moved = copy.deepcopy(target)
    moved["destination"]["subset"] = subset
    moved["weight"] = weight
    return moved


def _header_route(route: dict[str, Any], header: tuple[str, str]) -> dict[str, Any]:
    """A copy of `route` that also requires the header and sends everything to the canary."""
    name, value = header
    first = copy.deepcopy(route)
    if route.get("name"):
        first["name"] = f"{route['name']}-canary-header"
    matches = route.get("match") or [{}]
    first["match"] = [
        {**match, "headers": {**(match.get("headers") or {}), name: {"exact": value}}}
        for match in copy.deepcopy(matches)
    ]
    first["route"] = [_to_subset(route["route"][0], CANARY, 100)]
    return first
