"""Conformance case for strategy `gateway`: weight = the canary backendRef's share.

The HTTPRoute has two rules for the Service (one matching `/api` with a filter, one catch-all)
and one for another Service, so restoring it exactly is tested on more than one rule.
"""

from __future__ import annotations

from typing import Any

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import TrafficTarget
from rollout.traffic.base import TrafficRouter
from rollout.traffic.gateway import HTTP_ROUTE, GatewayRouter, canary_weight
from tests.conformance.cases.base import CANARY_IMAGE, NAMESPACE, tracked_deployment
from tests.conformance.cases.istio import service


def stable_service() -> dict[str, Any]:
    """The Service in front of the stable pods only (they carry `track: stable`)."""
    body = service()
    body["spec"]["selector"]["track"] = "stable"
    return body


def http_route() -> dict[str, Any]:
    return {
        "apiVersion": HTTP_ROUTE.api_version,
        "kind": HTTP_ROUTE.kind,
        "metadata": {"name": "checkout", "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"name": "shop-gateway"}],
            "hostnames": ["checkout.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"set": [{"name": "x-api", "value": "1"}]},
                        }
                    ],
                    "backendRefs": [{"name": "checkout", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/pay"}}],
                    "backendRefs": [{"name": "payments", "port": 80}],
                },
                {"backendRefs": [{"name": "checkout", "port": 80}]},
            ],
        },
    }


class GatewayCase:
    strategy = "gateway"
    weights: tuple[int, ...] = (5, 30, 60)

    def seed(self, kube: KubeEmulator) -> None:
        for obj in (tracked_deployment(), stable_service(), http_route()):
            kube.seed(obj)

    def target(self) -> TrafficTarget:
        # Two rules reach checkout (`/api` and the catch-all): `route` names the catch-all.
        return TrafficTarget(service="checkout", http_route="checkout", route="2")

    def router(self, gateway: KubeGateway) -> TrafficRouter:
        return GatewayRouter(gateway)

    def expected_weight(self, weight: int) -> float:
        return float(weight)

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        spec = _spec(kube, HTTP_ROUTE.api_version, HTTP_ROUTE.kind)
        split = [r for r in spec["rules"] if len(r["backendRefs"]) == 2]
        assert split == [spec["rules"][2]], "only the named rule is split"
        api = spec["rules"][0]
        assert [ref["name"] for ref in api["backendRefs"]] == ["checkout"], "the /api rule changed"
        assert api["filters"] == http_route()["spec"]["rules"][0]["filters"]
        for rule in split:
            assert [ref["name"] for ref in rule["backendRefs"]] == ["checkout", "checkout-canary"]
            assert sum(ref["weight"] for ref in rule["backendRefs"]) == 100
        weight = canary_weight(spec, service="checkout")
        assert weight is not None
        return weight

    def stable_state(self, kube: KubeEmulator) -> Any:
        return {
            "HTTPRoute": _spec(kube, HTTP_ROUTE.api_version, HTTP_ROUTE.kind),
            "Service": _spec(kube, "v1", "Service"),
            "Deployment": _spec(kube, "apps/v1", "Deployment"),
        }

    def promoted(self, kube: KubeEmulator) -> bool:
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        assert stable is not None
        image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
        rules = _spec(kube, HTTP_ROUTE.api_version, HTTP_ROUTE.kind)["rules"]
        return bool(
            image == CANARY_IMAGE
            and all(len(rule["backendRefs"]) == 1 for rule in rules)
            and kube.get("v1", "Service", NAMESPACE, "checkout-canary") is None
        )


def _spec(kube: KubeEmulator, api_version: str, kind: str) -> Any:
    found = kube.get(api_version, kind, NAMESPACE, "checkout")
    assert found is not None
    return found["spec"]


CASE = GatewayCase()
