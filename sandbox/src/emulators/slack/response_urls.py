"""Response URLs: what Slack does with a POST to the URL it put in a command or click.

Besides recording the POST, the emulator applies it as Slack would, so tests see its effect on
the channel: `replace_original` / `delete_original` act on the clicked message, an `in_channel`
response becomes a message, anything else is an ephemeral message to the user who acted.
Slack accepts at most five POSTs per URL; the sixth is refused with `used_url`.
"""

from __future__ import annotations

import secrets
import time

from emulators.slack.api_args import SlackError
from emulators.slack.blocks import check_blocks
from emulators.slack.records import JsonObject, ResponseTarget, ResponseUrlPost
from emulators.slack.state import Workspace

MAX_USES = 5


def new_response_url(
    ws: Workspace, *, channel: str | None, user: str | None, message_ts: str | None
) -> str:
    key = secrets.token_hex(12)
    with ws.lock:
        ws.response_targets[key] = ResponseTarget(channel=channel, user=user, message_ts=message_ts)
    return f"{ws.base_url}/actions/{ws.team_id}/{key}"


def receive(ws: Workspace, *, key: str, url: str, body: JsonObject) -> tuple[int, str]:
    """Apply one POST; returns (HTTP status, body text) as Slack answers it."""
    with ws.lock:
        target = ws.response_targets.get(key)
        if target is None:
            return 404, "no_service"
        target.uses += 1
        if target.uses > MAX_USES:
            return 404, "used_url"
        ws.responses.append(ResponseUrlPost(url=url, body=body, at=time.monotonic()))
        try:
            _apply(ws, target, body)
        except SlackError as error:
            return 400, error.error
    return 200, "ok"


def _apply(ws: Workspace, target: ResponseTarget, body: JsonObject) -> None:
    text = str(body.get("text") or "")
    blocks = body.get("blocks") or []
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    if blocks:
        check_blocks(blocks)
    original = ws.find(target.channel, target.message_ts) if target.channel else None
    if body.get("delete_original") and original is not None:
        ws.delete(original)
        return
    if body.get("replace_original") and original is not None:
        ws.update(original, text=text, blocks=blocks, attachments=body.get("attachments"))
        return
    if not text and not blocks:
        raise SlackError("no_text")
    if target.channel is None:
        return
    thread_ts = body.get("thread_ts")
    if body.get("response_type") == "in_channel":
        ws.post(
            channel=target.channel,
            text=text,
            blocks=blocks,
            attachments=list(body.get("attachments") or []),
            thread_ts=str(thread_ts) if thread_ts else None,
        )
    elif target.user is not None:
        ws.ephemeral(
            channel=target.channel,
            user=target.user,
            text=text,
            blocks=blocks,
            thread_ts=str(thread_ts) if thread_ts else None,
            source="response_url",
        )
