"""One analysis tick: breaches first, then steps, approval, promotion and rollback."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from rollout.analysis.types import Verdict
from rollout.events import (
    Alert,
    Paused,
    PromotionStarted,
    RollbackStarted,
    StepReached,
)
from rollout.machine.types import (
    DRIFT_PHASES,
    WATCHED_PHASES,
    Action,
    Announce,
    CloseApproval,
    Decision,
    Observation,
    Page,
    PromoteStable,
    RequestApproval,
    RollBackCanary,
    SetWeight,
)
from rollout.model import Phase, Rollout

# --------------------------------------------------------------------------- ticks


# What a tick of a rollout without data moves on every time: the step's held time, up to when
# it was counted, and so the record's time. Nobody sees them while the hold lasts (the card
# shows "held" without a next-step time), so a tick that changes nothing else leaves the record
# as it was (`_hold_goes_on`); at 1,000 held rollouts saving each every tick cost more CPU each
# tick (bench/scale.py).
HOLD_BOOKKEEPING = ("step_held", "no_data_seen_at", "updated_at")


def advance(rollout: Rollout, observation: Observation, *, now: datetime) -> Decision:
    """One analysis tick. Breaches are checked first, in every watched phase."""
    return _hold_goes_on(rollout, _advance(rollout, observation, now=now))


def _hold_goes_on(before: Rollout, decision: Decision) -> Decision:
    """The record as it was when a tick of a hold that goes on changed only its bookkeeping.

    Not saving it loses nothing: the held time is counted from `no_data_seen_at` each tick, so
    the next tick that saves (the hold ends, or anything else changes) counts the whole time
    since the saved `no_data_seen_at`, the same sum as when each tick had been saved."""
    after = decision.rollout
    if before.no_data_seen_at is None or after.no_data_seen_at is None:
        return decision  # a hold begins or ends: saved
    moved = {name: getattr(after, name) for name in HOLD_BOOKKEEPING}
    if after != replace(before, **moved):
        return decision
    return replace(decision, rollout=before)


def _advance(rollout: Rollout, observation: Observation, *, now: datetime) -> Decision:
    if rollout.phase in DRIFT_PHASES and observation.drift is not None:
        return _on_drift(rollout, observation.drift, now=now)
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
        return _watch_promotion(rollout, observation, now=now)
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


def _on_drift(rollout: Rollout, drift: str, *, now: datetime) -> Decision:
    """Someone edited a workload by hand: what is measured is no longer what would be
    promoted, so nothing moves on (pause, from whichever phase) and on-call hears it once."""
    reason = f"{drift}; paused until someone puts it back"
    service = rollout.service
    alert = Alert(
        title=f"{service}: workload changed by hand, rollout paused",
        detail=(
            f"{drift}. The rollout is paused and nothing will be promoted. A deployer can put "
            f"it back and `/canary resume {service}`, or `/canary rollback {service}`."
        ),
        traffic_on_stable=False,
        at=now,
    )
    paused = rollout.evolve(now=now, phase=Phase.PAUSED, paused_from=rollout.phase, reason=reason)
    return Decision(paused, (Announce(Paused(by="canary-bot", reason=reason)), Page(alert)))


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
            now=now, phase=Phase.PAUSED, paused_from=rollout.phase, reason=reason, breach=reason
        )
        return Decision(paused, (Announce(Paused(by="canary-bot", reason=reason)), Page(alert)))
    breached = replace(rollout, breach=reason)
    return start_rollback(breached, reason=reason, by=None, now=now, page=alert)


def start_rollback(
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
    """Track how long the rollout has gone without data, and lengthen the step by it: the time
    since `no_data_seen_at` while the step counts down, up to the tick that finds data again
    (the step could not advance until then)."""
    if rollout.phase not in WATCHED_PHASES:
        return rollout
    held = rollout.step_held
    if (
        rollout.phase == Phase.PROGRESSING
        and rollout.step_ready
        and rollout.plan.on_no_data == "hold"
    ):
        held += max(now - (rollout.no_data_seen_at or now), timedelta(0))
    if observation.verdict != Verdict.NO_DATA:
        if rollout.no_data_since is None:
            return rollout
        return rollout.evolve(
            now=now,
            step_held=held,
            no_data_since=None,
            no_data_seen_at=None,
            no_data_alerted=False,
        )
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
        return start_rollback(rollout, reason=reason, by=None, now=now, page=alert)
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
    # A job gate guards this step: run it first (the engine starts the Job), raise after.
    gate = f"job:{index + 1}"
    if index + 1 in rollout.plan.gate_steps and not rollout.gate_passed(gate):
        if rollout.gate is None:
            return Decision(rollout.evolve(now=now, gate=gate, gate_started_at=now))
        return Decision(rollout)
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
            return start_rollback(rollout, reason=reason, by=None, now=now, page=alert)
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
    return finish_steps(rollout, by=None, now=now)


def finish_steps(rollout: Rollout, *, by: str | None, now: datetime) -> Decision:
    """After the last step: ask for approval, or promote when none is required."""
    if rollout.plan.approval:
        waiting = rollout.evolve(
            now=now,
            phase=Phase.AWAITING_APPROVAL,
            approval_requested_at=now,
            approval_reminded=False,
        )
        return Decision(waiting, (RequestApproval(),))
    promoting = rollout.evolve(now=now, phase=Phase.PROMOTING, promoting_since=now)
    return Decision(promoting, (PromoteStable(), Announce(PromotionStarted(by=by))))


def _watch_promotion(rollout: Rollout, observation: Observation, *, now: datetime) -> Decision:
    """Stable rolls out the new image while analysis goes on (DESIGN.md "Promotion"). A
    breach, or stable not rolled out within `promotion_deadline`, pages on-call once each and
    the bot keeps promoting: most traffic already reaches the new image and stable is half-way
    through its rollout, so whether to go back is a person's call (`/canary rollback`)."""
    if rollout.promoting_since is None:  # a record saved before promotions were timed
        rollout = rollout.evolve(now=now, promoting_since=now)
    since = rollout.promoting_since or now
    back = (
        f"The bot keeps promoting; `/canary rollback {rollout.service}` puts "
        f"{rollout.stable_image} and its replica count back on stable."
    )
    pages: list[tuple[str, str, str]] = []
    if observation.verdict == Verdict.BREACHED and "breach" not in rollout.promotion_paged:
        why = observation.breach or "a rollback rule was breached"
        pages.append(("breach", "rule breached during promotion", f"{why}. {back}"))
    deadline = rollout.plan.promotion_deadline
    if now - since > deadline and "deadline" not in rollout.promotion_paged:
        seen = f": {observation.traffic.detail}" if observation.traffic else ""
        detail = (
            f"stable has not rolled out {rollout.canary_image} within {_minutes(deadline)}"
            f"{seen}. {back}"
        )
        pages.append(("deadline", "promotion not done", detail))
    actions: list[Action] = [PromoteStable()]
    for _, title, detail in pages:
        alert = Alert(
            title=f"{rollout.service}: {title}", detail=detail, traffic_on_stable=False, at=now
        )
        actions.append(Page(alert))
    if pages:
        paged = (*rollout.promotion_paged, *(kind for kind, _, _ in pages))
        rollout = rollout.evolve(now=now, promotion_paged=paged)
    return Decision(rollout, tuple(actions))


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
