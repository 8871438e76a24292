"""Fifty SIGKILLs across several rollouts: none lost, no step skipped or repeated, nothing twice.

`canary-bot serve` runs as its own process against the sandbox's emulators and is killed with
SIGKILL at seeded random moments while three rollouts (one per service) run side by side, wave
after wave, and restarted each time on the same port and database. The test acts like the team:
it starts each wave, approves, and rolls some rollouts back with `/canary rollback`; a kill may
land right after any of those was acknowledged. On some restarts someone has also scaled a
canary by hand while the bot was down.

At every restart the cluster must already hold the stored weight when the bot reports ready
(`/readyz`, once it has reconciled), whenever the stored state did not move in between.
At the end every rollout ends where it should, with one status card, each step announced once
and in order, no message posted twice under one key, the audit log entering each step once, and
the cluster's canary replica counts only ever at planned values, in order.

The world (the bot, the sampler, the checks at each restart) is in crash_world.py, the checks at
the end in crash_checks.py; two moments random kills rarely hit are arranged on purpose in
test_kill_at_arranged_moments.py.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary_sandbox.sandbox import ALICE, BOB, CAROL, RELEASE_CHANNEL, Sandbox, stable_deployment
from tests.reliability.crash_checks import (
    audit_problems,
    cluster_problems,
    end_state_problems,
    slack_problems,
)
from tests.reliability.crash_world import (
    ENDED,
    RECONCILED_PHASES,
    REPLICAS,
    SERVICES,
    STEPS,
    ClusterSampler,
    CrashWorld,
    Planned,
    by_id,
)
from tests.reliability.support import (
    BotProcess,
    logged_errors,
    open_approval,
    sandbox_config,
    stored_rollouts,
    unsent_messages,
    wait_for,
)

SEED = 20240611
KILLS = 50


@pytest.fixture
def world(tmp_path: Path) -> Iterator[CrashWorld]:
    config = sandbox_config(services=SERVICES, steps=STEPS)
    sandbox = Sandbox(workdir=tmp_path / "sandbox", config_text=config, seed=False)
    sampler = ClusterSampler(sandbox)
    sandbox.start()
    bot = BotProcess(sandbox, log_path=tmp_path / "canary-bot.log")
    try:
        sandbox.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        for service in SERVICES:
            sandbox.kube.seed(stable_deployment(name=service, replicas=REPLICAS))
        sampler.start()
        bot.start()
        yield CrashWorld(sandbox=sandbox, bot=bot, sampler=sampler, rng=random.Random(SEED))
    finally:
        bot.close()
        sampler.stop()
        sandbox.stop()


def plan_wave(wave: int) -> list[Planned]:
    """Each wave rolls one service back (a different one, at a different step) and approves
    the others."""
    victim = SERVICES[wave % len(SERVICES)]
    return [
        Planned(
            service=service,
            tag=f"v3.{wave}.0",
            rollback_at=(wave % (len(STEPS) - 1)) + 1 if service == victim else None,
        )
        for service in SERVICES
    ]


def start_wave(world: CrashWorld, wave: list[Planned]) -> None:
    for planned in wave:
        reply = world.driver.command(
            f"start {planned.service} {planned.tag}", user=BOB, channel=RELEASE_CHANNEL
        )
        assert reply.status == 200, reply.body
        assert "Starting" in str(reply.json), reply.body
        # An acknowledged start is a stored start: a kill right after the answer loses nothing.
        found = [
            r
            for r in stored_rollouts(world.sandbox.db_path)
            if r["service"] == planned.service and r["phase"] not in ENDED
        ]
        assert len(found) == 1, f"{planned.service}: {found}"
        planned.rollout_id = found[0]["id"]


def act(world: CrashWorld, planned: Planned, rollout: dict[str, Any]) -> None:
    """What a person in the channel would do now, if anything."""
    if planned.acted or rollout["phase"] not in RECONCILED_PHASES:
        return
    if planned.rollback_at is not None:
        reached = rollout["step_index"] + (1 if rollout["step_ready"] else 0)
        if reached >= planned.rollback_at:
            reply = world.driver.command(
                f"rollback {planned.service} crash test", user=ALICE, channel=RELEASE_CHANNEL
            )
            assert reply.status == 200 and not reply.body, reply.body
            planned.acted = True
        return
    approval = open_approval(world.sandbox, rollout["thread_ts"])
    if rollout["phase"] == "awaiting_approval" and approval is not None:
        clicked = world.driver.click(message=approval, action_id="approve", user=CAROL)
        assert clicked.status == 200, clicked.body
        planned.acted = True


@pytest.mark.timeout(200)
def test_fifty_sigkills_lose_nothing_and_repeat_nothing(world: CrashWorld) -> None:
    rollouts: list[Planned] = []
    waves = 0
    deadline = time.monotonic() + 170
    next_kill = time.monotonic() + world.rng.uniform(0.2, 1.6)
    while True:
        assert time.monotonic() < deadline, f"not done after {len(world.kills)} kills"
        current = by_id(world)
        finished = all(
            p.rollout_id in current and current[p.rollout_id]["phase"] in ENDED for p in rollouts
        )
        if finished and len(world.kills) >= KILLS:
            break
        if finished:
            wave = plan_wave(waves)
            waves += 1
            start_wave(world, wave)
            rollouts += wave
            continue
        for planned in rollouts:
            if planned.rollout_id in current:
                act(world, planned, current[planned.rollout_id])
        if len(world.kills) < KILLS and time.monotonic() >= next_kill:
            states = ", ".join(
                f"{r['service']}:{r['phase']}/{r['step_index'] + 1}{'r' if r['step_ready'] else ''}"
                for r in by_id(world).values()
                if r["phase"] not in ENDED
            )
            world.kill_and_restart(f"#{len(world.kills) + 1} [{states}]")
            next_kill = time.monotonic() + world.rng.uniform(0.2, 1.6)
        time.sleep(0.02)

    # Let the last outcome messages go out, then stop for good.
    wait_for(
        lambda: unsent_messages(world.sandbox.db_path) == 0,
        what="the outbox to drain",
    )
    world.bot.stop()
    world.sampler.stop()

    problems = [
        *world.problems,
        *end_state_problems(world, rollouts),
        *slack_problems(world, rollouts),
        *audit_problems(world, rollouts),
        *cluster_problems(world),
        *(f"bot log: {line}" for line in logged_errors(world.bot.log_text())),
    ]
    summary = (
        f"{len(world.kills)} kills, {waves} waves ({len(rollouts)} rollouts), "
        f"{world.reconcile_checks} reconcile checks ({world.reconcile_skipped} skipped), "
        f"{world.tampered} hand-scaled canaries"
    )
    print(summary)
    kills = "\n".join(f"  {kill}" for kill in world.kills)
    assert not problems, "\n".join(problems) + f"\n{summary}\nkills:\n{kills}"
    assert world.reconcile_checks >= KILLS // 2, summary
    assert world.tampered >= 3, summary
