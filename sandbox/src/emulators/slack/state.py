"""The emulated workspace: its channels' messages, threads, files, views and directory.

One re-entrant lock guards everything. The bot calls the Web API from several threads (listener
threads, the scheduler) while a test reads from its own, and Slack's ordering guarantee that
matters here (a `ts` is unique and increases within a channel) is easiest to keep under one lock.
"""

from __future__ import annotations

import copy
import itertools
import mimetypes
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from emulators.slack.api_args import SlackError
from emulators.slack.blocks import with_ids
from emulators.slack.records import (
    ApiCall,
    EphemeralMessage,
    JsonObject,
    Message,
    MessageVersion,
    ResponseTarget,
    ResponseUrlPost,
    UploadedFile,
)

CHANNEL_PREFIXES = ("C", "G", "D")


class TsClock:
    """Slack message timestamps: wall-clock seconds with six digits, strictly increasing."""

    def __init__(self) -> None:
        self._last_us = 0

    def next(self) -> str:
        self._last_us = max(self._last_us + 1, int(time.time() * 1_000_000))
        seconds, micros = divmod(self._last_us, 1_000_000)
        return f"{seconds}.{micros:06d}"


class Workspace:
    def __init__(
        self,
        *,
        bot_token: str,
        team_id: str,
        team_domain: str,
        bot_user_id: str,
        bot_id: str,
        app_id: str,
        usergroups: Mapping[str, Sequence[str]],
        users: Mapping[str, Mapping[str, Any]],
        channel_names: Mapping[str, str],
    ) -> None:
        self.lock = threading.RLock()
        self.bot_token = bot_token
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        # Live dicts: tests change group membership or user profiles while the bot runs.
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in usergroups.items()}
        self.users: dict[str, dict[str, Any]] = {k: dict(v) for k, v in users.items()}
        self.channel_names: dict[str, str] = dict(channel_names)
        self.clock = TsClock()
        self.base_url = ""  # set once the server has its port
        self._ids = itertools.count(1)
        self.calls: list[ApiCall] = []
        self.ephemerals: list[EphemeralMessage] = []
        self.responses: list[ResponseUrlPost] = []
        self.response_targets: dict[str, ResponseTarget] = {}
        self.uploads: dict[str, UploadedFile] = {}
        self.views: list[JsonObject] = []
        self._messages: dict[str, list[Message]] = {}
        self._by_ts: dict[tuple[str, str], Message] = {}

    def new_id(self, prefix: str) -> str:
        """A Slack-looking id (`F…` file, `V…` view) unique within this workspace."""
        with self.lock:
            return f"{prefix}0{next(self._ids):09d}"

    # -- channels -----------------------------------------------------------------------------

    def check_channel(self, channel: str | None) -> str:
        if not channel or not channel.startswith(CHANNEL_PREFIXES) or not channel.isalnum():
            raise SlackError("channel_not_found")
        return channel

    def channel_name(self, channel: str) -> str:
        return self.channel_names.get(channel, channel.lower())

    # -- messages -----------------------------------------------------------------------------

    def find(self, channel: str, ts: str | None) -> Message | None:
        message = self._by_ts.get((channel, ts or ""))
        return None if message is None or message.deleted else message

    def root_of(self, channel: str, thread_ts: str) -> str:
        """The root `ts` a reply with `thread_ts` belongs to; Slack files replies-to-replies
        under the same root."""
        message = self._by_ts.get((channel, thread_ts))
        if message is None:
            raise SlackError("invalid_thread_ts")
        return message.thread_ts or message.ts

    def post(
        self,
        *,
        channel: str,
        text: str,
        blocks: list[JsonObject],
        attachments: list[JsonObject],
        thread_ts: str | None,
        reply_broadcast: bool = False,
        files: Sequence[UploadedFile] = (),
        metadata: JsonObject | None = None,
    ) -> Message:
        with self.lock:
            root = self.root_of(channel, thread_ts) if thread_ts else None
            ts = self.clock.next()
            blocks = with_ids(blocks, seed=f"{channel}/{ts}/0")
            message = Message(
                channel=channel,
                ts=ts,
                thread_ts=root,
                user=self.bot_user_id,
                text=text,
                blocks=blocks,
                attachments=attachments,
                files=list(files),
                reply_broadcast=reply_broadcast,
                history=[_version(text, blocks, attachments, metadata=metadata, edited_ts=None)],
                metadata=copy.deepcopy(metadata),
            )
            self._messages.setdefault(channel, []).append(message)
            self._by_ts[(channel, ts)] = message
            return message

    def update(
        self,
        message: Message,
        *,
        text: str,
        blocks: list[JsonObject],
        attachments: list[JsonObject] | None,
        metadata: JsonObject | None = None,
    ) -> Message:
        """`metadata` follows Slack's argument: None keeps the current metadata, `{}` removes it."""
        with self.lock:
            message.edited += 1
            message.text = text
            message.blocks = with_ids(
                blocks, seed=f"{message.channel}/{message.ts}/{message.edited}"
            )
            if attachments is not None:  # omitted attachments are kept, as Slack documents
                message.attachments = attachments
            if metadata is not None:
                message.metadata = copy.deepcopy(metadata) or None
            message.history.append(
                _version(
                    text,
                    message.blocks,
                    message.attachments,
                    metadata=message.metadata,
                    edited_ts=self.clock.next(),
                )
            )
            return message

    def delete(self, message: Message) -> None:
        with self.lock:
            message.deleted = True

    def top_level(self, channel: str) -> list[Message]:
        with self.lock:
            return [
                m
                for m in self._messages.get(channel, [])
                if not m.deleted and (m.thread_ts is None or m.reply_broadcast)
            ]

    def replies(self, channel: str, root_ts: str) -> list[Message]:
        with self.lock:
            return [
                m
                for m in self._messages.get(channel, [])
                if m.thread_ts == root_ts and not m.deleted
            ]

    def ephemeral(
        self,
        *,
        channel: str,
        user: str,
        text: str,
        blocks: list[JsonObject],
        thread_ts: str | None,
        source: str,
    ) -> EphemeralMessage:
        with self.lock:
            record = EphemeralMessage(
                channel=channel,
                user=user,
                ts=self.clock.next(),
                thread_ts=thread_ts,
                text=text,
                blocks=blocks,
                source=source,
                at=time.monotonic(),
            )
            self.ephemerals.append(record)
            return record

    # -- rendering as the API returns it ------------------------------------------------------

    def render(self, message: Message, *, with_metadata: bool = True) -> JsonObject:
        """The message as the API shows it. Reading methods leave `metadata` out unless asked
        with `include_all_metadata`; post and update answers and interaction payloads carry it."""
        body: JsonObject = {
            "type": "message",
            "user": message.user,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": message.text,
            "ts": message.ts,
            "blocks": copy.deepcopy(message.blocks),
        }
        if message.attachments:
            body["attachments"] = copy.deepcopy(message.attachments)
        if message.files:
            body["files"] = [self.render_file(f) for f in message.files]
            body["upload"] = False
        if message.thread_ts:
            body["thread_ts"] = message.thread_ts
            body["parent_user_id"] = self.bot_user_id
        else:
            replies = self.replies(message.channel, message.ts)
            if replies:
                body.update(
                    thread_ts=message.ts,
                    reply_count=len(replies),
                    reply_users=[self.bot_user_id],
                    reply_users_count=1,
                    latest_reply=replies[-1].ts,
                )
        if message.edited:
            body["edited"] = {"user": message.user, "ts": message.history[-1].edited_ts}
        if with_metadata and message.metadata is not None:
            body["metadata"] = copy.deepcopy(message.metadata)
        return body

    def render_file(self, upload: UploadedFile) -> JsonObject:
        base = f"https://files.slack.com/files-pri/{self.team_id}-{upload.file_id}"
        shares: JsonObject = {}
        if upload.channel:
            share = {"ts": upload.message_ts, "thread_ts": upload.thread_ts}
            shares = {"public": {upload.channel: [share]}}
        return {
            "id": upload.file_id,
            "created": int(upload.created),
            "timestamp": int(upload.created),
            "name": upload.filename,
            "title": upload.title,
            "mimetype": _mimetype(upload.filename),
            "filetype": upload.filename.rsplit(".", 1)[-1] if "." in upload.filename else "",
            "user": self.bot_user_id,
            "size": upload.length,
            "url_private": f"{base}/{upload.filename}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/"
            f"{upload.file_id}/{upload.filename}",
            "channels": [upload.channel] if upload.channel else [],
            "shares": shares,
        }

    def permalink(self, message: Message) -> str:
        url = (
            f"https://{self.team_domain}.slack.com/archives/{message.channel}/"
            f"p{message.ts.replace('.', '')}"
        )
        if message.thread_ts:
            url += f"?thread_ts={message.thread_ts}&cid={message.channel}"
        return url

    # -- directory ----------------------------------------------------------------------------

    def user(self, user_id: str) -> JsonObject:
        """A users.info `user`: the configured fields over defaults, so any id resolves."""
        given = self.users.get(user_id, {})
        name = str(given.get("name", user_id.lower()))
        real_name = str(given.get("real_name", f"User {user_id}"))
        result: JsonObject = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "Etc/UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_bot": user_id == self.bot_user_id,
            "is_app_user": False,
            "updated": 0,
        }
        result.update(copy.deepcopy(given))
        result.setdefault(
            "profile",
            {
                "real_name": result["real_name"],
                "display_name": str(given.get("display_name", name)),
                "team": self.team_id,
            },
        )
        return result


def _version(
    text: str,
    blocks: list[JsonObject],
    attachments: list[JsonObject],
    *,
    metadata: JsonObject | None,
    edited_ts: str | None,
) -> MessageVersion:
    return MessageVersion(
        text=text,
        blocks=copy.deepcopy(blocks),
        attachments=copy.deepcopy(attachments),
        edited_ts=edited_ts,
        at=time.monotonic(),
        metadata=copy.deepcopy(metadata),
    )


def _mimetype(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
