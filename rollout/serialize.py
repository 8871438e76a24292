"""Rollout records to and from JSON-ready dicts, for the store and the audit log.

Kept apart from the store so the audit log's `before`/`after` columns and the rollouts table
use one representation, and so a schema change is made in one place.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime, timedelta
from typing import Any

from rollout.model import GateResult, Phase, Rollout, RolloutPlan, TrafficTarget

_PLAN_DURATIONS = {f.name for f in fields(RolloutPlan) if f.type in ("timedelta", timedelta)}
_ROLLOUT_TIMES = {f.name for f in fields(Rollout) if f.type in ("datetime | None", "datetime")}
_ROLLOUT_DURATIONS = {f.name for f in fields(Rollout) if f.type in ("timedelta", timedelta)}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def rollout_to_dict(rollout: Rollout) -> dict[str, Any]:
    data: dict[str, Any] = _plain(asdict(rollout))
    data["phase"] = rollout.phase.value
    if rollout.paused_from is not None:
        data["paused_from"] = rollout.paused_from.value
    return data


def rollout_from_dict(data: dict[str, Any]) -> Rollout:
    raw = dict(data)
    plan_raw = dict(raw.pop("plan"))
    for name in _PLAN_DURATIONS:
        plan_raw[name] = timedelta(seconds=plan_raw[name])
    plan_raw["steps"] = tuple(plan_raw["steps"])
    plan_raw["preflight"] = tuple(plan_raw.get("preflight", ()))
    plan_raw["gate_steps"] = tuple(plan_raw.get("gate_steps", ()))
    for name in _ROLLOUT_TIMES:
        if raw.get(name) is not None:
            raw[name] = datetime.fromisoformat(raw[name])
    for name in _ROLLOUT_DURATIONS:
        if name in raw:
            raw[name] = timedelta(seconds=raw[name])
    raw["phase"] = Phase(raw["phase"])
    if raw.get("paused_from") is not None:
        raw["paused_from"] = Phase(raw["paused_from"])
    raw["approvals"] = tuple(raw.get("approvals", ()))
    raw["promotion_paged"] = tuple(raw.get("promotion_paged", ()))
    raw["gate_results"] = tuple(GateResult(**result) for result in raw.get("gate_results", ()))
    raw.pop("outbox", None)  # messages used to be queued in the record; now in the outbox table
    target = TrafficTarget(**raw.pop("target", {}))
    return Rollout(plan=RolloutPlan(**plan_raw), target=target, **raw)
