"""The pipeline API's routes: every check a `/canary start` gets, with the token in place of
the Slack user (DESIGN.md "Pipeline API").

A token stands for a deployer who is not an approver: it may use the overrides (`steps`,
`interval`) that the service's `allow_overrides` grants deployers, never `no_approval` or
`promote`, and approval always happens in Slack. Nothing is changed by a refused request but
the audit log, which records the refusal under the token's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from flask import Response, g, jsonify
from flask_openapi3.models.tag import Tag
from flask_openapi3.openapi import OpenAPI
from pydantic import BaseModel

from handlers.api.errors import ApiError
from handlers.api.models import (
    ErrorOut,
    ListQuery,
    RollbackBody,
    RolloutList,
    RolloutOut,
    RolloutPath,
    StartBody,
    StartHeaders,
)
from handlers.api.services import ApiServices
from rollout import commands
from rollout.config import ApiToken
from rollout.durations import parse_duration
from rollout.engine import KeyReused, StartRefused, StartRequest
from rollout.machine import Refusal
from rollout.model import Rollout
from rollout.overrides import Roles, override_problem, used_at_start

log = logging.getLogger(__name__)

ROLLOUTS = Tag(name="rollouts")
_ERRORS: dict[str | int, type[BaseModel] | dict[Any, Any] | None] = {
    code: ErrorOut for code in (400, 404, 409, 422)
}
_PHASE_DEPTH = 500  # rollouts per service searched for a phase
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]


def register(api: OpenAPI, services: ApiServices) -> None:
    engine = services.engine

    @api.post(
        "/api/v1/rollouts",
        tags=[ROLLOUTS],
        responses={201: RolloutOut, **_ERRORS},
        security=_SECURITY,
        summary="Start a rollout (`Idempotency-Key` makes a retry start it once)",
    )
    def start_rollout(
        body: StartBody, header: StartHeaders
    ) -> tuple[Response, int, dict[str, str]]:
        token = _allowed("start", body.service, services)
        start = _start_request(body, token, services)
        key = header.idempotency_key
        try:
            if key is None:
                rollout, new = engine.accept(start), True
            else:  # keys are per token: two pipelines never share one by chance
                rollout, new = engine.accept_once(
                    start, key=f"{token.name}\n{key}", fingerprint=_fingerprint(body)
                )
        except KeyReused as error:
            raise _refused(
                services, token, verb="start", status=422, code="idempotency_key_reused", why=error
            ) from None
        except StartRefused as error:
            active = engine.store.active_for(body.service)
            if active is None:
                raise _refused(
                    services, token, verb="start", status=422, code="start_refused", why=error
                ) from None
            why = f"{error} Over the API: POST /api/v1/rollouts/{active.id}/rollback."
            raise _refused(
                services, token, verb="start", status=409, code="active_rollout", why=why
            ) from None
        assert rollout is not None  # no Slack delivery key: never "already handled"
        if new:
            services.later(lambda: _begin(services, rollout.id))
        headers = {"Location": f"/api/v1/rollouts/{rollout.id}"}
        if not new:
            headers["Idempotent-Replayed"] = "true"
        return _json(rollout), 201, headers

    @api.get(
        "/api/v1/rollouts/<rollout_id>",
        tags=[ROLLOUTS],
        responses={200: RolloutOut, **_ERRORS},
        security=_SECURITY,
        summary="One rollout: phase, step, weight, verdict, approvals, breach",
    )
    def get_rollout(path: RolloutPath) -> Response:
        rollout = _find(path.rollout_id, services)
        _allowed("read", rollout.service, services)
        return _json(rollout)

    @api.get(
        "/api/v1/rollouts",
        tags=[ROLLOUTS],
        responses={200: RolloutList, **_ERRORS},
        security=_SECURITY,
        summary="The latest rollouts (of `service`, or of every service the token may read)",
    )
    def list_rollouts(query: ListQuery) -> Response:
        token: ApiToken = g.token
        if query.service is not None:
            _allowed("read", query.service, services)
            names = [query.service]
        else:
            names = [name for name in engine.config.services if token.may("read", name)]
        # A phase filter looks further back than `limit`, so that it finds `limit` matches.
        depth = query.limit if query.phase is None else _PHASE_DEPTH
        found = [r for name in names for r in engine.store.history(name, limit=depth)]
        if query.phase is not None:
            found = [r for r in found if r.phase == query.phase]
        found.sort(key=lambda r: r.created_at, reverse=True)
        listed = RolloutList(rollouts=[RolloutOut.of(r) for r in found[: query.limit]])
        return jsonify(listed.model_dump(mode="json"))

    @api.post(
        "/api/v1/rollouts/<rollout_id>/rollback",
        tags=[ROLLOUTS],
        responses={200: RolloutOut, **_ERRORS},
        security=_SECURITY,
        summary="Roll a rollout back: traffic goes back to stable",
    )
    def rollback_rollout(path: RolloutPath, body: RollbackBody) -> Response:
        rollout = _find(path.rollout_id, services)
        token = _allowed("rollback", rollout.service, services)
        command = commands.Rollback(by=token.name, reason=body.reason)
        outcome = engine.command(rollout.id, command, action="rollback")
        if isinstance(outcome, Refusal):
            raise ApiError(409, "not_rollbackable", outcome.message)
        assert outcome is not None
        rollout_id = rollout.id
        services.later(lambda: engine.carry_on(rollout_id))
        return _json(outcome)


def _json(rollout: Rollout) -> Response:
    return jsonify(RolloutOut.of(rollout).model_dump(mode="json"))


def _allowed(verb: str, service: str, services: ApiServices) -> ApiToken:
    """The request's token, if its scope covers `verb` on `service`; else a 403."""
    token: ApiToken = g.token
    if not token.may(verb, service):
        scope = ", ".join(token.services)
        why = (
            f"Token {token.name} may {'/'.join(token.verbs)} on {scope}, not {verb} on "
            f"{service}: use a token scoped to {service} (api.tokens[].services, .verbs)."
        )
        raise _refused(services, token, verb=verb, status=403, code="forbidden", why=why)
    return token


def _find(rollout_id: str, services: ApiServices) -> Rollout:
    rollout = services.engine.store.get(rollout_id)
    if rollout is None:
        raise ApiError(
            404,
            "not_found",
            f"No rollout {rollout_id}: use the id a start returned, or list them with "
            "GET /api/v1/rollouts?service=NAME.",
        )
    return rollout


def _start_request(body: StartBody, token: ApiToken, services: ApiServices) -> StartRequest:
    """The slash command's request, with the checks only the API layer can make first."""
    engine = services.engine
    config = engine.config.services.get(body.service)
    if config is None:
        known = ", ".join(sorted(engine.config.services)) or "none configured"
        raise _refused(
            services,
            token,
            verb="start",
            status=422,
            code="unknown_service",
            why=f"Unknown service {body.service}. Known services: {known}.",
        )
    interval = parse_duration(body.interval) if body.interval else None
    used = used_at_start(steps=body.steps, interval=interval, approval=None)
    problem = override_problem(
        body.service,
        config,
        used=used,
        roles=Roles(deployer=True, approver=False),
        interval=interval,
    )
    if problem:
        why = f"Token {token.name} acts as a deployer. {problem}"
        raise _refused(
            services, token, verb="start", status=403, code="override_not_allowed", why=why
        )
    channel = engine.config.api_channel
    assert channel is not None  # the config refuses api.tokens without a channel
    context = body.context.model_dump(exclude_none=True)
    return StartRequest(
        service=body.service,
        image=body.image,
        by=token.name,
        channel=channel,
        steps=tuple(body.steps) if body.steps else None,
        interval=interval,
        expected_digest=body.expected_digest,
        pipeline={"name": token.name, **context},
    )


def _fingerprint(body: StartBody) -> str:
    """The request as the API understood it: a retry with the same meaning matches."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _refused(
    services: ApiServices, token: ApiToken, *, verb: str, status: int, code: str, why: Any
) -> ApiError:
    """Audit a refusal under the token's name (as a refused command is), and raise it."""
    services.engine.store.audit(
        at=services.clock.now(), actor=token.name, action=f"refused: {verb}", detail=str(why)
    )
    return ApiError(status, code, str(why))


def _begin(services: ApiServices, rollout_id: str) -> None:
    """The cluster part of the start, after the answer (as after a slash command's ack)."""
    try:
        services.engine.begin(rollout_id)
    except StartRefused as refusal:
        log.warning("api start of %s stopped: %s", rollout_id, refusal)
