"""Who and where: `auth.test`, `users.info`, `usergroups.users.list`, `conversations.*`."""

from __future__ import annotations

from emulators.slack.api_args import Args, SlackError
from emulators.slack.records import JsonObject
from emulators.slack.state import Workspace


def auth_test(ws: Workspace, args: Args) -> JsonObject:
    return {
        "url": f"https://{ws.team_domain}.slack.com/",
        "team": ws.team_domain.replace("-", " ").title(),
        "user": "canary-bot",
        "team_id": ws.team_id,
        "user_id": ws.bot_user_id,
        "bot_id": ws.bot_id,
        "is_enterprise_install": False,
    }


def users_info(ws: Workspace, args: Args) -> JsonObject:
    return {"user": ws.user(args.require("user", error="user_not_found"))}


def usergroup_users(ws: Workspace, args: Args) -> JsonObject:
    group = args.require("usergroup")
    members = ws.usergroups.get(group)
    if members is None:
        raise SlackError("no_such_subteam")
    return {"users": list(members)}


def conversations_info(ws: Workspace, args: Args) -> JsonObject:
    channel = ws.check_channel(args.text("channel"))
    name = ws.channel_name(channel)
    return {
        "channel": {
            "id": channel,
            "name": name,
            "name_normalized": name,
            "is_channel": channel.startswith("C"),
            "is_group": channel.startswith("G"),
            "is_im": channel.startswith("D"),
            "is_private": not channel.startswith("C"),
            "is_archived": False,
            "is_member": True,
            "created": 1700000000,
            "creator": ws.bot_user_id,
            "context_team_id": ws.team_id,
        }
    }


def conversations_replies(ws: Workspace, args: Args) -> JsonObject:
    channel = ws.check_channel(args.text("channel"))
    ts = args.require("ts")
    with ws.lock:
        message = ws.find(channel, ts)
        if message is None:
            raise SlackError("thread_not_found")
        if message.thread_ts is not None:  # Slack answers a reply's ts with that reply alone
            return _page([ws.render(message)])
        return _page([ws.render(m) for m in [message, *ws.replies(channel, message.ts)]])


def _page(messages: list[JsonObject]) -> JsonObject:
    return {"messages": messages, "has_more": False, "response_metadata": {"next_cursor": ""}}
