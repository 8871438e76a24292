"""`chat.*`: posting, updating, deleting and linking messages, with Slack's error names."""

from __future__ import annotations

from emulators.slack.api_args import Args, SlackError
from emulators.slack.blocks import check_blocks, check_text, parse_attachments, parse_blocks
from emulators.slack.records import JsonObject, Message
from emulators.slack.state import Workspace


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


def _existing(ws: Workspace, args: Args, *, ts_field: str) -> Message:
    channel = ws.check_channel(args.text("channel"))
    message = ws.find(channel, args.require(ts_field, error="message_not_found"))
    if message is None:
        raise SlackError("message_not_found")
    return message


def post_message(ws: Workspace, args: Args) -> JsonObject:
    channel = ws.check_channel(args.text("channel"))
    text, blocks, attachments = _content(args)
    thread_ts = args.text("thread_ts")
    message = ws.post(
        channel=channel,
        text=text,
        blocks=blocks,
        attachments=attachments or [],
        thread_ts=thread_ts,
        reply_broadcast=bool(thread_ts) and args.flag("reply_broadcast"),
    )
    return {"channel": channel, "ts": message.ts, "message": ws.render(message)}


def update(ws: Workspace, args: Args) -> JsonObject:
    message = _existing(ws, args, ts_field="ts")
    text, blocks, attachments = _content(args)
    ws.update(message, text=text, blocks=blocks, attachments=attachments)
    return {
        "channel": message.channel,
        "ts": message.ts,
        "text": message.text,
        "message": ws.render(message),
    }


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
