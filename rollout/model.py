"""The rollout record: everything the bot must remember about one release, as a frozen value.

The state machine returns a new `Rollout` for every change, the store persists it whole, and a
restarted bot needs nothing else to carry the release on. Derived facts (the current target
weight, whether approval is complete) are properties, never stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PENDING = "pending"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def is_active(self) -> bool:
        return self not in TERMINAL_PHASES

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES


# `failed` is not terminal: a rollback that could not finish leaves the cluster half-split, so
# the bot keeps retrying it, keeps paging on-call, and refuses new starts until someone acts.
TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK})


@dataclass(frozen=True, kw_only=True)
class RolloutPlan:
    """What was asked for at start, fixed for the rollout's life (config edits don't move it)."""

    steps: tuple[int, ...]
    step_interval: timedelta
    analysis_interval: timedelta
    approval: bool
    approvals_required: int
    self_approval: bool
    progress_deadline: timedelta
    approval_timeout: timedelta
    on_failure: str = "rollback"
    on_no_data: str = "hold"
    no_data_alert_after: timedelta = timedelta(minutes=5)
    repage_interval: timedelta = timedelta(minutes=15)
    # Stable not rolled out this long after promotion started: page on-call (DESIGN.md
    # "Promotion"); the policy's default is the service's progress_deadline.
    promotion_deadline: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, kw_only=True)
class TrafficTarget:
    """The objects a router works on, copied from the service's config at start."""

    service: str | None = None
    ingress: str | None = None
    virtual_service: str | None = None
    destination_rule: str | None = None
    http_route: str | None = None
    route: str | None = None  # the route to split where several reach the Service
    argo_rollout: str | None = None


@dataclass(frozen=True, kw_only=True)
class Rollout:
    id: str
    service: str
    namespace: str
    deployment: str
    container: str
    strategy: str
    stable_image: str
    canary_image: str
    plan: RolloutPlan
    channel: str
    target: TrafficTarget = field(default_factory=TrafficTarget)
    started_by: str
    created_at: datetime
    updated_at: datetime
    phase: Phase = Phase.PENDING
    # Index into plan.steps of the weight currently asked of the cluster; -1 before the first.
    step_index: int = -1
    # True once the cluster has the current step's weight and the canary pods are ready.
    step_ready: bool = False
    # When the current step's weight was sent to the cluster (the progress deadline counts
    # from here) and when it became ready (the step interval counts from here).
    step_applied_at: datetime | None = None
    step_started_at: datetime | None = None
    # Canary share of traffic actually in effect, as read back from the cluster (percent).
    weight: float = 0.0
    # Stable replica count when the rollout started (strategy `replicas`); restored on rollback.
    original_replicas: int | None = None
    paused_from: Phase | None = None
    approvals: tuple[str, ...] = ()
    rejected_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    finished_at: datetime | None = None
    thread_ts: str | None = None
    approval_ts: str | None = None
    # Missing metrics hold a step and lengthen it by the time held (DESIGN.md "Steps").
    step_held: timedelta = timedelta(0)
    no_data_seen_at: datetime | None = None
    no_data_since: datetime | None = None
    no_data_alerted: bool = False
    # When the approval was requested (the approval timeout counts from here).
    approval_requested_at: datetime | None = None
    approval_reminded: bool = False
    # The latest analysis verdict (healthy / breached / no_data), shown on the status card.
    verdict: str | None = None
    # Paging while a rollback is failing: when last paged, and who acknowledged the pages.
    paged_at: datetime | None = None
    acknowledged_by: str | None = None
    # Consecutive failed attempts at the current cluster action (promotion or rollback).
    failures: int = 0
    # When promotion started (the promotion deadline counts from here), and what on-call was
    # already paged about during it ("breach", "deadline"): each is paged once.
    promoting_since: datetime | None = None
    promotion_paged: tuple[str, ...] = ()
    # Free-form facts a router needs to restore what it changed (e.g. original annotations).
    router_state: dict[str, Any] = field(default_factory=dict)
    # The store's row version this record was read at (optimistic concurrency: a save from an
    # older version is refused, see rollout/stores/sql.py); not part of what a rollout *is*,
    # so two records that differ only here are equal.
    version: int = field(default=0, compare=False)

    @property
    def target_weight(self) -> int:
        """The weight the current step asks for (0 before the first step)."""
        if self.phase in (Phase.PROMOTING, Phase.SUCCEEDED):
            return 100
        if self.step_index < 0:
            return 0
        return self.plan.steps[self.step_index]

    @property
    def is_last_step(self) -> bool:
        return self.step_index == len(self.plan.steps) - 1

    @property
    def approved(self) -> bool:
        return len(self.approvals) >= self.plan.approvals_required

    @property
    def next_step_at(self) -> datetime | None:
        """When the current step may advance (if healthy); None while not counting down."""
        if self.phase != Phase.PROGRESSING or not self.step_ready or self.step_started_at is None:
            return None
        return self.step_started_at + self.plan.step_interval + self.step_held

    def evolve(self, *, now: datetime, **changes: Any) -> Rollout:
        return replace(self, updated_at=now, **changes)
