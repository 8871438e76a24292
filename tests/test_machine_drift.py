"""Drift (DESIGN.md "Drift"): a hand edit of a workload pauses the rollout, from whichever
phase it is in, and pages on-call once; nothing is promoted while it stands."""

from __future__ import annotations

from dataclasses import replace

from rollout.commands import Approve, Resume
from rollout.events import Paused
from rollout.machine import (
    Announce,
    Decision,
    Page,
    PromoteStable,
    Refusal,
    SetWeight,
    advance,
    apply_command,
)
from rollout.model import Phase
from tests.test_machine import NOT_READY, SEC, T0, at_last_step_ready, awaiting, new_rollout, ready

EDIT = "someone set checkout-canary's image to v9; the bot measured v2"


def test_drift_while_progressing_pauses_and_pages_once() -> None:
    r = advance(new_rollout(), NOT_READY, now=T0).rollout
    decision = advance(r, replace(ready(10), drift=EDIT), now=T0 + SEC)
    assert decision.rollout.phase == Phase.PAUSED
    assert decision.rollout.paused_from == Phase.PROGRESSING
    assert not any(isinstance(a, SetWeight) for a in decision.actions)
    [page] = [a for a in decision.actions if isinstance(a, Page)]
    assert EDIT in page.alert.detail and "/canary rollback checkout" in page.alert.detail
    assert any(isinstance(a, Announce) and isinstance(a.event, Paused) for a in decision.actions)
    still = advance(decision.rollout, replace(ready(10), drift=EDIT), now=T0 + 2 * SEC)
    assert still.rollout.phase == Phase.PAUSED and still.actions == ()


def test_drift_at_the_last_step_never_promotes() -> None:
    r = at_last_step_ready(approval=False)
    decision = advance(r, replace(ready(50), drift=EDIT), now=T0 + 30 * 60 * SEC)
    assert decision.rollout.phase == Phase.PAUSED
    assert PromoteStable() not in decision.actions


def test_drift_while_awaiting_approval_closes_the_way_to_promotion() -> None:
    r = awaiting()
    decision = advance(r, replace(ready(50), drift=EDIT), now=T0 + 31 * 60 * SEC)
    assert decision.rollout.phase == Phase.PAUSED
    refused = apply_command(decision.rollout, Approve(by="UBOB"), now=T0 + 32 * 60 * SEC)
    assert isinstance(refused, Refusal)
    # Once put back, resuming returns to the approval gate.
    resumed = apply_command(decision.rollout, Resume(by="UBOB"), now=T0 + 33 * 60 * SEC)
    assert isinstance(resumed, Decision)
    assert resumed.rollout.phase == Phase.AWAITING_APPROVAL


def test_drift_during_promotion_stops_promoting() -> None:
    approved = apply_command(awaiting(), Approve(by="UBOB"), now=T0 + 31 * 60 * SEC)
    assert isinstance(approved, Decision)
    decision = advance(approved.rollout, replace(ready(100), drift=EDIT), now=T0 + 32 * 60 * SEC)
    assert decision.rollout.phase == Phase.PAUSED
    assert decision.rollout.paused_from == Phase.PROMOTING
    assert PromoteStable() not in decision.actions
