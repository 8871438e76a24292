"""Messages the state machine decided to send, kept in the rollout record until sent.

A decision is saved before it is carried out. If the bot dies in between, the cluster actions
are asked for again by the next tick (they are level-triggered), but a thread message or a page
would be lost. So every message action is stored with the decision, under a key fixed at
decision time, and removed once sent; a restarted bot sends what is left, and the key makes
a second send a no-op.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from rollout import events
from rollout.machine import Action, Announce, CloseApproval, Page, RequestApproval

MessageAction = Announce | Page | RequestApproval | CloseApproval

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
    )
}


def is_message(action: Action) -> bool:
    return isinstance(action, Announce | Page | RequestApproval | CloseApproval)


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
