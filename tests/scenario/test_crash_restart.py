"""The bot killed with SIGKILL mid-rollout, again and again, still finishes the rollout once.

DESIGN.md promises that a restarted bot carries every active rollout on "with no step skipped
or repeated". This test runs `canary-bot serve` as a real process against the sandbox's
emulators and kills it (no clean shutdown, nothing flushed) at seeded random moments while the
steps run, and at three moments arranged on purpose, each restart on the same port and database:

- the status card is in Slack but the bot has not yet recorded that it posted it;
- the rollout awaits approval but the approval request is not in Slack yet;
- an approval is stored but not yet carried out (mid-promotion).

To hold the bot still at those points, the Slack emulator answers the call with rate limits,
which slack_sdk's retry handler waits out, and for the first one the test also holds SQLite's
write lock so the bot cannot record the post it just made; the process is killed meanwhile.

Then the rollout must finish: one status card, each step announced once and in order, one
approval request, one promotion and one outcome message, the cluster only ever at the planned
replica counts, and the audit log showing the start, every step and the promotion (those
checks are in crash_restart_checks.py, the world in crash_restart_support.py).
"""

from __future__ import annotations

import random
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, Sandbox, stable_deployment
from tests.reliability.support import BotProcess, logged_errors, wait_for
from tests.scenario.crash_restart_checks import (
    cluster_problems,
    promoted_stable,
    slack_problems,
    store_problems,
)
from tests.scenario.crash_restart_support import (
    REPLICAS,
    STEPS,
    ReplicaSampler,
    World,
    hold_slack,
    open_approval,
    outbox_state,
    phase_is,
    rate_limited_calls,
    step_numbers,
    store_writes_blocked,
    stored,
)

SEED = 20240611
CONFIG = textwrap.dedent(
    f"""\
    slack:
      release_channels: [{RELEASE_CHANNEL}]
      oncall: S0ONCALL
      deployers: [{BOB}, {CAROL}]
      approvers: [S0SRE]
      # The emulator enforces no rate limits here: the `serve` process need not pace its
      # messages like a production bot (the Slack budget is tested in test_slack_budget.py).
      rate_limits: {{chat_update_per_minute: 10000, post_message_per_channel_per_second: 100}}
    cluster_name: sandbox
    defaults:
      steps: [{", ".join(map(str, STEPS))}]
      step_interval: 1s
      analysis_interval: 1s
      progress_deadline: 30s
      rules: []
    services:
      checkout:
        namespace: shop
        deployment: checkout
        container: app
        strategy: replicas
        environment: production
    """
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sandbox = Sandbox(workdir=tmp_path / "sandbox", config_text=CONFIG, seed=False)
    sampler = ReplicaSampler(sandbox)
    sandbox.start()
    # Its fork server takes the sandbox's environment (the emulators' URLs) when it starts.
    bot = BotProcess(sandbox, log_path=tmp_path / "canary-bot.log")
    try:
        sandbox.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        sandbox.kube.seed(stable_deployment(replicas=REPLICAS))
        sampler.start()
        bot.start()
        yield World(sandbox=sandbox, bot=bot, sampler=sampler)
    finally:
        bot.close()
        sampler.stop()
        sandbox.stop()


@pytest.mark.timeout(180)
def test_rollout_survives_repeated_sigkill_without_skipping_or_repeating_a_step(
    world: World,
) -> None:
    sandbox, rng = world.sandbox, random.Random(SEED)

    # 1. The card is in Slack but the bot has not yet written down that it posted it: Slack's
    # answer to the card's post is held back, and the test takes SQLite's write lock as soon
    # as the card is in the channel, so the bot cannot record it; it dies there.
    sandbox.slack.faults.methods = frozenset({"chat.postMessage"})
    sandbox.slack.faults.latency = 2.0
    reply = world.driver.command("start checkout v2.3.5", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    wait_for(lambda: outbox_state(sandbox, "card") == "sending", what="the card's post")
    with store_writes_blocked(sandbox):
        wait_for(lambda: sandbox.slack.messages(RELEASE_CHANNEL), what="the card")
        world.kill_and_restart("card posted, not yet recorded", restart=False)
    sandbox.slack.faults.latency = 0.0
    world.bot.start()

    # 2. At seeded random moments while the steps run (never past the next-to-last step, so
    # that the arranged kill at the approval gate below still has its moment).
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 3.0))
        rollout = stored(sandbox)
        assert rollout is not None
        if rollout["phase"] == "progressing" and rollout["step_index"] < len(STEPS) - 2:
            world.kill_and_restart(f"at random, step {rollout['step_index'] + 1}")

    # 3. Awaiting approval, before the request is in Slack: once the last step is announced
    # the next message is the approval request; hold it in rate limits and kill meanwhile.
    wait_for(
        lambda: (len(STEPS), len(STEPS)) in step_numbers(sandbox),
        what="the last step's announcement",
        timeout=60,
    )
    limited = hold_slack(sandbox, "chat.postMessage")
    wait_for(lambda: phase_is(sandbox, "awaiting_approval"), what="awaiting_approval")
    wait_for(
        lambda: rate_limited_calls(sandbox, "chat.postMessage") > limited,
        what="the approval request being held",
    )
    world.kill_and_restart("awaiting approval, request being posted")

    # 4. Mid-promotion: Approve is stored, then closing the request is held; kill meanwhile.
    approval = wait_for(lambda: open_approval(sandbox), what="the approval request")
    limited = hold_slack(sandbox, "chat.update")
    clicked = world.driver.click(message=approval, action_id="approve", user=CAROL)
    assert clicked.status == 200, clicked.body
    wait_for(lambda: phase_is(sandbox, "promoting", "succeeded"), what="the approval stored")
    wait_for(
        lambda: rate_limited_calls(sandbox, "chat.update") > limited,
        what="the approval decision being held",
    )
    world.kill_and_restart("mid-promotion, approval just stored")

    # 5. It finishes on its own.
    wait_for(lambda: phase_is(sandbox, "succeeded"), what="the rollout to succeed", timeout=60)
    stable = wait_for(lambda: promoted_stable(sandbox), what="the promoted stable Deployment")
    world.bot.stop()
    world.sampler.stop()
    assert stable["spec"]["replicas"] == REPLICAS
    assert len(world.kills) >= 4, world.kills

    # Every check runs, so one failure report shows everything a restart got wrong.
    problems = [
        *slack_problems(sandbox),
        *store_problems(sandbox),
        *cluster_problems(world.sampler.samples),
        *(f"bot log: {line}" for line in logged_errors(world.bot.log_text())),
    ]
    kills = "\n".join(f"  {kill}" for kill in world.kills)
    assert not problems, (
        "\n".join(problems)
        + f"\nkilled:\n{kills}\nchannel:\n{sandbox.slack.transcript(RELEASE_CHANNEL)}"
    )
