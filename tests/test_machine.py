"""The pure state machine: every phase change, driven with explicit `now` values (no clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rollout.analysis import Verdict
from rollout.commands import Approve, Pause, Promote, Reject, Resume, Rollback
from rollout.events import Paused, PromotionStarted, RollbackStarted, StepReached
from rollout.machine import (
    Announce,
    CloseApproval,
    Decision,
    Observation,
    Page,
    PromoteStable,
    Refusal,
    RequestApproval,
    RollBackCanary,
    SetWeight,
    advance,
    apply_command,
)
from rollout.model import Phase, Rollout, RolloutPlan
from rollout.traffic.base import TrafficStatus
from tests.builders import rollout, rollout_plan

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)


def plan(**changes: object) -> RolloutPlan:
    return rollout_plan(
        **{
            "steps": (10, 50),
            "step_interval": timedelta(minutes=10),
            "progress_deadline": timedelta(minutes=5),
            "approval_timeout": timedelta(hours=1),
            **changes,
        }
    )


def new_rollout(**plan_changes: object) -> Rollout:
    return rollout(at=T0, plan=plan(**plan_changes), started_by="UALICE", original_replicas=10)


def ready(weight: float) -> Observation:
    return Observation(traffic=TrafficStatus(weight=weight, canary_ready=True, detail="ready"))


NOT_READY = Observation(traffic=TrafficStatus(weight=0, canary_ready=False, detail="0/1 ready"))


def at_last_step_ready(**plan_changes: object) -> Rollout:
    r = advance(new_rollout(**plan_changes), NOT_READY, now=T0).rollout
    r = advance(r, ready(10), now=T0 + SEC).rollout
    r = advance(r, ready(10), now=T0 + 11 * 60 * SEC).rollout
    return advance(r, ready(50), now=T0 + 11 * 60 * SEC + SEC).rollout


def awaiting(**plan_changes: object) -> Rollout:
    r = at_last_step_ready(**plan_changes)
    decision = advance(r, ready(50), now=T0 + 30 * 60 * SEC)
    assert decision.rollout.phase == Phase.AWAITING_APPROVAL
    return decision.rollout


def test_pending_enters_first_step_and_asks_for_its_weight() -> None:
    decision = advance(new_rollout(), NOT_READY, now=T0)
    assert decision.rollout.phase == Phase.PROGRESSING
    assert decision.rollout.step_index == 0
    assert decision.actions == (SetWeight(10),)


def test_step_is_announced_only_when_canary_pods_are_ready() -> None:
    r = advance(new_rollout(), NOT_READY, now=T0).rollout
    waiting = advance(r, NOT_READY, now=T0 + SEC)
    assert not waiting.rollout.step_ready
    assert waiting.actions == (SetWeight(10),)  # level-triggered re-apply, no announcement
    done = advance(r, ready(9.1), now=T0 + 2 * SEC)
    assert done.rollout.step_ready and done.rollout.weight == 9.1
    assert done.actions == (Announce(StepReached(step=1, steps=2, weight=9.1)),)
    assert done.rollout.step_started_at == T0 + 2 * SEC


def test_next_step_only_after_interval_counted_from_readiness() -> None:
    r = advance(new_rollout(), NOT_READY, now=T0).rollout
    r = advance(r, ready(10), now=T0 + 60 * SEC).rollout
    early = advance(r, ready(10), now=T0 + 10 * 60 * SEC)  # 9 minutes after ready
    assert early.rollout.step_index == 0 and early.actions == ()
    due = advance(r, ready(10), now=T0 + 11 * 60 * SEC)
    assert due.rollout.step_index == 1 and due.actions == (SetWeight(50),)


def test_after_last_step_approval_is_requested() -> None:
    r = at_last_step_ready()
    decision = advance(r, ready(50), now=T0 + 30 * 60 * SEC)
    assert decision.rollout.phase == Phase.AWAITING_APPROVAL
    assert decision.actions == (RequestApproval(),)


def test_without_approval_the_last_step_promotes() -> None:
    r = at_last_step_ready(approval=False)
    decision = advance(r, ready(50), now=T0 + 30 * 60 * SEC)
    assert decision.rollout.phase == Phase.PROMOTING
    assert PromoteStable() in decision.actions


def test_starter_cannot_approve_alone_but_an_approver_can() -> None:
    r = awaiting()
    refused = apply_command(r, Approve(by="UALICE"), now=T0 + 31 * 60 * SEC)
    assert isinstance(refused, Refusal) and "alone" in refused.message
    decision = apply_command(r, Approve(by="UBOB"), now=T0 + 31 * 60 * SEC)
    assert isinstance(decision, Decision)
    assert decision.rollout.phase == Phase.PROMOTING
    # Cluster first: the promotion is carried out before any message about it.
    assert decision.actions == (
        PromoteStable(),
        CloseApproval(),
        Announce(PromotionStarted(by="UBOB")),
    )


def test_self_approval_allowed_when_configured() -> None:
    decision = apply_command(awaiting(self_approval=True), Approve(by="UALICE"), now=T0)
    assert isinstance(decision, Decision) and decision.rollout.phase == Phase.PROMOTING


def test_two_approvals_need_two_different_people() -> None:
    r = awaiting(approvals_required=2)
    first = apply_command(r, Approve(by="UBOB"), now=T0)
    assert isinstance(first, Decision) and first.rollout.phase == Phase.AWAITING_APPROVAL
    again = apply_command(first.rollout, Approve(by="UBOB"), now=T0)
    assert isinstance(again, Refusal)
    # The starter may be the second of two approvers: they are not approving alone.
    second = apply_command(first.rollout, Approve(by="UALICE"), now=T0)
    assert isinstance(second, Decision) and second.rollout.phase == Phase.PROMOTING
    assert second.rollout.approvals == ("UBOB", "UALICE")


def test_approval_on_a_rollout_that_moved_on_is_refused() -> None:
    r = awaiting()
    rolled = apply_command(r, Rollback(by="UBOB"), now=T0)
    assert isinstance(rolled, Decision)
    late = apply_command(rolled.rollout, Approve(by="UCAROL"), now=T0)
    assert isinstance(late, Refusal) and "no longer open" in late.message


def test_reject_rolls_back_and_closes_the_approval() -> None:
    decision = apply_command(awaiting(), Reject(by="UBOB", reason="p99 looks off"), now=T0)
    assert isinstance(decision, Decision)
    assert decision.rollout.phase == Phase.ROLLING_BACK
    assert "p99 looks off" in (decision.rollout.reason or "")
    assert CloseApproval() in decision.actions and RollBackCanary() in decision.actions


def test_progress_deadline_rolls_back_and_pages() -> None:
    r = advance(new_rollout(), NOT_READY, now=T0).rollout
    assert advance(r, NOT_READY, now=T0 + 5 * 60 * SEC).rollout.phase == Phase.PROGRESSING
    decision = advance(r, NOT_READY, now=T0 + 5 * 60 * SEC + SEC)
    assert decision.rollout.phase == Phase.ROLLING_BACK
    assert RollBackCanary() in decision.actions
    assert any(isinstance(a, Page) for a in decision.actions)


def test_breach_rolls_back_in_every_watched_phase() -> None:
    breach = Observation(traffic=None, verdict=Verdict.BREACHED, breach="error_rate 5%")
    for r in (at_last_step_ready(), awaiting()):
        decision = advance(r, breach, now=T0 + 40 * 60 * SEC)
        assert decision.rollout.phase == Phase.ROLLING_BACK
        assert decision.rollout.reason == "error_rate 5%"
        kinds = [type(a) for a in decision.actions]
        assert RollBackCanary in kinds and Page in kinds
        if r.phase == Phase.AWAITING_APPROVAL:
            assert CloseApproval in kinds


def test_breach_with_on_failure_pause_holds_and_pages() -> None:
    breach = Observation(traffic=None, verdict=Verdict.BREACHED, breach="latency")
    decision = advance(at_last_step_ready(on_failure="pause"), breach, now=T0 + 40 * 60 * SEC)
    assert decision.rollout.phase == Phase.PAUSED
    assert not any(isinstance(a, RollBackCanary) for a in decision.actions)
    assert any(isinstance(a, Page) for a in decision.actions)


def test_missing_data_holds_the_step_and_lengthens_it() -> None:
    r = advance(new_rollout(), NOT_READY, now=T0).rollout
    r = advance(r, ready(10), now=T0).rollout
    no_data = Observation(traffic=ready(10).traffic, verdict=Verdict.NO_DATA)
    for minute in range(8, 13):  # five minutes without data, spanning the step's due time
        r = advance(r, no_data, now=T0 + minute * 60 * SEC).rollout
        assert r.step_index == 0
    # Data is back at 13 min: held from the first tick without data (8 min) until then.
    r = advance(r, ready(10), now=T0 + 13 * 60 * SEC).rollout
    assert (r.step_index, r.step_held, r.no_data_since) == (0, timedelta(minutes=5), None)
    r = advance(r, ready(10), now=T0 + 14 * 60 * SEC).rollout
    assert r.step_index == 0  # 10 min + 5 min held not yet over
    assert advance(r, ready(10), now=T0 + 15 * 60 * SEC).rollout.step_index == 1


def test_a_hold_that_goes_on_leaves_the_record_as_it_was() -> None:
    """Only the hold's bookkeeping would change at each tick without data, and nobody sees it:
    the engine then has nothing to save. The held time is counted when the hold ends."""
    quiet = new_rollout(no_data_alert_after=timedelta(hours=1))  # the page is a change
    r = advance(advance(quiet, NOT_READY, now=T0).rollout, ready(10), now=T0).rollout
    no_data = Observation(traffic=ready(10).traffic, verdict=Verdict.NO_DATA)
    held = advance(r, no_data, now=T0 + 60 * SEC).rollout
    assert held.no_data_since == T0 + 60 * SEC
    for minute in range(2, 30):
        decision = advance(held, no_data, now=T0 + minute * 60 * SEC)
        assert decision.rollout == held and decision.rollout.updated_at == held.updated_at
        assert decision.actions == ()
    back = advance(held, ready(10), now=T0 + 30 * 60 * SEC).rollout
    assert back.step_held == timedelta(minutes=29)
    assert back.next_step_at == T0 + (10 + 29) * 60 * SEC


def test_a_hold_across_a_pause_counts_again_from_the_resume() -> None:
    r = advance(advance(new_rollout(), NOT_READY, now=T0).rollout, ready(10), now=T0).rollout
    no_data = Observation(traffic=ready(10).traffic, verdict=Verdict.NO_DATA)
    r = advance(r, no_data, now=T0 + 60 * SEC).rollout
    paused = apply_command(r, Pause(by="UBOB", reason=None), now=T0 + 5 * 60 * SEC)
    assert isinstance(paused, Decision)
    resumed = apply_command(paused.rollout, Resume(by="UBOB"), now=T0 + 20 * 60 * SEC)
    assert isinstance(resumed, Decision)
    r = advance(resumed.rollout, no_data, now=T0 + 21 * 60 * SEC).rollout
    back = advance(r, ready(10), now=T0 + 25 * 60 * SEC).rollout
    # The step's clock restarted at the resume; only the 5 minutes held since count.
    assert back.step_held == timedelta(minutes=5)
    assert back.next_step_at == T0 + (20 + 10 + 5) * 60 * SEC


def test_missing_data_never_requests_approval_and_pages_once() -> None:
    r = at_last_step_ready(no_data_alert_after=timedelta(minutes=2))
    no_data = Observation(traffic=ready(50).traffic, verdict=Verdict.NO_DATA)
    pages = 0
    for minute in range(20, 40):
        decision = advance(r, no_data, now=T0 + minute * 60 * SEC)
        r = decision.rollout
        assert r.phase == Phase.PROGRESSING
        pages += sum(isinstance(a, Page) for a in decision.actions)
    assert pages == 1


def test_pause_and_resume_restart_the_step_clock() -> None:
    r = advance(advance(new_rollout(), NOT_READY, now=T0).rollout, ready(10), now=T0).rollout
    paused = apply_command(r, Pause(by="UBOB", reason="lunch"), now=T0 + 60 * SEC)
    assert isinstance(paused, Decision) and paused.rollout.phase == Phase.PAUSED
    assert paused.actions == (Announce(Paused(by="UBOB", reason="lunch")),)
    assert advance(paused.rollout, ready(10), now=T0 + 60 * 60 * SEC).rollout.step_index == 0
    resumed = apply_command(paused.rollout, Resume(by="UBOB"), now=T0 + 60 * 60 * SEC)
    assert isinstance(resumed, Decision) and resumed.rollout.phase == Phase.PROGRESSING
    assert resumed.rollout.step_started_at == T0 + 60 * 60 * SEC


def test_promote_skips_to_the_approval_gate() -> None:
    r = advance(advance(new_rollout(), NOT_READY, now=T0).rollout, ready(10), now=T0).rollout
    decision = apply_command(r, Promote(by="UBOB"), now=T0 + SEC)
    assert isinstance(decision, Decision)
    assert decision.rollout.phase == Phase.AWAITING_APPROVAL
    assert decision.actions == (RequestApproval(),)


def test_manual_rollback_is_announced_without_paging() -> None:
    r = advance(new_rollout(), NOT_READY, now=T0).rollout
    decision = apply_command(r, Rollback(by="UBOB", reason="wrong tag"), now=T0 + SEC)
    assert isinstance(decision, Decision)
    # Cluster first: traffic goes back to stable before the announcement.
    assert decision.actions[:2] == (
        RollBackCanary(),
        Announce(RollbackStarted(by="UBOB", reason="rolled back by <@UBOB>: wrong tag")),
    )
    assert not any(isinstance(a, Page) for a in decision.actions)


def test_commands_on_a_finished_rollout_change_nothing() -> None:
    done = replace(new_rollout(), phase=Phase.SUCCEEDED)
    for command in (Pause(by="U"), Resume(by="U"), Rollback(by="U"), Approve(by="U")):
        assert isinstance(apply_command(done, command, now=T0), Refusal)


def test_approval_timeout_reminds_once_and_keeps_holding() -> None:
    r = awaiting()
    asked = r.approval_requested_at
    assert asked is not None
    first = advance(r, ready(50), now=asked + timedelta(hours=1, seconds=1))
    assert any(isinstance(a, Page) for a in first.actions)
    assert first.rollout.phase == Phase.AWAITING_APPROVAL
    second = advance(first.rollout, ready(50), now=asked + timedelta(hours=2))
    assert second.actions == ()


def test_a_pending_rule_holds_the_step_without_rolling_back() -> None:
    r = advance(advance(new_rollout(), NOT_READY, now=T0).rollout, ready(10), now=T0).rollout
    pending = Observation(traffic=ready(10).traffic, pending=True)
    held = advance(r, pending, now=T0 + 11 * 60 * SEC)
    assert held.rollout.step_index == 0 and held.rollout.phase == Phase.PROGRESSING
    assert held.actions == ()


def _no_data(weight: float) -> Observation:
    return Observation(traffic=ready(weight).traffic, verdict=Verdict.NO_DATA)


def test_on_no_data_ignore_goes_on_with_steps_but_never_promotes() -> None:
    r = advance(new_rollout(on_no_data="ignore"), NOT_READY, now=T0).rollout
    r = advance(r, ready(10), now=T0).rollout
    r = advance(r, _no_data(10), now=T0 + 5 * 60 * SEC).rollout
    moved = advance(r, _no_data(10), now=T0 + 10 * 60 * SEC)
    assert moved.rollout.step_index == 1  # not held, not lengthened
    last = advance(moved.rollout, _no_data(50), now=T0 + 11 * 60 * SEC).rollout
    for minute in (22, 40):
        last = advance(last, _no_data(50), now=T0 + minute * 60 * SEC).rollout
        assert last.phase == Phase.PROGRESSING  # no approval request without data


def test_on_no_data_rollback_rolls_back_once_data_has_been_missing_long_enough() -> None:
    r = advance(new_rollout(on_no_data="rollback"), NOT_READY, now=T0).rollout
    r = advance(r, ready(10), now=T0).rollout
    r = advance(r, _no_data(10), now=T0 + 60 * SEC).rollout
    assert r.phase == Phase.PROGRESSING
    decision = advance(r, _no_data(10), now=T0 + 6 * 60 * SEC + SEC)  # default 5m later
    assert decision.rollout.phase == Phase.ROLLING_BACK
    assert "on_no_data: rollback" in (decision.rollout.reason or "")
    assert any(isinstance(a, Page) for a in decision.actions)


def test_no_data_pages_once_in_every_watched_phase() -> None:
    for start in (awaiting(no_data_alert_after=timedelta(minutes=2)),):
        r, pages = start, 0
        for minute in range(40, 60):
            decision = advance(r, _no_data(50), now=T0 + minute * 60 * SEC)
            r = decision.rollout
            pages += sum(isinstance(a, Page) for a in decision.actions)
        assert pages == 1
    paused = apply_command(at_last_step_ready(), Pause(by="UBOB"), now=T0 + 20 * 60 * SEC)
    assert isinstance(paused, Decision)
    r, pages = paused.rollout, 0
    for minute in range(21, 40):
        decision = advance(r, _no_data(50), now=T0 + minute * 60 * SEC)
        r = decision.rollout
        pages += sum(isinstance(a, Page) for a in decision.actions)
    assert pages == 1 and r.phase == Phase.PAUSED


def failed_rollout(**plan_changes: object) -> Rollout:
    return replace(
        new_rollout(**plan_changes),
        phase=Phase.FAILED,
        reason="rollback could not be completed: 500",
        paged_at=T0,
    )


def test_a_failed_rollback_is_retried_and_paged_again_until_acknowledged() -> None:
    r = failed_rollout(repage_interval=timedelta(minutes=15))
    assert r.phase.is_active and not r.phase.is_terminal  # blocks new starts, keeps ticking
    early = advance(r, NOT_READY, now=T0 + 10 * 60 * SEC)
    assert early.actions == (RollBackCanary(),)
    due = advance(r, NOT_READY, now=T0 + 15 * 60 * SEC)
    assert RollBackCanary() in due.actions and any(isinstance(a, Page) for a in due.actions)
    assert due.rollout.paged_at == T0 + 15 * 60 * SEC
    acknowledged = apply_command(due.rollout, Pause(by="UCAROL"), now=T0 + 16 * 60 * SEC)
    assert isinstance(acknowledged, Decision)
    assert acknowledged.rollout.phase == Phase.FAILED
    later = advance(acknowledged.rollout, NOT_READY, now=T0 + 5 * 60 * 60 * SEC)
    assert later.actions == (RollBackCanary(),)  # still retried, no more pages


def test_someone_can_retry_a_failed_rollback_but_not_move_it_on() -> None:
    r = failed_rollout()
    retried = apply_command(r, Rollback(by="UBOB"), now=T0)
    assert isinstance(retried, Decision)
    assert retried.rollout.phase == Phase.ROLLING_BACK and retried.rollout.failures == 0
    for command in (Resume(by="U"), Promote(by="U"), Approve(by="U")):
        refusal = apply_command(r, command, now=T0)
        assert isinstance(refusal, Refusal) and "/canary rollback" in refusal.message
