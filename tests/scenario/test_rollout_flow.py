"""Issue 2's end-to-end path, exactly as Slack would drive it: signed HTTP requests in,
recorded Web API calls and emulated cluster state out."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, CAROL, MALLORY, RELEASE_CHANNEL, STABLE_IMAGE, Sandbox
from emulators.slack import Message
from rollout.model import Phase, Rollout

NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")


def wait_until(probe: Any, *, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def only_rollout(sandbox: Sandbox) -> Rollout:
    assert sandbox.runtime is not None
    rollouts = sandbox.runtime.store.history("checkout")
    assert len(rollouts) == 1
    return rollouts[0]


def thread_replies(sandbox: Sandbox) -> list[Message]:
    roots = sandbox.slack.messages(RELEASE_CHANNEL)
    assert len(roots) == 1, "one root card per rollout"
    return sandbox.slack.thread(RELEASE_CHANNEL, roots[0].ts)


def approval_message(sandbox: Sandbox) -> Message | None:
    for reply in thread_replies(sandbox) if sandbox.slack.messages(RELEASE_CHANNEL) else []:
        for block in reply.blocks:
            if any(e.get("action_id") == "approve" for e in block.get("elements", [])):
                return reply
    return None


def deployment(sandbox: Sandbox, name: str) -> dict[str, Any] | None:
    return sandbox.kube.get("apps/v1", "Deployment", "shop", name)


def last_response_text(sandbox: Sandbox, seen: int) -> str:
    wait_until(lambda: len(sandbox.slack.responses) > seen, what="an ephemeral reply")
    return str(sandbox.slack.responses[seen].body.get("text"))


@pytest.mark.timeout(90)
def test_start_steps_approval_and_promotion(sandbox: Sandbox) -> None:
    weights: list[tuple[int, int]] = []
    reply = sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200
    assert reply.json and reply.json["response_type"] == "ephemeral"

    def record_weights() -> Message | None:
        canary, stable = deployment(sandbox, "checkout-canary"), deployment(sandbox, "checkout")
        if canary and stable:
            pair = (canary["spec"]["replicas"], stable["spec"]["replicas"])
            if not weights or weights[-1] != pair:
                weights.append(pair)
        return approval_message(sandbox)

    approval = wait_until(record_weights, timeout=45, what="the approval request")
    # Every step's weight reached, in order, total capacity (4) kept: 25%, 50%, 75%. The canary
    # is scaled up before stable is scaled down, so capacity briefly exceeds 4, never dips.
    assert all(sum(pair) >= 4 for pair in weights)
    assert [w for w in weights if w[0] > 0 and sum(w) == 4] == [(1, 3), (2, 2), (3, 1)]
    steps = [m for m in thread_replies(sandbox) if "Step" in m.text]
    assert [re.search(r"Step (\d) of 3", m.text).group(1) for m in steps] == ["1", "2", "3"]  # type: ignore[union-attr]
    # On schedule: each step lasts at least its 2 s interval.
    calls = {
        c.args.get("ts") or c.response.get("ts"): c.wall
        for c in sandbox.slack.calls_to("chat.postMessage")
    }
    times = [calls[m.ts] for m in steps]
    assert all(later - earlier >= 2.0 for earlier, later in itertools.pairwise(times))
    assert "<!subteam^S0SRE>" in str(approval.blocks)
    assert only_rollout(sandbox).phase == Phase.AWAITING_APPROVAL

    seen = len(sandbox.slack.responses)
    sandbox.driver.click(message=approval, action_id="approve", user=MALLORY)
    assert "Only approvers" in last_response_text(sandbox, seen)
    seen = len(sandbox.slack.responses)
    sandbox.driver.click(message=approval, action_id="approve", user=BOB)
    assert "cannot approve it alone" in last_response_text(sandbox, seen)
    assert only_rollout(sandbox).phase == Phase.AWAITING_APPROVAL

    sandbox.driver.click(message=approval, action_id="approve", user=CAROL)
    wait_until(lambda: only_rollout(sandbox).phase == Phase.SUCCEEDED, what="promotion")

    stable = deployment(sandbox, "checkout")
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert stable["spec"]["replicas"] == 4
    assert deployment(sandbox, "checkout-canary") is None
    # The card is updated in place at every transition, in order, and never without a change.
    wait_until(
        lambda: sandbox.slack.messages(RELEASE_CHANNEL)[0].text.startswith("Succeeded"),
        what="the card to show the promotion",
    )
    card = sandbox.slack.messages(RELEASE_CHANNEL)[0]
    phases = [version.text.split(":")[0] for version in card.history]
    # (The card is first posted once the first step's weight is applied.)
    assert [p for p, q in itertools.pairwise([*phases, None]) if p != q] == [
        "Progressing",
        "Awaiting approval",
        "Promoting",
        "Succeeded",
    ]
    looks = [(v.text, str(v.blocks)) for v in card.history]
    assert all(a != b for a, b in itertools.pairwise(looks))
    updates = [c for c in sandbox.slack.calls_to("chat.update") if c.args.get("ts") == card.ts]
    assert len(updates) == card.edited == len(card.history) - 1
    closed = sandbox.slack.message(RELEASE_CHANNEL, approval.ts)
    assert closed is not None and "U03CAROL" in closed.text
    assert not any(b.get("type") == "actions" for b in closed.blocks)

    assert sandbox.runtime is not None
    audit = sandbox.runtime.store.audit_rows(only_rollout(sandbox).id)
    actions = [(row["actor"], row["action"]) for row in audit]
    assert (BOB, "start") in actions
    assert (MALLORY, "refused: approve") in actions
    assert (BOB, "refused: approve") in actions
    assert (CAROL, "approve") in actions
    assert ("canary-bot", "promoted") in actions
    changes = [row["detail"] for row in audit if row["action"] == "cluster change"]
    assert [c for c in changes if c.startswith("set canary weight")] == [
        "set canary weight 25%",
        "set canary weight 50%",
        "set canary weight 75%",
    ]
    events = {e["reason"] for e in sandbox.kube.list("v1", "Event", "shop")}
    assert {"CanaryCreated", "CanaryWeight", "Promoting", "Promoted"} <= events


@pytest.mark.parametrize(
    ("text", "user", "channel", "expected"),
    [
        ("start nosuch v1.0.0", BOB, RELEASE_CHANNEL, "Unknown service `nosuch`"),
        ("start checkout latest", BOB, RELEASE_CHANNEL, "latest"),
        ("start checkout registry.example.com/shop/checkout", BOB, RELEASE_CHANNEL, "tag"),
        ("start checkout v2.3.5 --steps 5,abc", BOB, RELEASE_CHANNEL, "abc"),
        ("start checkout v2.3.5 --interval soon", BOB, RELEASE_CHANNEL, "soon"),
        ("start checkout v2.3.5", BOB, "C0ELSEWHERE", "release channel"),
        ("start checkout v2.3.5", MALLORY, RELEASE_CHANNEL, "not a deployer"),
        ("frobnicate checkout", BOB, RELEASE_CHANNEL, "frobnicate"),
    ],
)
@pytest.mark.timeout(30)
def test_bad_input_gets_an_ephemeral_reply_and_changes_nothing(
    sandbox: Sandbox, text: str, user: str, channel: str, expected: str
) -> None:
    sandbox.kube.clear_writes()
    reply = sandbox.driver.command(text, user=user, channel=channel)
    assert reply.status == 200
    assert reply.json is not None and reply.json["response_type"] == "ephemeral"
    assert expected.lower() in str(reply.json).lower()
    sandbox.drain()  # the bot acts after the ack: look once that work is done
    assert sandbox.kube.writes_snapshot() == []
    assert sandbox.slack.calls_to("chat.postMessage") == []
    assert sandbox.runtime is not None
    assert sandbox.runtime.store.history("checkout") == []


@pytest.mark.timeout(30)
def test_second_active_rollout_of_a_service_is_refused(sandbox: Sandbox) -> None:
    sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: deployment(sandbox, "checkout-canary"), what="the canary")
    sandbox.kube.clear_writes()
    reply = sandbox.driver.command("start checkout v2.3.6", user=CAROL, channel=RELEASE_CHANNEL)
    assert reply.json is not None and reply.json["response_type"] == "ephemeral"
    assert "already has an active rollout" in str(reply.json)
    assert [r.canary_image for r in sandbox.runtime.store.history("checkout")] == [NEW_IMAGE]  # type: ignore[union-attr]


@pytest.mark.timeout(30)
def test_unsigned_or_stale_requests_get_401_and_change_nothing(sandbox: Sandbox) -> None:
    unsigned = sandbox.driver.command(
        "start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL, sign=False
    )
    stale = sandbox.driver.command(
        "start checkout v2.3.5",
        user=BOB,
        channel=RELEASE_CHANNEL,
        timestamp=int(time.time()) - 6 * 60,
    )
    assert (unsigned.status, stale.status) == (401, 401)
    sandbox.drain()
    assert sandbox.kube.writes_snapshot() == []
    assert sandbox.runtime is not None and sandbox.runtime.store.history("checkout") == []


@pytest.mark.timeout(30)
def test_a_bare_digest_pins_the_stable_repository(sandbox: Sandbox) -> None:
    digest = "sha256:" + "ab" * 32
    reply = sandbox.driver.command(f"start checkout @{digest}", user=BOB, channel=RELEASE_CHANNEL)
    assert "Starting a canary" in reply.body, reply.body
    wait_until(lambda: deployment(sandbox, "checkout-canary"), what="the canary")
    canary = deployment(sandbox, "checkout-canary")
    assert canary is not None
    image = canary["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.example.com/shop/checkout@{digest}"
