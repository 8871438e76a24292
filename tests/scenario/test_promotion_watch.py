"""Promotion is watched (DESIGN.md "Promotion"): stable's new pods never get ready, on-call
is paged once the promotion deadline has passed, and `/canary rollback` puts stable back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, SANDBOX_CONFIG, STABLE_IMAGE, Sandbox
from emulators.slack import Message
from rollout.model import Phase
from tests.scenario.test_rollout_flow import NEW_IMAGE, deployment, only_rollout, wait_until

DEADLINE = timedelta(seconds=3)
INTERVAL = timedelta(seconds=1)  # the sandbox's analysis_interval

CONFIG = SANDBOX_CONFIG.replace(
    "  progress_deadline: 30s\n",
    f"  progress_deadline: 30s\n  promotion_deadline: {DEADLINE.seconds}s\n  approval: false\n",
).replace("steps: [25, 50, 75]", "steps: [50]")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=CONFIG)
    box.start()
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def image_of(sandbox: Sandbox, name: str) -> str:
    found = deployment(sandbox, name)
    assert found is not None
    return str(found["spec"]["template"]["spec"]["containers"][0]["image"])


def promotion_pages(sandbox: Sandbox) -> list[Message]:
    return [
        m
        for m in sandbox.slack.messages(RELEASE_CHANNEL)
        if "S0ONCALL" in m.text and "promotion not done" in m.text
    ]


@pytest.mark.timeout(90)
def test_stuck_promotion_pages_oncall_and_rollback_puts_stable_back(sandbox: Sandbox) -> None:
    # Stable's new pods (the promoted image) will never become ready.
    sandbox.kube.hold_ready("shop", "checkout")
    sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(lambda: image_of(sandbox, "checkout") == NEW_IMAGE, timeout=45, what="the promotion")
    [page] = wait_until(lambda: promotion_pages(sandbox), timeout=30, what="the page")
    rollout = only_rollout(sandbox)
    assert rollout.phase == Phase.PROMOTING  # still trying, not silently moved on
    assert f"has not rolled out {NEW_IMAGE} within 3s" in str(page.blocks)
    assert "/canary rollback checkout" in str(page.blocks)
    assert rollout.promoting_since is not None
    posts = sandbox.slack.calls_to("chat.postMessage")
    posted = next(c.wall for c in posts if c.response.get("ts") == page.ts)
    late = posted - rollout.promoting_since.timestamp()
    assert late <= (DEADLINE + 2 * INTERVAL).total_seconds(), f"paged {late:.1f}s after start"
    assert late > DEADLINE.total_seconds()

    sandbox.driver.command("rollback checkout", user=BOB, channel=RELEASE_CHANNEL)
    wait_until(
        lambda: only_rollout(sandbox).phase == Phase.ROLLED_BACK, timeout=30, what="rollback"
    )
    stable = deployment(sandbox, "checkout")
    assert stable is not None
    assert image_of(sandbox, "checkout") == STABLE_IMAGE
    assert stable["spec"]["replicas"] == 4
    assert deployment(sandbox, "checkout-canary") is None
    assert len(promotion_pages(sandbox)) == 1  # paged once
