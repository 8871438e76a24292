"""What carrying out the cluster actions, and the start's cluster work, led to."""

from __future__ import annotations

from datetime import datetime

from rollout.events import (
    Alert,
    Finished,
)
from rollout.machine.types import (
    MAX_ROLLBACK_ATTEMPTS,
    Action,
    Announce,
    CloseApproval,
    Decision,
    Outcome,
    Page,
    PromoteStable,
    RollBackCanary,
)
from rollout.model import Phase, Rollout
from rollout.wording import quote

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
    reason = f"rollback could not be completed: {quote(str(outcome.error))}"
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
        now=now,
        phase=Phase.ROLLED_BACK,
        reason=f"could not start: {quote(reason)}",
        finished_at=now,
    )
    return Decision(ended)


def canary_created(prepared: Rollout) -> Decision:
    """The canary objects exist; `prepared` carries what must be restored at the end."""
    return Decision(prepared)


def prepare_failed(rollout: Rollout, error: str, *, now: datetime) -> Decision:
    """Creating the canary failed half-way: roll back whatever was made."""
    reason = f"could not create the canary: {quote(error)}"
    return Decision(rollout.evolve(now=now, phase=Phase.ROLLING_BACK, reason=reason))
