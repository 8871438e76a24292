"""Button clicks (approve, reject, pause, resume, roll back) and the reject-reason modal.

Every click is acknowledged first. A click by someone not allowed, or on a rollout that has
moved on, gets an ephemeral explanation and changes nothing; the engine's per-rollout lock and
the state machine make double clicks and simultaneous approvers yield exactly one decision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from handlers.auth import Verdict, channel_allowed, describe_principals
from handlers.context import HandlerServices
from rollout import commands
from rollout.machine import Refusal

log = logging.getLogger(__name__)

REJECT_VIEW = "canary_reject_reason"


def register(app: App, *, services: HandlerServices) -> None:
    _register_approve(app, services=services)
    _register_reject(app, services=services)
    for action_id in ("pause", "resume", "rollback"):
        _register_card_button(app, action_id, services=services)


def _register_approve(app: App, *, services: HandlerServices) -> None:
    @app.action("approve")
    def approve(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        user, rollout_id = _who_and_what(body)
        if services.already_handled(_delivery(body)):
            ack()
            return
        if _out_of_place(services, respond, body, user=user, action="approve", ack=ack):
            return
        approvers = services.engine.config.slack.approvers
        verdict = services.directory.check(user, approvers)
        if not verdict:
            ack()
            why = _only(services, "approve", approvers, verdict)
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


def _register_reject(app: App, *, services: HandlerServices) -> None:
    @app.action("reject")
    def reject(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        user, rollout_id = _who_and_what(body)
        if _out_of_place(services, respond, body, user=user, action="reject"):
            return
        approvers = services.engine.config.slack.approvers
        rollout = services.engine.store.get(rollout_id)
        verdict = services.directory.check(user, approvers)
        if not (verdict or (rollout is not None and rollout.started_by == user)):
            why = _only(services, "reject", approvers, verdict)
            _refuse(services, respond, user=user, action="reject", why=why, rollout_id=rollout_id)
            return
        view = _reject_view(rollout_id, body)
        services.later(lambda: client.views_open(trigger_id=body["trigger_id"], view=view))

    @app.view(REJECT_VIEW)
    def reject_reason(
        ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        meta = _view_metadata(view)
        rollout_id, channel = str(meta.get("rollout_id") or ""), meta.get("channel")
        rollout = services.engine.store.get(rollout_id)
        approvers = services.engine.config.slack.approvers
        # The modal can be submitted by anyone who can forge one: check again here, and that
        # it was opened from this rollout's own approval message.
        if rollout is None or (channel, meta.get("message_ts")) != (
            rollout.channel,
            rollout.approval_ts,
        ):
            ack()
            why = "This dialog does not belong to an open approval request; nothing was changed."
            services.refused(user=user, action="reject", why=why, rollout_id=rollout_id or None)
            return
        verdict = services.directory.check(user, approvers)
        if not (verdict or rollout.started_by == user):
            ack()
            why = _only(services, "reject", approvers, verdict)
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


def _register_card_button(app: App, action_id: str, *, services: HandlerServices) -> None:
    @app.action(action_id)
    def card_button(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        user, rollout_id = _who_and_what(body)
        if services.already_handled(_delivery(body)):
            ack()
            return
        slack = services.engine.config.slack
        channel = body.get("channel", {}).get("id", "")
        if _out_of_place(services, respond, body, user=user, action=action_id, ack=ack):
            return
        verdict = services.directory.check(user, slack.deployers)
        if not channel_allowed(channel, slack.release_channels) or not verdict:
            ack()
            why = f"Only deployers may {action_id.replace('rollback', 'roll back')} rollouts."
            if verdict.unconfirmed:
                why += " (" + services.directory.unconfirmed_text(verdict.unconfirmed) + ")"
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


# Which stored message each button belongs to: the status card is the thread's root.
_HOME = {"approve": "approval", "reject": "approval"}


def _out_of_place(
    services: HandlerServices,
    respond: Respond,
    body: dict[str, Any],
    *,
    user: str,
    action: str,
    ack: Ack | None = None,
) -> bool:
    """Refuse a click that did not come from the message the bot posted this button in, for
    this rollout (a forged or replayed payload, an old message). True when refused."""
    _, rollout_id = _who_and_what(body)
    rollout = services.engine.store.get(rollout_id)
    channel = body.get("channel", {}).get("id")
    message_ts = body.get("container", {}).get("message_ts") or body.get("message", {}).get("ts")
    if rollout is not None:
        home = rollout.approval_ts if _HOME.get(action) == "approval" else rollout.thread_ts
        if home is not None and (channel, message_ts) == (rollout.channel, home):
            return False
        thread = body.get("container", {}).get("thread_ts")
        if (
            home is None
            and _HOME.get(action) == "approval"
            and rollout.thread_ts is not None
            and (channel, thread) == (rollout.channel, rollout.thread_ts)
            and message_ts != rollout.thread_ts
        ):
            # The request is posted but its `ts` not saved yet (a moment's window): a reply
            # in the rollout's own thread is the best the bot can know.
            return False
    if ack is not None:
        ack()
    why = (
        "This button is not on the message the bot posted it in for this rollout, so it does "
        "nothing. Use the buttons on the rollout's status card or approval request."
    )
    _refuse(services, respond, user=user, action=action, why=why, rollout_id=rollout_id)
    return True


def _only(services: HandlerServices, verb: str, approvers: Sequence[str], verdict: Verdict) -> str:
    why = f"Only approvers may {verb}: {describe_principals(approvers)}."
    if verdict.unconfirmed:
        why += " Your " + services.directory.unconfirmed_text(verdict.unconfirmed)
    return why


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
    message_ts = body.get("container", {}).get("message_ts") or body.get("message", {}).get("ts")
    meta = {"rollout_id": rollout_id, "channel": channel, "message_ts": message_ts}
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": json.dumps(meta),
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
