"""Strategy `alb`: the AWS Load Balancer Controller weighs two target groups of one Ingress rule.

The controller turns an Ingress annotation `alb.ingress.kubernetes.io/actions.<name>` holding
a `forward` action into a listener rule that forwards to several target groups by weight; a
path whose backend names the action (`service: {name: <name>, port: {name: use-annotation}}`)
uses that rule. So the bot adds the action `actions.<service>` (named after the stable Service,
as Argo Rollouts does) with two target groups, `<service>` and `<service>-canary` on the same
port, and points the backends that served the stable Service at it; each step sets the two
weights (100 - w and w). Nothing else of the Ingress changes: TLS, other hosts and paths, other
annotations stay as they were.

What it changes is recorded before the first change (`router_state["alb"]`: the backend the
paths had, where those paths are, whether the Ingress had annotations), so the Ingress is put
back exactly after promotion or rollback, before the canary Service and Deployment are removed:
the load balancer never forwards to a Service that is gone.

The canary Deployment, `<service>-canary` and the stable Service's pin (the weight is set at
the load balancer, so the stable Service must reach stable pods only) are the workload side,
`canary.CanaryWorkload`, exactly as for `nginx`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

from rollout.kube import KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.canary import CanaryWorkload
from rollout.traffic.workloads import RouterError, canary_service_name, target_service

ACTIONS = "alb.ingress.kubernetes.io/actions."
USE_ANNOTATION = "use-annotation"
STATE = "alb"  # router_state key: what the split changes, recorded before it does


def action_key(service: str) -> str:
    return ACTIONS + service


def split_backend(service: str) -> dict[str, Any]:
    """A path backend that sends its requests to the action named after `service`."""
    return {"service": {"name": service, "port": {"name": USE_ANNOTATION}}}


def service_port(backend: dict[str, Any]) -> str:
    """The backend's port as a target group names it: the port's name, or its number."""
    port = (backend.get("service") or {}).get("port") or {}
    return str(port.get("name") or port.get("number") or "")


def forward_action(*, service: str, port: str, weight: int) -> str:
    """The action annotation's JSON: `weight` percent to `<service>-canary`, the rest to
    `<service>`, both on `port`."""
    weight = min(max(weight, 0), 100)
    groups = [
        {"serviceName": service, "servicePort": port, "weight": 100 - weight},
        {"serviceName": canary_service_name(service), "servicePort": port, "weight": weight},
    ]
    return json.dumps({"type": "forward", "forwardConfig": {"targetGroups": groups}})


def canary_weight(annotations: dict[str, str], *, service: str) -> float | None:
    """The canary's share (percent) in the action; None if there is no such action."""
    raw = annotations.get(action_key(service))
    if raw is None:
        return None
    try:
        groups = json.loads(raw)["forwardConfig"]["targetGroups"]
        weights = {g["serviceName"]: int(g.get("weight", 0)) for g in groups}
    except (ValueError, KeyError, TypeError):
        return None
    total = sum(weights.values())
    canary = weights.get(canary_service_name(service), 0)
    return round(100 * canary / total, 1) if total else 0.0


def serving_paths(ingress: dict[str, Any], *, service: str) -> list[list[int]]:
    """Where the Ingress routes to `service`: [rule index, path index] of each path."""
    found = []
    for r, rule in enumerate((ingress.get("spec") or {}).get("rules") or []):
        for p, path in enumerate((rule.get("http") or {}).get("paths") or []):
            if ((path.get("backend") or {}).get("service") or {}).get("name") == service:
                found.append([r, p])
    return found


def record(ingress: dict[str, Any], *, service: str) -> dict[str, Any]:
    """What the split will change, checked: the paths to `service`, which must share one
    backend (one action has one port), and whether the action's name is free."""
    name = f"{ingress['metadata']['namespace']}/{ingress['metadata']['name']}"
    annotations = ingress["metadata"].get("annotations") or {}
    if action_key(service) in annotations:
        raise RouterError(
            f"Ingress {name} already has the annotation {action_key(service)}: the bot will "
            "not change an action it did not add. Remove it, then start again."
        )
    positions = serving_paths(ingress, service=service)
    if not positions:
        raise RouterError(f"no path of Ingress {name} has Service {service} as its backend")
    rules = ingress["spec"]["rules"]
    backends = [rules[r]["http"]["paths"][p]["backend"] for r, p in positions]
    if any(backend != backends[0] for backend in backends):
        ports = sorted({service_port(b) for b in backends})
        raise RouterError(
            f"the paths of Ingress {name} reach Service {service} on different ports "
            f"({', '.join(ports)}); one ALB action forwards to one port, so the bot cannot "
            "split them with one weight"
        )
    return {"paths": positions, "backend": backends[0], "annotated": bool(annotations)}


def with_backends(
    rules: list[dict[str, Any]], positions: list[list[int]], *, old: Any, new: Any
) -> list[dict[str, Any]]:
    """`rules` with the backend at each recorded position set to `new` where it is `old`;
    a path somebody changed meanwhile is left as they made it."""
    result = copy.deepcopy(rules)
    for r, p in positions:
        if r >= len(result):
            continue
        paths = (result[r].get("http") or {}).get("paths") or []
        if p < len(paths) and paths[p].get("backend") == old:
            paths[p]["backend"] = copy.deepcopy(new)
    return result


class AlbRouter:
    """The traffic side: the Ingress's action annotation and the backends that use it."""

    def __init__(self, gateway: KubeGateway) -> None:
        self._kube = gateway
        self._workload = CanaryWorkload(gateway)

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        # Checked before anything is created, so `/canary start` refuses a setup the bot
        # cannot split, with the reason.
        found = self._workload.check(rollout)
        self._recorded(rollout)
        return found

    def prepare(self, rollout: Rollout) -> Rollout:
        saved = self._recorded(rollout)
        # Pods and the Service that reaches them; the Ingress names it only in set_weight.
        rollout = self._workload.create(rollout)
        if rollout.router_state.get(STATE) == saved:
            return rollout
        return replace(rollout, router_state={**rollout.router_state, STATE: saved})

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        saved = _saved(rollout)
        service = target_service(rollout)

        def route() -> bool:
            ingress = self._ingress(rollout)
            action = forward_action(
                service=service, port=service_port(saved["backend"]), weight=weight
            )
            rules = with_backends(
                ingress["spec"].get("rules") or [],
                saved["paths"],
                old=saved["backend"],
                new=split_backend(service),
            )
            annotations = ingress["metadata"].get("annotations") or {}
            if annotations.get(action_key(service)) == action and rules == ingress["spec"].get(
                "rules"
            ):
                return False
            patch = {
                "metadata": {"annotations": {action_key(service): action}},
                "spec": {"rules": rules},
            }
            self._kube.patch_ingress(rollout.namespace, _ingress_name(rollout), patch)
            self._kube.emit_event(
                involved=ingress,
                reason="CanaryWeight",
                message=(
                    f"ALB action {service}: {canary_service_name(service)} weight {weight}% "
                    f"(rollout {rollout.id})"
                ),
            )
            return True

        return self._workload.resize(rollout, weight, route=route)

    def drift(self, rollout: Rollout) -> str | None:
        return self._workload.drift(rollout)

    def status(self, rollout: Rollout) -> TrafficStatus:
        ingress = self._kube.read_ingress(rollout.namespace, _ingress_name(rollout)) or {}
        annotations = ingress.get("metadata", {}).get("annotations") or {}
        weight = canary_weight(annotations, service=target_service(rollout))
        pods = self._workload.pods(rollout)
        split = "not split" if weight is None else f"canary target group {weight:g}%"
        return TrafficStatus(
            weight=weight or 0.0,
            canary_ready=weight is not None and pods.ready,
            detail=f"Ingress {_ingress_name(rollout)} {split}; {pods}",
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

    def _ingress(self, rollout: Rollout) -> dict[str, Any]:
        ingress = self._kube.read_ingress(rollout.namespace, _ingress_name(rollout))
        if ingress is None:
            raise RouterError(
                f"Ingress {rollout.namespace}/{_ingress_name(rollout)} does not exist"
            )
        return ingress

    def _recorded(self, rollout: Rollout) -> dict[str, Any]:
        """What to restore: the record once prepared, else the cluster's (checked)."""
        if STATE in rollout.router_state:
            saved: dict[str, Any] = rollout.router_state[STATE]
            return saved
        return record(self._ingress(rollout), service=target_service(rollout))

    def _remove(self, rollout: Rollout) -> bool:
        """The Ingress as it was (all traffic to `<service>`), then the canary Service and pods."""

        def unroute() -> bool:
            saved = rollout.router_state.get(STATE)
            ingress = self._kube.read_ingress(rollout.namespace, _ingress_name(rollout))
            if saved is None or ingress is None:
                return False
            return self._restore(rollout, ingress, saved)

        return self._workload.remove(rollout, unroute=unroute)

    def _restore(self, rollout: Rollout, ingress: dict[str, Any], saved: dict[str, Any]) -> bool:
        service = target_service(rollout)
        current = ingress["spec"].get("rules") or []
        rules = with_backends(
            current, saved["paths"], old=split_backend(service), new=saved["backend"]
        )
        annotations = ingress["metadata"].get("annotations") or {}
        if action_key(service) not in annotations and rules == current:
            return False
        others = {k: v for k, v in annotations.items() if k != action_key(service)}
        # An Ingress that had no annotations gets none back (not an empty map).
        removed: dict[str, Any] | None = (
            {action_key(service): None} if others or saved["annotated"] else None
        )
        patch = {"metadata": {"annotations": removed}, "spec": {"rules": rules}}
        self._kube.patch_ingress(rollout.namespace, _ingress_name(rollout), patch)
        return True


def _saved(rollout: Rollout) -> dict[str, Any]:
    saved = rollout.router_state.get(STATE)
    if saved is None:
        raise RouterError("the rollout was not prepared (no record of the Ingress)")
    return dict(saved)


def _ingress_name(rollout: Rollout) -> str:
    if not rollout.target.ingress:
        raise RouterError(f"strategy alb needs `ingress:` in the config of {rollout.service}")
    return rollout.target.ingress
