"""Promotion is watched (DESIGN.md "Promotion"): a breach or the promotion deadline pages
on-call once each while the bot keeps promoting, and `/canary rollback` is accepted."""

from __future__ import annotations

from datetime import timedelta

from rollout.analysis import Verdict
from rollout.commands import Approve, Rollback
from rollout.events import RollbackStarted
from rollout.machine import (
    Announce,
    Decision,
    Observation,
    Page,
    PromoteStable,
    Refusal,
    RollBackCanary,
    advance,
    apply_command,
)
from rollout.model import Phase, Rollout
from rollout.serialize import rollout_from_dict, rollout_to_dict
from rollout.traffic.base import TrafficStatus
from tests.test_machine import SEC, T0, awaiting

APPROVED_AT = T0 + 31 * 60 * SEC
HALF_WAY = Observation(
    traffic=TrafficStatus(weight=100, canary_ready=True, detail="2/4 new pods ready")
)


def promoting(**plan_changes: object) -> Rollout:
    decision = apply_command(awaiting(**plan_changes), Approve(by="UBOB"), now=APPROVED_AT)
    assert isinstance(decision, Decision) and decision.rollout.phase == Phase.PROMOTING
    return decision.rollout


def pages(decision: Decision) -> list[Page]:
    return [a for a in decision.actions if isinstance(a, Page)]


def test_promotion_start_is_recorded_and_saved() -> None:
    r = promoting()
    assert r.promoting_since == APPROVED_AT
    assert rollout_from_dict(rollout_to_dict(r)).promoting_since == APPROVED_AT


def test_the_promotion_deadline_pages_once_and_promotion_goes_on() -> None:
    r = promoting(promotion_deadline=timedelta(minutes=10))
    before = advance(r, HALF_WAY, now=APPROVED_AT + 10 * 60 * SEC)
    assert before.actions == (PromoteStable(),)
    late = advance(before.rollout, HALF_WAY, now=APPROVED_AT + 10 * 60 * SEC + SEC)
    assert late.rollout.phase == Phase.PROMOTING
    assert PromoteStable() in late.actions
    [page] = pages(late)
    assert "has not rolled out" in page.alert.detail and "within 10m" in page.alert.detail
    assert "2/4 new pods ready" in page.alert.detail
    assert "/canary rollback" in page.alert.detail
    again = advance(late.rollout, HALF_WAY, now=APPROVED_AT + 20 * 60 * SEC)
    assert again.actions == (PromoteStable(),)
    assert rollout_from_dict(rollout_to_dict(late.rollout)).promotion_paged == ("deadline",)


def test_a_breach_during_promotion_pages_once_without_rolling_back() -> None:
    r = promoting()
    breached = Observation(
        traffic=HALF_WAY.traffic, verdict=Verdict.BREACHED, breach="error_rate 5% > 1% for 2m"
    )
    decision = advance(r, breached, now=APPROVED_AT + 60 * SEC)
    assert decision.rollout.phase == Phase.PROMOTING
    assert RollBackCanary() not in decision.actions
    [page] = pages(decision)
    assert "error_rate 5% > 1%" in page.alert.detail
    assert "during promotion" in page.alert.title
    again = advance(decision.rollout, breached, now=APPROVED_AT + 90 * SEC)
    assert pages(again) == []


def test_rollback_is_accepted_during_promotion() -> None:
    r = promoting()
    decision = apply_command(r, Rollback(by="UCAROL", reason=None), now=APPROVED_AT + SEC)
    assert isinstance(decision, Decision)
    assert decision.rollout.phase == Phase.ROLLING_BACK
    assert decision.actions[0] == RollBackCanary()
    assert any(
        isinstance(a, Announce) and isinstance(a.event, RollbackStarted) for a in decision.actions
    )
    # But not twice.
    again = apply_command(decision.rollout, Rollback(by="UCAROL", reason=None), now=APPROVED_AT)
    assert isinstance(again, Refusal)
