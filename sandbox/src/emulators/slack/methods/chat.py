"""`chat.*`: posting, updating, deleting and linking messages, with Slack's error names.

Message metadata is checked the way Slack checks it, because a bot that finds its own messages
again by their metadata must learn in tests, not in production, when Slack would drop it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emulators.slack.api_args import Args, SlackError
from emulators.slack.blocks import check_blocks, check_text, parse_attachments, parse_blocks
from emulators.slack.records import JsonObject, Message
from emulators.slack.state import Workspace

# Slack accepts letters, digits, underscores and hyphens in an event type. Any other character
# is not an error: the message is posted without its metadata and the answer carries a warning.
EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+")
METADATA_DROPPED = "invalid_metadata_schema"


@dataclass(frozen=True)
class _Metadata:
    """The `metadata` argument: None when absent or dropped, `{}` when sent empty (which
    removes the metadata on `chat.update`)."""

    value: JsonObject | None
    warning: str | None = None


def _content(args: Args) -> tuple[str, list[JsonObject], list[JsonObject] | None]:
    text = args.text("text") or args.text("markdown_text")
    blocks = parse_blocks(args)
    attachments = parse_attachments(args)
    if text is None and not blocks and not attachments:
        raise SlackError("no_text")
    check_text(text)
    if blocks:
        check_blocks(blocks)
    return text or "", blocks or [], attachments


def _metadata(args: Args) -> _Metadata:
    given = args.json_value("metadata", error="invalid_metadata_format")
    if given is None:
        return _Metadata(None)
    if not isinstance(given, dict):
        raise SlackError("invalid_metadata_format")
    if not given:
        return _Metadata({})
    event_type, payload = given.get("event_type"), given.get("event_payload")
    if not isinstance(event_type, str) or not isinstance(payload, dict):
        raise SlackError("invalid_metadata_format")
    if not EVENT_TYPE.fullmatch(event_type):
        return _Metadata(None, warning=METADATA_DROPPED)
    return _Metadata({"event_type": event_type, "event_payload": payload})


def _with_warning(body: JsonObject, warning: str | None) -> JsonObject:
    """Slack's shape for a call that succeeded with a warning."""
    if warning is not None:
        body.update(warning=warning, response_metadata={"warnings": [warning]})
    return body


def _existing(ws: Workspace, args: Args, *, ts_field: str) -> Message:
    channel = ws.check_channel(args.text("channel"))
    message = ws.find(channel, args.require(ts_field, error="message_not_found"))
    if message is None:
        raise SlackError("message_not_found")
    return message


def post_message(ws: Workspace, args: Args) -> JsonObject:
    channel = ws.check_channel(args.text("channel"))
    text, blocks, attachments = _content(args)
    metadata = _metadata(args)
    thread_ts = args.text("thread_ts")
    message = ws.post(
        channel=channel,
        text=text,
        blocks=blocks,
        attachments=attachments or [],
        thread_ts=thread_ts,
        reply_broadcast=bool(thread_ts) and args.flag("reply_broadcast"),
        metadata=metadata.value or None,
    )
    body = {"channel": channel, "ts": message.ts, "message": ws.render(message)}
    return _with_warning(body, metadata.warning)


def update(ws: Workspace, args: Args) -> JsonObject:
    message = _existing(ws, args, ts_field="ts")
    text, blocks, attachments = _content(args)
    metadata = _metadata(args)
    ws.update(message, text=text, blocks=blocks, attachments=attachments, metadata=metadata.value)
    body = {
        "channel": message.channel,
        "ts": message.ts,
        "text": message.text,
        "message": ws.render(message),
    }
    return _with_warning(body, metadata.warning)


def delete(ws: Workspace, args: Args) -> JsonObject:
    message = _existing(ws, args, ts_field="ts")
    ws.delete(message)
    return {"channel": message.channel, "ts": message.ts}


def post_ephemeral(ws: Workspace, args: Args) -> JsonObject:
    channel = ws.check_channel(args.text("channel"))
    user = args.require("user", error="user_not_found")
    text, blocks, _ = _content(args)
    thread_ts = args.text("thread_ts")
    record = ws.ephemeral(
        channel=channel,
        user=user,
        text=text,
        blocks=blocks,
        thread_ts=ws.root_of(channel, thread_ts) if thread_ts else None,
        source="chat.postEphemeral",
    )
    return {"message_ts": record.ts}


def get_permalink(ws: Workspace, args: Args) -> JsonObject:
    message = _existing(ws, args, ts_field="message_ts")
    return {"channel": message.channel, "permalink": ws.permalink(message)}
