"""What the engine tells the team: one frozen record per thing worth a message.

The engine emits these; a `Notifier` (Slack in production, see bot/) decides how they look.
Keeping them as data lets tests assert on what was said without parsing Block Kit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, kw_only=True)
class StepReached:
    """The canary pods are ready at a new weight (`step` counts from 1)."""

    step: int
    steps: int
    weight: float


@dataclass(frozen=True, kw_only=True)
class Paused:
    by: str
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class Resumed:
    by: str


@dataclass(frozen=True, kw_only=True)
class ApprovalRecorded:
    """One approver approved, but more distinct approvals are still needed."""

    by: str
    have: int
    need: int


@dataclass(frozen=True, kw_only=True)
class PromotionStarted:
    by: str | None


@dataclass(frozen=True, kw_only=True)
class Finished:
    """The rollout reached a terminal phase; `reason` says why for rollbacks and failures."""

    phase: str
    reason: str | None
    duration: timedelta


@dataclass(frozen=True, kw_only=True)
class RollbackStarted:
    by: str | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class Alert:
    """A page for on-call, posted top-level in the alert channel and linked to the thread."""

    title: str
    detail: str
    traffic_on_stable: bool
    at: datetime


@dataclass(frozen=True, kw_only=True)
class GateChecked:
    """A gate's result (rollout/gates/): shown in the thread, passed or failed with why."""

    name: str
    passed: bool
    detail: str


Event = (
    StepReached
    | Paused
    | Resumed
    | ApprovalRecorded
    | PromotionStarted
    | RollbackStarted
    | Finished
    | GateChecked
)
