"""`SlackDriver`: plays Slack's side of `POST /slack/events` against a running bot.

Requests are form-encoded and signed exactly as Slack signs them (`v0=` HMAC-SHA256 over
`v0:{timestamp}:{body}`), so the bot's real signature check, parsing and `ack()` path run.
Response URLs in the payloads point at the emulator, which records what the bot sends there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

from emulators.slack import payloads
from emulators.slack.blocks import buttons, find_button
from emulators.slack.emulator import SlackEmulator
from emulators.slack.records import JsonObject, Message

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, kw_only=True)
class DriverResponse:
    status: int
    body: str
    json: Any
    elapsed: float
    response_url: str | None


class SlackDriver:
    def __init__(
        self,
        *,
        bot_url: str,
        signing_secret: str,
        emulator: SlackEmulator,
        team_id: str = "T0CANARY",
        api_app_id: str = "A0CANARY",
        verification_token: str = "canary-verification-token",
        timeout: float = 10.0,
    ) -> None:
        self._url = bot_url
        self._secret = signing_secret.encode()
        self._emulator = emulator
        self._timeout = timeout
        self._app = payloads.AppIdentity(
            team_id=team_id,
            team_domain=emulator.team_domain,
            api_app_id=api_app_id,
            verification_token=verification_token,
        )

    def command(
        self,
        text: str,
        *,
        user: str,
        channel: str,
        command: str = "/canary",
        retry_num: int | None = None,
        retry_reason: str | None = None,
        timestamp: int | None = None,
        sign: bool = True,
        trigger_id: str | None = None,
    ) -> DriverResponse:
        """A slash command as Slack sends it; its response URL answers in `channel` to `user`."""
        response_url = self._emulator.new_response_url(channel=channel, user=user)
        form = payloads.slash_command(
            self._app,
            command=command,
            text=text,
            user=user,
            user_name=self._emulator.user_name(user),
            channel=channel,
            channel_name=self._emulator.channel_name(channel),
            response_url=response_url,
            trigger=trigger_id or payloads.trigger_id(),
        )
        headers: dict[str, str] = {}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
        if retry_reason is not None:
            headers["X-Slack-Retry-Reason"] = retry_reason
        return self._send(
            urlencode(form).encode(),
            content_type=FORM,
            headers=headers,
            sign=sign,
            timestamp=timestamp,
            response_url=response_url,
        )

    def click(
        self, *, message: Message, action_id: str, user: str, value: str | None = None
    ) -> DriverResponse:
        """Click the button `action_id` (with `value`, if given) on the message as it is now."""
        current = self._emulator.as_slack_json(message)
        found = find_button(current.get("blocks", []), action_id, value=value)
        if found is None:
            raise AssertionError(
                f"no button action_id={action_id!r}"
                + (f" value={value!r}" if value is not None else "")
                + f" on message {message.ts} in {message.channel}; "
                f"buttons now: {buttons(current.get('blocks', []))}"
            )
        block_id, button = found
        response_url = self._emulator.new_response_url(
            channel=message.channel, user=user, message_ts=message.ts
        )
        payload = payloads.block_actions(
            self._app,
            user=self._user(user),
            channel=message.channel,
            channel_name=self._emulator.channel_name(message.channel),
            message=current,
            block_id=block_id,
            button=button,
            response_url=response_url,
            trigger=payloads.trigger_id(),
        )
        return self._send_payload(payload, response_url=response_url)

    def submit_view(self, *, view: JsonObject, user: str, values: JsonObject) -> DriverResponse:
        """Submit a modal (`view` as views.open returned it) with `values` as its state."""
        payload = payloads.view_submission(
            self._app,
            user=self._user(user),
            view=view,
            values=values,
            trigger=payloads.trigger_id(),
        )
        return self._send_payload(payload, response_url=None)

    def post_raw(
        self,
        body: bytes,
        *,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        sign: bool = True,
        timestamp: int | None = None,
    ) -> DriverResponse:
        """Any body at all, signed correctly unless told otherwise: for hostile-input tests."""
        return self._send(
            body,
            content_type=content_type,
            headers=dict(headers or {}),
            sign=sign,
            timestamp=timestamp,
            response_url=None,
        )

    def signature(self, body: bytes, *, timestamp: str) -> str:
        """Slack's `X-Slack-Signature`, computed over the raw bytes (hostile bodies need not be
        UTF-8, which slack_sdk's own helper assumes)."""
        base = b"v0:" + timestamp.encode() + b":" + body
        return "v0=" + hmac.new(self._secret, base, hashlib.sha256).hexdigest()

    def _user(self, user: str) -> JsonObject:
        return payloads.user_object(self._app, user=user, user_name=self._emulator.user_name(user))

    def _send_payload(self, payload: JsonObject, *, response_url: str | None) -> DriverResponse:
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self._send(
            body,
            content_type=FORM,
            headers={},
            sign=True,
            timestamp=None,
            response_url=response_url,
        )

    def _send(
        self,
        body: bytes,
        *,
        content_type: str,
        headers: dict[str, str],
        sign: bool,
        timestamp: int | None,
        response_url: str | None,
    ) -> DriverResponse:
        sent_at = str(int(time.time()) if timestamp is None else timestamp)
        all_headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": sent_at,
        }
        if sign:
            all_headers["X-Slack-Signature"] = self.signature(body, timestamp=sent_at)
        all_headers.update(headers)
        started = time.monotonic()
        reply = requests.post(self._url, data=body, headers=all_headers, timeout=self._timeout)
        elapsed = time.monotonic() - started
        try:
            parsed = reply.json() if reply.content else None
        except ValueError:
            parsed = None
        return DriverResponse(
            status=reply.status_code,
            body=reply.text,
            json=parsed,
            elapsed=elapsed,
            response_url=response_url,
        )
