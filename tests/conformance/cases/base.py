"""What a router's conformance case provides; one module per strategy under `cases/`.

The suite in `test_routers.py` runs the same checks against every case, so a new router is
added by writing its case, never by copying tests.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from canary_sandbox.sandbox import stable_deployment as sandbox_deployment
from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import Rollout, TrafficTarget
from rollout.traffic.base import TrafficRouter
from tests.builders import rollout, rollout_plan

NAMESPACE = "shop"
STABLE_IMAGE = "registry.example.com/shop/checkout:v1.0.0"
CANARY_IMAGE = "registry.example.com/shop/checkout:v1.1.0"


class RouterCase(Protocol):
    strategy: str
    # The weights the suite applies in order, and the weight each should read back as.
    weights: tuple[int, ...]

    def seed(self, kube: KubeEmulator) -> None:
        """Create the stable objects this strategy starts from."""

    def target(self) -> TrafficTarget: ...

    def router(self, gateway: KubeGateway) -> TrafficRouter: ...

    def expected_weight(self, weight: int) -> float:
        """The weight in effect after `set_weight(weight)` (e.g. replica rounding)."""

    def weight_in_cluster(self, kube: KubeEmulator) -> float:
        """Read the canary weight straight from the object that carries it."""

    def stable_state(self, kube: KubeEmulator) -> Any:
        """The stable objects' fields a router may touch, to compare before and after."""

    def promoted(self, kube: KubeEmulator) -> bool:
        """True when stable serves the canary image with all traffic."""


def stable_deployment(*, name: str = "checkout", replicas: int = 4) -> dict[str, Any]:
    return sandbox_deployment(name, namespace=NAMESPACE, replicas=replicas, image=STABLE_IMAGE)


def tracked_deployment() -> dict[str, Any]:
    """The suite's stable Deployment with its pods labelled (and selected) `track: stable`: the
    convention that needs no pinning (app-only pods are covered by test_app_labels_only and
    test_real_world_shapes)."""
    return sandbox_deployment(namespace=NAMESPACE, image=STABLE_IMAGE, track="stable")


def rollout_for(case: RouterCase) -> Rollout:
    return rollout(
        id=f"checkout-{case.strategy}-1",
        strategy=case.strategy,
        namespace=NAMESPACE,
        stable_image=STABLE_IMAGE,
        canary_image=CANARY_IMAGE,
        plan=rollout_plan(
            steps=case.weights,
            step_interval=timedelta(seconds=1),
            analysis_interval=timedelta(seconds=1),
            progress_deadline=timedelta(minutes=1),
            approval_timeout=timedelta(hours=1),
        ),
        target=case.target(),
    )
