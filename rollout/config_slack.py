"""The `slack:` section of the config (DESIGN.md "Config file"): the channels and people the bot
answers to, and `slack.rate_limits`, what the outbox sender allows itself per Slack method.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from rollout.config_base import (
    CHANNEL,
    USER_OR_GROUP,
    Duration,
    Frozen,
    SlackIds,
    check_ids,
)


class SlackRateLimits(Frozen):
    """What the outbox sender allows itself per Slack method (rollout/budget.py), kept under
    Slack's published tiers so that a busy bot is paced by us, in priority order, rather than
    refused by Slack. Slack's own 429s are honoured all the same."""

    # chat.update is Tier 3 (about 50 a minute, per workspace): card refreshes, approvals.
    chat_update_per_minute: float = Field(default=50.0, gt=0, le=10_000)
    # chat.postMessage: about one message a second per channel.
    post_message_per_channel_per_second: float = Field(default=1.0, gt=0, le=100)
    # Chart uploads: files.getUploadURLExternal and files.completeUploadExternal are Tier 4
    # (about 100 a minute); each chart is one of each.
    file_uploads_per_minute: float = Field(default=100.0, gt=0, le=10_000)


class SlackConfig(Frozen):
    release_channels: tuple[str, ...] = ()
    alert_channel: str | None = None
    oncall: str | None = None
    deployers: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    # A user-group membership read longer ago than this grants nothing (the bot refreshes
    # memberships in the background, never while Slack waits for an acknowledgement).
    group_cache_max_age: Duration = timedelta(minutes=10)
    rate_limits: SlackRateLimits = Field(default_factory=SlackRateLimits)

    @field_validator("group_cache_max_age")
    @classmethod
    def _cache_age(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 10:
            raise ValueError("must be at least 10s (memberships are refreshed in the background)")
        return value

    @field_validator("release_channels", "alert_channel")
    @classmethod
    def _channels(cls, value: SlackIds) -> SlackIds:
        return check_ids(value, CHANNEL, "channel")

    @field_validator("deployers", "approvers", "oncall")
    @classmethod
    def _people(cls, value: SlackIds) -> SlackIds:
        return check_ids(value, USER_OR_GROUP, "user (U...) or user-group (S...)")
