"""Conformance case for strategy `istio`: weight = the canary subset's route weight.

The VirtualService has two routes to the Service (one with a match, one catch-all) and one to
another host, and the DestinationRule a traffic policy of its own, so restoring them exactly
is tested on more than an empty spec.
"""

from __future__ import annotations

from typing import Any

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import TrafficTarget
from rollout.traffic.base import TrafficRouter
from rollout.traffic.istio import DESTINATION_RULE, VIRTUAL_SERVICE, IstioRouter, canary_weight
from tests.conformance.cases.base import CANARY_IMAGE, NAMESPACE, tracked_deployment

ISTIO = VIRTUAL_SERVICE.api_version


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def virtual_service() -> dict[str, Any]:
    return {
        "apiVersion": ISTIO,
        "kind": VIRTUAL_SERVICE.kind,
        "metadata": {"name": "checkout", "namespace": NAMESPACE},
        "spec": {
            "hosts": ["checkout.example.com"],
            "gateways": ["shop-gateway"],
            "http": [
                {
                    "name": "api",
                    "match": [{"uri": {"prefix": "/api"}}],
                    "route": [{"destination": {"host": "checkout", "port": {"number": 80}}}],
                    "timeout": "5s",
                },
                {
                    "name": "payments",
                    "match": [{"uri": {"prefix": "/pay"}}],
                    "route": [{"destination": {"host": "payments"}}],
                },
                {"name": "default", "route": [{"destination": {"host": "checkout"}}]},
            ],
        },
    }


def destination_rule() -> dict[str, Any]:
    return {
        "apiVersion": ISTIO,
        "kind": DESTINATION_RULE.kind,
        "metadata": {"name": "checkout", "namespace": NAMESPACE},
        "spec": {
            "host": "checkout",
            "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
            "subsets": [{"name": "legacy", "labels": {"app": "checkout", "era": "old"}}],
        },
    }


def seed_istio(kube: KubeEmulator) -> None:
    for obj in (tracked_deployment(), service(), virtual_service(), destination_rule()):
        kube.seed(obj)


class IstioCase:
    strategy = "istio"
    weights: tuple[int, ...] = (10, 50, 90)

    def seed(self, kube: KubeEmulator) -> None:
        seed_istio(kube)

    def target(self) -> TrafficTarget:
        # Two routes reach checkout (`api` and `default`): `route` names the one to split.
        return TrafficTarget(service="checkout", virtual_service="checkout", route="default")

    def router(self, gateway: KubeGateway) -> TrafficRouter:
        return IstioRouter(gateway)

    def expected_weight(self, weight: int) -> float:
        return float(weight)

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        found = kube.get(ISTIO, VIRTUAL_SERVICE.kind, NAMESPACE, "checkout")
        assert found is not None
        routes = found["spec"]["http"]
        split = [r for r in routes if len(r["route"]) == 2]
        assert [r["name"] for r in split] == ["default"], "only the named route is split"
        assert routes[0] == virtual_service()["spec"]["http"][0], "the `api` route was changed"
        for route in split:
            weights = [target["weight"] for target in route["route"]]
            assert sum(weights) == 100
        weight = canary_weight(found["spec"])
        assert weight is not None
        return weight

    def stable_state(self, kube: KubeEmulator) -> Any:
        return {
            "VirtualService": _spec(kube, ISTIO, VIRTUAL_SERVICE.kind),
            "DestinationRule": _spec(kube, ISTIO, DESTINATION_RULE.kind),
            "Service": _spec(kube, "v1", "Service"),
            "Deployment": _spec(kube, "apps/v1", "Deployment"),
        }

    def promoted(self, kube: KubeEmulator) -> bool:
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        assert stable is not None
        image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
        routes = _spec(kube, ISTIO, VIRTUAL_SERVICE.kind)
        return bool(image == CANARY_IMAGE and routes == virtual_service()["spec"])


def _spec(kube: KubeEmulator, api_version: str, kind: str) -> Any:
    found = kube.get(api_version, kind, NAMESPACE, "checkout")
    assert found is not None
    return found["spec"]


CASE = IstioCase()
