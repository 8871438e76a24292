"""Wires the real parts together: Slack (Bolt + WebClient), Kubernetes, Prometheus, SQLite.

Tests and the demo build exactly this runtime and point it at local emulators through the same
settings production uses (`SLACK_API_URL`, `KUBECONFIG`, the Prometheus URL); nothing inside
the bot knows whether it talks to the real thing.

This module is the wiring only: what is built from settings before it (secrets, the Slack,
Kubernetes and store clients, routers, Prometheus access, group memberships) is in
bot/parts.py, start-up with reconciliation in bot/startup.py, and the order of a stop's steps
is explained in bot/shutdown.py; their public names stay importable from here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any

from kubernetes import client as k8s
from slack_bolt import App
from slack_sdk.signature import SignatureVerifier

from bot.chart_renderer import ChartRenderer
from bot.foreground import Foreground, after_acks
from bot.ha import LeaderOnlyNotifier, Leadership
from bot.logging_setup import install_redaction
from bot.metrics import BotMetrics, dependency_of
from bot.notifier import SlackNotifier
from bot.parts import (
    DEFAULT_SLACK_API_URL,
    SLACK_TIMEOUT_SECONDS,
    Secrets,
    StartupError,
    build_routers,
    directory,
    environment,
    ha_enabled,
    kube_client,
    open_bot_store,
    prometheus,
    shortest_interval,
    slack_client,
)
from bot.registry import RegistryLoginMissing, gateway_timeout, registry_settings
from bot.shutdown import ACTING_RESERVE_S, STOP_DEADLINE_S, Step, StopSteps
from bot.startup import RECONCILE_BACKOFF_MAX_S, STARTUP_JOIN_TIMEOUT_S, Startup
from handlers import actions, commands
from handlers.context import HandlerServices
from rollout.analysis import Analyzer, MetricsProvider
from rollout.budget import SlackBudget
from rollout.chart_worker import ChartWorker, Render
from rollout.config import Config
from rollout.engine import Engine
from rollout.gates.job import JobGates, JobsApi
from rollout.kube import KubeGateway
from rollout.oci import HttpRegistry
from rollout.ports import Clock, SystemClock
from rollout.scheduler import BeatScheduler
from rollout.sender import OutboxSender
from rollout.stores import Store

# Also importable from here, as they were before the split.
__all__ = [
    "DEFAULT_SLACK_API_URL",
    "RECONCILE_BACKOFF_MAX_S",
    "SLACK_TIMEOUT_SECONDS",
    "STARTUP_JOIN_TIMEOUT_S",
    "Runtime",
    "Secrets",
    "StartupError",
    "build_routers",
    "environment",
    "ha_enabled",
]
log = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self,
        *,
        config: Config,
        secrets: Secrets,
        clock: Clock | None = None,
        api_client: k8s.ApiClient | None = None,
        metrics_provider: MetricsProvider | None = None,
        env: Mapping[str, str] | None = None,
        render_chart: Render | None = None,
        on_lost_lease: Callable[[], None] | None = None,
    ) -> None:
        install_redaction(secrets.bot_token, secrets.signing_secret, secrets.app_token)
        env = os.environ if env is None else env
        self.env = env  # where the pipeline API's tokens are read (api.tokens[].token_env)
        if metrics_provider is None:
            # A measurement never outlasts the analysis interval it serves.
            budget = min(config.prometheus.timeout, shortest_interval(config))
            metrics_provider = prometheus(config, env, timeout=budget)
        # This replica's name in the Lease, and in its User-Agent (the API server's audit log).
        self.identity = env.get("POD_NAME") or socket.gethostname()
        self.leadership: Leadership | None = None
        self.config = config
        self.clock = clock or SystemClock()
        # Requests Slack waits on, in flight: background work lets them finish first.
        self.foreground = Foreground()
        self.store: Store = open_bot_store(config, env)
        self.metrics = BotMetrics(active_rollouts=lambda: len(self.store.active()))
        self.web = slack_client(secrets)
        self.kube_calls = 0
        kube = kube_client(api_client, config, identity=self.identity)
        self.engine = self._build_engine(kube, metrics_provider)
        self.sender, self.charts, self._renderer = self._build_senders(render_chart)
        # Listeners answer Slack when they return (process_before_response), on waitress's
        # threads; the work after each acknowledgement runs here. stop() waits for it before
        # the store closes, so that work never finds the database gone.
        self._after_ack = ThreadPoolExecutor(max_workers=4, thread_name_prefix="after-ack")
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()
        self.directory = directory(config, secrets, clock=self.clock)
        self.app = self._build_app(secrets)
        # The HTTP server checks Slack's signature on the raw body before anything parses it.
        self.signatures = SignatureVerifier(secrets.signing_secret)
        self._startup = Startup(
            reconcile=self.engine.reconcile,
            begin_ticking=self._begin_ticking,
            before=self.directory.start,
        )
        self.scheduler = BeatScheduler(
            url=self.store.scheduler_url,
            interval=shortest_interval(config),
            beat=after_acks(self.foreground, self.engine.tick_all),
        )
        if ha_enabled(config, env):
            self.leadership = self._build_leadership(kube, on_lost_lease)

    def _build_leadership(
        self, kube: k8s.ApiClient, on_lost: Callable[[], None] | None
    ) -> Leadership:
        """With several replicas: the Lease, whose holder reconciles, ticks and sends."""
        return Leadership(
            config=self.config.ha,
            api_client=kube,
            identity=self.identity,
            store=self.store,
            on_leading=self._startup.reconcile_then_tick,
            on_lost=on_lost or self._stop_leading,
            pick_up=self.engine.pick_up,
        )

    def _build_senders(
        self, render_chart: Render | None
    ) -> tuple[OutboxSender, ChartWorker, ChartRenderer]:
        """The outbox sender and the chart worker, sharing one notifier and one budget."""
        # Every Slack message of a rollout goes out through this one sender, on its own
        # thread: ticks and requests only queue messages (rollout/sender.py). Asked right
        # before every Slack call, `leading` first lets acknowledgements in flight finish.
        notifier = LeaderOnlyNotifier(
            SlackNotifier(client=self.web, config=self.config),
            leading=after_acks(self.foreground, self._leads),
        )
        # One Slack budget for the sender and the chart worker (rollout/budget.py).
        slack_budget = SlackBudget(self.config.slack.rate_limits, monotonic=time.monotonic)
        sender = OutboxSender(
            store=self.store,
            notifier=notifier,
            clock=self.clock,
            snapshots=self.engine.observer.snapshot_at,
            on_deadline=lambda what: self._deadline_passed("slack", what),
            budget=slack_budget,
            alert_channel=self.config.slack.alert_channel,
        )
        # Charts are rendered (in a process of their own) and uploaded by a worker of their
        # own: no message, tick or acknowledgement waits for one.
        renderer = ChartRenderer(store=self.store, observer=self.engine.observer)
        charts = ChartWorker(
            store=self.store,
            notifier=notifier,
            render=after_acks(self.foreground, render_chart or renderer),
            budget=slack_budget,
        )
        return sender, charts, renderer

    def _build_engine(self, api_client: k8s.ApiClient, provider: MetricsProvider) -> Engine:
        """The engine with its bounded clients: one deadline per Kubernetes call, and a
        measurement that never outlasts the analysis interval it serves."""
        config = self.config
        gateway = KubeGateway(
            api_client,
            request_timeout=config.kubernetes.request_timeout.total_seconds(),
            on_call=self._before_kube_call,
            on_deadline=lambda what: self._deadline_passed("kubernetes", what),
        )
        measure_budget = min(config.prometheus.timeout, shortest_interval(config))
        try:
            registry = HttpRegistry(registry_settings(config, self.env))
        except RegistryLoginMissing as error:
            raise StartupError(str(error)) from error
        return Engine(
            config=config,
            store=self.store,
            routers=build_routers(config, gateway),
            clock=self.clock,
            analyzer=Analyzer(
                provider,
                budget=measure_budget,
                on_deadline=lambda what: self._deadline_passed("prometheus", what),
            ),
            parallel=config.kubernetes.parallel_rollouts,
            on_queued=self._wake_senders,
            registry=registry,
            jobs=lambda cluster: JobGates(
                config=config,
                api=JobsApi(api_client, request_timeout=gateway_timeout(config)),
                audit=cluster.audit,
            ),
            leading=self._leads,
        )

    def _wake_senders(self) -> None:
        self.sender.wake()
        self.charts.wake()

    def _leads(self) -> bool:
        """May this replica act on the cluster and post? Always, with one replica."""
        return self.leadership is None or self.leadership.leading

    def _deadline_passed(self, dependency: str, what: str) -> None:
        """A call ran past its one deadline: a fault like any other (the next tick or the
        sender's next round tries again), so it is counted and audited."""
        self.metrics.deadlines.labels(dependency=dependency).inc()
        self.store.audit(
            at=self.clock.now(),
            actor="canary-bot",
            action="deadline exceeded",
            detail=f"{dependency}: {what}",
        )

    def _before_kube_call(self, verb: str, what: str) -> None:
        self.kube_calls += 1
        # Background work steps aside for acknowledgements in flight (bot/foreground.py).
        self.foreground.wait_quiet()

    def _build_app(self, secrets: Secrets) -> App:
        app = App(
            signing_secret=secrets.signing_secret,
            client=self.web,
            process_before_response=True,
            token_verification_enabled=False,
            # bot/server.py checks Slack's signature on the raw bytes before Bolt sees the
            # request; Bolt checking it again cost each acknowledgement a second HMAC and
            # body decode for nothing (Socket Mode requests carry no signature at all).
            request_verification_enabled=False,
        )
        services = HandlerServices(
            engine=self.engine,
            directory=self.directory,
            clock=self.clock,
            later=self._run_after_ack,
        )
        commands.register(app, services=services)
        actions.register(app, services=services)

        @app.error
        def on_error(error: Exception, body: dict[str, Any]) -> None:
            # One place for listener failures: log without the payload (it may hold tokens),
            # count it, and never show a traceback in Slack.
            self.metrics.errors.labels(dependency=dependency_of(error)).inc()
            log.error("listener failed: %s: %s", type(error).__name__, error)

        return app

    def _run_after_ack(self, work: Callable[[], object]) -> None:
        def run() -> None:
            self.foreground.wait_quiet()  # the burst this request came in is answered first
            try:
                work()
            except Exception as error:  # @app.error does not see work done after the ack
                self.metrics.errors.labels(dependency=dependency_of(error)).inc()
                log.error(
                    "work after an acknowledgement failed: %s: %s", type(error).__name__, error
                )

        future = self._after_ack.submit(run)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def after_answer(self, work: Callable[[], object]) -> None:
        """Run `work` after the HTTP answer, off the request thread (the pipeline API's
        starts); `drain` waits for it like for the work after Slack's acknowledgements."""
        self._run_after_ack(work)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait for the work queued after acknowledgements so far (and what it queued), so
        tests can check what did not happen without sleeping."""
        while True:
            with self._pending_lock:
                pending = list(self._pending)
            if not pending:
                return
            _, not_done = futures_wait(pending, timeout=timeout)
            if not_done:
                raise TimeoutError(f"{len(not_done)} after-ack task(s) still running")

    def start(self) -> None:
        """Begin start-up in the background and return at once, so the HTTP servers can answer
        `/healthz` while a slow API server holds reconciliation (a liveness probe must never
        kill a pod for waiting on the cluster). `ready` turns true once every active rollout
        is reconciled; reconciliation is tried again, with back-off, until then. The outbox
        sender starts at once: messages decided before a restart go out meanwhile.

        With several replicas (bot/ha.py) all of that waits for this replica to lead."""
        if self.leadership is not None:
            threading.Thread(target=self.directory.start, name="directory", daemon=True).start()
            self.leadership.start()
            return
        self.sender.start()
        self.charts.start()
        self._startup.start()

    @property
    def ready(self) -> bool:
        if self.leadership is not None:
            return self._ha_readiness()[0]
        return self._startup.ready.is_set()

    @property
    def readiness(self) -> str:
        """Why the bot is or is not ready, for `/readyz`."""
        if self.leadership is not None:
            return self._ha_readiness()[1]
        return self._startup.readiness

    def _ha_readiness(self) -> tuple[bool, str]:
        assert self.leadership is not None
        try:
            self.store.ping()
            database = None
        except Exception as error:
            database = f"{type(error).__name__}: {error}"[:200]
        return self.leadership.readiness(reconciled=self._startup.ready.is_set(), database=database)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._startup.ready.wait(timeout)

    def _begin_ticking(self) -> None:
        """Once start-up has reconciled (or tried once): the beat, and with several replicas
        the sending and the pick-up that only the leader does."""
        self.scheduler.start()
        if self.leadership is not None:
            self.sender.start()  # a follower never sends: the leader does
            self.charts.start()
            self.leadership.start_pick_up()

    def _stop_leading(self) -> None:
        """The Lease is lost: stop ticking and sending at once (`canary-bot serve` exits
        instead, see bot/ha.py; this is for a runtime embedded in a test or a tool)."""
        self.scheduler.stop()
        self.sender.stop()
        self.charts.stop()

    def stop(self, deadline: float = STOP_DEADLINE_S) -> list[str]:
        """Stop every part, waiting for work in flight up to `deadline` seconds in all;
        returns the parts that had not stopped by then (bot/shutdown.py).

        With several replicas the Lease is handed back only once this replica no longer acts:
        first it takes no new work (start-up, beat, pick-up, the work after requests), then
        the ticks and gates in flight finish, or are abandoned when they would leave too
        little of the deadline for the rest (`ACTING_RESERVE_S`), and the senders stop. A gate
        ending after the Lease went would otherwise act beside the next leader."""
        acting_until = time.monotonic() + deadline - ACTING_RESERVE_S
        steps: list[Step] = [("start-up", self._startup.stop), ("beat", self.scheduler.stop)]
        if self.leadership is not None:
            steps.append(("pick-up", self.leadership.stop_picking_up))
        steps += [
            ("directory", self.directory.stop),
            ("after-acknowledgement work", lambda: self._after_ack.shutdown(wait=True)),
            (
                "ticks and gates",
                lambda: self.engine.close(max(0.0, acting_until - time.monotonic())),
            ),
            ("outbox sender", self.sender.stop),
            ("chart worker", self.charts.stop),
        ]
        if self.leadership is not None:
            steps.append(("leadership", self.leadership.stop))  # another replica leads at once
        steps += [("chart render process", self._renderer.close), ("store", self.store.close)]
        return StopSteps(steps).run(deadline)
