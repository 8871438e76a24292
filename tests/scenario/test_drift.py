"""Drift (DESIGN.md "Drift"): someone edits the canary Deployment's image mid-rollout; the
rollout pauses, on-call is paged in the channel, and the edited image is never promoted."""

from __future__ import annotations

import pytest
from kubernetes import client

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, STABLE_IMAGE, Sandbox
from emulators.slack import Message
from rollout.model import Phase
from tests.scenario.test_rollout_flow import deployment, only_rollout, wait_until

EDITED = STABLE_IMAGE.replace(":v2.3.4", ":v9.9.9-hotfix")


def drift_pages(sandbox: Sandbox) -> list[Message]:
    return [
        m
        for m in sandbox.slack.messages(RELEASE_CHANNEL)
        if "S0ONCALL" in m.text and "changed by hand" in m.text
    ]


def approval(sandbox: Sandbox) -> Message | None:
    """The approval request in the card's thread (the alert is a second top-level message)."""
    card = sandbox.slack.messages(RELEASE_CHANNEL)[0]
    for reply in sandbox.slack.thread(RELEASE_CHANNEL, card.ts):
        for block in reply.blocks:
            if any(e.get("action_id") == "approve" for e in block.get("elements", [])):
                return reply
    return None


def image_of(sandbox: Sandbox, name: str) -> str:
    found = deployment(sandbox, name)
    assert found is not None
    return str(found["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.mark.timeout(90)
def test_a_hand_edited_canary_image_pauses_pages_and_is_never_promoted(sandbox: Sandbox) -> None:
    sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: deployment(sandbox, "checkout-canary"), timeout=30, what="the canary")
    # What `kubectl set image deployment/checkout-canary app=...` does.
    apps = client.AppsV1Api(sandbox.kube.api_client())
    apps.patch_namespaced_deployment(
        "checkout-canary",
        "shop",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": EDITED}]}}}},
    )
    [page] = wait_until(lambda: drift_pages(sandbox), timeout=30, what="the drift page")
    rollout = only_rollout(sandbox)
    assert rollout.phase == Phase.PAUSED
    said = str(page.blocks)
    assert f"someone set checkout-canary's image to {EDITED}" in said
    assert f"the bot measured {rollout.canary_image}" in said
    assert "/canary rollback checkout" in said

    # Even pushed on by hand, the edited canary is not promoted.
    sandbox.driver.command("promote checkout", user=BOB, channel=RELEASE_CHANNEL)
    request = wait_until(lambda: approval(sandbox), timeout=30, what="the approval request")
    sandbox.driver.click(message=request, action_id="approve", user=CAROL)
    # Whether the click lands before the next tick pauses the approval gate or after (then
    # the promotion refuses the edited canary and the tick pauses it), it ends paused again.
    wait_until(
        lambda: only_rollout(sandbox).phase == Phase.PAUSED and len(drift_pages(sandbox)) == 2,
        timeout=30,
        what="the rollout paused again",
    )
    assert only_rollout(sandbox).paused_from in (Phase.AWAITING_APPROVAL, Phase.PROMOTING)
    assert image_of(sandbox, "checkout") == STABLE_IMAGE
