"""The page's side of the demo: act as a Slack client would, and show what its user would see.

Actions become the requests Slack itself would send the bot: signed slash commands, button
clicks and modal submissions through `SlackDriver`, so the page exercises the bot's real
signature check, parsing and acknowledgement path. What the page shows comes from the Slack
emulator (messages, threads, files, modals), plus what Slack would show only to the person who
acted: the ephemeral answer in a command's HTTP acknowledgement, and the ephemeral posts to the
response URL of their command or click, shown in the thread they clicked in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from canary_sandbox.demo_web.world import CHANNEL_NAMES, GROUP_HANDLES, PEOPLE, DemoWorld
from canary_sandbox.sandbox import RELEASE_CHANNEL
from emulators.slack import DriverResponse, Message, SlackEmulator, UploadedFile

JsonObject = dict[str, Any]
SLACKBOT = "USLACKBOT"


class DemoError(Exception):
    """Something the page asked cannot be done; the message is shown to its user."""


@dataclass(frozen=True, kw_only=True)
class Ephemeral:
    user: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[JsonObject]
    sender: str


@dataclass(frozen=True, kw_only=True)
class _Origin:
    """Where the answer to one response URL belongs: whose action it was, and which thread."""

    user: str
    thread_ts: str | None


class DemoSession:
    """One workspace shown to whoever uses the page; `user` picks whose eyes it is seen with."""

    def __init__(self, world: DemoWorld, *, channel: str = RELEASE_CHANNEL) -> None:
        self._world = world
        self._channel = channel
        self._lock = threading.Lock()
        self._acks: list[Ephemeral] = []
        self._origins: dict[str, _Origin] = {}
        self._view_owners: dict[str, str] = {}
        self._views_seen = 0
        self._last_clicker: str | None = None
        self._closed_views: set[str] = set()
        self._files: dict[str, UploadedFile] = {}

    # ----------------------------------------------------------------- actions

    def command(self, *, user: str, text: str) -> None:
        """What the message box sends: `/canary ...` goes to the bot, anything else stays here."""
        _check_user(user)
        command, _, rest = text.strip().partition(" ")
        if command != "/canary":
            self._note(user, f"`{command or text}` is not a command here. Try `/canary help`.")
            return
        # The answer is shown where the command was sent, before what the bot posts after it.
        sent = time.time()
        reply = self._world.driver.command(rest.strip(), user=user, channel=self._channel)
        if reply.response_url is not None:
            with self._lock:
                self._origins[reply.response_url] = _Origin(user=user, thread_ts=None)
        if reply.status != 200:
            self._note(user, f"/canary failed with the error `http_status_{reply.status}`")
        elif isinstance(reply.json, dict) and (reply.json.get("text") or reply.json.get("blocks")):
            self._keep_ack(user, reply.json, sender=self._world.slack.bot_user_id, at=sent)

    def click(self, *, user: str, channel: str, ts: str, action_id: str, value: str | None) -> None:
        _check_user(user)
        message = self._world.slack.message(channel, ts)
        if message is None:
            raise DemoError("That message is gone.")
        try:
            reply = self._world.driver.click(
                message=message, action_id=action_id, user=user, value=value
            )
        except AssertionError as error:  # the button was replaced meanwhile
            raise DemoError("That button is no longer there.") from error
        self._remember(reply, user=user, thread_ts=message.thread_ts)
        # The bot opens a modal after acknowledging (views.open with the click's trigger_id),
        # and the page has one user at a time: a modal that appears next is this clicker's.
        with self._lock:
            self._last_clicker = user

    def submit_view(self, *, user: str, view_id: str, values: JsonObject) -> JsonObject:
        """Submit the modal; returns the bot's `response_action` errors, if any, by block."""
        _check_user(user)
        view = self._open_views(user).get(view_id)
        if view is None:
            raise DemoError("That dialog is closed.")
        reply = self._world.driver.submit_view(view=view, user=user, values=values)
        body = reply.json if isinstance(reply.json, dict) else {}
        if body.get("response_action") == "errors":
            return dict(body.get("errors") or {})
        with self._lock:
            self._closed_views.add(view_id)
        return {}

    def close_view(self, *, user: str, view_id: str) -> None:
        with self._lock:
            if self._view_owners.get(view_id) == user:
                self._closed_views.add(view_id)

    def file(self, file_id: str) -> UploadedFile | None:
        with self._lock:
            if file_id not in self._files:
                self._files.update({f.file_id: f for f in self._world.slack.files})
            return self._files.get(file_id)

    # ----------------------------------------------------------------- what the page shows

    def state(self, *, user: str, thread_ts: str | None) -> JsonObject:
        _check_user(user)
        slack = self._world.slack
        roots = slack.messages(self._channel)
        replies = slack.thread(self._channel, thread_ts) if thread_ts else []
        mine = [e for e in self._ephemerals() if e.user == user]
        return {
            "me": user,
            "bot": slack.bot_user_id,
            "channel": {"id": self._channel, "name": CHANNEL_NAMES.get(self._channel, "")},
            "messages": [self._message(m, slack.thread(self._channel, m.ts)) for m in roots],
            "thread": [self._message(m, []) for m in replies],
            "ephemerals": [asdict(e) for e in mine],
            "views": list(self._open_views(user).values()),
            "directory": _directory(slack),
            "traffic": {
                "canary_weight": round(self._world.canary_weight(), 1),
                "canary_broken": self._world.canary_broken,
                "canary_error_rate": self._world.canary_error_rate(),
                "metrics": self._world.metrics_backend,
            },
        }

    def _message(self, message: Message, replies: list[Message]) -> JsonObject:
        body: JsonObject = {
            "ts": message.ts,
            "thread_ts": message.thread_ts,
            "user": message.user,
            "text": message.text,
            "blocks": message.blocks,
            "edited": bool(message.edited),
            "files": [
                {
                    "id": f.file_id,
                    "name": f.filename,
                    "title": f.title,
                    "url": f"/files/{f.file_id}",
                }
                for f in message.files
            ],
        }
        if replies:
            body["reply_count"] = len(replies)
            body["latest_reply"] = replies[-1].ts
        return body

    def _ephemerals(self) -> list[Ephemeral]:
        """The command acknowledgements, response-URL answers and chat.postEphemeral posts."""
        slack = self._world.slack
        wall_minus_monotonic = time.time() - time.monotonic()
        with self._lock:
            found = list(self._acks)
            origins = dict(self._origins)
        for post in slack.responses:
            origin = origins.get(post.url)
            body = post.body
            if origin is None or body.get("replace_original") or body.get("delete_original"):
                continue
            if post.response_type != "ephemeral":
                continue
            found.append(
                Ephemeral(
                    user=origin.user,
                    ts=f"{post.at + wall_minus_monotonic:.6f}",
                    thread_ts=origin.thread_ts,
                    text=post.text,
                    blocks=list(body.get("blocks") or []),
                    sender=slack.bot_user_id,
                )
            )
        found.extend(
            Ephemeral(
                user=e.user,
                ts=e.ts,
                thread_ts=e.thread_ts,
                text=e.text,
                blocks=e.blocks,
                sender=slack.bot_user_id,
            )
            for e in slack.ephemerals
            if e.source != "response_url" and e.channel == self._channel
        )
        return sorted(found, key=lambda e: float(e.ts))

    def _open_views(self, user: str) -> dict[str, JsonObject]:
        """Modals opened for `user` and not yet closed, latest version of each."""
        views = self._world.slack.views
        with self._lock:
            for view in views[self._views_seen :]:
                if self._last_clicker is not None:
                    self._view_owners.setdefault(view["id"], self._last_clicker)
            self._views_seen = len(views)
            return {
                view["id"]: view
                for view in views
                if self._view_owners.get(view["id"]) == user
                and view["id"] not in self._closed_views
            }

    def _remember(self, reply: DriverResponse, *, user: str, thread_ts: str | None) -> None:
        if reply.response_url is not None:
            with self._lock:
                self._origins[reply.response_url] = _Origin(user=user, thread_ts=thread_ts)
        if reply.status != 200:
            self._note(user, f"The bot answered HTTP {reply.status} to that click.")

    def _keep_ack(
        self, user: str, body: JsonObject, *, sender: str, at: float | None = None
    ) -> None:
        with self._lock:
            self._acks.append(
                Ephemeral(
                    user=user,
                    ts=f"{time.time() if at is None else at:.6f}",
                    thread_ts=None,
                    text=str(body.get("text") or ""),
                    blocks=list(body.get("blocks") or []),
                    sender=sender,
                )
            )

    def _note(self, user: str, text: str) -> None:
        """An ephemeral from Slackbot, as Slack shows when a command itself fails."""
        self._keep_ack(user, {"text": text}, sender=SLACKBOT)


def _check_user(user: str) -> None:
    if user not in PEOPLE:
        raise DemoError(f"Unknown user {user!r}: pick one of {', '.join(PEOPLE)}.")


def _directory(slack: SlackEmulator) -> JsonObject:
    """Names for the ids in messages; group members, so a reader sees their group mentioned."""
    users = {
        user: {"name": handle, "real_name": name, "role": role}
        for user, (handle, name, role) in PEOPLE.items()
    }
    users[slack.bot_user_id] = {"name": "canary-bot", "real_name": "canary-bot", "role": "app"}
    users[SLACKBOT] = {"name": "slackbot", "real_name": "Slackbot", "role": "app"}
    groups = {
        group: {"handle": handle, "members": slack.usergroups.get(group, [])}
        for group, handle in GROUP_HANDLES.items()
    }
    return {"users": users, "groups": groups, "channels": CHANNEL_NAMES}
