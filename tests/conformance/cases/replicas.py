"""Conformance case for strategy `replicas`: weight = canary share of 4 replicas."""

from __future__ import annotations

from typing import Any

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import TrafficTarget
from rollout.traffic.base import TrafficRouter
from rollout.traffic.replicas import ReplicasRouter, canary_weight, split_replicas
from tests.conformance.cases.base import CANARY_IMAGE, NAMESPACE, stable_deployment


class ReplicasCase:
    strategy = "replicas"
    weights = (25, 50, 75)

    def seed(self, kube: KubeEmulator) -> None:
        kube.seed(stable_deployment())

    def target(self) -> TrafficTarget:
        return TrafficTarget()

    def router(self, gateway: KubeGateway) -> TrafficRouter:
        return ReplicasRouter(gateway)

    def expected_weight(self, weight: int) -> float:
        return canary_weight(*split_replicas(4, weight))

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        canary = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout-canary")
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        assert canary is not None and stable is not None
        return canary_weight(canary["spec"]["replicas"], stable["spec"]["replicas"])

    def stable_state(self, kube: KubeEmulator) -> Any:
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        assert stable is not None
        return stable["spec"]

    def promoted(self, kube: KubeEmulator) -> bool:
        stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
        assert stable is not None
        image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
        return bool(image == CANARY_IMAGE and stable["spec"]["replicas"] == 4)


CASE = ReplicasCase()
