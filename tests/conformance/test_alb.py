"""Strategy `alb` on the Ingress shapes it must refuse or handle with care.

Refused at start, with the reason and nothing created or changed: an Ingress that already has
an action named after the Service (the team's own), paths reaching the Service on different
ports (one action forwards to one port), and an Ingress with no path to the Service. Handled:
an Ingress without annotations gets none back, and a path a person re-pointed during the
rollout is left as they made it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import Rollout
from rollout.traffic.alb import AlbRouter
from rollout.traffic.workloads import RouterError
from tests.conformance.cases import alb as alb_case
from tests.conformance.cases.alb import ACTION, path, stable_ingress
from tests.conformance.cases.base import NAMESPACE, rollout_for, tracked_deployment
from tests.conformance.cases.nginx import stable_service
from tests.conformance.test_real_world_shapes import as_it_was

INGRESS = ("networking.k8s.io/v1", "Ingress")


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    with KubeEmulator(ready_delay=0.02) as emulator:
        emulator.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        emulator.seed(tracked_deployment())
        emulator.seed(stable_service())
        yield emulator


def started(kube: KubeEmulator) -> tuple[AlbRouter, Rollout]:
    router = AlbRouter(KubeGateway(kube.api_client()))
    rollout = rollout_for(alb_case.CASE)
    router.stable_image(rollout)
    return router, router.prepare(rollout)


def paths(ingress: dict[str, Any]) -> list[dict[str, Any]]:
    return list(ingress["spec"]["rules"][0]["http"]["paths"])


def with_paths(ingress: dict[str, Any], new: list[dict[str, Any]]) -> dict[str, Any]:
    ingress["spec"]["rules"][0]["http"]["paths"] = new
    return ingress


def own_action() -> dict[str, Any]:
    ingress = stable_ingress()
    ingress["metadata"]["annotations"][ACTION] = json.dumps({"type": "fixed-response"})
    return ingress


def two_ports() -> dict[str, Any]:
    ingress = stable_ingress()
    return with_paths(ingress, [*paths(ingress), path("/api", "checkout", {"number": 9090})])


def no_path() -> dict[str, Any]:
    ingress = stable_ingress()
    return with_paths(ingress, [p for p in paths(ingress) if p["path"] == "/static"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("build", "refused"),
    [
        (own_action, "already has the annotation alb.ingress.kubernetes.io/actions.checkout"),
        (two_ports, r"on different ports \(9090, http\)"),
        (no_path, "no path of Ingress shop/shop has Service checkout"),
    ],
    ids=["own-action", "two-ports", "no-path"],
)
def test_a_shape_the_bot_cannot_split_is_refused_before_anything_changes(
    kube: KubeEmulator, build: Any, refused: str
) -> None:
    kube.seed(build())
    before = kube.get(*INGRESS, NAMESPACE, "shop")
    with pytest.raises(RouterError, match=refused):
        started(kube)
    assert kube.get(*INGRESS, NAMESPACE, "shop") == before
    assert kube.get("apps/v1", "Deployment", NAMESPACE, "checkout-canary") is None
    assert kube.get("v1", "Service", NAMESPACE, "checkout-canary") is None


@pytest.mark.timeout(30)
def test_an_ingress_without_annotations_gets_none_back(kube: KubeEmulator) -> None:
    bare = stable_ingress()
    del bare["metadata"]["annotations"]
    kube.seed(bare)
    before = as_it_was(kube.get(*INGRESS, NAMESPACE, "shop"))
    router, rollout = started(kube)
    router.set_weight(rollout, 30)
    during = kube.get(*INGRESS, NAMESPACE, "shop")
    assert during is not None and list(during["metadata"]["annotations"]) == [ACTION]
    router.rollback(replace(rollout, reason="conformance"))
    after = as_it_was(kube.get(*INGRESS, NAMESPACE, "shop"))
    assert after == before
    assert after is not None and "annotations" not in after["metadata"]


@pytest.mark.timeout(30)
def test_a_path_a_person_repointed_during_the_rollout_stays_as_they_made_it(
    kube: KubeEmulator,
) -> None:
    kube.seed(stable_ingress())
    router, rollout = started(kube)
    router.set_weight(rollout, 30)
    current = kube.get(*INGRESS, NAMESPACE, "shop")
    assert current is not None
    edited = paths(current)
    edited[3] = path("/cart", "cart", {"number": 80})  # /cart now served by another Service
    gateway = KubeGateway(kube.api_client())
    gateway.patch_ingress(
        NAMESPACE, "shop", {"spec": {"rules": with_paths(current, edited)["spec"]["rules"]}}
    )
    router.rollback(replace(rollout, reason="conformance"))
    after = kube.get(*INGRESS, NAMESPACE, "shop")
    assert after is not None
    expected = paths(stable_ingress())
    expected[3] = path("/cart", "cart", {"number": 80})
    assert paths(after) == expected
    assert ACTION not in after["metadata"]["annotations"]
