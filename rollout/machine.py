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

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rollout.analysis.types import Verdict
from rollout.commands import Approve, Command, Pause, Promote, Reject, Resume, Rollback
from rollout.events import (
    Alert,
    ApprovalRecorded,
    Event,
    Finished,
    Paused,
    PromotionStarted,
    Resumed,
    RollbackStarted,
    StepReached,
)
from rollout.model import Phase, Rollout
from rollout.traffic.base import TrafficStatus

WATCHED_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.AWAITING_APPROVAL})
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


# --------------------------------------------------------------------------- ticks


def advance(rollout: Rollout, observation: Observation, *, now: datetime) -> Decision:
    """One analysis tick. Breaches are checked first, in every watched phase."""
    if rollout.phase in WATCHED_PHASES and observation.verdict == Verdict.BREACHED:
        return _on_breach(rollout, observation.breach or "a rollback rule was breached", now=now)
    rollout = _account_no_data(rollout, observation, now=now)
    if rollout.phase == Phase.PENDING:
        return _enter_step(rollout, 0, now=now)
    if rollout.phase == Phase.PROGRESSING:
        decision = _progress(rollout, observation, now=now)
    elif rollout.phase == Phase.AWAITING_APPROVAL:
        decision = _await_approval(rollout, now=now)
    elif rollout.phase == Phase.PROMOTING:
        return Decision(rollout, (PromoteStable(),))
    elif rollout.phase == Phase.ROLLING_BACK:
        return Decision(rollout, (RollBackCanary(),))
    elif rollout.phase == Phase.FAILED:
        return _keep_failing_loudly(rollout, now=now)
    else:
        decision = Decision(rollout)
    if decision.rollout.phase not in WATCHED_PHASES:
        return decision
    return _on_long_no_data(decision, observation, now=now)


def _keep_failing_loudly(rollout: Rollout, *, now: datetime) -> Decision:
    """A failed rollback is retried on every tick, and on-call is paged again every
    `repage_interval` until someone acknowledges (`/canary pause`) or it succeeds."""
    actions: list[Action] = [RollBackCanary()]
    last = rollout.paged_at
    if rollout.acknowledged_by is None and (
        last is None or now - last >= rollout.plan.repage_interval
    ):
        actions.append(
            Page(
                Alert(
                    title=f"{rollout.service}: rollback STILL FAILING",
                    detail=(
                        f"{rollout.reason or 'the rollback could not be completed'}. Traffic may "
                        f"still reach {rollout.canary_image}. `/canary rollback "
                        f"{rollout.service}` retries now; `/canary pause {rollout.service}` "
                        "acknowledges and stops these pages."
                    ),
                    traffic_on_stable=False,
                    at=now,
                )
            )
        )
        rollout = rollout.evolve(now=now, paged_at=now)
    return Decision(rollout, tuple(actions))


def _on_breach(rollout: Rollout, reason: str, *, now: datetime) -> Decision:
    alert = Alert(
        title=f"{rollout.service}: canary breached a rollback rule",
        detail=reason,
        traffic_on_stable=rollout.plan.on_failure == "rollback",
        at=now,
    )
    if rollout.plan.on_failure == "pause":
        if rollout.phase == Phase.PAUSED:
            return Decision(rollout)
        paused = rollout.evolve(
            now=now, phase=Phase.PAUSED, paused_from=rollout.phase, reason=reason
        )
        return Decision(paused, (Announce(Paused(by="canary-bot", reason=reason)), Page(alert)))
    return _start_rollback(rollout, reason=reason, by=None, now=now, page=alert)


def _start_rollback(
    rollout: Rollout, *, reason: str, by: str | None, now: datetime, page: Alert | None = None
) -> Decision:
    actions: list[Action] = [RollBackCanary(), Announce(RollbackStarted(by=by, reason=reason))]
    if rollout.phase == Phase.AWAITING_APPROVAL:
        actions.append(CloseApproval())
    if page is not None:
        actions.append(Page(page))
    rolling = rollout.evolve(now=now, phase=Phase.ROLLING_BACK, reason=reason)
    return Decision(rolling, tuple(actions))


def _account_no_data(rollout: Rollout, observation: Observation, *, now: datetime) -> Rollout:
    """Track how long the rollout has gone without data, and lengthen the step by it."""
    if rollout.phase not in WATCHED_PHASES:
        return rollout
    if observation.verdict != Verdict.NO_DATA:
        if rollout.no_data_since is None:
            return rollout
        return rollout.evolve(
            now=now, no_data_since=None, no_data_seen_at=None, no_data_alerted=False
        )
    held = rollout.step_held
    if (
        rollout.phase == Phase.PROGRESSING
        and rollout.step_ready
        and rollout.plan.on_no_data == "hold"
    ):
        held += max(now - (rollout.no_data_seen_at or now), timedelta(0))
    return rollout.evolve(
        now=now,
        step_held=held,
        no_data_since=rollout.no_data_since or now,
        no_data_seen_at=now,
    )


def _on_long_no_data(decision: Decision, observation: Observation, *, now: datetime) -> Decision:
    """Once metrics have been missing for `no_data_alert_after`: page on-call once (hold,
    ignore), or roll back (on_no_data: rollback)."""
    rollout = decision.rollout
    if (
        observation.verdict != Verdict.NO_DATA
        or rollout.no_data_since is None
        or rollout.no_data_alerted
        or now - rollout.no_data_since < rollout.plan.no_data_alert_after
    ):
        return decision
    since = f"{rollout.no_data_since:%H:%M:%S} UTC"
    if rollout.plan.on_no_data == "rollback":
        reason = f"no metrics from Prometheus since {since} (on_no_data: rollback)"
        alert = Alert(
            title=f"{rollout.service}: no metrics", detail=reason, traffic_on_stable=True, at=now
        )
        return _start_rollback(rollout, reason=reason, by=None, now=now, page=alert)
    held = (
        "the canary keeps its weight and will not advance until data returns"
        if rollout.plan.on_no_data == "hold"
        else "steps go on (on_no_data: ignore), but it will not be promoted without data"
    )
    alert = Alert(
        title=f"{rollout.service}: no metrics"
        + (", rollout held" if rollout.plan.on_no_data == "hold" else ""),
        detail=f"No data from Prometheus since {since}; {held}.",
        traffic_on_stable=False,
        at=now,
    )
    paged = rollout.evolve(now=now, no_data_alerted=True)
    return Decision(paged, (*decision.actions, Page(alert)))


def _enter_step(rollout: Rollout, index: int, *, now: datetime) -> Decision:
    weight = rollout.plan.steps[index]
    entered = rollout.evolve(
        now=now,
        phase=Phase.PROGRESSING,
        step_index=index,
        step_ready=False,
        step_applied_at=now,
        step_started_at=None,
        step_held=timedelta(0),
    )
    return Decision(entered, (SetWeight(weight),))


def _progress(rollout: Rollout, observation: Observation, *, now: datetime) -> Decision:
    traffic = observation.traffic
    if not rollout.step_ready:
        if traffic is not None and traffic.canary_ready:
            ready = rollout.evolve(
                now=now, step_ready=True, step_started_at=now, weight=traffic.weight
            )
            event = StepReached(
                step=rollout.step_index + 1, steps=len(rollout.plan.steps), weight=traffic.weight
            )
            return Decision(ready, (Announce(event),))
        applied_at = rollout.step_applied_at or now
        if now - applied_at > rollout.plan.progress_deadline:
            reason = (
                f"canary pods not ready within the progress deadline "
                f"({_minutes(rollout.plan.progress_deadline)})"
                + (f": {traffic.detail}" if traffic else "")
            )
            alert = Alert(
                title=f"{rollout.service}: canary not ready",
                detail=reason,
                traffic_on_stable=True,
                at=now,
            )
            return _start_rollback(rollout, reason=reason, by=None, now=now, page=alert)
        # Level-triggered: asking again is a no-op once the cluster has the weight, and it
        # repairs a write that failed or was lost in a crash.
        return Decision(rollout, (SetWeight(rollout.target_weight),))
    if traffic is not None and traffic.weight != rollout.weight:
        rollout = rollout.evolve(now=now, weight=traffic.weight)
    due = rollout.next_step_at
    if due is None or now < due:
        return Decision(rollout)
    # Missing data never advances a step (unless on_no_data: ignore) and never promotes.
    if observation.verdict == Verdict.NO_DATA and not (
        rollout.plan.on_no_data == "ignore" and not rollout.is_last_step
    ):
        return Decision(rollout)
    if observation.pending:
        return Decision(rollout)
    if not rollout.is_last_step:
        return _enter_step(rollout, rollout.step_index + 1, now=now)
    return _finish_steps(rollout, by=None, now=now)


def _finish_steps(rollout: Rollout, *, by: str | None, now: datetime) -> Decision:
    """After the last step: ask for approval, or promote when none is required."""
    if rollout.plan.approval:
        waiting = rollout.evolve(
            now=now,
            phase=Phase.AWAITING_APPROVAL,
            approval_requested_at=now,
            approval_reminded=False,
        )
        return Decision(waiting, (RequestApproval(),))
    promoting = rollout.evolve(now=now, phase=Phase.PROMOTING)
    return Decision(promoting, (PromoteStable(), Announce(PromotionStarted(by=by))))


def _await_approval(rollout: Rollout, *, now: datetime) -> Decision:
    """Remind once when the approval timeout passes; then keep holding (never auto-promote)."""
    asked = rollout.approval_requested_at
    if asked is None or rollout.approval_reminded or now - asked < rollout.plan.approval_timeout:
        return Decision(rollout)
    reminder = Alert(
        title=f"{rollout.service}: approval still pending",
        detail=(
            f"Waiting for approval since {asked:%Y-%m-%d %H:%M} UTC; the canary holds its "
            "weight until someone approves, rejects or rolls back."
        ),
        traffic_on_stable=False,
        at=now,
    )
    return Decision(rollout.evolve(now=now, approval_reminded=True), (Page(reminder),))


def _minutes(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m" if seconds % 60 == 0 and seconds >= 60 else f"{seconds}s"


# --------------------------------------------------------------------------- outcomes


def after(rollout: Rollout, outcomes: tuple[Outcome, ...], *, now: datetime) -> Decision:
    """What the cluster actions of the last decision led to: a rollback done, failed for good
    or to be retried; a promotion complete. Weight changes only ever report (nothing to
    decide: the next tick asks again)."""
    for outcome in outcomes:
        if isinstance(outcome.action, RollBackCanary):
            return _after_rollback(rollout, outcome, now=now)
        if isinstance(outcome.action, PromoteStable) and outcome.error is None and outcome.done:
            if rollout.phase != Phase.PROMOTING:
                return Decision(rollout)
            done = rollout.evolve(now=now, phase=Phase.SUCCEEDED, weight=100.0, finished_at=now)
            return _finish(done)
    return Decision(rollout)


def _after_rollback(rollout: Rollout, outcome: Outcome, *, now: datetime) -> Decision:
    if rollout.phase not in (Phase.ROLLING_BACK, Phase.FAILED):
        return Decision(rollout)
    if outcome.error is None:
        done = rollout.evolve(now=now, phase=Phase.ROLLED_BACK, weight=0.0, finished_at=now)
        return _finish(done)
    if rollout.phase == Phase.FAILED:
        return Decision(rollout)  # still failing; `advance` pages again when it is time
    failures = rollout.failures + 1
    if failures < MAX_ROLLBACK_ATTEMPTS:
        return Decision(rollout.evolve(now=now, failures=failures))
    reason = f"rollback could not be completed: {outcome.error}"
    failed = rollout.evolve(
        now=now, phase=Phase.FAILED, failures=failures, reason=reason, paged_at=now
    )
    page = Alert(
        title=f"{rollout.service}: ROLLBACK FAILED — act now",
        detail=(
            f"{reason}. Traffic may still reach the canary {rollout.canary_image}. "
            f"The bot keeps retrying; `/canary rollback {rollout.service}` retries now, "
            f"`/canary pause {rollout.service}` acknowledges and stops the pages."
        ),
        traffic_on_stable=False,
        at=now,
    )
    decision = _finish(failed)
    return Decision(failed, (*decision.actions, Page(page)))


def _finish(finished: Rollout) -> Decision:
    """A terminal phase (or `failed`): the approval buttons go, the outcome is announced."""
    outcome = Finished(
        phase=finished.phase.value,
        reason=finished.reason,
        duration=(finished.finished_at or finished.updated_at) - finished.created_at,
    )
    actions: list[Action] = [Announce(outcome)]
    if finished.approval_requested_at is not None:
        actions.insert(0, CloseApproval())
    return Decision(finished, tuple(actions))


# --------------------------------------------------------------------------- starting


def resolved(
    rollout: Rollout,
    *,
    container: str,
    stable_image: str,
    canary_image: str,
    problem: str | None,
    now: datetime,
) -> Decision:
    """The stable workload was read and the canary's image worked out (rollout/start.py)."""
    if problem is not None:
        return start_refused(rollout, problem, now=now)
    return Decision(
        rollout.evolve(
            now=now, container=container, stable_image=stable_image, canary_image=canary_image
        )
    )


def start_refused(rollout: Rollout, reason: str, *, now: datetime) -> Decision:
    """Nothing was created yet, so there is nothing to roll back: the start simply ends."""
    ended = rollout.evolve(
        now=now, phase=Phase.ROLLED_BACK, reason=f"could not start: {reason}", finished_at=now
    )
    return Decision(ended)


def canary_created(prepared: Rollout) -> Decision:
    """The canary objects exist; `prepared` carries what must be restored at the end."""
    return Decision(prepared)


def prepare_failed(rollout: Rollout, error: str, *, now: datetime) -> Decision:
    """Creating the canary failed half-way: roll back whatever was made."""
    reason = f"could not create the canary: {error}"
    return Decision(rollout.evolve(now=now, phase=Phase.ROLLING_BACK, reason=reason))


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
            if rollout.phase in (Phase.ROLLING_BACK, Phase.PROMOTING):
                return Refusal(
                    f"The {rollout.service} rollout is {rollout.phase.value.replace('_', ' ')}; "
                    "it cannot be rolled back now."
                )
            why = f"rolled back by <@{by}>" + (f": {reason}" if reason else "")
            return _start_rollback(rollout, reason=why, by=by, now=now)
        case Approve(by=by):
            return _approve(rollout, by=by, now=now)
        case Reject(by=by, reason=reason):
            if rollout.phase != Phase.AWAITING_APPROVAL:
                return _moved_on(rollout)
            why = f"rejected by <@{by}>" + (f": {reason}" if reason else "")
            decided = rollout.evolve(now=now, rejected_by=by, decided_at=now)
            return _start_rollback(decided, reason=why, by=by, now=now)
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
    paused = rollout.evolve(now=now, phase=Phase.PAUSED, paused_from=rollout.phase, reason=reason)
    return Decision(paused, (Announce(Paused(by=by, reason=reason)),))


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
    )
    return Decision(resumed, (Announce(Resumed(by=by)),))


def _skip_to_gate(rollout: Rollout, *, by: str, now: datetime) -> Decision | Refusal:
    if rollout.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return Refusal(
            f"The {rollout.service} rollout is {rollout.phase.value.replace('_', ' ')}; "
            "`promote` skips the remaining steps of a progressing or paused rollout."
        )
    return _finish_steps(rollout.evolve(now=now, paused_from=None), by=by, now=now)


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
    promoting = rollout.evolve(now=now, approvals=approvals, decided_at=now, phase=Phase.PROMOTING)
    return Decision(
        promoting, (PromoteStable(), CloseApproval(), Announce(PromotionStarted(by=by)))
    )


def _moved_on(rollout: Rollout) -> Refusal:
    return Refusal(
        f"This approval is no longer open: the {rollout.service} rollout is "
        f"{rollout.phase.value.replace('_', ' ')}. Nothing was changed."
    )
