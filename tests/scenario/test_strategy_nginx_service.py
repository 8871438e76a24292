"""Strategies `nginx` and `service` end to end: `/canary start` over signed HTTP, on a cluster
seeded with the Service (and Ingress) these strategies work on, until the weight is in the
object that carries it; then a rollback (nginx) and a promotion (service) leave the stable
objects as they were, apart from the new image."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, STABLE_IMAGE, Sandbox, stable_deployment
from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import Phase
from rollout.traffic.nginx import BY_COOKIE, BY_HEADER, BY_HEADER_VALUE, WEIGHT, NginxRouter
from rollout.traffic.workloads import RouterError
from tests.conformance.cases import nginx as nginx_case
from tests.conformance.cases.base import rollout_for
from tests.scenario.test_rollout_flow import only_rollout, thread_replies, wait_until

NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")
INGRESS = ("networking.k8s.io/v1", "Ingress")
STABLE_PODS = nginx_case.LABELS
CANARY_PODS = {**STABLE_PODS, "track": "canary"}


def config(
    strategy: str, *, extra: str = "", steps: str = "[25, 50, 75]", approval: bool = False
) -> str:
    return textwrap.dedent(
        f"""\
        slack:
          release_channels: [{RELEASE_CHANNEL}]
          oncall: S0ONCALL
          deployers: [{BOB}]
          approvers: [S0SRE]
        cluster_name: sandbox
        defaults:
          steps: {steps}
          step_interval: 1s
          analysis_interval: 1s
          progress_deadline: 30s
          approval: {"true" if approval else "false"}
          rules: []
        services:
          checkout:
            namespace: shop
            deployment: checkout
            container: app
            strategy: {strategy}
            service: checkout
        """
    ) + textwrap.indent(extra, " " * 4)


@contextmanager
def running(tmp_path: Path, config_text: str, *objects: dict[str, Any]) -> Iterator[Sandbox]:
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=config_text, seed=False)
    box.start()
    try:
        box.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        for obj in objects:
            box.kube.seed(obj)
        box.start_bot()
        yield box
    finally:
        box.stop()


@pytest.fixture
def nginx_box(tmp_path: Path) -> Iterator[Sandbox]:
    with running(
        tmp_path,
        config("nginx", extra="ingress: shop\n"),
        stable_deployment(track="stable"),
        nginx_case.stable_service(),
        nginx_case.stable_ingress(),
    ) as box:
        yield box


@pytest.fixture
def service_box(tmp_path: Path) -> Iterator[Sandbox]:
    with running(
        tmp_path,
        config("service", steps="[50]"),
        stable_deployment(track="stable"),
        nginx_case.stable_service(),
    ) as box:
        yield box


def first_step_reached(box: Sandbox) -> bool:
    assert box.runtime is not None
    rollouts = box.runtime.store.history("checkout")
    return bool(rollouts and rollouts[0].step_index == 0 and rollouts[0].step_ready)


def stable_objects(kube: KubeEmulator) -> list[Any]:
    found = [kube.get("v1", "Service", "shop", "checkout"), kube.get(*INGRESS, "shop", "shop")]
    return [(o["spec"], o["metadata"].get("annotations")) for o in found if o is not None]


@pytest.mark.timeout(60)
def test_nginx_start_sets_the_canary_ingress_weight_and_rollback_removes_it(
    nginx_box: Sandbox,
) -> None:
    kube = nginx_box.kube
    before = stable_objects(kube)
    reply = nginx_box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    wait_until(lambda: first_step_reached(nginx_box), what="the first step")

    canary = kube.get(*INGRESS, "shop", "shop-canary")
    assert canary is not None
    annotations = canary["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/canary"] == "true"
    assert annotations[WEIGHT] == "25"
    assert canary["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "canary-bot"
    preview = kube.get("v1", "Service", "shop", "checkout-canary")
    assert preview is not None and preview["spec"]["selector"] == CANARY_PODS
    deployment = kube.get("apps/v1", "Deployment", "shop", "checkout-canary")
    assert deployment is not None and deployment["spec"]["replicas"] == 1  # ceil(4 x 25 %)
    assert only_rollout(nginx_box).weight == 25.0
    assert any("Step 1 of 3" in m.text for m in thread_replies(nginx_box))
    weight_events = [e for e in kube.list("v1", "Event", "shop") if e["reason"] == "CanaryWeight"]
    assert [e["involvedObject"]["kind"] for e in weight_events] == ["Ingress"]
    assert weight_events[0]["involvedObject"]["name"] == "shop"  # the stable Ingress
    assert stable_objects(kube) == before

    nginx_box.driver.command("rollback checkout smoke test", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: only_rollout(nginx_box).phase == Phase.ROLLED_BACK, what="the rollback")
    assert kube.get(*INGRESS, "shop", "shop-canary") is None
    assert kube.get("v1", "Service", "shop", "checkout-canary") is None
    assert kube.get("apps/v1", "Deployment", "shop", "checkout-canary") is None
    assert stable_objects(kube) == before


@pytest.mark.timeout(60)
def test_service_previews_at_zero_then_switches_for_promotion_and_restores(
    service_box: Sandbox,
) -> None:
    kube = service_box.kube
    before = stable_objects(kube)
    service_box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: first_step_reached(service_box), what="the first step")
    preview = kube.get("v1", "Service", "shop", "checkout-canary")
    assert preview is not None and preview["spec"]["selector"] == CANARY_PODS
    main = kube.get("v1", "Service", "shop", "checkout")
    assert main is not None and main["spec"]["selector"] == STABLE_PODS  # live: all stable
    assert only_rollout(service_box).weight == 0.0

    # No approval configured: after the step's interval the bot promotes on its own.
    wait_until(lambda: only_rollout(service_box).phase == Phase.SUCCEEDED, what="promotion")
    stable = kube.get("apps/v1", "Deployment", "shop", "checkout")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert kube.get("v1", "Service", "shop", "checkout-canary") is None
    assert kube.get("apps/v1", "Deployment", "shop", "checkout-canary") is None
    assert stable_objects(kube) == before
    # The main Service was pointed at the canary pods and back: exactly two writes to it.
    switches = [w for w in kube.writes_snapshot() if w.kind == "Service" and w.name == "checkout"]
    assert [(w.method, w.status) for w in switches] == [("PATCH", 200), ("PATCH", 200)]
    reasons = [e["reason"] for e in kube.list("v1", "Event", "shop")]
    assert reasons.count("Switched") == 1 and "Promoted" in reasons


@pytest.mark.timeout(30)
def test_a_service_that_does_not_select_the_stable_pods_is_refused_at_start(
    tmp_path: Path,
) -> None:
    service = nginx_case.stable_service()
    service["spec"]["selector"] = {"app": "payments"}
    with running(tmp_path, config("service"), stable_deployment(track="stable"), service) as box:
        seen = len(box.slack.responses)
        box.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
        wait_until(lambda: len(box.slack.responses) > seen, what="the refusal")
        text = str(box.slack.responses[seen].body)
        assert "does not select the pods of Deployment checkout" in text
        box.drain()  # the refusal is sent after the ack; so would a wrong write be
        assert box.kube.writes_snapshot() == []
        assert box.kube.get("apps/v1", "Deployment", "shop", "checkout-canary") is None


@pytest.mark.timeout(30)
def test_nginx_header_and_cookie_routing_go_on_the_canary_ingress() -> None:
    with KubeEmulator(ready_delay=0.05) as kube:
        nginx_case.CASE.seed(kube)
        router = NginxRouter(KubeGateway(kube.api_client()))
        routed = rollout_for(nginx_case.CASE)
        routed = routed.evolve(
            now=routed.updated_at, router_state={"header": "x-user-tier=premium", "cookie": "beta"}
        )
        router.set_weight(router.prepare(routed), 5)
        canary = kube.get(*INGRESS, "shop", "shop-canary")
        assert canary is not None
        annotations = canary["metadata"]["annotations"]
        assert (annotations[BY_HEADER], annotations[BY_HEADER_VALUE]) == ("x-user-tier", "premium")
        assert (annotations[BY_COOKIE], annotations[WEIGHT]) == ("beta", "5")

        # Header routing dropped (a restarted rollout without it): the annotations go too.
        plain = routed.evolve(now=routed.updated_at, router_state={})
        assert router.set_weight(plain, 5) is True
        canary = kube.get(*INGRESS, "shop", "shop-canary")
        assert canary is not None
        assert not {BY_HEADER, BY_HEADER_VALUE, BY_COOKIE} & set(canary["metadata"]["annotations"])

        bad = routed.evolve(now=routed.updated_at, router_state={"header": "no spaces=x"})
        with pytest.raises(RouterError, match="header routing"):
            router.stable_image(bad)
