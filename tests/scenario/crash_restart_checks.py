"""What the repeated-SIGKILL test (test_crash_restart.py) checks once the rollout succeeded:
Slack (one card, each step announced once and in order, one approval request closed with the
decision, one promotion and one outcome message), the store and its audit log, and the
replica counts the cluster went through (planned values only, in order).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from canary_sandbox.sandbox import BOB, CAROL, RELEASE_CHANNEL, Sandbox
from rollout.store import SqliteStore
from tests.reliability.support import first_blocks, has_button, steps_entered
from tests.scenario.crash_restart_support import (
    NEW_IMAGE,
    PLANNED_CANARY,
    REPLICAS,
    STEPS,
    step_numbers,
    thread,
)


def promoted_stable(sandbox: Sandbox) -> dict[str, Any] | None:
    stable = sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout")
    canary = sandbox.kube.get("apps/v1", "Deployment", "shop", "checkout-canary")
    if stable is None or canary is not None:
        return None
    image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
    ready = stable.get("status", {}).get("readyReplicas")
    return stable if image == NEW_IMAGE and ready == REPLICAS else None


def slack_problems(sandbox: Sandbox) -> Iterator[str]:
    roots = sandbox.slack.messages(RELEASE_CHANNEL)
    if len(roots) != 1:
        yield f"{len(roots)} top-level messages in the channel, want one status card"
    total = len(STEPS)
    steps = step_numbers(sandbox)
    if steps != [(n, total) for n in range(1, total + 1)]:
        yield f"step announcements (step, of) {steps}, want each of 1..{total} once, in order"
    replies = thread(sandbox)
    asked = [m for m in replies if has_button(first_blocks(m), "approve")]
    if len(asked) != 1:
        yield f"{len(asked)} approval requests, want one"
    elif has_button(asked[0].blocks, "approve") or CAROL not in asked[0].text:
        yield f"approval request not closed with the decision: {asked[0].text!r}"
    for what, text in (("promotion announcement", "Promotion started"), ("outcome", "Released")):
        found = sum(1 for m in replies if text in m.text)
        if found != 1:
            yield f"{found} {what} replies ({text!r}), want one"


def store_problems(sandbox: Sandbox) -> Iterator[str]:
    store = SqliteStore(sandbox.db_path)
    try:
        rollouts = store.history("checkout")
        audit = store.audit_rows(rollouts[0].id) if rollouts else []
    finally:
        store.close()
    if [r.phase.value for r in rollouts] != ["succeeded"]:
        yield f"stored rollouts {[(r.id, r.phase.value) for r in rollouts]}, want one succeeded"
    actions = [(row["actor"], row["action"]) for row in audit]
    for wanted in ((BOB, "start"), (CAROL, "approve"), ("canary-bot", "promoted")):
        if actions.count(wanted) != 1:
            yield f"audit has {actions.count(wanted)} rows {wanted}, want one"
    entered = steps_entered(audit)
    if entered != list(range(1, len(STEPS) + 1)):
        yield f"audit shows steps entered {entered}, want 1..{len(STEPS)} once each"
    weights = [
        int(match.group(1))
        for row in audit
        if row["action"] == "cluster change"
        and (match := re.match(r"(?:set canary|re-applied) weight (\d+)%", row["detail"] or ""))
    ]
    if weights != sorted(weights) or not set(weights) <= set(STEPS):
        yield f"audited weight changes {weights}, want only planned weights, never going back"


def cluster_problems(samples: list[tuple[int | None, int | None]]) -> Iterator[str]:
    canary = _collapsed([c for c, _ in samples])
    # Absent, created at zero replicas (a step may follow before a sample sees the zero), one
    # count per step, absent again once promoted.
    if canary not in ([None, 0, *PLANNED_CANARY, None], [None, *PLANNED_CANARY, None]):
        yield f"canary replicas over time {canary}, want {[None, 0, *PLANNED_CANARY, None]}"
    # The canary grows before stable shrinks, so stable follows it, and is back to full size
    # (with the new image) only at promotion.
    stable = _collapsed([s for _, s in samples])
    planned = [REPLICAS, *(REPLICAS - c for c in PLANNED_CANARY), REPLICAS]
    if stable != planned:
        yield f"stable replicas over time {stable}, want {planned}"


def _collapsed(values: list[int | None]) -> list[int | None]:
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]
