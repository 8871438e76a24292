"""Strategy `alb` end to end over signed HTTP, on a cluster shaped like most teams' manifests.

The pods carry only `app: checkout`, the Service selects just that, and the Ingress is shaped
like the AWS Load Balancer Controller's examples (its own annotations and redirect action, TLS,
paths to other Services). What each track gets follows from the objects as the load balancer
reads them: the action's weights between the two target groups (`checkout` and
`checkout-canary`), applied to the paths that use the action, plus whatever share of the stable
Service's endpoints are canary pods (zero, when pinned). A rollback and a promotion each leave
the Ingress and the Service deep-equal to what they were, and nothing owned by the bot behind.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, Sandbox, stable_deployment
from emulators.kube import BUNDLED_CRDS, KubeEmulator
from rollout.model import Phase
from rollout.traffic.alb import canary_weight
from rollout.traffic.pinning import POD_TEMPLATE_HASH
from tests.conformance.cases import alb as alb_case
from tests.scenario.test_app_labels_only import (
    INGRESS,
    SERVICE,
    app_only_service,
    as_it_was,
    bot_owned,
    is_canary,
    ready_pods,
    selector,
)
from tests.scenario.test_rollout_flow import approval_message, only_rollout, wait_until

NEW_IMAGE = "registry.example.com/shop/checkout:v2.3.5"
STEPS = (25, 50)
CONFIG = textwrap.dedent(
    f"""\
    slack:
      release_channels: [{RELEASE_CHANNEL}]
      oncall: S0ONCALL
      deployers: [{BOB}]
      approvers: [S0SRE]
    cluster_name: sandbox
    defaults:
      steps: [{", ".join(map(str, STEPS))}]
      step_interval: 1s
      analysis_interval: 1s
      progress_deadline: 30s
      approval: true
      rules: []
    services:
      checkout:
        namespace: shop
        deployment: checkout
        container: app
        strategy: alb
        service: checkout
        ingress: shop
    """
)


def snapshot(kube: KubeEmulator) -> dict[str, Any]:
    return {
        "service": as_it_was(kube.get(*SERVICE, "shop", "checkout")),
        "ingress": as_it_was(kube.get(*INGRESS, "shop", "shop")),
    }


def split_weight(kube: KubeEmulator) -> float:
    """The canary target group's share in the action the checkout paths use, in percent."""
    ingress = kube.get(*INGRESS, "shop", "shop")
    assert ingress is not None
    paths = [
        p
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
        if p["path"] in ("/checkout", "/cart")
    ]
    if not all(p["backend"]["service"]["port"] == {"name": "use-annotation"} for p in paths):
        return 0.0  # the paths still name the Service itself
    weight = canary_weight(ingress["metadata"].get("annotations") or {}, service="checkout")
    assert weight is not None, "the paths use an action that is not there"
    return weight


def canary_share(kube: KubeEmulator) -> float:
    """Percent of checkout requests the canary pods get, as the load balancer would split
    them between the two target groups (a target group is its Service's ready endpoints)."""
    stable_eps = ready_pods(kube, selector(kube, "checkout"))
    canary_eps = ready_pods(kube, selector(kube, "checkout-canary"))
    assert all(map(is_canary, canary_eps)), "the canary's target group includes stable pods"
    leak = sum(map(is_canary, stable_eps)) / len(stable_eps) if stable_eps else 0.0
    to_canary = split_weight(kube) if canary_eps else 0.0
    return to_canary + (100 - to_canary) * leak


@pytest.fixture
def box(tmp_path: Path) -> Any:
    sandbox = Sandbox(
        workdir=tmp_path / "sandbox", config_text=CONFIG, crd_dir=BUNDLED_CRDS, seed=False
    )
    sandbox.start()
    try:
        sandbox.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        for obj in (stable_deployment(), app_only_service(), alb_case.stable_ingress()):
            sandbox.kube.seed(obj)
        sandbox.start_bot()
        yield sandbox
    finally:
        sandbox.stop()


def at_step(box: Sandbox, index: int) -> Callable[[], bool]:
    def reached() -> bool:
        assert box.runtime is not None
        found = box.runtime.store.history("checkout")
        return bool(found and found[0].step_index == index and found[0].step_ready)

    return reached


@pytest.mark.timeout(90)
def test_steps_weigh_the_target_groups_and_rollback_restores_the_ingress(box: Sandbox) -> None:
    kube = box.kube
    before = snapshot(kube)
    box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    for index, weight in enumerate(STEPS):
        wait_until(at_step(box, index), what=f"step {index + 1}")
        assert selector(kube, "checkout").keys() == {"app", POD_TEMPLATE_HASH}
        assert not any(map(is_canary, ready_pods(kube, selector(kube, "checkout"))))
        assert abs(canary_share(kube) - weight) <= 1, canary_share(kube)

    box.driver.command("rollback checkout smoke", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: only_rollout(box).phase == Phase.ROLLED_BACK, what="the rollback")
    assert snapshot(kube) == before
    assert bot_owned(kube) == []
    assert canary_share(kube) == 0.0


@pytest.mark.timeout(120)
def test_promotion_leaves_stable_new_and_the_ingress_as_it_was(box: Sandbox) -> None:
    kube = box.kube
    before = snapshot(kube)
    box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    approval = wait_until(lambda: approval_message(box), what="the approval request")
    box.driver.click(message=approval, action_id="approve", user=CAROL)

    # While stable rolls out the new image, its target group must never be left without pods
    # whenever it gets any share.
    def promoted() -> bool:
        if split_weight(kube) < 100:
            assert ready_pods(kube, selector(kube, "checkout")), "stable has no endpoints"
        return only_rollout(box).phase == Phase.SUCCEEDED

    wait_until(promoted, timeout=60, what="the promotion")
    stable = kube.get("apps/v1", "Deployment", "shop", "checkout")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert snapshot(kube) == before
    assert bot_owned(kube) == []
