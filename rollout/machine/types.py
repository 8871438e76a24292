"""What the state machine reads and returns: observations, actions, decisions."""

from __future__ import annotations

from dataclasses import dataclass, field

from rollout.analysis.types import Verdict
from rollout.events import (
    Alert,
    Event,
)
from rollout.model import Phase, Rollout
from rollout.traffic.base import TrafficStatus

WATCHED_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.AWAITING_APPROVAL})
# Phases whose workloads are checked for hand edits (a paused rollout was already paged about).
DRIFT_PHASES = frozenset({Phase.PROGRESSING, Phase.AWAITING_APPROVAL, Phase.PROMOTING})
# A rollback that keeps failing this many ticks in a row is declared failed and pages on-call.
MAX_ROLLBACK_ATTEMPTS = 5


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What one tick saw: the cluster's traffic state and the analysis verdict."""

    traffic: TrafficStatus | None
    verdict: Verdict = Verdict.HEALTHY
    breach: str | None = None
    # A rule is beyond its threshold but not yet for its whole `for`: not a breach, but not a
    # healthy step either, so nothing advances on it.
    pending: bool = False
    # A hand edit of the canary or stable workload, said for on-call (DESIGN.md "Drift").
    drift: str | None = None


# Actions the engine carries out, in the order given.
@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class Announce:
    event: Event


@dataclass(frozen=True)
class RequestApproval:
    pass


@dataclass(frozen=True)
class CloseApproval:
    pass


@dataclass(frozen=True)
class PromoteStable:
    pass


@dataclass(frozen=True)
class RollBackCanary:
    pass


@dataclass(frozen=True)
class Page:
    alert: Alert


Action = (
    SetWeight | Announce | RequestApproval | CloseApproval | PromoteStable | RollBackCanary | Page
)
ClusterAction = SetWeight | PromoteStable | RollBackCanary


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What carrying out a cluster action led to: an error, or (promotion) whether it is done."""

    action: ClusterAction
    error: str | None = None
    done: bool = True


@dataclass(frozen=True)
class Decision:
    rollout: Rollout
    actions: tuple[Action, ...] = field(default=())


@dataclass(frozen=True)
class Refusal:
    """A command that cannot be carried out now; `message` says why and what to do instead."""

    message: str
