"""Conformance case for strategy `nginx`: the weight is the canary Ingress's annotation.

The stable pods carry `track: stable` and the Service selects it, as the strategy requires;
the stable Ingress also routes `/static` to another Service, which the canary must not copy.
"""

from __future__ import annotations

from typing import Any

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import TrafficTarget
from rollout.traffic.base import TrafficRouter
from rollout.traffic.nginx import WEIGHT, NginxRouter
from tests.conformance.cases.base import CANARY_IMAGE, NAMESPACE, tracked_deployment

LABELS = {"app": "checkout", "track": "stable"}


def stable_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": NAMESPACE, "labels": {"app": "checkout"}},
        "spec": {
            "type": "NodePort",
            "selector": dict(LABELS),
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
        },
    }


def stable_ingress() -> dict[str, Any]:
    def path(prefix: str, service: str) -> dict[str, Any]:
        backend = {"service": {"name": service, "port": {"name": "http"}}}
        return {"path": prefix, "pathType": "Prefix", "backend": backend}

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "shop",
            "namespace": NAMESPACE,
            "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "8m"},
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {"paths": [path("/", "checkout"), path("/static", "assets")]},
                }
            ],
        },
    }


def fields(obj: dict[str, Any] | None) -> dict[str, Any]:
    """What a router may touch on a stable object: its spec, labels and annotations."""
    assert obj is not None
    metadata = obj["metadata"]
    return {
        "spec": obj["spec"],
        "labels": metadata.get("labels"),
        "annotations": metadata.get("annotations"),
    }


class NginxCase:
    strategy = "nginx"
    weights: tuple[int, ...] = (10, 50, 90)

    def seed(self, kube: KubeEmulator) -> None:
        kube.seed(tracked_deployment())
        kube.seed(stable_service())
        kube.seed(stable_ingress())

    def target(self) -> TrafficTarget:
        return TrafficTarget(service="checkout", ingress="shop")

    def router(self, gateway: KubeGateway) -> TrafficRouter:
        return NginxRouter(gateway)

    def expected_weight(self, weight: int) -> float:
        return float(weight)

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        canary = kube.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "shop-canary")
        assert canary is not None
        # Only the checkout path is copied, and it goes to the canary Service.
        paths = canary["spec"]["rules"][0]["http"]["paths"]
        assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [
            ("/", "checkout-canary")
        ]
        return float(canary["metadata"]["annotations"][WEIGHT])

    def stable_state(self, kube: KubeEmulator) -> Any:
        return {
            "deployment": fields(kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")),
            "service": fields(kube.get("v1", "Service", NAMESPACE, "checkout")),
            "ingress": fields(kube.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "shop")),
        }

    def promoted(self, kube: KubeEmulator) -> bool:
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        ingress = kube.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "shop")
        service = kube.get("v1", "Service", NAMESPACE, "checkout")
        assert stable is not None and ingress is not None and service is not None
        image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
        backends = [
            p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]
        ]
        return bool(
            image == CANARY_IMAGE
            and stable["spec"]["replicas"] == 4
            and backends == ["checkout", "assets"]
            and ingress["metadata"]["annotations"] == stable_ingress()["metadata"]["annotations"]
            and service["spec"]["selector"] == LABELS
        )


CASE = NginxCase()
