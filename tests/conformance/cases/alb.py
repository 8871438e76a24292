"""Conformance case for strategy `alb`: the weight is the canary target group's in the action.

The stable Ingress is shaped like the AWS Load Balancer Controller's examples: `ingressClassName:
alb`, its own `alb.ingress.kubernetes.io/*` annotations (scheme, target type, listen ports, a
redirect action of its own), TLS, and besides the two paths to the Service a path to another
Service and one that uses the team's own action; only the two paths to the Service change.
"""

from __future__ import annotations

from typing import Any

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import TrafficTarget
from rollout.traffic.alb import AlbRouter, action_key, canary_weight
from rollout.traffic.base import TrafficRouter
from tests.conformance.cases.base import CANARY_IMAGE, NAMESPACE, tracked_deployment
from tests.conformance.cases.nginx import LABELS, fields, stable_service

ACTION = action_key("checkout")
REDIRECT = "alb.ingress.kubernetes.io/actions.ssl-redirect"


def path(prefix: str, service: str, port: dict[str, Any]) -> dict[str, Any]:
    backend = {"service": {"name": service, "port": port}}
    return {"path": prefix, "pathType": "Prefix", "backend": backend}


def stable_ingress() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "shop",
            "namespace": NAMESPACE,
            "labels": {"app": "shop"},
            "annotations": {
                "alb.ingress.kubernetes.io/scheme": "internet-facing",
                "alb.ingress.kubernetes.io/target-type": "ip",
                "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}, {"HTTPS": 443}]',
                REDIRECT: (
                    '{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", '
                    '"Port": "443", "StatusCode": "HTTP_301"}}'
                ),
            },
        },
        "spec": {
            "ingressClassName": "alb",
            "tls": [{"hosts": ["shop.example.com"]}],
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            path("/", "ssl-redirect", {"name": "use-annotation"}),
                            path("/checkout", "checkout", {"name": "http"}),
                            path("/static", "assets", {"number": 8080}),
                            path("/cart", "checkout", {"name": "http"}),
                        ]
                    },
                }
            ],
        },
    }


class AlbCase:
    strategy = "alb"
    weights: tuple[int, ...] = (10, 50, 90)

    def seed(self, kube: KubeEmulator) -> None:
        kube.seed(tracked_deployment())
        kube.seed(stable_service())
        kube.seed(stable_ingress())

    def target(self) -> TrafficTarget:
        return TrafficTarget(service="checkout", ingress="shop")

    def router(self, gateway: KubeGateway) -> TrafficRouter:
        return AlbRouter(gateway)

    def expected_weight(self, weight: int) -> float:
        return float(weight)

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        ingress = kube.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "shop")
        assert ingress is not None
        # Both paths to checkout use the action; the others are as they were.
        paths = ingress["spec"]["rules"][0]["http"]["paths"]
        original = stable_ingress()["spec"]["rules"][0]["http"]["paths"]
        split = {"service": {"name": "checkout", "port": {"name": "use-annotation"}}}
        assert [p["backend"] for p in paths] == [
            original[0]["backend"],
            split,
            original[2]["backend"],
            split,
        ]
        annotations = ingress["metadata"]["annotations"]
        assert {k: v for k, v in annotations.items() if k != ACTION} == (
            stable_ingress()["metadata"]["annotations"]
        )
        weight = canary_weight(annotations, service="checkout")
        assert weight is not None
        return weight

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
        return bool(
            image == CANARY_IMAGE
            and stable["spec"]["replicas"] == 4
            and fields(ingress) == fields(stable_ingress())
            and service["spec"]["selector"] == LABELS
        )


CASE = AlbCase()
