"""A person's command or click."""

from __future__ import annotations

from datetime import datetime, timedelta

from rollout.commands import Approve, Command, Pause, Promote, Reject, Resume, Rollback
from rollout.events import (
    ApprovalRecorded,
    Paused,
    PromotionStarted,
    Resumed,
    RollbackStarted,
)
from rollout.machine.ticks import finish_steps, start_rollback
from rollout.machine.types import (
    Announce,
    CloseApproval,
    Decision,
    PromoteStable,
    Refusal,
    RollBackCanary,
)
from rollout.model import Phase, Rollout
from rollout.wording import person, quote

# --------------------------------------------------------------------------- commands


def apply_command(rollout: Rollout, command: Command, *, now: datetime) -> Decision | Refusal:
    """A person's command or click. Authorisation is checked by the caller beforehand."""
    if rollout.phase.is_terminal:
        return Refusal(
            f"The {rollout.service} rollout has already ended ({rollout.phase.value}); "
            "nothing was changed."
        )
    if rollout.phase == Phase.FAILED:
        return _act_on_failed(rollout, command, now=now)
    match command:
        case Pause(by=by, reason=reason):
            return _pause(rollout, by=by, reason=reason, now=now)
        case Resume(by=by):
            return _resume(rollout, by=by, now=now)
        case Promote(by=by):
            return _skip_to_gate(rollout, by=by, now=now)
        case Rollback(by=by, reason=reason):
            # During promotion too: the rollback puts stable's image and replicas back.
            if rollout.phase == Phase.ROLLING_BACK:
                return Refusal(
                    f"The {rollout.service} rollout is {rollout.phase.value.replace('_', ' ')}; "
                    "it cannot be rolled back now."
                )
            why = f"rolled back by {person(by)}" + (f": {quote(reason)}" if reason else "")
            return start_rollback(rollout, reason=why, by=by, now=now)
        case Approve(by=by):
            return _approve(rollout, by=by, now=now)
        case Reject(by=by, reason=reason):
            if rollout.phase != Phase.AWAITING_APPROVAL:
                return _moved_on(rollout)
            why = f"rejected by {person(by)}" + (f": {quote(reason)}" if reason else "")
            decided = rollout.evolve(now=now, rejected_by=by, decided_at=now)
            return start_rollback(decided, reason=why, by=by, now=now)
    raise AssertionError(f"unhandled command {command!r}")


def _act_on_failed(rollout: Rollout, command: Command, *, now: datetime) -> Decision | Refusal:
    """After a failed rollback a person may retry it, or acknowledge the pages."""
    match command:
        case Rollback(by=by):
            retry = rollout.evolve(now=now, phase=Phase.ROLLING_BACK, failures=0)
            event = RollbackStarted(by=by, reason=f"retried by <@{by}>: {rollout.reason}")
            return Decision(retry, (RollBackCanary(), Announce(event)))
        case Pause(by=by):
            if rollout.acknowledged_by is not None:
                return Refusal(f"<@{rollout.acknowledged_by}> already acknowledged this failure.")
            acknowledged = rollout.evolve(now=now, acknowledged_by=by)
            return Decision(
                acknowledged,
                (Announce(Paused(by=by, reason="acknowledged the failed rollback")),),
            )
    return Refusal(
        f"The rollback of {rollout.service} failed. Fix the cluster, then `/canary rollback "
        f"{rollout.service}` to retry it, or `/canary pause {rollout.service}` to acknowledge "
        "and stop the pages. Nothing was changed."
    )


def _pause(rollout: Rollout, *, by: str, reason: str | None, now: datetime) -> Decision | Refusal:
    if rollout.phase == Phase.PAUSED:
        return Refusal(
            f"The {rollout.service} rollout is already paused. Resume it with "
            f"`/canary resume {rollout.service}`."
        )
    if rollout.phase not in (Phase.PENDING, Phase.PROGRESSING):
        return Refusal(
            f"The {rollout.service} rollout is {rollout.phase.value.replace('_', ' ')}; only a "
            "progressing rollout can be paused."
        )
    # What a person typed is quoted into the reason's markup (rollout/wording.py).
    said = quote(reason) if reason else None
    paused = rollout.evolve(now=now, phase=Phase.PAUSED, paused_from=rollout.phase, reason=said)
    return Decision(paused, (Announce(Paused(by=by, reason=said)),))


def _resume(rollout: Rollout, *, by: str, now: datetime) -> Decision | Refusal:
    if rollout.phase != Phase.PAUSED:
        return Refusal(f"The {rollout.service} rollout is not paused; nothing to resume.")
    back_to = rollout.paused_from or Phase.PROGRESSING
    # The step's clock starts again: a step counts only time watched while running.
    resumed = rollout.evolve(
        now=now,
        phase=back_to,
        paused_from=None,
        reason=None,
        step_started_at=now if rollout.step_ready else rollout.step_started_at,
        step_applied_at=now if not rollout.step_ready else rollout.step_applied_at,
        step_held=timedelta(0),
        # A hold for missing data that goes on counts from now, like the step.
        no_data_seen_at=now if rollout.no_data_seen_at is not None else None,
    )
    return Decision(resumed, (Announce(Resumed(by=by)),))


def _skip_to_gate(rollout: Rollout, *, by: str, now: datetime) -> Decision | Refusal:
    if rollout.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return Refusal(
            f"The {rollout.service} rollout is {rollout.phase.value.replace('_', ' ')}; "
            "`promote` skips the remaining steps of a progressing or paused rollout."
        )
    return finish_steps(rollout.evolve(now=now, paused_from=None), by=by, now=now)


def _approve(rollout: Rollout, *, by: str, now: datetime) -> Decision | Refusal:
    if rollout.phase != Phase.AWAITING_APPROVAL:
        return _moved_on(rollout)
    if by in rollout.approvals:
        return Refusal("You have already approved this rollout; it needs another approver.")
    # The starter may add an approval, but never be the only one behind a promotion.
    alone = not rollout.approvals and rollout.plan.approvals_required == 1
    if by == rollout.started_by and not rollout.plan.self_approval and alone:
        return Refusal(
            "You started this rollout, so you cannot approve it alone: ask another approver."
        )
    approvals = (*rollout.approvals, by)
    if len(approvals) < rollout.plan.approvals_required:
        recorded = rollout.evolve(now=now, approvals=approvals)
        event = ApprovalRecorded(by=by, have=len(approvals), need=rollout.plan.approvals_required)
        return Decision(recorded, (Announce(event),))
    promoting = rollout.evolve(
        now=now, approvals=approvals, decided_at=now, phase=Phase.PROMOTING, promoting_since=now
    )
    return Decision(
        promoting, (PromoteStable(), CloseApproval(), Announce(PromotionStarted(by=by)))
    )


def _moved_on(rollout: Rollout) -> Refusal:
    return Refusal(
        f"This approval is no longer open: the {rollout.service} rollout is "
        f"{rollout.phase.value.replace('_', ' ')}. Nothing was changed."
    )
