"""What a router's conformance case provides; one module per strategy under `cases/`.

The suite in `test_routers.py` runs the same checks against every case, so a new router is
added by writing its case, never by copying tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from canary_sandbox.sandbox import stable_deployment as sandbox_deployment
from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import Rollout, RolloutPlan, TrafficTarget
from rollout.traffic.base import TrafficRouter

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
    return sandbox_deployment(namespace=NAMESPACE, name=name, replicas=replicas, image=STABLE_IMAGE)


def rollout_for(case: RouterCase) -> Rollout:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    return Rollout(
        id=f"checkout-{case.strategy}-1",
        service="checkout",
        namespace=NAMESPACE,
        deployment="checkout",
        container="app",
        strategy=case.strategy,
        stable_image=STABLE_IMAGE,
        canary_image=CANARY_IMAGE,
        plan=RolloutPlan(
            steps=case.weights,
            step_interval=timedelta(seconds=1),
            analysis_interval=timedelta(seconds=1),
            approval=True,
            approvals_required=1,
            self_approval=False,
            progress_deadline=timedelta(minutes=1),
            approval_timeout=timedelta(hours=1),
        ),
        target=case.target(),
        channel="C0RELEASES",
        started_by="U01ALICE",
        created_at=now,
        updated_at=now,
    )
