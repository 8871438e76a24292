"""Slack delivers a request again (`X-Slack-Retry-Num`) when it thinks the first one was lost.

A retried `/canary start`, `/canary rollback` or Approve click carries the same `trigger_id`
(or, for a click, the same `action_ts`) as the first delivery. Whether the retry arrives while
the first is still being handled or long after, the bot acts once: one rollout, one card, one
approval, one promotion, one rollback, and no refusal shown for the duplicate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import ALICE, BOB, CAROL, RELEASE_CHANNEL, STABLE_IMAGE, Sandbox
from emulators.slack import DriverResponse, Message, payloads
from tests.reliability.support import (
    FORM,
    card_of,
    click_body,
    open_approval,
    sandbox_config,
    wait_for,
)

NEW_IMAGE = STABLE_IMAGE.replace(":v2.3.4", ":v2.3.5")
RETRIES = ((1, "http_timeout"), (2, "http_error"), (3, "http_timeout"))


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(
        workdir=tmp_path / "sandbox",
        config_text=sandbox_config(services=["checkout"], steps=[25, 50], step_interval="1s"),
    )
    box.start()
    box.start_bot()
    try:
        yield box
    finally:
        box.stop()


def all_at_once(sends: list[Callable[[], DriverResponse]]) -> list[DriverResponse]:
    """Send concurrently: a retry may overtake the delivery it repeats."""
    results: list[DriverResponse | None] = [None] * len(sends)
    barrier = threading.Barrier(len(sends))

    def run(index: int) -> None:
        barrier.wait()
        results[index] = sends[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sends))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def rollout_state(sandbox: Sandbox) -> Any:
    assert sandbox.runtime is not None
    found = sandbox.runtime.store.history("checkout")
    return found[0] if len(found) == 1 else None


def unsent(sandbox: Sandbox) -> bool:
    """Messages still in the outbox (held, queued or on their way)."""
    assert sandbox.runtime is not None
    return bool(sandbox.runtime.store.unsent())


def actions(sandbox: Sandbox) -> list[tuple[str, str]]:
    assert sandbox.runtime is not None
    return [(row["actor"], row["action"]) for row in sandbox.runtime.store.audit_rows()]


def replies(sandbox: Sandbox) -> list[Message]:
    rollout = rollout_state(sandbox)
    card = card_of(sandbox, rollout.id) if rollout else None
    return sandbox.slack.thread(RELEASE_CHANNEL, card.ts) if card else []


def count_replies(sandbox: Sandbox, text: str) -> int:
    return sum(1 for m in replies(sandbox) if text in m.text)


def start_with_retries(sandbox: Sandbox) -> list[DriverResponse]:
    trigger = payloads.trigger_id()

    def send(retry: tuple[int, str] | None) -> Callable[[], DriverResponse]:
        return lambda: sandbox.driver.command(
            "start checkout v2.3.5",
            user=BOB,
            channel=RELEASE_CHANNEL,
            trigger_id=trigger,
            retry_num=retry[0] if retry else None,
            retry_reason=retry[1] if retry else None,
        )

    # The first delivery and its first retry race; the later retries come after the fact.
    answers = all_at_once([send(None), send(RETRIES[0])])
    answers += [send(retry)() for retry in RETRIES[1:]]
    return answers


@pytest.mark.timeout(60)
def test_retried_start_and_approval_act_once(sandbox: Sandbox) -> None:
    answers = start_with_retries(sandbox)
    assert [a.status for a in answers] == [200] * len(answers)
    assert sum("Starting a canary" in a.body for a in answers) == 1, [a.body for a in answers]
    assert not any("already has an active rollout" in a.body for a in answers)

    rollout = wait_for(
        lambda: (r := rollout_state(sandbox)) and r.approval_ts and r,
        what="the approval request",
        timeout=30,
    )
    approval = open_approval(sandbox, rollout.thread_ts)
    assert approval is not None
    body = click_body(sandbox, message=approval, action_id="approve", user=CAROL)

    def click(retry: tuple[int, str] | None) -> Callable[[], DriverResponse]:
        headers = {}
        if retry is not None:
            headers = {"X-Slack-Retry-Num": str(retry[0]), "X-Slack-Retry-Reason": retry[1]}
        return lambda: sandbox.driver.post_raw(body, content_type=FORM, headers=headers)

    clicked = all_at_once([click(None), click(RETRIES[0])])
    clicked += [click(retry)() for retry in RETRIES[1:]]
    assert [c.status for c in clicked] == [200] * len(clicked)
    wait_for(
        lambda: rollout_state(sandbox).phase == "succeeded" and not unsent(sandbox),
        what="the promotion",
    )
    sandbox.drain()  # the retried clicks' own after-ack work, which might tell someone off

    assert sandbox.runtime is not None
    assert [r.canary_image for r in sandbox.runtime.store.history("checkout")] == [NEW_IMAGE]
    done = actions(sandbox)
    assert done.count((BOB, "start")) == 1
    assert done.count((CAROL, "approve")) == 1
    assert done.count(("canary-bot", "promoted")) == 1
    assert [a for a in done if a[1].startswith("refused")] == []
    roots = sandbox.slack.messages(RELEASE_CHANNEL)
    assert len(roots) == 1, "one status card"
    assert count_replies(sandbox, "Promotion started") == 1
    assert count_replies(sandbox, "Released") == 1
    # One canary created, one promotion patch of the stable Deployment's image.
    writes = sandbox.kube.writes_snapshot()
    created = [w for w in writes if w.method == "POST" and w.name == "checkout-canary"]
    promoted = [
        w
        for w in writes
        if w.method == "PATCH"
        and w.name == "checkout"
        and w.subresource is None
        and NEW_IMAGE in str(w.body)
    ]
    assert [w.status for w in created] == [201]
    assert len(promoted) == 1
    # Nobody was told off for Slack's retries.
    assert not any("no longer open" in r.text for r in sandbox.slack.responses)


@pytest.mark.timeout(60)
def test_retried_rollback_rolls_back_once(sandbox: Sandbox) -> None:
    assert sandbox.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    wait_for(
        lambda: (r := rollout_state(sandbox)) and r.step_ready and r,
        what="the first step",
        timeout=30,
    )
    trigger = payloads.trigger_id()

    def send(retry: tuple[int, str] | None) -> Callable[[], DriverResponse]:
        return lambda: sandbox.driver.command(
            "rollback checkout bad canary",
            user=ALICE,
            channel=RELEASE_CHANNEL,
            trigger_id=trigger,
            retry_num=retry[0] if retry else None,
            retry_reason=retry[1] if retry else None,
        )

    answers = all_at_once([send(None), send(RETRIES[0])])
    answers += [send(retry)() for retry in RETRIES[1:]]
    assert [a.status for a in answers] == [200] * len(answers)
    assert not any("cannot be rolled back" in a.body for a in answers), [a.body for a in answers]
    wait_for(
        lambda: rollout_state(sandbox).phase == "rolled_back" and not unsent(sandbox),
        what="the rollback",
    )
    sandbox.drain()  # what the retried commands started after their acks is done, too
    done = actions(sandbox)
    assert done.count((ALICE, "rollback")) == 1
    assert done.count(("canary-bot", "rolled back")) == 1
    assert [a for a in done if a[1].startswith("refused")] == []
    assert count_replies(sandbox, "Rolling back") == 1
    assert count_replies(sandbox, "Rolled back after") == 1
