"""The engine's `Notifier`, implemented with the Slack Web API (slack_sdk WebClient).

Looks are decided by the pure builders in `handlers/blocks`; this module only decides where each
message goes (the rollout's channel and thread, or the alert channel) and posts it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any, ParamSpec, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from handlers.blocks import (
    Message,
    alert_message,
    approval_closed,
    approval_request,
    event_message,
    snapshot_message,
    status_card,
)
from handlers.charts import chart_title, rollout_chart, step_marks_from_audit
from rollout.analysis import Analysis, Measurement
from rollout.config import Config
from rollout.events import Alert, Event
from rollout.model import Rollout
from rollout.ports import RateLimited
from rollout.stores import Store

log = logging.getLogger(__name__)

# Slack message metadata marks what the bot posted, so a restarted bot can recognise it.
METADATA_EVENT = "canary_bot_message"
# How far back a restarted bot looks for a message it may have posted (pages of 200).
SEARCH_PAGES = 5


P = ParamSpec("P")
R = TypeVar("R")


def _rate_limits(method: Callable[P, R]) -> Callable[P, R]:
    """Slack's 429 becomes `RateLimited` with its Retry-After, for the sender to honour; the
    WebClient itself never sleeps on it (bot/runtime.py gives it no retry handlers)."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except SlackApiError as error:
            if error.response.status_code != 429:
                raise
            headers: Any = error.response.headers or {}
            wait = headers.get("Retry-After") or headers.get("retry-after") or 1
            raise RateLimited(float(wait)) from error

    return call


class SlackNotifier:
    def __init__(self, *, client: WebClient, config: Config, store: Store) -> None:
        self._client = client
        self._config = config
        self._store = store  # the audit log says when each step's weight took effect

    @_rate_limits
    def show_card(self, rollout: Rollout, *, key: str) -> str:
        message = status_card(
            rollout,
            cluster_name=self._config.cluster_name,
            next_step_at=rollout.next_step_at,
            verdict=rollout.verdict,
        )
        if rollout.thread_ts is None:
            return self._post(rollout.channel, message, rollout=rollout, key=key)
        self._client.chat_update(channel=rollout.channel, ts=rollout.thread_ts, **message.payload())
        return rollout.thread_ts

    @_rate_limits
    def post_event(self, rollout: Rollout, event: Event, *, key: str) -> str:
        return self._post_in_thread(rollout, event_message(rollout, event), key=key)

    @_rate_limits
    def post_snapshot(
        self,
        rollout: Rollout,
        analysis: Analysis,
        *,
        title: str,
        history: Sequence[Measurement],
        key: str,
    ) -> str:
        ts = self._post_in_thread(
            rollout, snapshot_message(rollout, analysis, title=title), key=key
        )
        png = rollout_chart(
            measurements=history,
            steps=step_marks_from_audit(self._store.audit_rows(rollout.id)),
            title=chart_title(rollout),
            now=analysis.at,
        )
        # files_upload_v2 is Slack's external upload flow (getUploadURLExternal, then
        # completeUploadExternal), which shares the PNG into the rollout's thread.
        self._client.files_upload_v2(
            channel=rollout.channel,
            thread_ts=rollout.thread_ts,
            content=png,
            filename=f"{rollout.id}-{analysis.at:%H%M%S}.png",
            title=f"{rollout.service}: {title}",
            alt_txt="Error rate and latency of canary and stable over the rollout",
        )
        return ts

    @_rate_limits
    def request_approval(self, rollout: Rollout, *, key: str) -> str:
        message = approval_request(rollout, approvers=self._config.slack.approvers)
        return self._post_in_thread(rollout, message, key=key)

    @_rate_limits
    def close_approval(self, rollout: Rollout) -> None:
        if rollout.approval_ts is None:
            return
        self._client.chat_update(
            channel=rollout.channel, ts=rollout.approval_ts, **approval_closed(rollout).payload()
        )

    @_rate_limits
    def alert(self, rollout: Rollout, alert: Alert, *, key: str) -> str:
        message = alert_message(
            rollout,
            alert,
            oncall=self._config.slack.oncall,
            permalink=self._permalink(rollout),
            cluster_name=self._config.cluster_name,
        )
        return self._post(self._alert_channel(rollout), message, rollout=rollout, key=key)

    @_rate_limits
    def find_message(self, rollout: Rollout, key: str) -> str | None:
        """Search where a message under `key` would be: the thread, then the channels' recent
        top-level messages (the card; alerts), following Slack's cursors a few pages deep."""
        searches: list[SlackResponse] = []
        if rollout.thread_ts is not None:
            searches.append(
                self._client.conversations_replies(
                    channel=rollout.channel,
                    ts=rollout.thread_ts,
                    include_all_metadata=True,
                    limit=200,
                )
            )
        for channel in dict.fromkeys((rollout.channel, self._alert_channel(rollout))):
            searches.append(
                self._client.conversations_history(
                    channel=channel, include_all_metadata=True, limit=200
                )
            )
        for first_page in searches:
            # Iterating a SlackResponse fetches the following pages by `next_cursor`.
            for page in islice(first_page, SEARCH_PAGES):
                for message in page.get("messages") or []:
                    payload = (message.get("metadata") or {}).get("event_payload") or {}
                    if payload.get("rollout") == rollout.id and payload.get("key") == key:
                        return str(message["ts"])
        return None

    def _post_in_thread(self, rollout: Rollout, message: Message, *, key: str) -> str:
        return self._post(
            rollout.channel, message, rollout=rollout, key=key, thread_ts=rollout.thread_ts
        )

    def _post(
        self,
        channel: str,
        message: Message,
        *,
        rollout: Rollout,
        key: str,
        thread_ts: str | None = None,
    ) -> str:
        response = self._client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            metadata={
                "event_type": METADATA_EVENT,
                "event_payload": {"rollout": rollout.id, "key": key},
            },
            **message.payload(),
        )
        return str(response["ts"])

    def _alert_channel(self, rollout: Rollout) -> str:
        return self._config.slack.alert_channel or rollout.channel

    def _permalink(self, rollout: Rollout) -> str | None:
        if rollout.thread_ts is None:
            return None
        try:
            response = self._client.chat_getPermalink(
                channel=rollout.channel, message_ts=rollout.thread_ts
            )
        except SlackApiError as error:
            log.warning("no permalink for %s: %s", rollout.id, error.response.get("error"))
            return None
        return str(response["permalink"])
