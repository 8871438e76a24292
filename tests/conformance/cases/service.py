"""Conformance case for strategy `service` (blue/green): every step is a preview, 0 % live.

The weight in effect is read from the main Service's selector: 100 when it selects the canary
pods, else 0. Steps only size the preview: ceil(4 x weight / 100) canary pods.
"""

from __future__ import annotations

from typing import Any

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import TrafficTarget
from rollout.traffic.base import TrafficRouter
from rollout.traffic.service import ServiceRouter
from tests.conformance.cases.base import CANARY_IMAGE, NAMESPACE, tracked_deployment
from tests.conformance.cases.nginx import LABELS, fields, stable_service


class ServiceCase:
    strategy = "service"
    weights: tuple[int, ...] = (25, 50, 75)

    def seed(self, kube: KubeEmulator) -> None:
        kube.seed(tracked_deployment())
        kube.seed(stable_service())

    def target(self) -> TrafficTarget:
        return TrafficTarget(service="checkout")

    def router(self, gateway: KubeGateway) -> TrafficRouter:
        return ServiceRouter(gateway)

    def expected_weight(self, weight: int) -> float:
        return 100.0 if weight >= 100 else 0.0

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        main = kube.get("v1", "Service", NAMESPACE, "checkout")
        preview = kube.get("v1", "Service", NAMESPACE, "checkout-canary")
        assert main is not None and preview is not None
        assert preview["spec"]["selector"] == {**LABELS, "track": "canary"}
        return 100.0 if main["spec"]["selector"].get("track") == "canary" else 0.0

    def stable_state(self, kube: KubeEmulator) -> Any:
        return {
            "deployment": fields(kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")),
            "service": fields(kube.get("v1", "Service", NAMESPACE, "checkout")),
        }

    def promoted(self, kube: KubeEmulator) -> bool:
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        main = kube.get("v1", "Service", NAMESPACE, "checkout")
        assert stable is not None and main is not None
        image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
        return bool(
            image == CANARY_IMAGE
            and stable["spec"]["replicas"] == 4
            and main["spec"]["selector"] == LABELS
        )


CASE = ServiceCase()
