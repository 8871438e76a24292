"""`views.open`, `views.push`, `views.update`: modals are recorded and given ids, as Slack does."""

from __future__ import annotations

import copy

from emulators.slack.api_args import Args, SlackError, missing
from emulators.slack.records import JsonObject
from emulators.slack.state import Workspace

VIEW_TYPES = frozenset({"modal", "home"})


def _view(ws: Workspace, args: Args, *, view_id: str, root_view_id: str | None) -> JsonObject:
    given = args.json_object("view")
    if given.get("type") not in VIEW_TYPES:
        raise SlackError("invalid_arguments", errors=["view.type must be modal or home"])
    view = copy.deepcopy(given)
    view.update(
        id=view_id,
        team_id=ws.team_id,
        app_id=ws.app_id,
        bot_id=ws.bot_id,
        root_view_id=root_view_id or view_id,
        hash=ws.clock.next(),
        state={"values": {}},
    )
    view.setdefault("private_metadata", "")
    view.setdefault("callback_id", "")
    view.setdefault("external_id", "")
    return view


def _opened(ws: Workspace, args: Args, *, root_view_id: str | None = None) -> JsonObject:
    if not (args.text("trigger_id") or args.text("interactivity_pointer")):
        raise missing("trigger_id")
    view_id = ws.new_id("V")
    view = _view(ws, args, view_id=view_id, root_view_id=root_view_id)
    with ws.lock:
        ws.views.append(view)
    return {"view": copy.deepcopy(view)}


def views_open(ws: Workspace, args: Args) -> JsonObject:
    return _opened(ws, args)


def views_push(ws: Workspace, args: Args) -> JsonObject:
    with ws.lock:
        root = ws.views[-1]["root_view_id"] if ws.views else None
    return _opened(ws, args, root_view_id=root)


def views_update(ws: Workspace, args: Args) -> JsonObject:
    view_id, external_id = args.text("view_id"), args.text("external_id")
    with ws.lock:
        known = [
            v
            for v in ws.views
            if (view_id and v["id"] == view_id) or (external_id and v["external_id"] == external_id)
        ]
        if not known:
            raise SlackError("not_found")
        previous = known[-1]
        view = _view(ws, args, view_id=previous["id"], root_view_id=previous["root_view_id"])
        ws.views.append(view)
    return {"view": copy.deepcopy(view)}
