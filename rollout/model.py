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
    # Gates run before the canary exists, in order (`pin_digest` first when pinning), and
    # the steps (from 1) before whose traffic a job gate runs; fixed at start (rollout/gates/).
    preflight: tuple[str, ...] = ()
    gate_steps: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """What one gate found: `key` names it in the plan (`pin_digest`, `preflight:1`,
    `job:2`), `name` is what the thread shows, `detail` the reason or the last log lines."""

    key: str
    name: str
    passed: bool
    detail: str = ""


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
    # The digest the pipeline says it built (API `expected_digest`): the resolved one must match.
    expected_digest: str | None = None
    # The gate running now (a key of plan.preflight or `job:<step>`) and since when; a
    # restarted bot runs it again (a job gate adopts its Job). Results in order, kept.
    gate: str | None = None
    gate_started_at: datetime | None = None
    gate_results: tuple[GateResult, ...] = ()
    # Free-form facts a router needs to restore what it changed (e.g. original annotations).
    router_state: dict[str, Any] = field(default_factory=dict)
    # The store's row version this record was read at (optimistic concurrency: a save from an
    # older version is refused, see rollout/stores/sql.py); not part of what a rollout *is*,
    # so two records that differ only here are equal.
    version: int = field(default=0, compare=False)
    # Set when the rollout was started through the pipeline API: the token's name (`name`)
    # and what the pipeline said of itself (`commit`, `pipeline_url`, `triggered_by`).
    pipeline: dict[str, str] = field(default_factory=dict)
    # The rule breach that ended (or paused) the rollout, as measured: what a pipeline prints.
    breach: str | None = None

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

    def gate_passed(self, key: str) -> bool:
        return any(result.key == key and result.passed for result in self.gate_results)

    @property
    def approved(self) -> bool:
        return len(self.approvals) >= self.plan.approvals_required

    @property
    def next_step_at(self) -> datetime | None:
        """When the current step may advance (if healthy); None while not counting down."""
        if self.phase != Phase.PROGRESSING or not self.step_ready or self.step_started_at is None:
            return None
        return self.step_started_at + self.plan.step_interval + self.step_held

    @property
    def held_for_data(self) -> bool:
        """The step is held because metrics are missing (`on_no_data: hold`): its next-step
        time is later by the time held, known once they are back, so it is not shown meanwhile."""
        return (
            self.next_step_at is not None
            and self.no_data_since is not None
            and self.plan.on_no_data == "hold"
        )

    def evolve(self, *, now: datetime, **changes: Any) -> Rollout:
        return replace(self, updated_at=now, **changes)
