"""The rollout state machine: pure functions from (rollout, what happened, now) to a decision.

Nothing here reads a clock, the cluster, Slack or the database. `advance` handles one analysis
tick; `apply_command` handles a person's command or click; `after` takes what carrying out the
cluster actions led to (`Outcome`s), and `resolved`, `start_refused`, `canary_created` and
`prepare_failed` what the start's cluster reads and writes found. Each returns a `Decision`: the
new rollout record and the actions the engine must carry out, in order. Every phase change is
decided here; the engine only carries out and reports back. A decision that moves traffic
lists its cluster action first: its messages follow it (DESIGN.md "Rollback"). Strategy
differences live in the routers, never here.
"""

from rollout.machine.commands import apply_command
from rollout.machine.gates import GATE_PHASES, gate_finished, gate_started, job_key, next_preflight
from rollout.machine.outcomes import after, canary_created, prepare_failed, resolved, start_refused
from rollout.machine.ticks import advance
from rollout.machine.types import (
    MAX_ROLLBACK_ATTEMPTS,
    WATCHED_PHASES,
    Action,
    Announce,
    CloseApproval,
    ClusterAction,
    Decision,
    Observation,
    Outcome,
    Page,
    PromoteStable,
    Refusal,
    RequestApproval,
    RollBackCanary,
    SetWeight,
)

__all__ = [
    "GATE_PHASES",
    "MAX_ROLLBACK_ATTEMPTS",
    "WATCHED_PHASES",
    "Action",
    "Announce",
    "CloseApproval",
    "ClusterAction",
    "Decision",
    "Observation",
    "Outcome",
    "Page",
    "PromoteStable",
    "Refusal",
    "RequestApproval",
    "RollBackCanary",
    "SetWeight",
    "advance",
    "after",
    "apply_command",
    "canary_created",
    "gate_finished",
    "gate_started",
    "job_key",
    "next_preflight",
    "prepare_failed",
    "resolved",
    "start_refused",
]
