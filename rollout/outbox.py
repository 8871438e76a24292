"""Messages as outbox rows: the key each gets and the JSON it is stored as.

A decision is saved before it is carried out. If the bot dies in between, the cluster actions
are asked for again by the next tick (they are level-triggered), but a thread message or a page
would be lost. So every message is stored with the decision, in the store's `outbox` table,
under a key fixed at decision time: a key queued twice is one message (see
`rollout/sender.py` for how each row reaches Slack exactly once).

Besides the state machine's message actions there are kinds the engine queues itself: the
status card (`card` posts it, `card:update` refreshes it) and metric snapshots (a table and
its chart).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rollout import events
from rollout.machine import Action, Announce, CloseApproval, Decision, Page, RequestApproval
from rollout.model import Phase, Rollout

MessageAction = Announce | Page | RequestApproval | CloseApproval
# (key, stored entry) of one outbox row.
Message = tuple[str, dict[str, Any]]

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        events.StepReached,
        events.Paused,
        events.Resumed,
        events.ApprovalRecorded,
        events.PromotionStarted,
        events.RollbackStarted,
        events.Finished,
        events.Alert,
        events.GateChecked,
    )
}


def is_message(action: Action) -> bool:
    return isinstance(action, Announce | Page | RequestApproval | CloseApproval)


def messages(
    before: Rollout, decision: Decision, *, extra: Sequence[Message] = ()
) -> list[Message]:
    """A decision's outbox rows: the card first (posted once, when the first decision with
    anything to say is saved), each message action under the key fixed for it, `extra` rows,
    and the card's refresh when what it shows changed."""
    after = decision.rollout
    found: list[Message] = []
    for index, action in enumerate(decision.actions):
        if isinstance(action, Announce | Page | RequestApproval | CloseApproval):
            key = message_key(action, decided_at=after.updated_at, index=index)
            found.append((key, to_json(key, action)))
    found += extra
    if card_view(before) != card_view(after):
        found.append(CARD_UPDATE)
    return [CARD, *found] if found else []


def snapshots(
    before: Rollout, decision: Decision, *, at: datetime, breach: str | None
) -> list[Message]:
    """A metric snapshot goes into the thread at each new step and at a breach that changed
    the phase."""
    after = decision.rollout
    if breach and after.phase != before.phase:
        verb = "paused" if after.phase == Phase.PAUSED else "rolled back"
        key = f"snapshot:breach:{after.updated_at.isoformat()}"
        return snapshot(key, title=f"Rollback rule breached: {verb}", at=at)
    for action in decision.actions:
        if isinstance(action, Announce) and isinstance(action.event, events.StepReached):
            step, steps = action.event.step, action.event.steps
            return snapshot(f"snapshot:step:{step}", title=f"Step {step} of {steps} reached", at=at)
    return []


def card_view(rollout: Rollout) -> tuple[object, ...]:
    """What the status card shows; the card is refreshed only when some of it changes.

    At a thousand rollouts every refresh counts (chat.update is about 50 a minute per
    workspace), so this is what a reader sees, not the record: the next-step time to the
    minute (the card shows hours and minutes), and while the step is held for missing
    metrics not the time at all (it moves with every tick) but since when it is held."""
    if rollout.held_for_data:
        next_step: object = ("held", rollout.no_data_since)
    elif rollout.next_step_at is not None:
        next_step = rollout.next_step_at.replace(second=0, microsecond=0)
    else:
        next_step = None
    return (
        rollout.phase,
        rollout.step_index,
        rollout.step_ready,
        rollout.weight,
        next_step,
        rollout.approvals,
        rollout.reason,
        rollout.verdict,
        rollout.gate,
    )


def message_key(action: MessageAction, *, decided_at: datetime, index: int) -> str:
    """Stable for the life of the decision; steps and outcomes get keys that never repeat."""
    match action:
        case Announce(event=events.StepReached(step=step)):
            return f"step:{step}"
        case Announce(event=events.Finished(phase=phase)):
            return f"finished:{phase}"
        case RequestApproval():
            return "approval"
        case CloseApproval():
            return "approval-closed"
        case Announce(event=event):
            return f"{type(event).__name__}:{decided_at.isoformat()}:{index}"
        case Page(alert=alert):
            return f"alert:{alert.at.isoformat()}:{index}"
    raise AssertionError(f"not a message action: {action!r}")


CARD: Message = ("card", {"kind": "card"})
CARD_UPDATE: Message = ("card:update", {"kind": "card"})


def snapshot(key: str, *, title: str, at: datetime) -> list[Message]:
    """A metric snapshot: the table (judged when sent, from the measurements stored up to
    `at`), then its chart, a row of its own that the chart worker renders and uploads once
    the table is in the thread (rollout/chart_worker.py), so no message waits for a chart."""
    when = at.isoformat()
    table = {"kind": "snapshot", "title": title, "at": when}
    chart = {"kind": "chart", "snapshot": key, "title": title, "at": when}
    return [(key, table), (f"chart:{key}", chart)]


def to_json(key: str, action: MessageAction) -> dict[str, Any]:
    match action:
        case Announce(event=event):
            return {"key": key, "kind": "announce", "event": _event_json(event)}
        case Page(alert=alert):
            return {"key": key, "kind": "page", "event": _event_json(alert)}
        case RequestApproval():
            return {"key": key, "kind": "request_approval"}
        case CloseApproval():
            return {"key": key, "kind": "close_approval"}
    raise AssertionError(f"not a message action: {action!r}")


def from_json(entry: dict[str, Any]) -> tuple[str, MessageAction]:
    """The state machine's action back from its row (not for `card` and `snapshot` rows)."""
    kind = entry["kind"]
    if kind == "request_approval":
        return entry["key"], RequestApproval()
    if kind == "close_approval":
        return entry["key"], CloseApproval()
    event = _event_from_json(entry["event"])
    if kind == "page":
        assert isinstance(event, events.Alert)
        return entry["key"], Page(event)
    return entry["key"], Announce(event)


def _event_json(event: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if isinstance(value, datetime):
            value = {"datetime": value.isoformat()}
        elif isinstance(value, timedelta):
            value = {"seconds": value.total_seconds()}
        fields[field.name] = value
    return {"type": type(event).__name__, "fields": fields}


def _event_from_json(data: dict[str, Any]) -> Any:
    fields: dict[str, Any] = {}
    for name, value in data["fields"].items():
        if isinstance(value, dict) and "datetime" in value:
            value = datetime.fromisoformat(value["datetime"])
        elif isinstance(value, dict) and "seconds" in value:
            value = timedelta(seconds=value["seconds"])
        fields[name] = value
    return _EVENT_TYPES[data["type"]](**fields)
