"""The engine carries out the state machine's decisions against the cluster, Slack and the store.

It is the only place where the pure machine meets the world. Each change of state is saved
before the actions it implies are carried out, and again after each action that changes the
record, so a crash at any moment leaves a state that the next tick can continue from. Cluster
actions are level-triggered (the machine asks for them again on every tick until they hold) and
messages are posted at most once per key, which is what makes a restart safe.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from rollout.analysis import Analysis, Analyzer
from rollout.commands import Command
from rollout.config import Config, ServiceConfig
from rollout.events import Alert, StepReached
from rollout.images import image_problem, policy_problem, resolve_image
from rollout.machine import (
    Announce,
    CloseApproval,
    Decision,
    Page,
    PromoteStable,
    Refusal,
    RequestApproval,
    RollBackCanary,
    SetWeight,
    advance,
    apply_command,
)
from rollout.messenger import Messenger
from rollout.model import Phase, Rollout, RolloutPlan, TrafficTarget
from rollout.observer import Observer
from rollout.ports import Clock, Notifier
from rollout.store import ActiveRolloutExists, SqliteStore
from rollout.traffic import registry
from rollout.traffic.base import TrafficRouter
from rollout.wording import quote, unquote

log = logging.getLogger(__name__)
_Sender = Callable[[], object]

BOT = "canary-bot"
# A rollback that keeps failing this many ticks in a row is declared failed and pages on-call.
MAX_ROLLBACK_ATTEMPTS = 5


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


class Engine:
    def __init__(
        self,
        *,
        config: Config,
        store: SqliteStore,
        routers: Mapping[str, TrafficRouter],
        notifier: Notifier,
        clock: Clock,
        analyzer: Analyzer | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._routers = routers
        self._notifier = notifier
        self._clock = clock
        self._analyzer = analyzer
        self._messages = Messenger(store=store, notifier=notifier, clock=clock)
        self._observer = Observer(config=config, store=store, routers=routers, analyzer=analyzer)
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._start_lock = threading.Lock()
        self._last_tick: dict[str, datetime] = {}

    # ----------------------------------------------------------------- starting

    def check_start(self, request: StartRequest) -> str | None:
        """Fast checks, safe before Slack's acknowledgement: config and database only."""
        service = self.config.services.get(request.service)
        if service is None:
            known = ", ".join(sorted(self.config.services)) or "none configured"
            return f"Unknown service `{request.service}`. Known services: {known}."
        if request.header and not registry.strategy(service.strategy).header_routing:
            by_header = registry.listed(registry.names_with(lambda s: s.header_routing))
            return (
                f"`--header` needs a strategy that routes by header ({by_header}); "
                f"`{request.service}` uses {service.strategy}. Start it without `--header`."
            )
        if request.cookie and not registry.strategy(service.strategy).cookie_routing:
            by_cookie = registry.listed(registry.names_with(lambda s: s.cookie_routing))
            return (
                f"`--cookie` needs a strategy that routes by cookie ({by_cookie}); "
                f"`{request.service}` uses "
                f"{service.strategy}. Start it without `--cookie`."
            )
        active = self.store.active_for(request.service)
        if active is not None and active.phase == Phase.FAILED:
            return (
                f"The last rollback of `{request.service}` failed and the cluster may still send "
                f"traffic to {active.canary_image}. Fix it, then `/canary rollback "
                f"{request.service}` to finish the rollback before starting again."
            )
        if active is not None:
            return (
                f"`{request.service}` already has an active rollout "
                f"({active.canary_image}, {active.phase.value.replace('_', ' ')}). "
                f"Finish it or `/canary rollback {request.service}` first."
            )
        policy = service.policy
        if request.image.removeprefix("@").startswith("sha256:"):
            # A bare digest pins the stable image's repository; registry rules follow it.
            return image_problem(
                f"registry.invalid/image@{request.image.removeprefix('@')}",
                production=service.is_production,
            )
        if "/" not in request.image and ":" not in request.image and "@" not in request.image:
            # A bare tag: the tag rules can be judged before the stable image is known.
            if policy.require_digest:
                return policy_problem(request.image, allowed_registries=(), require_digest=True)
            return image_problem(
                f"registry.invalid/image:{request.image}", production=service.is_production
            )
        return image_problem(request.image, production=service.is_production) or policy_problem(
            request.image,
            allowed_registries=policy.allowed_registries,
            require_digest=policy.require_digest,
        )

    def accept(self, request: StartRequest, *, delivery: str | None = None) -> Rollout | None:
        """Record a start (config and database only: safe before Slack's acknowledgement).

        Once this returns, the start survives a crash: the first tick reads the stable
        workload, resolves the image and creates the canary, whoever runs it. A `delivery`
        already handled returns None (Slack's retry of the same command).
        """
        with self._start_lock:
            if delivery is not None and self.store.delivery_seen(delivery):
                return None
            rollout = self._accept(request)
            if delivery is not None:
                self.store.first_delivery(delivery, at=self._clock.now())
            return rollout

    def _accept(self, request: StartRequest) -> Rollout:
        problem = self.check_start(request)
        if problem:
            raise StartRefused(problem)
        service = self.config.services[request.service]
        rollout = self._draft(request, service, now=self._clock.now())
        try:
            self.store.create(rollout, actor=request.by, detail=f"image {request.image}")
        except ActiveRolloutExists as error:
            raise StartRefused(str(error)) from error
        return rollout

    def begin(self, rollout_id: str) -> Rollout:
        """The cluster part of a start, right after the acknowledgement."""
        self.tick(rollout_id)
        started = self.store.get(rollout_id)
        assert started is not None
        if started.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            raise StartRefused(
                f"Rollout of `{started.service}` stopped: {unquote(started.reason or '')}"
            )
        return started

    def start(self, request: StartRequest) -> Rollout:
        return self.begin(self._accept(request).id)

    def _resolve(self, rollout: Rollout) -> Rollout:
        """Read the stable image and work out the canary's; a problem ends the start cleanly
        (nothing was created yet, so there is nothing to roll back)."""
        service = self.config.services[rollout.service]
        try:
            container, stable_image = self._router_for(rollout).stable_image(rollout)
        except Exception as error:
            return self._refuse_start(rollout, f"cannot read the stable workload: {error}")
        canary_image = resolve_image(stable_image, rollout.canary_image)
        problem = image_problem(canary_image, production=service.is_production) or policy_problem(
            canary_image,
            allowed_registries=service.policy.allowed_registries,
            require_digest=service.policy.require_digest,
        )
        if problem is None and canary_image == stable_image:
            problem = f"`{rollout.service}` already runs {stable_image}; name another tag or image"
        if problem:
            return self._refuse_start(rollout, problem)
        resolved = rollout.evolve(
            now=self._clock.now(),
            container=container,
            stable_image=stable_image,
            canary_image=canary_image,
        )
        self._save(rollout, resolved, actor=BOT, action="resolve image", detail=canary_image)
        return resolved

    def _refuse_start(self, rollout: Rollout, reason: str) -> Rollout:
        now = self._clock.now()
        ended = rollout.evolve(
            now=now,
            phase=Phase.ROLLED_BACK,
            reason=f"could not start: {quote(reason)}",
            finished_at=now,
        )
        self._save(rollout, ended, actor=BOT, action="start refused", detail=reason)
        return ended

    def _draft(self, request: StartRequest, service: ServiceConfig, *, now: datetime) -> Rollout:
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
        )
        return Rollout(
            id=f"{request.service}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(2)}",
            service=request.service,
            namespace=service.namespace,
            deployment=service.deployment,
            container=service.container or "",
            strategy=service.strategy,
            # Resolved against the stable workload by the first tick (see _resolve).
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

    # ----------------------------------------------------------------- commands

    def command(
        self, rollout_id: str, command: Command, *, action: str, delivery: str | None = None
    ) -> Rollout | Refusal | None:
        """Decide on a person's command and save the decision (with its messages queued).

        Fast enough to run before Slack's acknowledgement, so an acknowledged click is a
        recorded click even if the bot dies right after; `carry_on` then does the work (every
        cluster action a command leads to follows from the saved phase). Refusals change
        nothing. `delivery` names the Slack request: one already handled returns None, and the
        check and the decision share the rollout's lock, so a retry racing its original acts
        once.
        """
        with self._lock(rollout_id):
            if delivery is not None and self.store.delivery_seen(delivery):
                return None
            outcome = self._decide(rollout_id, command, action=action)
            if delivery is not None:
                self.store.first_delivery(delivery, at=self._clock.now())
            return outcome

    def _decide(self, rollout_id: str, command: Command, *, action: str) -> Rollout | Refusal:
        with self._lock(rollout_id):
            rollout = self.store.get(rollout_id)
            if rollout is None:
                return Refusal("That rollout does not exist (any more); nothing was changed.")
            rollout = self._messages.flush(rollout)
            outcome = apply_command(rollout, command, now=self._clock.now())
            if isinstance(outcome, Refusal):
                self.store.audit(
                    at=self._clock.now(),
                    actor=command.by,
                    action=f"refused: {action}",
                    rollout_id=rollout_id,
                    detail=outcome.message,
                )
                return outcome
            decided, _ = self._messages.enqueue(outcome.rollout, outcome.actions)
            reason = getattr(command, "reason", None)  # pause, rollback and reject carry one
            self._save(rollout, decided, actor=command.by, action=action, detail=reason)
            return decided

    def carry_on(self, rollout_id: str) -> None:
        """Do now what the last saved decision implies, rather than at the next beat."""
        with self._lock(rollout_id):
            rollout = self.store.get(rollout_id)
            if rollout is None:
                return
            rollout = self._messages.flush(rollout)
            self._messages.ensure(rollout, before=None)
        self.tick(rollout_id)

    # ----------------------------------------------------------------- ticks

    def tick_all(self) -> None:
        """One scheduler beat: measure every due rollout in one batch, then advance each."""
        now = self._clock.now()
        due = [r for r in self.store.active() if self._is_due(r, now)]
        due += [r for r in self.store.unsent() if r.phase.is_terminal]
        self._observer.record_measurements(due, now=now)
        for rollout in due:
            self._last_tick[rollout.id] = now
            try:
                # The beat's own time: the measurement just taken must not look stale to a
                # rollout judged late in a long beat.
                self.tick(rollout.id, at=now)
            except Exception:
                log.exception("tick of %s failed", rollout.id)

    def tick(self, rollout_id: str, *, at: datetime | None = None) -> None:
        with self._lock(rollout_id):
            rollout = self.store.get(rollout_id)
            if rollout is None:
                return
            rollout = self._messages.flush(rollout)
            if rollout.phase.is_terminal:
                self._last_tick.pop(rollout_id, None)
                return
            if rollout.phase == Phase.PENDING and not rollout.stable_image:
                rollout = self._resolve(rollout)
                if rollout.phase.is_terminal:
                    return
            if rollout.phase == Phase.PENDING:
                rollout = self._prepare(rollout)
            now = at or self._clock.now()
            observation, analysis = self._observer.observe(rollout, now=now)
            decision = advance(rollout, observation, now=now)
            after = self._carry_out(rollout, decision)
            if analysis is not None:
                self._snapshot(rollout, after, decision, analysis, breached=observation.breach)
                self._show_verdict(after, analysis)

    def _show_verdict(self, rollout: Rollout, analysis: Analysis) -> None:
        """Keep the card's verdict current; it changes rarely, so this is rarely a write."""
        verdict = analysis.verdict.value
        # Terminal too: a breach that rolled back in this very tick must not leave "healthy".
        if rollout.verdict == verdict:
            return
        judged = replace(rollout, verdict=verdict)
        self.store.save(rollout, judged, actor=BOT, action="verdict", audit=False)
        self._messages.ensure(judged, before=rollout)

    def _snapshot(
        self,
        before: Rollout,
        after: Rollout,
        decision: Decision,
        analysis: Analysis,
        *,
        breached: str | None,
    ) -> None:
        """The metric snapshot goes into the thread at each new step and at a breach."""
        title: str | None = None
        key = ""
        for action in decision.actions:
            if isinstance(action, Announce) and isinstance(action.event, StepReached):
                title = f"Step {action.event.step} of {action.event.steps} reached"
                key = f"snapshot:step:{action.event.step}"
        if breached and after.phase != before.phase:
            verb = "paused" if after.phase == Phase.PAUSED else "rolled back"
            title, key = f"Rollback rule breached: {verb}", f"snapshot:breach:{after.updated_at}"
        if title is None:
            return
        self._messages.snapshot(
            after,
            analysis,
            title=title,
            key=key,
            history=lambda: self._observer.history(after, since=after.created_at),
        )

    def _prepare(self, rollout: Rollout) -> Rollout:
        """Create the canary objects (idempotent); a failure rolls back what was made."""
        try:
            prepared = self._router_for(rollout).prepare(rollout)
        except Exception as error:
            log.warning("preparing %s failed: %s", rollout.id, error)
            reason = f"could not create the canary: {quote(str(error))}"
            failed = rollout.evolve(now=self._clock.now(), phase=Phase.ROLLING_BACK, reason=reason)
            self._save(rollout, failed, actor=BOT, action="prepare failed", detail=reason)
            return failed
        if prepared != rollout:
            self._audit_cluster(rollout, f"canary {rollout.deployment}-canary created")
            self._save(rollout, prepared, actor=BOT, action="prepare")
        return prepared

    def reconcile(self) -> bool:
        """At start-up: put the stored weight back on the cluster and repair lost messages.

        True when every active rollout was reconciled; the caller tries again otherwise, and
        reports the bot ready (`/readyz`) only once this is True.
        """
        reconciled = True
        for rollout in self.store.active():
            with self._lock(rollout.id):
                try:
                    if rollout.step_index >= 0 and rollout.phase in (
                        Phase.PROGRESSING,
                        Phase.PAUSED,
                        Phase.AWAITING_APPROVAL,
                    ):
                        changed = self._router_for(rollout).set_weight(
                            rollout, rollout.target_weight
                        )
                        if changed:
                            self._audit_cluster(
                                rollout, f"re-applied weight {rollout.target_weight}%"
                            )
                    rollout = self._messages.flush(rollout)
                    self._messages.ensure(rollout, before=None)
                except Exception:
                    log.exception("reconciling %s failed", rollout.id)
                    reconciled = False
        return reconciled

    def _is_due(self, rollout: Rollout, now: datetime) -> bool:
        last = self._last_tick.get(rollout.id)
        slack = timedelta(milliseconds=250)
        return last is None or now - last >= rollout.plan.analysis_interval - slack

    def snapshot_now(self, rollout_id: str, *, by: str) -> bool:
        """`/canary status <service>`: a snapshot with chart in the thread, on demand."""
        with self._lock(rollout_id):
            rollout = self.store.get(rollout_id)
            if rollout is None or rollout.thread_ts is None:
                return False
            now = self._clock.now()
            analysis = self._observer.analyse(rollout, now=now)
            if analysis is None:
                return False
            self.store.audit(at=now, actor=by, action="snapshot", rollout_id=rollout.id)
            self._messages.snapshot(
                rollout,
                analysis,
                title="Snapshot on request",
                key=f"snapshot:asked:{now.isoformat()}",
                history=lambda: self._observer.history(rollout, since=rollout.created_at),
            )
            return True

    # ----------------------------------------------------------------- carrying out

    def _carry_out(
        self, before: Rollout, decision: Decision, *, actor: str = BOT, action: str = "tick"
    ) -> Rollout:
        # The decision and the messages it implies are saved together before anything is done,
        # so a crash can lose neither (cluster actions are asked for again by the next tick).
        rollout, keys = self._messages.enqueue(decision.rollout, decision.actions)
        if rollout != before:
            self._save(before, rollout, actor=actor, action=action)
        for key, step in zip(keys, decision.actions, strict=True):
            if isinstance(step, Announce | Page | RequestApproval | CloseApproval):
                rollout = self._messages.deliver(rollout, key, step)
            else:
                rollout = self._execute(rollout, step)
        return self._messages.ensure(rollout, before=before)

    def _execute(
        self, rollout: Rollout, action: SetWeight | PromoteStable | RollBackCanary
    ) -> Rollout:
        router = self._router_for(rollout)
        match action:
            case SetWeight(weight=weight):
                try:
                    if router.set_weight(rollout, weight):
                        self._audit_cluster(rollout, f"set canary weight {weight}%")
                except Exception as error:
                    log.warning("setting weight of %s failed: %s", rollout.id, error)
                    self._audit_cluster(rollout, f"set weight {weight}% failed: {error}")
            case PromoteStable():
                rollout = self._promote(rollout, router)
            case RollBackCanary():
                rollout = self._roll_back(rollout, router)
        return rollout

    def _promote(self, rollout: Rollout, router: TrafficRouter) -> Rollout:
        try:
            done = router.promote(rollout)
        except Exception as error:
            log.warning("promoting %s: %s", rollout.id, error)
            self._audit_cluster(rollout, f"promotion step failed: {error}")
            return rollout
        if not done:
            return rollout
        self._audit_cluster(rollout, f"stable runs {rollout.canary_image}; canary removed")
        now = self._clock.now()
        finished = rollout.evolve(now=now, phase=Phase.SUCCEEDED, weight=100.0, finished_at=now)
        return self._messages.finish(rollout, finished, action="promoted")

    def _roll_back(self, rollout: Rollout, router: TrafficRouter) -> Rollout:
        now = self._clock.now()
        try:
            router.rollback(rollout)
        except Exception as error:
            log.warning("rolling back %s: %s", rollout.id, error)
            if rollout.phase == Phase.FAILED:
                return rollout  # still failing; the machine pages again when it is time
            self._audit_cluster(rollout, f"rollback attempt failed: {error}")
            failures = rollout.failures + 1
            if failures < MAX_ROLLBACK_ATTEMPTS:
                retried = rollout.evolve(now=now, failures=failures)
                self._save(rollout, retried, actor=BOT, action="rollback retry")
                return retried
            reason = f"rollback could not be completed: {quote(str(error))}"
            failed = rollout.evolve(
                now=now, phase=Phase.FAILED, failures=failures, reason=reason, paged_at=now
            )
            page = Alert(
                title=f"{rollout.service}: ROLLBACK FAILED — act now",
                detail=(
                    f"{reason}. Traffic may still reach the canary {rollout.canary_image}. "
                    f"The bot keeps retrying; `/canary rollback {rollout.service}` retries now, "
                    f"`/canary pause {rollout.service}` acknowledges and stops the pages."
                ),
                traffic_on_stable=False,
                at=now,
            )
            return self._messages.finish(
                rollout, failed, action="rollback failed", also=(Page(page),)
            )
        self._audit_cluster(rollout, "all traffic on stable; canary removed")
        done = rollout.evolve(now=now, phase=Phase.ROLLED_BACK, weight=0.0, finished_at=now)
        return self._messages.finish(rollout, done, action="rolled back")

    def _save(
        self,
        before: Rollout,
        after: Rollout,
        *,
        actor: str,
        action: str,
        detail: str | None = None,
    ) -> None:
        self.store.save(before, after, actor=actor, action=action, detail=detail)

    def _audit_cluster(self, rollout: Rollout, detail: str) -> None:
        self.store.audit(
            at=self._clock.now(),
            actor=BOT,
            action="cluster change",
            rollout_id=rollout.id,
            detail=detail,
        )

    def _router_for(self, rollout: Rollout) -> TrafficRouter:
        return self._routers[rollout.strategy]

    def _lock(self, rollout_id: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(rollout_id, threading.RLock())
