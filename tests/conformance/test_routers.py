"""One conformance suite for every traffic router, against the Kubernetes API emulator.

Each strategy contributes a case module under `cases/` exposing `CASE`; every test here runs
for every case: weights applied and read back, re-applying is a no-op, rollback restores the
stable objects, promotion cleans up, and a 409 conflict mid-update is retried.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes.client import AppsV1Api

from emulators.kube import BUNDLED_CRDS, KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import Phase, Rollout
from rollout.traffic.argo import ROLLOUT
from rollout.traffic.base import TrafficRouter
from rollout.traffic.workloads import RouterError
from tests.conformance import cases
from tests.conformance.cases.base import (
    CANARY_IMAGE,
    NAMESPACE,
    STABLE_IMAGE,
    RouterCase,
    rollout_for,
)

MANAGED = "app.kubernetes.io/managed-by=canary-bot"
# Kinds a router may create; Events are history and stay.
OWNED_KINDS = [
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    (ROLLOUT.api_version, ROLLOUT.kind),
]


def _cases() -> list[RouterCase]:
    found = []
    for module in pkgutil.iter_modules(cases.__path__):
        if module.name != "base":
            found.append(importlib.import_module(f"{cases.__name__}.{module.name}").CASE)
    return found


@pytest.fixture(params=_cases(), ids=lambda case: case.strategy)
def case(request: pytest.FixtureRequest) -> RouterCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(crd_dir=BUNDLED_CRDS, ready_delay=0.05)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def router(case: RouterCase, kube: KubeEmulator) -> TrafficRouter:
    case.seed(kube)
    return case.router(KubeGateway(kube.api_client()))


def wait_ready(router: TrafficRouter, rollout: Rollout, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not router.status(rollout).canary_ready:
        assert time.monotonic() < deadline, router.status(rollout).detail
        time.sleep(0.05)


def owned_objects(kube: KubeEmulator) -> list[tuple[str, str]]:
    """What the router left behind. The emulator carries every CRD (BUNDLED_CRDS), so a list
    that fails is a broken emulator or a wrong kind here: it fails the test, never reads as
    "nothing left"."""
    found = []
    for api_version, kind in OWNED_KINDS:
        items = kube.list(api_version, kind, "shop", label_selector=MANAGED)
        found += [(kind, item["metadata"]["name"]) for item in items]
    return found


@pytest.mark.timeout(60)
def test_weight_sequence_is_applied_and_read_back(
    case: RouterCase, kube: KubeEmulator, router: TrafficRouter
) -> None:
    rollout = router.prepare(rollout_for(case))
    for weight in case.weights:
        router.set_weight(rollout, weight)
        wait_ready(router, rollout)
        expected = case.expected_weight(weight)
        assert case.weight_in_cluster(kube) == pytest.approx(expected)
        assert router.status(rollout).weight == pytest.approx(expected)


@pytest.mark.timeout(60)
def test_reapplying_a_weight_changes_nothing(
    case: RouterCase, kube: KubeEmulator, router: TrafficRouter
) -> None:
    rollout = router.prepare(rollout_for(case))
    assert router.prepare(rollout) == rollout
    weight = case.weights[0]
    assert router.set_weight(rollout, weight) is True
    wait_ready(router, rollout)
    kube.clear_writes()
    assert router.set_weight(rollout, weight) is False
    assert kube.writes_snapshot() == []


@pytest.mark.timeout(60)
def test_rollback_restores_what_was_changed(
    case: RouterCase, kube: KubeEmulator, router: TrafficRouter
) -> None:
    before: Any = case.stable_state(kube)
    rollout = router.prepare(rollout_for(case))
    for weight in case.weights:
        router.set_weight(rollout, weight)
    wait_ready(router, rollout)
    router.rollback(replace(rollout, reason="conformance"))
    assert case.stable_state(kube) == before
    assert owned_objects(kube) == []
    router.rollback(rollout)  # idempotent: a second rollback is harmless
    assert case.stable_state(kube) == before


@pytest.mark.timeout(60)
def test_promotion_cleans_up(case: RouterCase, kube: KubeEmulator, router: TrafficRouter) -> None:
    rollout = router.prepare(rollout_for(case))
    router.set_weight(rollout, case.weights[-1])
    wait_ready(router, rollout)
    deadline = time.monotonic() + 20
    while not router.promote(rollout):
        assert time.monotonic() < deadline, "promotion did not complete"
        time.sleep(0.05)
    assert case.promoted(kube)
    assert owned_objects(kube) == []
    assert router.promote(rollout) is True  # idempotent once done


@pytest.mark.timeout(60)
def test_conflicts_mid_update_are_retried(
    case: RouterCase, kube: KubeEmulator, router: TrafficRouter
) -> None:
    rollout = router.prepare(rollout_for(case))
    kube.faults.conflict_rate = 0.5
    for weight in case.weights:
        router.set_weight(rollout, weight)
    kube.faults.conflict_rate = 0.0
    wait_ready(router, rollout)
    assert case.weight_in_cluster(kube) == pytest.approx(case.expected_weight(case.weights[-1]))
    assert any(w.status == 409 for w in kube.writes_snapshot())


# Routers whose stable workload is a Deployment the bot patches (argo's is Argo's own object).
DEPLOYMENT_CASES = [c for c in _cases() if c.strategy != "argo"]


def _stable_spec(kube: KubeEmulator) -> tuple[str, int]:
    stable = kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
    assert stable is not None
    spec = stable["spec"]
    return spec["template"]["spec"]["containers"][0]["image"], spec["replicas"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", DEPLOYMENT_CASES, ids=lambda c: c.strategy)
def test_rollback_during_promotion_puts_stable_back(
    case: RouterCase, kube: KubeEmulator, router: TrafficRouter
) -> None:
    rollout = router.prepare(rollout_for(case))
    router.set_weight(rollout, case.weights[-1])
    wait_ready(router, rollout)
    kube.hold_ready(NAMESPACE, "checkout")  # stable's new pods never get ready
    deadline = time.monotonic() + 20
    while _stable_spec(kube)[0] != CANARY_IMAGE:
        assert not router.promote(rollout)
        assert time.monotonic() < deadline, "stable never got the new image"
        time.sleep(0.05)
    router.rollback(replace(rollout, reason="conformance"))
    assert _stable_spec(kube) == (STABLE_IMAGE, 4)
    assert owned_objects(kube) == []


@pytest.mark.parametrize("case", DEPLOYMENT_CASES, ids=lambda c: c.strategy)
def test_a_hand_edited_canary_is_drift_and_is_not_promoted(
    case: RouterCase, kube: KubeEmulator, router: TrafficRouter
) -> None:
    # As the machine holds it at the first step (`replicas` expects stable's count from it).
    prepared = router.prepare(rollout_for(case))
    rollout = replace(prepared, phase=Phase.PROGRESSING, step_index=0)
    router.set_weight(rollout, case.weights[0])
    wait_ready(router, rollout)
    assert router.drift(rollout) is None
    edited = STABLE_IMAGE + "-hotfix"
    AppsV1Api(kube.api_client()).patch_namespaced_deployment(
        "checkout-canary",
        NAMESPACE,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": edited}]}}}},
    )
    said = router.drift(rollout)
    assert said is not None and f"checkout-canary's image to {edited}" in said
    with pytest.raises(RouterError, match="not promoting"):
        router.promote(rollout)
    assert _stable_spec(kube)[0] == STABLE_IMAGE


def test_a_hand_scaled_stable_is_drift(kube: KubeEmulator) -> None:
    case = next(c for c in DEPLOYMENT_CASES if c.strategy == "nginx")
    case.seed(kube)
    router = case.router(KubeGateway(kube.api_client()))
    rollout = router.prepare(rollout_for(case))
    assert router.drift(rollout) is None
    AppsV1Api(kube.api_client()).patch_namespaced_deployment(
        "checkout", NAMESPACE, {"spec": {"replicas": 7}}
    )
    assert router.drift(rollout) == "someone scaled checkout to 7 replicas; the bot expects 4"
