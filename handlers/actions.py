"""Button clicks (approve, reject, pause, resume, roll back) and the reject-reason modal.

Every click is acknowledged first. A click by someone not allowed, or on a rollout that has
moved on, gets an ephemeral explanation and changes nothing; the engine's per-rollout lock and
the state machine make double clicks and simultaneous approvers yield exactly one decision.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from handlers.auth import channel_allowed, describe_principals
from handlers.context import HandlerServices
from rollout import commands
from rollout.machine import Refusal

log = logging.getLogger(__name__)

REJECT_VIEW = "canary_reject_reason"


def register(app: App, *, services: HandlerServices) -> None:
    @app.action("approve")
    def approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        user, rollout_id = _who_and_what(body)
        if services.already_handled(_delivery(body)):
            ack()
            return
        approvers = services.engine.config.slack.approvers
        if not services.directory.is_among(user, approvers):
            ack()
            why = f"Only approvers may approve: {describe_principals(approvers)}."
            _refuse(services, respond, user=user, action="approve", why=why, rollout_id=rollout_id)
            return
        _apply(
            services,
            ack,
            respond,
            rollout_id,
            commands.Approve(by=user),
            action="approve",
            delivery=_delivery(body),
        )

    @app.action("reject")
    def reject(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        user, rollout_id = _who_and_what(body)
        approvers = services.engine.config.slack.approvers
        rollout = services.engine.store.get(rollout_id)
        allowed = services.directory.is_among(user, approvers) or (
            rollout is not None and rollout.started_by == user
        )
        if not allowed:
            why = f"Only approvers may reject: {describe_principals(approvers)}."
            _refuse(services, respond, user=user, action="reject", why=why, rollout_id=rollout_id)
            return
        client.views_open(trigger_id=body["trigger_id"], view=_reject_view(rollout_id, body))

    @app.view(REJECT_VIEW)
    def reject_reason(
        ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        meta = _view_metadata(view)
        rollout_id, channel = str(meta.get("rollout_id") or ""), meta.get("channel")
        rollout = services.engine.store.get(rollout_id)
        approvers = services.engine.config.slack.approvers
        # The modal can be submitted by anyone who can forge one: check again here.
        if rollout is None or not (
            services.directory.is_among(user, approvers) or rollout.started_by == user
        ):
            ack()
            why = f"Only approvers may reject: {describe_principals(approvers)}."
            services.refused(user=user, action="reject", why=why, rollout_id=rollout_id or None)
            return
        reason = view.get("state", {}).get("values", {}).get("reason", {}).get("text", {})
        outcome = services.engine.command(
            rollout_id,
            commands.Reject(by=user, reason=str(reason.get("value") or "") or None),
            action="reject",
        )
        ack()
        if isinstance(outcome, Refusal):
            if isinstance(channel, str):
                message = outcome.message
                services.later(
                    lambda: client.chat_postEphemeral(channel=channel, user=user, text=message)
                )
            return
        services.later(lambda: services.engine.carry_on(rollout_id))

    for action_id in ("pause", "resume", "rollback"):
        _register_card_button(app, action_id, services=services)


def _register_card_button(app: App, action_id: str, *, services: HandlerServices) -> None:
    @app.action(action_id)
    def card_button(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        user, rollout_id = _who_and_what(body)
        if services.already_handled(_delivery(body)):
            ack()
            return
        slack = services.engine.config.slack
        channel = body.get("channel", {}).get("id", "")
        if not channel_allowed(channel, slack.release_channels) or not services.directory.is_among(
            user, slack.deployers
        ):
            ack()
            why = f"Only deployers may {action_id.replace('rollback', 'roll back')} rollouts."
            _refuse(services, respond, user=user, action=action_id, why=why, rollout_id=rollout_id)
            return
        command: commands.Command
        if action_id == "pause":
            command = commands.Pause(by=user, reason="paused from the status card")
        elif action_id == "resume":
            command = commands.Resume(by=user)
        else:
            command = commands.Rollback(by=user, reason="from the status card")
        _apply(
            services,
            ack,
            respond,
            rollout_id,
            command,
            action=action_id,
            delivery=_delivery(body),
        )


def _apply(
    services: HandlerServices,
    ack: Ack,
    respond: Respond,
    rollout_id: str,
    command: commands.Command,
    *,
    action: str,
    delivery: str,
) -> None:
    """Record the decision, then acknowledge: an acknowledged click is never lost."""
    outcome = services.engine.command(rollout_id, command, action=action, delivery=delivery)
    ack()
    if outcome is None:  # a retry of a click already handled
        return
    if isinstance(outcome, Refusal):
        message = outcome.message
        services.later(
            lambda: respond(response_type="ephemeral", replace_original=False, text=message)
        )
        return
    services.later(lambda: services.engine.carry_on(rollout_id))


def _refuse(
    services: HandlerServices,
    respond: Respond,
    *,
    user: str,
    action: str,
    why: str,
    rollout_id: str,
) -> None:
    services.refused(user=user, action=action, why=why, rollout_id=rollout_id)
    services.later(lambda: respond(response_type="ephemeral", replace_original=False, text=why))


def _who_and_what(body: dict[str, Any]) -> tuple[str, str]:
    action = body["actions"][0]
    return body["user"]["id"], str(action.get("value") or "")


def _view_metadata(view: dict[str, Any]) -> dict[str, Any]:
    """The modal's private_metadata, which we wrote, but which arrives from outside."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _delivery(body: dict[str, Any]) -> str:
    """One click, however often Slack delivers it: same action, same action_ts, same user."""
    action = body["actions"][0]
    return f"click:{action.get('action_id')}:{action.get('action_ts')}:{body['user']['id']}"


def _reject_view(rollout_id: str, body: dict[str, Any]) -> dict[str, Any]:
    channel = body.get("channel", {}).get("id")
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": json.dumps({"rollout_id": rollout_id, "channel": channel}),
        "title": {"type": "plain_text", "text": "Reject rollout"},
        "submit": {"type": "plain_text", "text": "Reject and roll back"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why? (kept in the audit log)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "text",
                    "multiline": True,
                    "max_length": 500,
                },
            }
        ],
    }
