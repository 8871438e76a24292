"""Who and where: `auth.test`, `users.info`, `usergroups.users.list`, `conversations.*`.

`conversations.history` and `conversations.replies` page for real (limit, cursor, oldest, latest)
because a restarted bot searches them for the messages it already sent: a search that only ever
looks at the first page must fail in tests once a channel outgrows it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from emulators.slack.api_args import Args, SlackError
from emulators.slack.records import JsonObject, Message
from emulators.slack.state import Workspace

DEFAULT_LIMIT = 100
MAX_LIMIT = 999
CURSOR_PREFIX = "next_ts:"


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


def conversations_history(ws: Workspace, args: Args) -> JsonObject:
    """Top-level messages (and replies broadcast to the channel), newest first."""
    channel = ws.check_channel(args.text("channel"))
    page = _Page(args, newest_first=True)
    with ws.lock:
        return page.answer(ws, list(reversed(ws.top_level(channel))))


def conversations_replies(ws: Workspace, args: Args) -> JsonObject:
    """A thread, oldest first with its root first; a reply's `ts` gives that reply alone."""
    channel = ws.check_channel(args.text("channel"))
    ts = args.require("ts")
    page = _Page(args, newest_first=False)
    with ws.lock:
        message = ws.find(channel, ts)
        if message is None:
            raise SlackError("thread_not_found")
        if message.thread_ts is not None:
            return page.answer(ws, [message])
        return page.answer(ws, [message, *ws.replies(channel, message.ts)])


class _Page:
    """One page of messages as both reading methods cut it, from their common arguments.

    The cursor names the first message of the next page, as Slack's `next_ts:` cursors do, so a
    message posted between two calls neither repeats nor hides one already due.
    """

    def __init__(self, args: Args, *, newest_first: bool) -> None:
        self.newest_first = newest_first
        self.oldest = _ts(args.text("oldest"), error="invalid_ts_oldest")
        latest = args.text("latest")
        self.latest = None if latest == "now" else _ts(latest, error="invalid_ts_latest")
        self.inclusive = args.flag("inclusive")
        self.limit = _limit(args)
        cursor = args.text("cursor")
        self.start = None if cursor is None else _from_cursor(cursor)
        self.with_metadata = args.flag("include_all_metadata")

    def answer(self, ws: Workspace, ordered: Sequence[Message]) -> JsonObject:
        chosen = [m for m in ordered if self._in_window(Decimal(m.ts))]
        start = self.start
        if start is not None:
            chosen = [m for m in chosen if self._reached(Decimal(m.ts), start=start)]
        shown, rest = chosen[: self.limit], chosen[self.limit :]
        return {
            "messages": [ws.render(m, with_metadata=self.with_metadata) for m in shown],
            "has_more": bool(rest),
            "pin_count": 0,
            "response_metadata": {"next_cursor": _cursor(rest[0].ts) if rest else ""},
        }

    def _in_window(self, ts: Decimal) -> bool:
        if self.oldest is not None and (
            ts < self.oldest or (ts == self.oldest and not self.inclusive)
        ):
            return False
        return self.latest is None or ts < self.latest or (ts == self.latest and self.inclusive)

    def _reached(self, ts: Decimal, *, start: Decimal) -> bool:
        return ts <= start if self.newest_first else ts >= start


def _limit(args: Args) -> int:
    if args.get("limit") is None:
        return DEFAULT_LIMIT
    limit = args.integer("limit")
    # Slack documents the default and the maximum, not what it does outside them; serving the
    # default or the maximum (rather than refusing) is this emulator's choice.
    return DEFAULT_LIMIT if limit < 1 else min(limit, MAX_LIMIT)


def _ts(value: str | None, *, error: str) -> Decimal | None:
    if value is None:
        return None
    try:
        ts = Decimal(value)
    except InvalidOperation:
        raise SlackError(error) from None
    if not ts.is_finite() or ts < 0:
        raise SlackError(error)
    return ts


def _cursor(ts: str) -> str:
    return base64.b64encode(f"{CURSOR_PREFIX}{ts.replace('.', '')}".encode()).decode()


def _from_cursor(cursor: str) -> Decimal:
    try:
        decoded = base64.b64decode(cursor, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise SlackError("invalid_cursor") from None
    digits = decoded.removeprefix(CURSOR_PREFIX)
    if decoded == digits or not digits.isdigit() or len(digits) <= 6:
        raise SlackError("invalid_cursor")
    return Decimal(f"{digits[:-6]}.{digits[-6:]}")
