"""What a person can ask of a running rollout, as records the state machine understands.

Each carries who asked (`by`, a Slack user ID) so the audit log and the thread can say it.
Authorisation (channel, deployers, approvers) is decided before a command gets here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Pause:
    by: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Resume:
    by: str


@dataclass(frozen=True, kw_only=True)
class Promote:
    """Skip the remaining steps and go to the approval gate."""

    by: str


@dataclass(frozen=True, kw_only=True)
class Rollback:
    by: str
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Approve:
    by: str


@dataclass(frozen=True, kw_only=True)
class Reject:
    by: str
    reason: str | None = None


Command = Pause | Resume | Promote | Rollback | Approve | Reject
