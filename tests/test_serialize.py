"""Rollout records survive the round trip through the store's JSON unchanged."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from rollout.model import Phase, TrafficTarget
from rollout.serialize import rollout_from_dict, rollout_to_dict
from tests.test_machine import new_rollout


def test_every_field_round_trips() -> None:
    moment = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    rollout = replace(
        new_rollout(),
        phase=Phase.PAUSED,
        paused_from=Phase.PROGRESSING,
        step_index=1,
        step_ready=True,
        step_applied_at=moment,
        step_started_at=moment,
        step_held=timedelta(seconds=90),
        weight=33.3,
        approvals=("UBOB",),
        reason="lunch",
        thread_ts="1.2",
        target=TrafficTarget(service="checkout", ingress="checkout-web"),
        router_state={"annotations": {"a": "b"}},
        no_data_since=moment,
    )
    assert rollout_from_dict(rollout_to_dict(rollout)) == rollout
