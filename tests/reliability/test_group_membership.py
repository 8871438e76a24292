"""Group membership stays off the acknowledgement path, and old memberships grant nothing.

- With `usergroups.users.list` held (every call to it waits until the test releases it), an
  Approve click is still answered: the answer cannot have waited for such a call. The
  membership is then fetched after the answer, and the next click counts.
- With that method failing (429 or an error), a click is answered 200 with a refusal that
  says membership could not be confirmed, never a 500.
- An approver removed from the group while Slack cannot be asked loses the right once the
  membership read before is older than `slack.group_cache_max_age` (the clock is shifted).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from kubernetes import config as k8s_config

from bot.runtime import Runtime, Secrets
from bot.server import HttpServer
from canary_sandbox.sandbox import ALICE, BOB, CAROL, RELEASE_CHANNEL, Sandbox
from emulators.slack import SlackDriver, SlackFaults
from emulators.slack.records import Message
from rollout.model import Phase, Rollout
from tests.reliability.support import active_rollout, open_approval, sandbox_config, wait_for
from tests.reliability.test_kube_faults import ShiftedClock

GROUPS = "usergroups.users.list"
UNCONFIRMED = "could not be confirmed in the last 10m; try again shortly"


def _config() -> str:
    # ALICE is the only listed deployer, so starting never needs a group; approvers: S0SRE.
    return sandbox_config(
        services=["checkout"], steps=[50], step_interval="1s", deployers="[U01ALICE]"
    )


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, ShiftedClock]]:
    box = Sandbox(workdir=tmp_path / "sandbox", config_text=_config())
    box.start()
    clock = ShiftedClock()
    try:
        yield box, clock
    finally:
        box.stop()


def start_bot(box: Sandbox, clock: ShiftedClock) -> SlackDriver:
    runtime = Runtime(
        config=box.config,
        secrets=Secrets.from_env(box.bot_env()),
        api_client=k8s_config.new_client_from_config(config_file=str(box.kubeconfig)),
        clock=clock,
    )
    runtime.start()
    box.runtime = runtime
    box.server = HttpServer(runtime, host="127.0.0.1", port=0)
    box.server.start()
    return box.driver_for(box.server.url)


def awaiting_approval(box: Sandbox, driver: SlackDriver) -> tuple[Rollout, Message]:
    reply = driver.command("start checkout v2.3.5", user=ALICE, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    rollout = wait_for(
        partial(active_rollout, box, "checkout", where=lambda r: r.approval_ts is not None),
        what="the approval gate",
    )
    return rollout, wait_for(lambda: open_approval(box, rollout.thread_ts), what="the request")


def click_answer(box: Sandbox, driver: SlackDriver, approval: Message, user: str) -> str:
    """The click's HTTP status must be 200; returns the ephemeral answer, if one came."""
    seen = len(box.slack.responses)
    answer = driver.click(message=approval, action_id="approve", user=user)
    assert answer.status == 200, answer.body
    assert box.runtime is not None
    box.runtime.drain()
    return " ".join(post.text for post in box.slack.responses[seen:])


@pytest.mark.timeout(60)
def test_an_approve_click_never_waits_for_slack_and_never_fails(
    sandbox: tuple[Sandbox, ShiftedClock],
) -> None:
    box, clock = sandbox
    box.slack.faults = SlackFaults(error_rate=1.0, methods=frozenset({GROUPS}))
    driver = start_bot(box, clock)  # the start-up refresh fails: no membership is known
    rollout, approval = awaiting_approval(box, driver)

    box.slack.faults = SlackFaults(rate_limit_rate=1.0, retry_after=30, methods=frozenset({GROUPS}))
    assert UNCONFIRMED in click_answer(box, driver, approval, CAROL)
    box.slack.faults = SlackFaults(error_rate=1.0, methods=frozenset({GROUPS}))
    assert UNCONFIRMED in click_answer(box, driver, approval, CAROL)

    held = SlackFaults()
    held.hold(GROUPS)
    box.slack.faults = held
    before = len(box.slack.calls_to(GROUPS))
    # Answered while any usergroups call would wait: the answer did not wait for one.
    assert UNCONFIRMED in click_answer(box, driver, approval, CAROL)
    # The refresh asked for by that click comes after the answer, and waits on the hold.
    wait_for(lambda: held.held_calls > 0, what="the refresh after the answer")
    assert len(box.slack.calls_to(GROUPS)) == before
    held.release()
    wait_for(lambda: len(box.slack.calls_to(GROUPS)) > before, what="the refresh")
    assert box.runtime is not None
    wait_for(lambda: box.runtime and box.runtime.directory.is_among(CAROL, ["S0SRE"]), what="S0SRE")

    assert "Only approvers" not in click_answer(box, driver, approval, CAROL)
    after = box.runtime.store.get(rollout.id)
    assert after is not None and after.approvals == (CAROL,)


@pytest.mark.timeout(60)
def test_a_removed_approver_loses_the_right_after_the_maximum_age(
    sandbox: tuple[Sandbox, ShiftedClock],
) -> None:
    box, clock = sandbox
    driver = start_bot(box, clock)  # S0SRE = BOB, CAROL, read at start-up
    rollout, approval = awaiting_approval(box, driver)
    # While a member, CAROL may open the reject dialog (and closes it without rejecting).
    assert driver.click(message=approval, action_id="reject", user=CAROL).status == 200
    wait_for(lambda: box.slack.views, what="the reject dialog")
    # CAROL leaves the group, and Slack cannot be asked from now on.
    box.slack.usergroups = {"S0SRE": [BOB], "S0ONCALL": [CAROL]}
    box.slack.faults = SlackFaults(error_rate=1.0, methods=frozenset({GROUPS}))
    clock.offset = timedelta(minutes=10, seconds=1)

    answer = click_answer(box, driver, approval, CAROL)
    assert "Only approvers may approve" in answer and UNCONFIRMED in answer, answer
    assert box.runtime is not None
    after = box.runtime.store.get(rollout.id)
    assert after is not None and after.phase == Phase.AWAITING_APPROVAL and after.approvals == ()

    # Once Slack answers again, the fresh membership decides: BOB may, CAROL may not.
    box.slack.faults = SlackFaults()
    box.runtime.directory.refresh_due()
    refused = click_answer(box, driver, approval, CAROL)
    assert "Only approvers may approve" in refused and UNCONFIRMED not in refused
    click_answer(box, driver, approval, BOB)
    assert (r := box.runtime.store.get(rollout.id)) is not None and r.approvals == (BOB,)
