"""The bot uses, changes and deletes only what it created for the rollout at hand.

A team may already have a `checkout-canary` of its own (another image, none of the bot's labels).
The bot must refuse to start rather than adopt it (give it traffic, announce it, delete it on
rollback), and must leave it exactly as it was: same `resourceVersion` through the refused
start, a rollback request and a second attempt. Deletes carry the uid of the object the bot
created, so an object put at the same name by someone else survives the bot's cleanup.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, Sandbox, stable_deployment
from emulators.kube import KubeEmulator
from rollout.kube import KubeGateway
from rollout.traffic.replicas import ReplicasRouter
from rollout.traffic.workloads import ForeignObject, RouterError, canary_name, deployment_rolled_out
from tests.conformance.cases import nginx as nginx_case
from tests.conformance.cases import replicas as replicas_case
from tests.conformance.cases.base import rollout_for
from tests.scenario.test_rollout_flow import wait_until
from tests.scenario.test_strategy_nginx_service import config, running

DEPLOYMENT = ("apps/v1", "Deployment")
HAND_MADE_IMAGE = "registry.example.com/shop/checkout:experiment-7"


def hand_made_canary() -> dict[str, Any]:
    """What a team makes by hand: a Deployment named like the bot's canary, nothing more."""
    made = stable_deployment(name="checkout-canary", replicas=1, image=HAND_MADE_IMAGE)
    return made


def resource_version(kube: KubeEmulator, api_version: str, kind: str, name: str) -> str:
    found = kube.get(api_version, kind, "shop", name)
    assert found is not None, f"{kind} {name} is gone"
    return str(found["metadata"]["resourceVersion"])


def settled_version(kube: KubeEmulator, name: str) -> str:
    """The hand-made Deployment's resourceVersion once its controller has finished with it
    (the emulated controller writes its status as pods become ready, as a real one does)."""

    def rolled_out() -> bool:
        found = kube.get(*DEPLOYMENT, "shop", name)
        return found is not None and deployment_rolled_out(found)

    wait_until(rolled_out, what=f"{name} rolled out")
    return resource_version(kube, *DEPLOYMENT, name)


def refusal_after(box: Sandbox, command: str) -> str:
    seen = len(box.slack.responses)
    reply = box.driver.command(command, user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    wait_until(lambda: len(box.slack.responses) > seen, what=f"the reply to {command!r}")
    return str(box.slack.responses[seen].body)


@pytest.mark.timeout(60)
def test_a_hand_made_canary_deployment_is_refused_and_never_touched(tmp_path: Path) -> None:
    with Sandbox(workdir=tmp_path / "sandbox") as box:
        box.kube.seed(hand_made_canary())
        box.start_bot()
        before = settled_version(box.kube, "checkout-canary")

        text = refusal_after(box, "start checkout v2.3.5")
        assert "Deployment shop/checkout-canary is in the way" in text
        assert "canary-bot did not create it" in text
        assert "kubectl -n shop delete deployment checkout-canary" in text
        assert box.kube.writes_snapshot() == []
        assert resource_version(box.kube, *DEPLOYMENT, "checkout-canary") == before

        box.driver.command("rollback checkout", user=BOB, channel=RELEASE_CHANNEL)
        text = refusal_after(box, "start checkout v2.3.5")  # the second attempt
        assert "is in the way" in text
        assert box.kube.writes_snapshot() == []
        assert resource_version(box.kube, *DEPLOYMENT, "checkout-canary") == before
        canary = box.kube.get(*DEPLOYMENT, "shop", "checkout-canary")
        assert canary is not None
        image = canary["spec"]["template"]["spec"]["containers"][0]["image"]
        assert (image, canary["spec"]["replicas"]) == (HAND_MADE_IMAGE, 1)
        # Nothing was announced as the new version either: no card, no thread.
        assert not [m for m in box.slack.messages(RELEASE_CHANNEL) if "v2.3.5" in m.text]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "name"), [("Service", "checkout-canary"), ("Ingress", "shop-canary")]
)
def test_nginx_refuses_a_hand_made_canary_service_or_ingress(
    tmp_path: Path, kind: str, name: str
) -> None:
    service, ingress = nginx_case.stable_service(), nginx_case.stable_ingress()
    foreign = copy.deepcopy(service if kind == "Service" else ingress)
    foreign["metadata"] = {"name": name, "namespace": "shop", "labels": {"team": "checkout"}}
    if kind == "Service":
        foreign["spec"].pop("clusterIP", None)
        foreign["spec"].pop("clusterIPs", None)
    api_version = "v1" if kind == "Service" else "networking.k8s.io/v1"
    with running(
        tmp_path,
        config("nginx", extra="ingress: shop\n"),
        stable_deployment(track="stable"),
        service,
        ingress,
        foreign,
    ) as box:
        before = resource_version(box.kube, api_version, kind, name)
        text = refusal_after(box, "start checkout v2.3.5")
        assert f"{kind} shop/{name} is in the way" in text
        assert box.kube.writes_snapshot() == []
        assert box.kube.get(*DEPLOYMENT, "shop", "checkout-canary") is None
        assert resource_version(box.kube, api_version, kind, name) == before


@pytest.mark.timeout(30)
def test_cleanup_spares_an_object_someone_else_put_at_the_canary_name() -> None:
    with KubeEmulator(ready_delay=0.05) as kube:
        replicas_case.CASE.seed(kube)
        gateway = KubeGateway(kube.api_client())
        router = ReplicasRouter(gateway)
        rollout = router.prepare(rollout_for(replicas_case.CASE))
        name = canary_name(rollout)
        ours = kube.get(*DEPLOYMENT, "shop", name)
        assert ours is not None

        # Someone replaces the bot's canary with their own under the same name.
        gateway.delete_deployment("shop", name)
        kube.seed(hand_made_canary())
        theirs = settled_version(kube, name)

        router.rollback(rollout)
        assert resource_version(kube, *DEPLOYMENT, name) == theirs
        with pytest.raises(RouterError, match="is missing"):
            router.set_weight(rollout, 50)  # never scales somebody else's Deployment
        with pytest.raises(ForeignObject, match="is in the way"):
            router.prepare(rollout)

        # A delete with the uid the bot recorded does not remove the newcomer either.
        gateway.delete_deployment("shop", name, uid=ours["metadata"]["uid"])
        assert resource_version(kube, *DEPLOYMENT, name) == theirs
