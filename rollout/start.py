"""Starting a rollout: the checks, the draft record, and the canary image's resolution.

Split from the engine because none of it carries out anything: `Starts.accept` runs before
Slack's acknowledgement and touches only config and the database; `canary_image_for` is the pure
part of the first tick's start (the engine reads the stable workload and hands the result to
`machine.resolved`).
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from rollout.config import Config, ServiceConfig
from rollout.gates.config import JobGate
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
    # The digest the pipeline built (API `expected_digest`): the start is refused unless the
    # registry resolves the image to exactly this.
    expected_digest: str | None = None
    # From the pipeline API: the token's name and the pipeline's context (see Rollout.pipeline).
    pipeline: dict[str, str] | None = None


class StartRefused(Exception):
    """A start that cannot go ahead; the message says what is wrong and how to fix it."""


class KeyReused(StartRefused):
    """An idempotency key sent again with a different request."""


class Starts:
    def __init__(self, *, config: Config, store: Store, clock: Clock, pinning: bool = True) -> None:
        # Without a registry client (some tests) no digest is resolved at start.
        self._pinning = pinning
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
            or _digest_problem(request.expected_digest)
            or _gate_steps_problem(request, service)
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
            try:
                rollout = self._record(request)
            except ActiveRolloutExists as error:
                raise StartRefused(str(error)) from error
            if delivery is not None:
                self._store.first_delivery(delivery, at=self._clock.now())
            return rollout

    def accept_once(
        self, request: StartRequest, *, key: str, fingerprint: str
    ) -> tuple[Rollout, bool]:
        """`accept` for a request that may be retried (the pipeline API's `Idempotency-Key`):
        the first request with `key` records a rollout; the same request again returns that
        rollout (whatever its phase now) and False (not new); the key with another request
        is refused."""
        with self._lock:
            replayed = self._replay(key, fingerprint)
            if replayed is not None:
                return replayed, False
            try:
                rollout = self._record(request, idempotency=(key, fingerprint))
            except ActiveRolloutExists as error:
                # Another replica may have taken the same retried request a moment ago: the
                # lock above is one process's, the key's primary key is every replica's.
                replayed = self._replay(key, fingerprint)
                if replayed is not None:
                    return replayed, False
                raise StartRefused(str(error)) from error
            return rollout, True

    def _record(
        self, request: StartRequest, *, idempotency: tuple[str, str] | None = None
    ) -> Rollout:
        """Check the request, draft its rollout and store it (the caller holds the lock).
        Raises StartRefused for a failed check, and lets ActiveRolloutExists through: each
        caller answers a rollout that got in first in its own way."""
        problem = self.check(request)
        if problem:
            raise StartRefused(problem)
        service = self._config.services[request.service]
        rollout = draft(request, service, now=self._clock.now(), pinning=self._pinning)
        self._store.create(
            rollout, actor=request.by, detail=f"image {request.image}", idempotency=idempotency
        )
        return rollout

    def _replay(self, key: str, fingerprint: str) -> Rollout | None:
        """The rollout a request with this key started before, or None if the key is new."""
        seen = self._store.idempotent(key)
        if seen is None:
            return None
        first_fingerprint, rollout_id = seen
        rollout = self._store.get(rollout_id)
        if first_fingerprint != fingerprint or rollout is None:
            raise KeyReused(
                f"This Idempotency-Key was first used for another request (rollout "
                f"{rollout_id}); send a new key for a new request, or repeat the first "
                "request exactly."
            )
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


def _gate_steps_problem(request: StartRequest, service: ServiceConfig) -> str | None:
    """`--steps` may not drop the step a job gate guards: the gate would silently not run."""
    if request.steps is None or registry.strategy(service.strategy).single_step:
        return None
    wanted = [g.spec.at_step for g in service.policy.preflight if isinstance(g.spec, JobGate)]
    if not wanted or max(wanted) <= len(request.steps):
        return None
    return (
        f"`{request.service}` runs a job gate before step {max(wanted)}, but `--steps` "
        f"gives {len(request.steps)}; give at least {max(wanted)} steps, or leave `--steps` out."
    )


def _digest_problem(expected: str | None) -> str | None:
    if expected is None or re.fullmatch(r"sha256:[a-f0-9]{64}", expected):
        return None
    return (
        f"expected_digest `{expected[:80]}` is not a digest: write `sha256:` and the 64 "
        "lower-case hex digits your build printed (e.g. `docker buildx build --metadata-file`)."
    )


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


def draft(
    request: StartRequest, service: ServiceConfig, *, now: datetime, pinning: bool = True
) -> Rollout:
    """The new rollout record, its plan fixed from the policy and the request's overrides."""
    policy = service.policy
    steps = request.steps or policy.steps
    if registry.strategy(service.strategy).single_step:
        steps = (steps[-1],)
    # Pre-flight order: the digest first (every later gate sees the pinned image), then the
    # configured gates; job gates wait for their step. An expected digest needs pinning.
    pin = pinning and (policy.pin_digest or request.expected_digest is not None)
    preflight: tuple[str, ...] = ("pin_digest",) if pin else ()
    preflight += tuple(
        f"preflight:{index}" for index, gate in enumerate(policy.preflight) if gate.kind != "job"
    )
    # Job gates guard the step they name; a single-step strategy's one step gets them all.
    gate_steps = sorted(
        {min(g.spec.at_step, len(steps)) for g in policy.preflight if isinstance(g.spec, JobGate)}
    )
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
        preflight=preflight,
        gate_steps=tuple(gate_steps),
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
        expected_digest=request.expected_digest,
        pipeline=dict(request.pipeline or {}),
    )
