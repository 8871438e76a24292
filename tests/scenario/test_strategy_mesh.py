"""`/canary start` over signed HTTP for the `istio`, `gateway` and `argo` strategies.

Each test runs the real bot in a sandbox whose config uses one strategy, with the cluster
seeded (CRDs installed) before the bot starts, and checks that the first step's weight is set
in the object that carries it for that strategy; a rollback over Slack then leaves the stable
objects exactly as they were. One more test drives the Istio router directly, for a
DestinationRule the bot must create (and header routing on a route that has matches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, SANDBOX_CONFIG, Sandbox
from emulators.kube import BUNDLED_CRDS, KubeEmulator
from rollout.kube import KubeGateway
from rollout.model import Phase, Rollout
from rollout.traffic.argo import ROLLOUT
from rollout.traffic.gateway import HTTP_ROUTE
from rollout.traffic.istio import DESTINATION_RULE, VIRTUAL_SERVICE, IstioRouter
from tests.conformance.cases.argo import argo_rollout, seed_argo
from tests.conformance.cases.base import NAMESPACE, rollout_for, tracked_deployment
from tests.conformance.cases.gateway import http_route, stable_service
from tests.conformance.cases.istio import CASE as ISTIO_CASE
from tests.conformance.cases.istio import destination_rule, seed_istio, service, virtual_service
from tests.scenario.test_rollout_flow import wait_until

NEW_IMAGE = "registry.example.com/shop/checkout:v2.3.5"
FIRST_STEP = 25  # the sandbox's steps are 25, 50, 75


def config(strategy: str, **keys: str) -> str:
    lines = "".join(f"    {key}: {value}\n" for key, value in keys.items())
    return SANDBOX_CONFIG.replace("    strategy: replicas\n", f"    strategy: {strategy}\n{lines}")


def spec_of(kube: KubeEmulator, api_version: str, kind: str, name: str = "checkout") -> Any:
    found = kube.get(api_version, kind, NAMESPACE, name)
    return None if found is None else found["spec"]


def the_rollout(box: Sandbox) -> Rollout:
    assert box.runtime is not None
    rollouts = box.runtime.store.history("checkout")
    assert len(rollouts) == 1
    return rollouts[0]


def first_step_reached(box: Sandbox) -> bool:
    assert box.runtime is not None
    started = box.runtime.store.history("checkout")  # the start runs after Slack's ack
    if not started:
        return False
    rollout = started[0]
    assert rollout.phase.is_active, rollout.reason
    return rollout.phase == Phase.PROGRESSING and rollout.step_index == 0 and rollout.step_ready


@pytest.fixture
def sandbox_for(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Builds a started sandbox for a config, seeded by `seed(kube)` before the bot starts."""
    boxes: list[Sandbox] = []

    def build(config_text: str, seed: Callable[[KubeEmulator], None]) -> Sandbox:
        box = Sandbox(
            workdir=tmp_path / "sandbox", config_text=config_text, crd_dir=BUNDLED_CRDS, seed=False
        )
        boxes.append(box)
        box.start()
        seed(box.kube)
        box.start_bot()
        return box

    try:
        yield build
    finally:
        for box in boxes:
            box.stop()


def start_and_reach_first_step(box: Sandbox, *, options: str = "") -> Rollout:
    command = f"start checkout v2.3.5 {options}".strip()
    reply = box.driver.command(command, user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    wait_until(lambda: first_step_reached(box), what="the first step")
    rollout = the_rollout(box)
    assert rollout.canary_image == NEW_IMAGE
    assert rollout.weight == FIRST_STEP
    return rollout


def roll_back(box: Sandbox) -> None:
    box.driver.command("rollback checkout bad latency", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: the_rollout(box).phase == Phase.ROLLED_BACK, what="the rollback")


@pytest.mark.timeout(60)
def test_istio_first_step_sets_the_virtual_service_weights_and_header_route(
    sandbox_for: Callable[..., Sandbox],
) -> None:
    box = sandbox_for(
        config("istio", service="checkout", virtual_service="checkout", route="default"),
        seed=seed_istio,
    )
    start_and_reach_first_step(box, options="--header x-user-tier=premium")

    routes = spec_of(box.kube, VIRTUAL_SERVICE.api_version, VIRTUAL_SERVICE.kind)["http"]
    # Requests with the header reach the canary first: a copy of the named route, before it.
    # The other route to checkout (`api`) stays exactly as it was.
    assert [r["name"] for r in routes] == ["api", "payments", "default-canary-header", "default"]
    assert routes[0] == virtual_service()["spec"]["http"][0]
    assert routes[2]["match"] == [{"headers": {"x-user-tier": {"exact": "premium"}}}]
    assert [t["destination"]["subset"] for t in routes[2]["route"]] == ["canary"]
    split = [r["route"] for r in routes if len(r["route"]) == 2]
    assert len(split) == 1 and all(
        [(t["destination"]["subset"], t["weight"]) for t in route]
        == [("stable", 100 - FIRST_STEP), ("canary", FIRST_STEP)]
        for route in split
    )
    subsets = spec_of(box.kube, DESTINATION_RULE.api_version, DESTINATION_RULE.kind)["subsets"]
    assert {s["name"]: s["labels"] for s in subsets}["canary"] == {
        "app": "checkout",
        "track": "canary",
    }
    canary = box.kube.get("apps/v1", "Deployment", NAMESPACE, "checkout-canary")
    assert canary is not None
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE

    roll_back(box)
    assert (
        spec_of(box.kube, VIRTUAL_SERVICE.api_version, VIRTUAL_SERVICE.kind)
        == (virtual_service()["spec"])
    )
    assert (
        spec_of(box.kube, DESTINATION_RULE.api_version, DESTINATION_RULE.kind)
        == (destination_rule()["spec"])
    )
    assert box.kube.get("apps/v1", "Deployment", NAMESPACE, "checkout-canary") is None


@pytest.mark.timeout(60)
def test_gateway_first_step_sets_the_http_route_weights(
    sandbox_for: Callable[..., Sandbox],
) -> None:
    def seed(kube: KubeEmulator) -> None:
        for obj in (tracked_deployment(), stable_service(), http_route()):
            kube.seed(obj)

    box = sandbox_for(
        config("gateway", service="checkout", http_route="checkout", route="2"), seed=seed
    )
    before = spec_of(box.kube, HTTP_ROUTE.api_version, HTTP_ROUTE.kind)  # as defaulted
    start_and_reach_first_step(box)

    rules = spec_of(box.kube, HTTP_ROUTE.api_version, HTTP_ROUTE.kind)["rules"]
    assert rules[:2] == before["rules"][:2]  # the /api and /pay rules as they were
    split = [rule["backendRefs"] for rule in rules if len(rule["backendRefs"]) == 2]
    assert len(split) == 1 and all(
        [(ref["name"], ref["weight"]) for ref in refs]
        == [("checkout", 100 - FIRST_STEP), ("checkout-canary", FIRST_STEP)]
        for refs in split
    )
    canary_service = spec_of(box.kube, "v1", "Service", "checkout-canary")
    assert canary_service["selector"] == {"app": "checkout", "track": "canary"}

    roll_back(box)
    assert spec_of(box.kube, HTTP_ROUTE.api_version, HTTP_ROUTE.kind) == before
    assert box.kube.get("v1", "Service", NAMESPACE, "checkout-canary") is None
    assert box.kube.get("apps/v1", "Deployment", NAMESPACE, "checkout-canary") is None


@pytest.mark.timeout(60)
def test_argo_first_step_is_read_from_the_rollout_status(
    sandbox_for: Callable[..., Sandbox],
) -> None:
    stable_image = "registry.example.com/shop/checkout:v2.3.4"

    def seed(kube: KubeEmulator) -> None:
        # Argo's own steps: 25, 50, 75, each followed by an indefinite pause.
        body = argo_rollout(image=stable_image)
        steps: list[dict[str, Any]] = []
        for weight in (25, 50, 75):
            steps += [{"setWeight": weight}, {"pause": {}}]
        body["spec"]["strategy"]["canary"]["steps"] = steps
        seed_argo(kube, body)

    box = sandbox_for(config("argo", argo_rollout="checkout"), seed=seed)
    before = spec_of(box.kube, ROLLOUT.api_version, ROLLOUT.kind)
    start_and_reach_first_step(box)

    found = box.kube.get(ROLLOUT.api_version, ROLLOUT.kind, NAMESPACE, "checkout")
    assert found is not None
    assert found["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert found["status"]["canary"]["weights"]["canary"]["weight"] == FIRST_STEP
    assert found["status"]["phase"] == "Paused"
    assert box.kube.get("apps/v1", "Deployment", NAMESPACE, "checkout-canary") is None

    roll_back(box)
    assert spec_of(box.kube, ROLLOUT.api_version, ROLLOUT.kind) == before
    assert any(
        w.subresource == "status" and w.body["status"] == {"abort": True}
        for w in box.kube.writes_snapshot()
    )


@pytest.mark.timeout(30)
def test_istio_header_route_and_a_destination_rule_the_bot_creates() -> None:
    """Header routing sends matching requests to the canary first; without a DestinationRule
    the bot creates one for the subsets and deletes it at the end."""
    with KubeEmulator(crd_dir=BUNDLED_CRDS, ready_delay=0.05) as kube:
        for obj in (tracked_deployment(), service(), virtual_service()):
            kube.seed(obj)
        router = IstioRouter(KubeGateway(kube.api_client()))
        asked = replace(rollout_for(ISTIO_CASE), router_state={"header": "X-User-Tier=premium"})
        rollout = router.prepare(asked)
        assert router.set_weight(rollout, 10) is True

        routes = spec_of(kube, VIRTUAL_SERVICE.api_version, VIRTUAL_SERVICE.kind)["http"]
        assert [r["name"] for r in routes] == [
            "api",
            "payments",
            "default-canary-header",
            "default",
        ]
        assert routes[:2] == virtual_service()["spec"]["http"][:2]  # untouched
        header, default = routes[2], routes[3]
        assert header["match"] == [{"headers": {"x-user-tier": {"exact": "premium"}}}]
        assert [t["destination"]["subset"] for t in header["route"]] == ["canary"]
        assert [t["weight"] for t in default["route"]] == [90, 10]
        created = kube.get(
            DESTINATION_RULE.api_version, DESTINATION_RULE.kind, NAMESPACE, "checkout"
        )
        assert created is not None
        assert created["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "canary-bot"}
        assert created["spec"]["host"] == "checkout"
        assert [s["name"] for s in created["spec"]["subsets"]] == ["stable", "canary"]

        router.rollback(rollout)
        assert (
            spec_of(kube, VIRTUAL_SERVICE.api_version, VIRTUAL_SERVICE.kind)
            == (virtual_service()["spec"])
        )
        assert spec_of(kube, DESTINATION_RULE.api_version, DESTINATION_RULE.kind) is None
