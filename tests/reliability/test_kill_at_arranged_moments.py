"""Two moments random kills rarely hit, arranged on purpose: the bot dies right after
acknowledging `/canary start` while it is still reading the cluster (the start must go on
after the restart), and it dies while deciding a click (Slack's retry of that click must
count). `canary-bot serve` runs as its own process (tests/reliability/support.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, Sandbox
from tests.reliability.support import (
    FORM,
    BotProcess,
    card_of,
    click_body,
    open_approval,
    sandbox_config,
    served_bot,
    stored_rollouts,
    wait_for,
)


@pytest.fixture
def one_service(tmp_path: Path) -> Iterator[tuple[Sandbox, BotProcess]]:
    config = sandbox_config(services=["checkout"], steps=[50], step_interval="1s")
    with served_bot(tmp_path, config_text=config) as served:
        yield served


@pytest.mark.timeout(60)
def test_an_acknowledged_start_survives_a_kill(one_service: tuple[Sandbox, BotProcess]) -> None:
    sandbox, bot = one_service
    sandbox.kube.faults.latency = 1.5  # the stable Deployment is read after the ack
    reply = sandbox.driver_for(bot.url).command(
        "start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL
    )
    assert reply.status == 200 and "Starting" in reply.body
    bot.kill()
    sandbox.kube.faults.latency = 0.0
    bot.start()
    # The person was told it is starting, so it starts: the restarted bot carries it on.
    wait_for(
        lambda: (
            [(r["phase"], r["step_ready"]) for r in stored_rollouts(sandbox.db_path)]
            in ([("progressing", True)], [("awaiting_approval", True)])
        ),
        what="the acknowledged start to reach its first step",
        timeout=10,
    )
    assert card_of(sandbox, stored_rollouts(sandbox.db_path)[0]["id"]) is not None


@pytest.mark.timeout(60)
def test_a_click_the_bot_died_on_counts_when_slack_retries_it(
    one_service: tuple[Sandbox, BotProcess],
) -> None:
    sandbox, bot = one_service
    driver = sandbox.driver_for(bot.url)
    assert driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL).status == 200
    approval = wait_for(lambda: open_approval(sandbox, thread_ts(sandbox)), what="the approval")
    body = click_body(sandbox, message=approval, action_id="approve", user=CAROL)
    bot.kill()
    # The click reaches a dead bot: Slack gets no answer and retries. (A click never waits
    # for Slack itself: approver groups are read in the background, see test_group_membership.)
    _send_quietly(driver, body)
    bot.start()  # a fresh process: it reads the approvers' group before it serves
    retried = driver.post_raw(
        body,
        content_type=FORM,
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert retried.status == 200
    wait_for(
        lambda: stored_rollouts(sandbox.db_path)[0]["phase"] in ("promoting", "succeeded"),
        what="the retried approval to be recorded",
        timeout=5,
    )


def thread_ts(sandbox: Sandbox) -> str | None:
    found = stored_rollouts(sandbox.db_path)
    return found[0]["thread_ts"] if found else None


def _send_quietly(driver: Any, body: bytes) -> None:
    try:
        driver.post_raw(body, content_type=FORM)
    except Exception:  # the bot is killed mid-request: Slack sees no answer and will retry
        return
