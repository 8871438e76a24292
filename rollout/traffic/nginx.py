"""Strategy `nginx`: ingress-nginx splits requests between two Ingresses for the same host.

Beside the stable Ingress the bot puts `<ingress>-canary`, a copy of the stable Ingress's rules
for the paths served by the stable Service, pointing at `<service>-canary` (the canary pods
only) and marked `nginx.ingress.kubernetes.io/canary: "true"`; ingress-nginx then sends
`canary-weight` percent of those requests to it. Optional header and cookie routing come from
`rollout.router_state` (`header`: "name=value" or "name", `cookie`: "NAME"); ingress-nginx
applies header before cookie before weight. The stable Ingress, Service and Deployment are
never modified, except the stable Deployment's image on promotion, so they need no restoring.

Since the weight is set at the Ingress, the stable Service must not select the canary pods as
well, or they would also get a share of the stable traffic: when its selector would reach them
(pods labelled only `app: checkout`), the bot pins it to the stable ReplicaSet while the canary
exists, promotes through the canary, and restores it (all of which is the workload side,
`canary.CanaryWorkload`; this module is the Ingress side).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from rollout.kube import MANAGED_BY, KubeGateway
from rollout.model import Rollout
from rollout.traffic.base import TrafficStatus
from rollout.traffic.canary import CanaryWorkload
from rollout.traffic.workloads import (
    ROLLOUT_ANNOTATION,
    RouterError,
    canary_service_name,
    ours,
    refuse_foreign,
    target_service,
    uid_of,
)

PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
WEIGHT = PREFIX + "canary-weight"
BY_HEADER = PREFIX + "canary-by-header"
BY_HEADER_VALUE = PREFIX + "canary-by-header-value"
BY_COOKIE = PREFIX + "canary-by-cookie"
# Every annotation the bot sets on the canary Ingress; any other one is left alone.
OWNED = (CANARY, WEIGHT, BY_HEADER, BY_HEADER_VALUE, BY_COOKIE)
# The legacy way to pick the controller; copied so the same controller sees the canary.
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def canary_annotations(weight: int, router_state: dict[str, Any]) -> dict[str, str]:
    """The canary Ingress annotations for a weight and the rollout's header/cookie routing."""
    annotations = {CANARY: "true", WEIGHT: str(min(max(weight, 0), 100))}
    header = router_state.get("header")
    if header:
        name, _, value = str(header).partition("=")
        if not _TOKEN.match(name.strip()):
            raise RouterError(f"header routing {header!r} is not `name=value` or `name`")
        annotations[BY_HEADER] = name.strip()
        if value.strip():
            annotations[BY_HEADER_VALUE] = value.strip()
    cookie = router_state.get("cookie")
    if cookie:
        if not _TOKEN.match(str(cookie)):
            raise RouterError(f"cookie routing {cookie!r} is not a cookie name")
        annotations[BY_COOKIE] = str(cookie)
    return annotations


class NginxRouter:
    """The traffic side: the canary Ingress and its annotations. The canary Deployment, its
    Service and the stable Service's pin are the `CanaryWorkload`'s."""

    def __init__(self, gateway: KubeGateway) -> None:
        self._kube = gateway
        self._workload = CanaryWorkload(gateway)

    def stable_image(self, rollout: Rollout) -> tuple[str, str]:
        # Checked before anything is created, so a setup the bot cannot split is refused at
        # `/canary start` with the reason, instead of failing half-way through.
        found = self._workload.check(rollout, ingress=rollout.target.ingress)
        self._check(rollout)
        return found

    def prepare(self, rollout: Rollout) -> Rollout:
        ingress = self._check(rollout)
        annotations = canary_annotations(0, rollout.router_state)
        # Pods and the Service that reaches them first; then the Ingress that routes to it:
        # nothing ever points at an object that does not exist yet.
        rollout = self._workload.create(rollout)
        existing = self._kube.read_ingress(rollout.namespace, _canary_ingress(rollout))
        if existing is None:
            body = canary_ingress_body(ingress, rollout, annotations=annotations)
            self._kube.create_ingress(rollout.namespace, body)
        else:
            refuse_foreign(existing, rollout, kind="Ingress")
        return rollout

    def set_weight(self, rollout: Rollout, weight: int) -> bool:
        wanted = canary_annotations(weight, rollout.router_state)
        ingress = self._canary_ingress(rollout)
        if ingress is None:
            raise RouterError(f"canary Ingress {_canary_ingress(rollout)} is missing")

        def route() -> bool:
            current = ingress["metadata"].get("annotations") or {}
            patch = {key: wanted.get(key) for key in OWNED if current.get(key) != wanted.get(key)}
            if not patch:
                return False
            self._kube.patch_ingress(
                rollout.namespace, _canary_ingress(rollout), {"metadata": {"annotations": patch}}
            )
            # On the stable Ingress: it outlives the canary one, so `kubectl describe` on it
            # keeps the rollout's weight history.
            stable_ingress = None
            if rollout.target.ingress:
                stable_ingress = self._kube.read_ingress(rollout.namespace, rollout.target.ingress)
            self._kube.emit_event(
                involved=stable_ingress or ingress,
                reason="CanaryWeight",
                message=f"canary weight {wanted[WEIGHT]}% (rollout {rollout.id})",
            )
            return True

        # While the canary Service has no ready endpoint at all, ingress-nginx sends its
        # share to stable.
        return self._workload.resize(rollout, weight, route=route)

    def drift(self, rollout: Rollout) -> str | None:
        return self._workload.drift(rollout)

    def status(self, rollout: Rollout) -> TrafficStatus:
        ingress = self._canary_ingress(rollout)
        if ingress is None:
            return TrafficStatus(weight=0.0, canary_ready=False, detail="no canary Ingress")
        annotations = ingress["metadata"].get("annotations") or {}
        weight = _weight(annotations)
        pods = self._workload.pods(rollout)
        routing = "".join(
            f", {label} {annotations[key]}"
            for key, label in ((BY_HEADER, "header"), (BY_COOKIE, "cookie"))
            if key in annotations
        )
        return TrafficStatus(
            weight=weight,
            canary_ready=pods.ready,
            detail=(
                f"canary-weight {weight:g}% on Ingress {_canary_ingress(rollout)}{routing}; {pods}"
            ),
        )

    def promote(self, rollout: Rollout) -> bool:
        # Unpinned, dropping the canary Ingress moves its share back to the updated stable.
        return self._workload.promote(
            rollout,
            all_to_canary=lambda: self.set_weight(rollout, 100),
            remove=lambda: self._remove(rollout),
        )

    def rollback(self, rollout: Rollout) -> None:
        self._workload.rollback(rollout, remove=lambda: self._remove(rollout))

    # ----------------------------------------------------------------- helpers

    def _check(self, rollout: Rollout) -> dict[str, Any]:
        """The stable Ingress, once it is known to be usable."""
        service = target_service(rollout)
        if not rollout.target.ingress:
            raise RouterError(
                f"strategy nginx needs `ingress:` (the Ingress in front of Service "
                f"{service}) in the config of {rollout.service}"
            )
        ingress = self._kube.read_ingress(rollout.namespace, rollout.target.ingress)
        if ingress is None:
            raise RouterError(
                f"Ingress {rollout.namespace}/{rollout.target.ingress} does not exist"
            )
        if (ingress["metadata"].get("annotations") or {}).get(CANARY) == "true":
            raise RouterError(f"Ingress {rollout.target.ingress} is itself a canary Ingress")
        canary_rules(ingress, service=service)  # raises if none
        canary_annotations(0, rollout.router_state)  # raises on bad header/cookie routing
        return ingress

    def _canary_ingress(self, rollout: Rollout) -> dict[str, Any] | None:
        """The canary Ingress, if the bot created it for this rollout."""
        return ours(self._kube.read_ingress(rollout.namespace, _canary_ingress(rollout)), rollout)

    def _remove(self, rollout: Rollout) -> bool:
        def unroute() -> bool:
            canary_ingress = self._canary_ingress(rollout) if rollout.target.ingress else None
            if canary_ingress is None:
                return False
            self._kube.delete_ingress(
                rollout.namespace, _canary_ingress(rollout), uid=uid_of(canary_ingress)
            )
            return True

        return self._workload.remove(rollout, unroute=unroute)


def _canary_ingress(rollout: Rollout) -> str:
    return f"{rollout.target.ingress}-canary"


def _weight(annotations: dict[str, str]) -> float:
    if annotations.get(CANARY) != "true":
        return 0.0
    try:
        return float(annotations.get(WEIGHT, "0"))
    except ValueError:
        return 0.0


def _to_canary(backend: dict[str, Any], *, service: str) -> dict[str, Any] | None:
    """The backend pointed at `<service>-canary` if it served `service`, else None."""
    if (backend.get("service") or {}).get("name") != service:
        return None
    moved = copy.deepcopy(backend)
    moved["service"]["name"] = canary_service_name(service)
    return moved


def canary_rules(ingress: dict[str, Any], *, service: str) -> dict[str, Any]:
    """The part of the stable Ingress's spec that routes to `service`, re-pointed at the
    canary Service. Paths to other Services are left out: ingress-nginx would otherwise give
    their upstreams a canary too."""
    spec = ingress.get("spec") or {}
    rules = []
    for rule in spec.get("rules") or []:
        paths = []
        for path in (rule.get("http") or {}).get("paths") or []:
            backend = _to_canary(path.get("backend") or {}, service=service)
            if backend is not None:
                paths.append({**path, "backend": backend})
        if paths:
            rules.append(
                {**{k: v for k, v in rule.items() if k != "http"}, "http": {"paths": paths}}
            )
    result: dict[str, Any] = {}
    if spec.get("ingressClassName"):
        result["ingressClassName"] = spec["ingressClassName"]
    default = _to_canary(spec.get("defaultBackend") or {}, service=service)
    if default is not None:
        result["defaultBackend"] = default
    if rules:
        result["rules"] = rules
    if "rules" not in result and "defaultBackend" not in result:
        raise RouterError(
            f"Ingress {ingress['metadata']['name']} does not route to Service {service}"
        )
    return result


def canary_ingress_body(
    ingress: dict[str, Any], rollout: Rollout, *, annotations: dict[str, str]
) -> dict[str, Any]:
    metadata = ingress["metadata"]
    copied = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if key == CLASS_ANNOTATION
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": _canary_ingress(rollout),
            "namespace": rollout.namespace,
            "labels": {**(metadata.get("labels") or {}), **MANAGED_BY},
            "annotations": {**copied, **annotations, ROLLOUT_ANNOTATION: rollout.id},
        },
        "spec": canary_rules(ingress, service=target_service(rollout)),
    }
