"""Strategies that split in front of the pods, on a cluster shaped like most teams' manifests.

The Deployment's pods carry `app: checkout` and nothing else, and the Service selects just that.
Nothing is relabelled: while a canary exists the bot pins the stable Service to the stable
ReplicaSet's `pod-template-hash`, so the canary pods (stable labels plus `track: canary`) get
no stable traffic, and the canary Service reaches canary pods only. What traffic each track
gets follows from the objects as the proxies read them: the weight the Ingress or HTTPRoute
gives the canary Service, plus whatever share of the stable Service's endpoints are canary
pods (zero, when pinned). A rollback and a promotion each leave every Service, Ingress and
HTTPRoute deep-equal to what it was (apart from fields the API server manages), and nothing
owned by the bot behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, Sandbox, stable_deployment
from emulators.kube import BUNDLED_CRDS, KubeEmulator
from rollout.kube import MANAGED_BY
from rollout.model import Phase
from rollout.traffic.gateway import HTTP_ROUTE
from rollout.traffic.istio import DESTINATION_RULE, VIRTUAL_SERVICE
from rollout.traffic.nginx import WEIGHT
from rollout.traffic.pinning import POD_TEMPLATE_HASH
from tests.conformance.cases import gateway as gateway_case
from tests.conformance.cases import istio as istio_case
from tests.conformance.cases import nginx as nginx_case
from tests.scenario import test_strategy_nginx_service as nginx_service
from tests.scenario.test_rollout_flow import approval_message, only_rollout, wait_until

APP = {"app": "checkout"}
NEW_IMAGE = "registry.example.com/shop/checkout:v2.3.5"
SERVICE, INGRESS = ("v1", "Service"), ("networking.k8s.io/v1", "Ingress")
ROUTE = (HTTP_ROUTE.api_version, HTTP_ROUTE.kind)
VS = (VIRTUAL_SERVICE.api_version, VIRTUAL_SERVICE.kind)
DR = (DESTINATION_RULE.api_version, DESTINATION_RULE.kind)
STEPS = (25, 50)
# Metadata the API server writes: never part of "as it was".
SERVER_MANAGED = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")


def app_only_service() -> dict[str, Any]:
    service = nginx_case.stable_service()
    service["spec"]["selector"] = dict(APP)
    return service


def routing_objects(strategy: str) -> list[dict[str, Any]]:
    if strategy == "nginx":
        return [app_only_service(), nginx_case.stable_ingress()]
    if strategy == "gateway":
        return [app_only_service(), gateway_case.http_route()]
    if strategy == "istio":
        return [app_only_service(), istio_case.virtual_service(), istio_case.destination_rule()]
    return [app_only_service()]


def config(strategy: str, *, approval: bool) -> str:
    extra = {  # two routes reach checkout in each of these objects: `route` names the one
        "nginx": "ingress: shop\n",
        "gateway": "http_route: checkout\nroute: 2\n",
        "istio": "virtual_service: checkout\nroute: default\n",
    }.get(strategy, "")
    steps = "[50]" if strategy == "service" else f"[{', '.join(map(str, STEPS))}]"
    return nginx_service.config(strategy, extra=extra, steps=steps, approval=approval)


def as_it_was(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    metadata = {k: v for k, v in obj["metadata"].items() if k not in SERVER_MANAGED}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": metadata}


def snapshot(kube: KubeEmulator) -> dict[str, Any]:
    return {
        "service": as_it_was(kube.get(*SERVICE, "shop", "checkout")),
        "ingress": as_it_was(kube.get(*INGRESS, "shop", "shop")),
        "route": as_it_was(kube.get(*ROUTE, "shop", "checkout")),
        "virtual_service": as_it_was(kube.get(*VS, "shop", "checkout")),
        "destination_rule": as_it_was(kube.get(*DR, "shop", "checkout")),
    }


def bot_owned(kube: KubeEmulator) -> list[str]:
    kinds = [("apps/v1", "Deployment"), SERVICE, INGRESS, ROUTE, VS, DR]
    return [
        f"{kind} {obj['metadata']['name']}"
        for api_version, kind in kinds
        for obj in kube.list(api_version, kind, "shop")
        if MANAGED_BY.items() <= (obj["metadata"].get("labels") or {}).items()
    ]


def ready_pods(kube: KubeEmulator, selector: dict[str, str]) -> list[dict[str, Any]]:
    pods = kube.list("v1", "Pod", "shop")
    return [
        p
        for p in pods
        if selector
        and selector.items() <= (p["metadata"].get("labels") or {}).items()
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
    ]


def is_canary(pod: dict[str, Any]) -> bool:
    return pod["metadata"]["labels"].get("track") == "canary"


def selector(kube: KubeEmulator, name: str) -> dict[str, str]:
    service = kube.get(*SERVICE, "shop", name)
    return dict((service or {}).get("spec", {}).get("selector") or {})


def subset(kube: KubeEmulator, name: str) -> dict[str, str]:
    """The pods an Istio subset stands for: the Service's selector plus the subset's labels."""
    rule = kube.get(*DR, "shop", "checkout")
    labels = [s["labels"] for s in (rule or {})["spec"].get("subsets", []) if s["name"] == name]
    return {**selector(kube, "checkout"), **labels[0]} if labels else {}


def stable_endpoints(kube: KubeEmulator, strategy: str) -> list[dict[str, Any]]:
    """Where traffic meant for stable goes: the stable subset (istio) or Service."""
    if strategy == "istio" and kube.get(*DR, "shop", "checkout") is not None:
        routes = (kube.get(*VS, "shop", "checkout") or {})["spec"]["http"]
        if any(t["destination"].get("subset") for r in routes for t in r["route"]):
            return ready_pods(kube, subset(kube, "stable"))
    return ready_pods(kube, selector(kube, "checkout"))


def canary_share(kube: KubeEmulator, strategy: str) -> float:
    """Percent of requests the canary pods get, as the proxy in front would split them."""
    stable_eps = stable_endpoints(kube, strategy)
    leak = sum(map(is_canary, stable_eps)) / len(stable_eps) if stable_eps else 0.0
    if strategy == "service":
        return 100 * leak
    if strategy == "istio":
        canary_eps = ready_pods(kube, subset(kube, "canary"))
    else:
        canary_eps = ready_pods(kube, selector(kube, "checkout-canary"))
    assert all(map(is_canary, canary_eps)), "the canary's pods include stable pods"
    to_canary = canary_weight(kube, strategy) if canary_eps else 0.0
    return to_canary + (100 - to_canary) * leak


def canary_weight(kube: KubeEmulator, strategy: str) -> float:
    """The share the Ingress or HTTPRoute sends to the canary Service, in percent."""
    if strategy == "nginx":
        ingress = kube.get(*INGRESS, "shop", "shop-canary")
        return float(ingress["metadata"]["annotations"][WEIGHT]) if ingress else 0.0
    if strategy == "istio":
        default = (kube.get(*VS, "shop", "checkout") or {})["spec"]["http"][-1]["route"]
        canary = [t.get("weight", 0) for t in default if t["destination"].get("subset") == "canary"]
        return float(canary[0]) if canary else 0.0
    route = kube.get(*ROUTE, "shop", "checkout")
    assert route is not None
    refs = route["spec"]["rules"][-1]["backendRefs"]
    canary = sum(r.get("weight", 1) for r in refs if r["name"] == "checkout-canary")
    return 100 * canary / sum(r.get("weight", 1) for r in refs)


def run(tmp_path: Path, strategy: str, *, approval: bool) -> Sandbox:
    box = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=config(strategy, approval=approval),
        crd_dir=BUNDLED_CRDS,
        seed=False,
    )
    box.start()
    box.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    for obj in [stable_deployment(), *routing_objects(strategy)]:
        box.kube.seed(obj)
    box.start_bot()
    return box


def at_step(box: Sandbox, index: int) -> Callable[[], bool]:
    def reached() -> bool:
        assert box.runtime is not None
        found = box.runtime.store.history("checkout")
        return bool(found and found[0].step_index == index and found[0].step_ready)

    return reached


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["nginx", "gateway", "istio"])
def test_steps_split_as_planned_and_rollback_restores_everything(
    tmp_path: Path, strategy: str
) -> None:
    box = run(tmp_path, strategy, approval=True)
    try:
        kube = box.kube
        before = snapshot(kube)
        box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
        for index, weight in enumerate(STEPS):
            wait_until(at_step(box, index), what=f"step {index + 1}")
            pinned = subset(kube, "stable") if strategy == "istio" else selector(kube, "checkout")
            assert pinned.keys() == {"app", POD_TEMPLATE_HASH}, pinned
            assert not any(map(is_canary, stable_endpoints(kube, strategy)))
            assert abs(canary_share(kube, strategy) - weight) <= 1, canary_share(kube, strategy)

        box.driver.command("rollback checkout smoke", user=BOB, channel=RELEASE_CHANNEL)
        wait_until(lambda: only_rollout(box).phase == Phase.ROLLED_BACK, what="the rollback")
        assert snapshot(kube) == before
        assert bot_owned(kube) == []
        assert canary_share(kube, strategy) == 0.0
    finally:
        box.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["nginx", "gateway", "istio", "service"])
def test_promotion_after_approval_leaves_stable_new_and_objects_as_they_were(
    tmp_path: Path, strategy: str
) -> None:
    box = run(tmp_path, strategy, approval=True)
    try:
        kube = box.kube
        before = snapshot(kube)
        box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
        approval = wait_until(lambda: approval_message(box), what="the approval request")
        assert not any(map(is_canary, stable_endpoints(kube, strategy)))
        box.driver.click(message=approval, action_id="approve", user=CAROL)

        # While stable rolls out the new image, traffic meant for stable must never be left
        # without pods: whenever the stable Service gets any share, it has ready endpoints.
        def promoted() -> bool:
            if strategy == "service" or canary_weight(kube, strategy) < 100:
                assert stable_endpoints(kube, strategy), "stable has no endpoints"
            return only_rollout(box).phase == Phase.SUCCEEDED

        wait_until(promoted, timeout=60, what="the promotion")
        stable = kube.get("apps/v1", "Deployment", "shop", "checkout")
        assert stable is not None
        assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
        assert snapshot(kube) == before
        assert bot_owned(kube) == []
    finally:
        box.stop()
