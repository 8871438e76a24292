"""Starting a rollout: the checks, the draft record, and the canary image's resolution.

Split from the engine because none of it carries out anything: `Starts.accept` runs before
Slack's acknowledgement and touches only config and the database; `canary_image_for` is the pure
part of the first tick's start (the engine reads the stable workload and hands the result to
`machine.resolved`).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from rollout.config import Config, ServiceConfig
from rollout.images import image_problem, policy_problem, resolve_image
from rollout.model import Phase, Rollout, RolloutPlan, TrafficTarget
from rollout.ports import Clock
from rollout.stores import ActiveRolloutExists, Store
from rollout.traffic import registry

# Blue/green switches all traffic at once after approval: its only step is a preview.


@dataclass(frozen=True, kw_only=True)
class StartRequest:
    service: str
    image: str
    by: str
    channel: str
    steps: tuple[int, ...] | None = None
    interval: timedelta | None = None
    approval: bool | None = None
    header: str | None = None
    cookie: str | None = None


class StartRefused(Exception):
    """A start that cannot go ahead; the message says what is wrong and how to fix it."""


class Starts:
    def __init__(self, *, config: Config, store: Store, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()

    def check(self, request: StartRequest) -> str | None:
        """Fast checks, safe before Slack's acknowledgement: config and database only."""
        service = self._config.services.get(request.service)
        if service is None:
            known = ", ".join(sorted(self._config.services)) or "none configured"
            return f"Unknown service `{request.service}`. Known services: {known}."
        return (
            _routing_problem(request, service)
            or self._active_problem(request.service)
            or (_image_problem(request.image, service))
        )

    def accept(self, request: StartRequest, *, delivery: str | None = None) -> Rollout | None:
        """Record a start (config and database only: safe before Slack's acknowledgement).

        Once this returns, the start survives a crash: the first tick reads the stable
        workload, resolves the image and creates the canary, whoever runs it. A `delivery`
        already handled returns None (Slack's retry of the same command).
        """
        with self._lock:
            if delivery is not None and self._store.delivery_seen(delivery):
                return None
            problem = self.check(request)
            if problem:
                raise StartRefused(problem)
            service = self._config.services[request.service]
            rollout = draft(request, service, now=self._clock.now())
            try:
                self._store.create(rollout, actor=request.by, detail=f"image {request.image}")
            except ActiveRolloutExists as error:
                raise StartRefused(str(error)) from error
            if delivery is not None:
                self._store.first_delivery(delivery, at=self._clock.now())
            return rollout

    def _active_problem(self, name: str) -> str | None:
        active = self._store.active_for(name)
        if active is not None and active.phase == Phase.FAILED:
            return (
                f"The last rollback of `{name}` failed and the cluster may still send "
                f"traffic to {active.canary_image}. Fix it, then `/canary rollback "
                f"{name}` to finish the rollback before starting again."
            )
        if active is not None:
            return (
                f"`{name}` already has an active rollout "
                f"({active.canary_image}, {active.phase.value.replace('_', ' ')}). "
                f"Finish it or `/canary rollback {name}` first."
            )
        return None


def _routing_problem(request: StartRequest, service: ServiceConfig) -> str | None:
    capabilities = registry.strategy(service.strategy)
    if request.header and not capabilities.header_routing:
        by_header = registry.listed(registry.names_with(lambda s: s.header_routing))
        return (
            f"`--header` needs a strategy that routes by header ({by_header}); "
            f"`{request.service}` uses {service.strategy}. Start it without `--header`."
        )
    if request.cookie and not capabilities.cookie_routing:
        by_cookie = registry.listed(registry.names_with(lambda s: s.cookie_routing))
        return (
            f"`--cookie` needs a strategy that routes by cookie ({by_cookie}); "
            f"`{request.service}` uses {service.strategy}. Start it without `--cookie`."
        )
    return None


def _image_problem(image: str, service: ServiceConfig) -> str | None:
    policy = service.policy
    if image.removeprefix("@").startswith("sha256:"):
        # A bare digest pins the stable image's repository; registry rules follow it.
        return image_problem(
            f"registry.invalid/image@{image.removeprefix('@')}",
            production=service.is_production,
        )
    if "/" not in image and ":" not in image and "@" not in image:
        # A bare tag: the tag rules can be judged before the stable image is known.
        if policy.require_digest:
            return policy_problem(image, allowed_registries=(), require_digest=True)
        return image_problem(f"registry.invalid/image:{image}", production=service.is_production)
    return image_problem(image, production=service.is_production) or policy_problem(
        image,
        allowed_registries=policy.allowed_registries,
        require_digest=policy.require_digest,
    )


def canary_image_for(
    rollout: Rollout, service: ServiceConfig, *, stable_image: str
) -> tuple[str, str | None]:
    """The canary's image given the stable one, and what is wrong with it (None: nothing)."""
    canary_image = resolve_image(stable_image, rollout.canary_image)
    problem = image_problem(canary_image, production=service.is_production) or policy_problem(
        canary_image,
        allowed_registries=service.policy.allowed_registries,
        require_digest=service.policy.require_digest,
    )
    if problem is None and canary_image == stable_image:
        problem = f"`{rollout.service}` already runs {stable_image}; name another tag or image"
    return canary_image, problem


def draft(request: StartRequest, service: ServiceConfig, *, now: datetime) -> Rollout:
    """The new rollout record, its plan fixed from the policy and the request's overrides."""
    policy = service.policy
    steps = request.steps or policy.steps
    if registry.strategy(service.strategy).single_step:
        steps = (steps[-1],)
    routing = {"header": request.header, "cookie": request.cookie}
    plan = RolloutPlan(
        steps=steps,
        step_interval=request.interval or policy.step_interval,
        analysis_interval=policy.analysis_interval,
        approval=policy.approval if request.approval is None else request.approval,
        approvals_required=policy.approvals_required,
        self_approval=policy.self_approval,
        progress_deadline=policy.progress_deadline,
        approval_timeout=policy.approval_timeout,
        on_failure=policy.on_failure,
        on_no_data=policy.on_no_data,
        no_data_alert_after=policy.no_data_alert_after,
        repage_interval=policy.repage_interval,
        promotion_deadline=policy.promotion_deadline or policy.progress_deadline,
    )
    return Rollout(
        id=f"{request.service}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(2)}",
        service=request.service,
        namespace=service.namespace,
        deployment=service.deployment,
        container=service.container or "",
        strategy=service.strategy,
        # Resolved against the stable workload by the first tick (see machine.resolved).
        stable_image="",
        canary_image=request.image,
        plan=plan,
        target=TrafficTarget(
            service=service.service,
            ingress=service.ingress,
            virtual_service=service.virtual_service,
            destination_rule=service.destination_rule,
            http_route=service.http_route,
            route=service.route,
            argo_rollout=service.argo_rollout,
        ),
        channel=request.channel,
        started_by=request.by,
        created_at=now,
        updated_at=now,
        router_state={key: value for key, value in routing.items() if value},
    )
