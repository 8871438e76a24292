"""The bodies Slack POSTs to an app: slash commands and interaction payloads, field for field.

Kept apart from the HTTP driver so hostile-input tests can take a faithful payload, break one
field, and send it with `SlackDriver.post_raw`.
"""

from __future__ import annotations

import copy
import secrets
import time
from dataclasses import dataclass
from typing import Any

from emulators.slack.records import JsonObject


@dataclass(frozen=True, kw_only=True)
class AppIdentity:
    """Where requests come from: the workspace and the app, as Slack names them in payloads."""

    team_id: str
    team_domain: str
    api_app_id: str
    verification_token: str


def trigger_id() -> str:
    """Shaped like Slack's: `<digits>.<digits>.<hex>`."""
    return f"{int(time.time() * 1000)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"


def action_ts() -> str:
    return f"{time.time():.6f}"


def slash_command(
    app: AppIdentity,
    *,
    command: str,
    text: str,
    user: str,
    user_name: str,
    channel: str,
    channel_name: str,
    response_url: str,
    trigger: str,
) -> list[tuple[str, str]]:
    """Form fields in the order Slack sends them."""
    return [
        ("token", app.verification_token),
        ("team_id", app.team_id),
        ("team_domain", app.team_domain),
        ("channel_id", channel),
        ("channel_name", channel_name),
        ("user_id", user),
        ("user_name", user_name),
        ("command", command),
        ("text", text),
        ("api_app_id", app.api_app_id),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger),
    ]


def user_object(app: AppIdentity, *, user: str, user_name: str) -> JsonObject:
    return {"id": user, "username": user_name, "name": user_name, "team_id": app.team_id}


def block_actions(
    app: AppIdentity,
    *,
    user: JsonObject,
    channel_name: str,
    message: JsonObject,
    channel: str,
    block_id: str,
    button: JsonObject,
    response_url: str,
    trigger: str,
) -> JsonObject:
    """A button click on a (non-ephemeral) message; `message` is as the Web API renders it."""
    container: JsonObject = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel,
        "is_ephemeral": False,
    }
    if message.get("thread_ts"):
        container["thread_ts"] = message["thread_ts"]
    action: dict[str, Any] = {
        "action_id": button["action_id"],
        "block_id": block_id,
        "text": copy.deepcopy(button.get("text")),
        "type": "button",
        "action_ts": action_ts(),
    }
    for optional in ("value", "style"):
        if optional in button:
            action[optional] = button[optional]
    return {
        "type": "block_actions",
        "user": user,
        "api_app_id": app.api_app_id,
        "token": app.verification_token,
        "container": container,
        "trigger_id": trigger,
        "team": {"id": app.team_id, "domain": app.team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": channel_name},
        "message": copy.deepcopy(message),
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def view_submission(
    app: AppIdentity, *, user: JsonObject, view: JsonObject, values: JsonObject, trigger: str
) -> JsonObject:
    submitted = copy.deepcopy(view)
    submitted["state"] = {"values": copy.deepcopy(values)}
    return {
        "type": "view_submission",
        "team": {"id": app.team_id, "domain": app.team_domain},
        "user": user,
        "api_app_id": app.api_app_id,
        "token": app.verification_token,
        "trigger_id": trigger,
        "view": submitted,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
