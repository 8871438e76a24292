"""The engine's `Notifier`, implemented with the Slack Web API (slack_sdk WebClient).

Looks are decided by the pure builders in `handlers/blocks`; this module only decides where each
message goes (the rollout's channel and thread, or the alert channel) and posts it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from handlers.blocks import (
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
from rollout.store import SqliteStore

log = logging.getLogger(__name__)


class SlackNotifier:
    def __init__(self, *, client: WebClient, config: Config, store: SqliteStore) -> None:
        self._client = client
        self._config = config
        self._store = store  # the audit log says when each step's weight took effect

    def show_card(self, rollout: Rollout) -> str:
        message = status_card(
            rollout, cluster_name=self._config.cluster_name, next_step_at=rollout.next_step_at
        )
        if rollout.thread_ts is None:
            response = self._client.chat_postMessage(channel=rollout.channel, **message.payload())
            return str(response["ts"])
        self._client.chat_update(channel=rollout.channel, ts=rollout.thread_ts, **message.payload())
        return rollout.thread_ts

    def post_event(self, rollout: Rollout, event: Event) -> None:
        self._client.chat_postMessage(
            channel=rollout.channel,
            thread_ts=rollout.thread_ts,
            **event_message(rollout, event).payload(),
        )

    def post_snapshot(
        self,
        rollout: Rollout,
        analysis: Analysis,
        *,
        title: str,
        history: Sequence[Measurement],
    ) -> None:
        message = snapshot_message(rollout, analysis, title=title)
        self._client.chat_postMessage(
            channel=rollout.channel, thread_ts=rollout.thread_ts, **message.payload()
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

    def request_approval(self, rollout: Rollout) -> str:
        message = approval_request(rollout, approvers=self._config.slack.approvers)
        response = self._client.chat_postMessage(
            channel=rollout.channel, thread_ts=rollout.thread_ts, **message.payload()
        )
        return str(response["ts"])

    def close_approval(self, rollout: Rollout) -> None:
        if rollout.approval_ts is None:
            return
        self._client.chat_update(
            channel=rollout.channel, ts=rollout.approval_ts, **approval_closed(rollout).payload()
        )

    def alert(self, rollout: Rollout, alert: Alert) -> None:
        message = alert_message(
            rollout,
            alert,
            oncall=self._config.slack.oncall,
            permalink=self._permalink(rollout),
            cluster_name=self._config.cluster_name,
        )
        channel = self._config.slack.alert_channel or rollout.channel
        self._client.chat_postMessage(channel=channel, **message.payload())

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
