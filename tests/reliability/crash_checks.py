"""What the fifty-SIGKILL test (test_crash_safety.py) checks once every rollout has ended:
where each ended, what Slack shows (one card, each step announced once and in order, nothing
posted twice under one key), the audit log (each step entered once) and the canary replica
counts the cluster went through (planned values only, in order).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from canary_sandbox.sandbox import ALICE, BOB, CAROL, RELEASE_CHANNEL
from rollout.store import SqliteStore
from tests.reliability.crash_world import (
    PLANNED_CANARY,
    REPLICAS,
    SERVICES,
    STEP_TEXT,
    STEPS,
    CrashWorld,
    Planned,
    by_id,
)
from tests.reliability.support import (
    card_of,
    first_blocks,
    has_button,
    metadata_of,
    replicas,
    steps_entered,
)


def end_state_problems(world: CrashWorld, rollouts: list[Planned]) -> Iterator[str]:
    stored = by_id(world)
    if len(stored) != len(rollouts):
        yield f"{len(stored)} rollouts stored, {len(rollouts)} started"
    for planned in rollouts:
        assert planned.rollout_id is not None
        rollout = stored[planned.rollout_id]
        if rollout["phase"] != planned.expected_phase:
            yield f"{planned.rollout_id} ended {rollout['phase']}, want {planned.expected_phase}"
    for service in SERVICES:
        if replicas(world.sandbox, f"{service}-canary") is not None:
            yield f"{service}-canary still exists"
        stable = world.sandbox.kube.get("apps/v1", "Deployment", "shop", service) or {}
        if stable.get("spec", {}).get("replicas") != REPLICAS:
            yield f"{service} stable has {stable.get('spec', {}).get('replicas')} replicas"
        last = [p for p in rollouts if p.service == service and p.rollback_at is None]
        image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
        if last and not image.endswith(":" + last[-1].tag):
            yield f"{service} runs {image}, want the last approved tag {last[-1].tag}"


def slack_problems(world: CrashWorld, rollouts: list[Planned]) -> Iterator[str]:
    slack = world.sandbox.slack
    roots = slack.messages(RELEASE_CHANNEL)
    if len(roots) != len(rollouts):
        yield f"{len(roots)} top-level messages, want one status card per rollout"
    everything = list(roots) + [m for root in roots for m in slack.thread(RELEASE_CHANNEL, root.ts)]
    keys = [(metadata_of(m).get("rollout"), metadata_of(m).get("key")) for m in everything]
    repeated = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if repeated:
        yield f"posted more than once under one key: {repeated}"
    for planned in rollouts:
        assert planned.rollout_id is not None
        card = card_of(world.sandbox, planned.rollout_id)
        if card is None:
            yield f"{planned.rollout_id}: no status card"
            continue
        replies = slack.thread(RELEASE_CHANNEL, card.ts)
        steps = [
            (int(m.group(1)), int(m.group(2)))
            for m in (STEP_TEXT.search(r.text) for r in replies)
            if m
        ]
        reached = len(STEPS) if planned.rollback_at is None else len(steps)
        want = [(n, len(STEPS)) for n in range(1, reached + 1)]
        if steps != want or reached < (planned.rollback_at or 0):
            yield f"{planned.rollout_id}: steps announced {steps}, want {want}"
        once = ("Released", "Promotion started")
        if planned.rollback_at is not None:
            once = ("Rolled back after", "Rolling back")
        for text in once:
            found = sum(1 for r in replies if text in r.text)
            if found != 1:
                yield f"{planned.rollout_id}: {found} replies with {text!r}, want one"
        asked = [r for r in replies if has_button(first_blocks(r), "approve")]
        if planned.rollback_at is None and (
            len(asked) != 1 or has_button(asked[0].blocks, "approve") or CAROL not in asked[0].text
        ):
            yield f"{planned.rollout_id}: approval requests {[a.text for a in asked]}"


def audit_problems(world: CrashWorld, rollouts: list[Planned]) -> Iterator[str]:
    store = SqliteStore(world.sandbox.db_path)
    try:
        for planned in rollouts:
            assert planned.rollout_id is not None
            rows = store.audit_rows(planned.rollout_id)
            actions = [(row["actor"], row["action"]) for row in rows]
            wanted = [(BOB, "start")] + (
                [(CAROL, "approve"), ("canary-bot", "promoted")]
                if planned.rollback_at is None
                else [(ALICE, "rollback"), ("canary-bot", "rolled back")]
            )
            for want in wanted:
                if actions.count(want) != 1:
                    yield f"{planned.rollout_id}: {actions.count(want)} audit rows {want}"
            entered = steps_entered(rows)
            if entered != list(range(1, len(entered) + 1)):
                yield f"{planned.rollout_id}: steps entered {entered}, want each once, in order"
    finally:
        store.close()


def cluster_problems(world: CrashWorld) -> Iterator[str]:
    def tampered(service: str, at: float) -> bool:
        return any(s == service and start <= at <= end for s, start, end in world.tamper_windows)

    for service, history in world.sampler.samples.items():
        kept = [(c, s) for at, c, s in history if not tampered(service, at)]
        low = [(c, s) for c, s in kept if c is not None and s is not None and c + s < REPLICAS]
        if low:
            yield f"{service}: capacity below {REPLICAS} replicas at {low[:5]}"
        canary = [c for i, (c, _) in enumerate(kept) if i == 0 or kept[i - 1][0] != c]
        # One segment per rollout (the canary exists), each [0?, planned prefix..., 0?].
        segment: list[int] = []
        for value in [*canary, None]:
            if value is not None:
                segment.append(value)
                continue
            inner = segment[1:] if segment[:1] == [0] else segment
            inner = inner[:-1] if inner[-1:] == [0] else inner
            # Planned values only, in order, never back. A value may go unseen when a hand-scale
            # window (excluded above) covers its whole step; that no step is skipped is checked
            # on the audit log and the thread.
            positions = [PLANNED_CANARY.index(v) if v in PLANNED_CANARY else -1 for v in inner]
            ordered = all(a < b for a, b in itertools.pairwise(positions))
            if segment and (-1 in positions or not ordered):
                yield f"{service}: canary replicas {segment} in one rollout, want {PLANNED_CANARY}"
            segment = []
