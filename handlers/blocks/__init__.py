"""Every message canary-bot sends, as pure functions from rollout state to Block Kit.

Builders use slack_sdk's block models, so a message that breaks one of Slack's limits fails
in a test (`Message.payload()` validates) instead of in the channel. Nothing here talks to
Slack: `bot/` posts what these functions return.
"""

from handlers.blocks.alerts import alert_message
from handlers.blocks.approval import approval_closed, approval_request
from handlers.blocks.card import status_card, status_message
from handlers.blocks.common import Message, mention, progress_bar, slack_date
from handlers.blocks.lists import (
    error_message,
    help_message,
    history_message,
    list_message,
    refusal_message,
)
from handlers.blocks.snapshot import snapshot_message
from handlers.blocks.thread import event_message

__all__ = [
    "Message",
    "alert_message",
    "approval_closed",
    "approval_request",
    "error_message",
    "event_message",
    "help_message",
    "history_message",
    "list_message",
    "mention",
    "progress_bar",
    "refusal_message",
    "slack_date",
    "snapshot_message",
    "status_card",
    "status_message",
]
