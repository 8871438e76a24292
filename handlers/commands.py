"""The `/canary` slash command: parse, check, acknowledge, then act.

Everything before `ack()` reads only config, the SQLite store and cached group membership, so
Slack always gets its answer well inside 3 s; refusals go into that acknowledgement as
ephemeral replies. Cluster and Slack work (creating the canary, posting the card) happens after
the acknowledgement, and its failures come back through `respond` (the response_url).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import lru_cache
from typing import Any

from slack_bolt import Ack, App, BoltResponse, Respond

from handlers import parse
from handlers.auth import channel_allowed, describe_principals
from handlers.blocks import (
    Message,
    error_message,
    help_message,
    history_message,
    list_message,
    refusal_message,
)
from handlers.blocks.common import human_duration
from handlers.context import HandlerServices
from handlers.replies import StatusReplies, with_note
from rollout import commands
from rollout.config import Override
from rollout.engine import StartRefused, StartRequest
from rollout.machine import Refusal
from rollout.model import Rollout
from rollout.overrides import Roles, override_problem, used_at_start

log = logging.getLogger(__name__)
# Rendered status answers, kept per state of the rollout (handlers/replies.py).
_STATUS = StatusReplies()
# What `/canary` text means, kept per text: fifty people asking `/canary status checkout` send
# the same words. Bounded, as the words are whoever's typing.
_parse = lru_cache(maxsize=256)(parse.parse_command)
_JSON: dict[str, str | Sequence[str]] = {"content-type": "application/json;charset=utf-8"}


def register(app: App, *, services: HandlerServices) -> None:
    @app.command("/canary")
    def canary(ack: Ack, command: dict[str, Any], respond: Respond) -> BoltResponse | None:
        user, channel = command["user_id"], command["channel_id"]
        trigger = command.get("trigger_id")
        delivery = f"command:{trigger}" if trigger else None
        parsed = _parse(command.get("text") or "")
        if not isinstance(parsed, parse.UsageError):
            answer = _answer_read_only(parsed, services, user=user, channel=channel)
            if answer is not None:
                return answer  # Bolt sends a listener's returned response as the ack
        if services.already_handled(delivery):
            ack()
            return None
        if isinstance(parsed, parse.UsageError):
            _refuse(ack, services, user=user, action="command", why=parsed.message)
            return None
        problem = _permission_problem(parsed, services, user=user, channel=channel)
        if problem:
            why, then = problem
            verb = type(parsed).__name__.lower()
            _refuse(ack, services, user=user, action=verb, why=why, then=then)
            return None
        if isinstance(parsed, parse.Start):
            _start(
                parsed,
                services,
                ack=ack,
                respond=respond,
                user=user,
                channel=channel,
                delivery=delivery,
            )
        else:
            _change(parsed, services, ack=ack, respond=respond, user=user, delivery=delivery)
        return None


def _answer_read_only(
    parsed: parse.Command, services: HandlerServices, *, user: str, channel: str
) -> BoltResponse | None:
    """The acknowledgement of a command that changes nothing; None when `parsed` is not one.
    A retried delivery is simply answered again, without looking the delivery up (a second
    snapshot is kept off by `snapshot_min_interval`)."""
    # `/canary status <service>`: its active rollout, read once for the reply and the
    # snapshot (each read is a query and a decode, before the acknowledgement).
    active = _active(parsed, services)
    message = _read_only_message(parsed, services, active=active)
    if message is None:
        return None
    snapshot = _snapshot_wanted(parsed, services, channel=channel, active=active)
    note = None
    if isinstance(snapshot, timedelta):
        note = _snapshot_limited(snapshot, services, parsed)
    if isinstance(message, Rollout):
        # The status answer as JSON text, kept per state and note (handlers/replies.py).
        body = _STATUS.answer(message, cluster_name=services.engine.config.cluster_name, note=note)
    else:
        payload = message.payload()
        body = json.dumps(
            {"response_type": "ephemeral", **(with_note(payload, note) if note else payload)}
        )
    if isinstance(snapshot, str):
        service = snapshot
        services.later(lambda: _snapshot_on_demand(service, services, user=user))
    return BoltResponse(status=200, body=body, headers=_JSON)


def _active(parsed: parse.Command, services: HandlerServices) -> Rollout | None:
    if isinstance(parsed, parse.Status) and parsed.service is not None:
        return services.engine.store.active_for(parsed.service)
    return None


def _read_only_message(
    parsed: parse.Command, services: HandlerServices, *, active: Rollout | None
) -> Message | Rollout | None:
    """The answer, or for `/canary status <service>` the rollout whose status it is."""
    engine, now = services.engine, services.clock.now()
    match parsed:
        case parse.Help():
            return help_message()
        case parse.ListRollouts():
            return list_message(engine.store.active(), now=now)
        case parse.History(service=service):
            if service not in engine.config.services:
                return error_message(_unknown_service(service, services))
            return history_message(service, engine.store.history(service))
        case parse.Status(service=None):
            return list_message(engine.store.active(), now=now)
        case parse.Status(service=str(service)):
            rollout = active or next(iter(engine.store.history(service, limit=1)), None)
            if rollout is None:
                return error_message(
                    _unknown_service(service, services)
                    if service not in engine.config.services
                    else f"`{service}` has no rollouts yet. Start one with "
                    f"`/canary start {service} <tag>`."
                )
            return rollout
    return None


def _snapshot_wanted(
    parsed: parse.Command, services: HandlerServices, *, channel: str, active: Rollout | None
) -> str | timedelta | None:
    """For `/canary status <service>` in a release channel with a rollout running: the
    service when a snapshot goes ahead, or how long ago the latest one was, when it is too
    soon for another (`snapshot_min_interval`)."""
    engine = services.engine
    if not isinstance(parsed, parse.Status) or parsed.service is None:
        return None
    service = engine.config.services.get(parsed.service)
    # Snapshots go into the release thread: only asked for from a release channel.
    if service is None or not channel_allowed(channel, engine.config.slack.release_channels):
        return None
    if active is None or active.thread_ts is None:
        return None
    every = service.policy.snapshot_min_interval
    ago = services.snapshots.take(parsed.service, now=services.clock.now(), every=every)
    return parsed.service if ago is None else ago


def _snapshot_limited(ago: timedelta, services: HandlerServices, parsed: parse.Command) -> str:
    name = getattr(parsed, "service", "")
    every = services.engine.config.services[name].policy.snapshot_min_interval
    # In whole seconds, as shown: the same text for every request within a second.
    return _snapshot_note(int(ago.total_seconds()), int((every - ago).total_seconds()), every)


@lru_cache(maxsize=64)
def _snapshot_note(ago_s: int, left_s: int, every: timedelta) -> str:
    ago, left = timedelta(seconds=ago_s), timedelta(seconds=left_s)
    return (
        f":hourglass: No new snapshot: the latest is in the rollout's thread, taken "
        f"{human_duration(ago)} ago. `snapshot_min_interval` allows one per "
        f"{human_duration(every)} per service; ask again in {human_duration(left)}."
    )


def _snapshot_on_demand(service: str, services: HandlerServices, *, user: str) -> None:
    """After the ack: the active rollout's snapshot and chart go into its thread."""
    rollout = services.engine.store.active_for(service)
    if rollout is not None:
        services.engine.snapshot_now(rollout.id, by=user)


def _permission_problem(
    parsed: parse.Command, services: HandlerServices, *, user: str, channel: str
) -> tuple[str, str] | None:
    """Plain text (escaped when shown) and the bot's own mrkdwn that follows it."""
    slack = services.engine.config.slack
    if not channel_allowed(channel, slack.release_channels):
        channels = ", ".join(f"<#{c}>" for c in slack.release_channels)
        return "`/canary` changes rollouts only in the release channel: use it in ", channels
    verdict = services.directory.check(user, slack.deployers)
    if not verdict:
        then = f"{describe_principals(slack.deployers)}."
        if verdict.unconfirmed:
            then += " (" + services.directory.unconfirmed_text(verdict.unconfirmed) + ")"
        return "You are not a deployer, so you cannot start or change rollouts. Deployers: ", then
    return None


def _override_problem(
    service: str, used: tuple[Override, ...], services: HandlerServices, *, user: str, **kw: Any
) -> str | None:
    """`allow_overrides` and its floor, judged with the roles the person holds right now."""
    config = services.engine.config.services.get(service)
    if config is None or not used:
        return None  # an unknown service is refused by the engine's own checks
    slack = services.engine.config.slack
    approver = services.directory.check(user, slack.approvers)
    roles = Roles(
        deployer=services.directory.is_among(user, slack.deployers), approver=approver.allowed
    )
    why = override_problem(service, config, used=used, roles=roles, **kw)
    if why and approver.unconfirmed:
        # Plain text: the refusal is escaped whole, so the groups are named by ID.
        groups = ", ".join(approver.unconfirmed)
        why += (
            f" (Approver group {groups}: membership could not be confirmed in the last "
            f"{human_duration(services.directory.max_age)}; try again shortly.)"
        )
    return why


def _start(
    parsed: parse.Start,
    services: HandlerServices,
    *,
    ack: Ack,
    respond: Respond,
    user: str,
    channel: str,
    delivery: str | None,
) -> None:
    used = used_at_start(steps=parsed.steps, interval=parsed.interval, approval=parsed.approval)
    why = _override_problem(parsed.service, used, services, user=user, interval=parsed.interval)
    if why:
        _refuse(ack, services, user=user, action="start", why=why)
        return
    request = StartRequest(
        service=parsed.service,
        image=parsed.image,
        by=user,
        channel=channel,
        steps=parsed.steps,
        interval=parsed.interval,
        approval=parsed.approval,
        header=parsed.header,
        cookie=parsed.cookie,
    )
    try:
        rollout = services.engine.accept(request, delivery=delivery)
    except StartRefused as refusal:
        _refuse(ack, services, user=user, action="start", why=str(refusal))
        return
    if rollout is None:  # a retry of a start already recorded
        ack()
        return
    ack(response_type="ephemeral", text=f"Starting a canary of `{parsed.service}`…")

    def begin() -> None:
        try:
            services.engine.begin(rollout.id)
        except StartRefused as refusal:
            services.refused(user=user, action="start", why=str(refusal))
            message = error_message(str(refusal)).payload()
            respond(response_type="ephemeral", replace_original=True, **message)

    services.later(begin)


_COMMANDS: dict[type, Callable[[Any, str], commands.Command]] = {
    parse.Pause: lambda p, by: commands.Pause(by=by, reason=p.reason),
    parse.Resume: lambda p, by: commands.Resume(by=by),
    parse.Promote: lambda p, by: commands.Promote(by=by),
    parse.Rollback: lambda p, by: commands.Rollback(by=by, reason=p.reason),
}


def _change(
    parsed: parse.Command,
    services: HandlerServices,
    *,
    ack: Ack,
    respond: Respond,
    user: str,
    delivery: str | None,
) -> None:
    service: str = getattr(parsed, "service")  # noqa: B009 - every changing command names one
    verb = type(parsed).__name__.lower()
    if service not in services.engine.config.services:
        _refuse(ack, services, user=user, action=verb, why=_unknown_service(service, services))
        return
    if isinstance(parsed, parse.Promote):
        why = _override_problem(service, ("promote",), services, user=user)
        if why:
            _refuse(ack, services, user=user, action=verb, why=why)
            return
    rollout = services.engine.store.active_for(service)
    if rollout is None:
        why = (
            f"`{service}` has no active rollout to {verb}. Start one with "
            f"`/canary start {service} <tag>`."
        )
        _refuse(ack, services, user=user, action=verb, why=why)
        return
    outcome = services.engine.command(
        rollout.id, _COMMANDS[type(parsed)](parsed, user), action=verb, delivery=delivery
    )
    if outcome is None:  # a retry of a command already handled
        ack()
        return
    if isinstance(outcome, Refusal):
        ack(response_type="ephemeral", **refusal_message(outcome.message).payload())
        return
    ack()
    rollout_id = rollout.id
    services.later(lambda: services.engine.carry_on(rollout_id))


def _refuse(
    ack: Ack, services: HandlerServices, *, user: str, action: str, why: str, then: str = ""
) -> None:
    """`why` is plain text that may echo what the user typed: it is escaped when shown;
    `then` is the bot's own mrkdwn (mentions, channel links) added after the escaping."""
    services.refused(user=user, action=action, why=why + then)
    ack(response_type="ephemeral", **error_message(why, then=then).payload())


def _unknown_service(service: str, services: HandlerServices) -> str:
    known = ", ".join(f"`{name}`" for name in sorted(services.engine.config.services))
    return f"Unknown service `{service}`. Known services: {known or 'none configured'}."
