"""Conformance case for strategy `argo`: weight = what the Argo controller reports.

Argo's own steps (20, 35, 50, 75, each followed by an indefinite pause) differ from the bot's
(10, 50, 75) on purpose: 10 is met by Argo's first step (20), and 50 skips Argo's 35 step, so
the mapping of the bot's schedule onto Argo's is what is checked. The emulator's simulated
Argo controller (`emulators/kube/argo_controller.py`) plays Argo.
"""

from __future__ import annotations

import time
from typing import Any

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import TrafficTarget
from rollout.traffic.argo import ROLLOUT, ArgoRouter
from rollout.traffic.base import TrafficRouter
from tests.conformance.cases.base import CANARY_IMAGE, NAMESPACE, stable_deployment

ARGO_STEPS = (20, 35, 50, 75)


def argo_rollout(*, name: str = "checkout", image: str | None = None) -> dict[str, Any]:
    """An Argo Rollout with the shared stable Deployment's pod template."""
    spec = stable_deployment(name=name)["spec"]
    if image is not None:
        spec["template"]["spec"]["containers"][0]["image"] = image
    steps: list[dict[str, Any]] = []
    for weight in ARGO_STEPS:
        steps += [{"setWeight": weight}, {"pause": {}}]
    spec["strategy"] = {"canary": {"steps": steps}}
    return {
        "apiVersion": ROLLOUT.api_version,
        "kind": ROLLOUT.kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def seed_argo(kube: KubeEmulator, obj: dict[str, Any], *, timeout: float = 5.0) -> None:
    """Seeds a Rollout and waits until the Argo controller has made it Healthy."""
    kube.seed(obj)
    name = obj["metadata"]["name"]
    deadline = time.monotonic() + timeout
    while (_status(kube, name)).get("phase") != "Healthy":
        assert time.monotonic() < deadline, "the Argo controller did not take the Rollout in"
        time.sleep(0.02)


class ArgoCase:
    strategy = "argo"
    weights: tuple[int, ...] = (10, 50, 75)

    def seed(self, kube: KubeEmulator) -> None:
        seed_argo(kube, argo_rollout())

    def target(self) -> TrafficTarget:
        return TrafficTarget(argo_rollout="checkout")

    def router(self, gateway: KubeGateway) -> TrafficRouter:
        return ArgoRouter(gateway)

    def expected_weight(self, weight: int) -> float:
        return float(next(step for step in ARGO_STEPS if step >= weight))

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        return float(_status(kube, "checkout")["canary"]["weights"]["canary"]["weight"])

    def stable_state(self, kube: KubeEmulator) -> Any:
        found = kube.get(ROLLOUT.api_version, ROLLOUT.kind, NAMESPACE, "checkout")
        assert found is not None
        return found["spec"]

    def promoted(self, kube: KubeEmulator) -> bool:
        found = kube.get(ROLLOUT.api_version, ROLLOUT.kind, NAMESPACE, "checkout")
        assert found is not None
        status = found["status"]
        image = found["spec"]["template"]["spec"]["containers"][0]["image"]
        return bool(
            image == CANARY_IMAGE
            and status["phase"] == "Healthy"
            and status["stableRS"] == status["currentPodHash"]
            and status["canary"]["weights"]["canary"]["weight"] == 0
        )


def _status(kube: KubeEmulator, name: str) -> dict[str, Any]:
    found = kube.get(ROLLOUT.api_version, ROLLOUT.kind, NAMESPACE, name)
    assert found is not None
    status: dict[str, Any] = found.get("status") or {}
    return status


CASE = ArgoCase()
