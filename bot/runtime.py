"""Wires the real parts together: Slack (Bolt + WebClient), Kubernetes, Prometheus, SQLite.

Tests and the demo build exactly this runtime and point it at local emulators through the same
settings production uses (`SLACK_API_URL`, `KUBECONFIG`, the Prometheus URL); nothing inside
the bot knows whether it talks to the real thing.
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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kubernetes import client as k8s
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from tenacity import Retrying, retry_if_result, wait_exponential

from bot.chart_renderer import ChartRenderer
from bot.ha import LeaderOnlyNotifier, Leadership, bounded_transactions
from bot.kube import load_api_client, without_retries
from bot.logging_setup import install_redaction
from bot.metrics import BotMetrics, dependency_of
from bot.notifier import SlackNotifier
from bot.prometheus import PrometheusSetupError, prometheus_access
from bot.registry import RegistryLoginMissing, gateway_timeout, registry_settings
from handlers import actions, commands
from handlers.auth import Directory
from handlers.context import HandlerServices
from rollout.analysis import Analyzer, MetricsProvider, PrometheusProvider
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
from rollout.stores import Store, open_store, store_url
from rollout.traffic.base import TrafficRouter
from rollout.traffic.registry import STRATEGIES

log = logging.getLogger(__name__)

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# Start-up reconciliation is retried with back-off up to this many seconds between attempts.
RECONCILE_BACKOFF_MAX_S = 30.0
# stop() waits this long for a reconciliation attempt in flight (its calls have deadlines).
STARTUP_JOIN_TIMEOUT_S = 15.0
# One deadline per Slack Web API call. The WebClient retries nothing and never sleeps on a
# Retry-After: the outbox sender (rollout/outbox.py) retries on its own schedule, off every
# tick and request thread.
SLACK_TIMEOUT_SECONDS = 10


class StartupError(Exception):
    """Start-up cannot go on; the message is one line naming what is wrong."""


@dataclass(frozen=True, kw_only=True)
class Secrets:
    bot_token: str
    signing_secret: str
    app_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, socket_mode: bool = False) -> Secrets:
        needed = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
        if socket_mode:
            needed.append("SLACK_APP_TOKEN")
        missing = [name for name in needed if not env.get(name)]
        if missing:
            raise StartupError(f"missing environment variable(s): {', '.join(missing)}")
        url = env.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        return cls(
            bot_token=env["SLACK_BOT_TOKEN"],
            signing_secret=env["SLACK_SIGNING_SECRET"],
            app_token=env.get("SLACK_APP_TOKEN"),
            slack_api_url=url if url.endswith("/") else url + "/",
        )


def build_routers(config: Config, gateway: KubeGateway) -> dict[str, TrafficRouter]:
    """One router per strategy in use, from the registry (STYLE.md): an unknown strategy is a
    start-up error, never a silent fallback."""
    wanted = {service.strategy for service in config.services.values()}
    unknown = sorted(wanted - set(STRATEGIES))
    if unknown:
        users = [name for name, s in config.services.items() if s.strategy in unknown]
        raise StartupError(
            f"strategy {', '.join(unknown)} (services {', '.join(users)}) is not available in "
            f"this version; available: {', '.join(sorted(STRATEGIES))}"
        )
    return {name: STRATEGIES[name].router(gateway) for name in wanted}


def _prometheus(
    config: Config, env: Mapping[str, str], *, timeout: timedelta
) -> PrometheusProvider:
    try:
        access = prometheus_access(config.prometheus, env)
    except PrometheusSetupError as error:
        raise StartupError(str(error)) from None
    secrets = (access.bearer_token, access.basic_auth[1] if access.basic_auth else None)
    install_redaction(*secrets)  # never in a log line, whatever a library prints
    return PrometheusProvider(config.prometheus.url, timeout=timeout, access=access)


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
            budget = min(config.prometheus.timeout, self._shortest_interval(config))
            metrics_provider = _prometheus(config, env, timeout=budget)
        # This replica's name in the Lease, and in its User-Agent (the API server's audit log).
        self.identity = env.get("POD_NAME") or socket.gethostname()
        self.leadership: Leadership | None = None
        self.config = config
        self.clock = clock or SystemClock()
        url = store_url(config.store.url, env)
        self.store: Store = open_store(
            path=config.store.path,
            url=bounded_transactions(url, config.ha.renew_deadline) if url else None,
        )
        self.metrics = BotMetrics(active_rollouts=lambda: len(self.store.active()))
        self.web = WebClient(
            token=secrets.bot_token,
            base_url=secrets.slack_api_url,
            timeout=SLACK_TIMEOUT_SECONDS,
            retry_handlers=[],
        )
        self.kube_calls = 0
        kube_client = without_retries(
            api_client or load_api_client(context=config.kubernetes.context)
        )
        kube_client.user_agent = f"canary-bot ({self.identity})"
        self.engine = self._build_engine(kube_client, metrics_provider)
        # Every Slack message of a rollout goes out through this one sender, on its own
        # thread: ticks and requests only queue messages (rollout/sender.py).
        notifier = LeaderOnlyNotifier(
            SlackNotifier(client=self.web, config=config), leading=self._leads
        )
        # One Slack budget for the sender and the chart worker (rollout/budget.py).
        slack_budget = SlackBudget(config.slack.rate_limits, monotonic=time.monotonic)
        self.sender = OutboxSender(
            store=self.store,
            notifier=notifier,
            clock=self.clock,
            snapshots=self.engine.observer.snapshot_at,
            on_deadline=lambda what: self._deadline_passed("slack", what),
            budget=slack_budget,
            alert_channel=config.slack.alert_channel,
        )
        # Charts are rendered (in a process of their own) and uploaded by a worker of their
        # own: no message, tick or acknowledgement waits for one.
        self._renderer = ChartRenderer(store=self.store, observer=self.engine.observer)
        self.charts = ChartWorker(
            store=self.store,
            notifier=notifier,
            render=render_chart or self._renderer,
            budget=slack_budget,
        )
        # Listeners answer Slack when they return (process_before_response), on waitress's
        # threads; the work after each acknowledgement runs here. stop() waits for it before
        # the store closes, so that work never finds the database gone.
        self._after_ack = ThreadPoolExecutor(max_workers=4, thread_name_prefix="after-ack")
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()
        self.directory = _directory(config, secrets, clock=self.clock)
        self.app = self._build_app(secrets)
        # The HTTP server checks Slack's signature on the raw body before anything parses it.
        self.signatures = SignatureVerifier(secrets.signing_secret)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()
        self._ticking = False
        self._reconcile_attempts = 0
        self._startup = threading.Thread(target=self._start_up, name="startup", daemon=True)
        self.scheduler = BeatScheduler(
            url=self.store.scheduler_url,
            interval=self._shortest_interval(config),
            beat=self.engine.tick_all,
        )
        if ha_enabled(config, env):
            self.leadership = Leadership(
                config=config.ha,
                api_client=kube_client,
                identity=self.identity,
                store=self.store,
                on_leading=self._reconcile_then_tick,
                on_lost=on_lost_lease or self._stop_leading,
                pick_up=self.engine.pick_up,
            )

    def _build_engine(self, api_client: k8s.ApiClient, provider: MetricsProvider) -> Engine:
        """The engine with its bounded clients: one deadline per Kubernetes call, and a
        measurement that never outlasts the analysis interval it serves."""
        config = self.config
        gateway = KubeGateway(
            api_client,
            request_timeout=config.kubernetes.request_timeout.total_seconds(),
            on_call=self._count_kube_call,
            on_deadline=lambda what: self._deadline_passed("kubernetes", what),
        )
        measure_budget = min(config.prometheus.timeout, self._shortest_interval(config))
        try:
            registry = HttpRegistry(registry_settings(config, environment()))
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

    @staticmethod
    def _shortest_interval(config: Config) -> timedelta:
        return min(
            [config.defaults.analysis_interval]
            + [s.policy.analysis_interval for s in config.services.values()]
        )

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

    def _count_kube_call(self, verb: str, what: str) -> None:
        self.kube_calls += 1

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
        return self._ready.is_set()

    @property
    def readiness(self) -> str:
        """Why the bot is or is not ready, for `/readyz`."""
        if self.leadership is not None:
            return self._ha_readiness()[1]
        if self._ready.is_set():
            return "reconciled"
        return f"reconciling active rollouts (attempt {self._reconcile_attempts})"

    def _ha_readiness(self) -> tuple[bool, str]:
        assert self.leadership is not None
        try:
            self.store.ping()
            database = None
        except Exception as error:
            database = f"{type(error).__name__}: {error}"[:200]
        return self.leadership.readiness(reconciled=self._ready.is_set(), database=database)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def _start_up(self) -> None:
        # Group memberships first (one round, then in the background), so the first commands
        # find the approver groups known; on this thread, so a slow Slack delays readiness,
        # never serving.
        self.directory.start()
        self._reconcile_then_tick()

    def _reconcile_then_tick(self) -> None:
        """Reconcile (retried with back-off), then tick; with several replicas this runs when
        this replica takes the Lease (bot/ha.py)."""
        retrying = Retrying(
            retry=retry_if_result(lambda reconciled: not reconciled),
            wait=wait_exponential(multiplier=0.5, max=RECONCILE_BACKOFF_MAX_S),
            stop=lambda state: self._stopping.is_set(),
            sleep=self._pause,
            retry_error_callback=lambda state: False,
        )
        if retrying(self._reconcile_once):
            self._ready.set()
            log.info("reconciled after %d attempt(s); ready", self._reconcile_attempts)

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # stop() cuts a back-off short

    def _reconcile_once(self) -> bool:
        self._reconcile_attempts += 1
        try:
            return self.engine.reconcile()
        except Exception as error:  # the store itself failed; try again like any fault
            log.error("reconciliation failed: %s: %s", type(error).__name__, error)
            return False
        finally:
            # Ticking starts after the first pass whatever came of it, as it always did: one
            # rollout that cannot be reconciled must not keep the others from being watched.
            self._start_ticking()

    def _start_ticking(self) -> None:
        with self._lifecycle:
            if not self._stopping.is_set() and not self._ticking:
                self.scheduler.start()
                if self.leadership is not None:
                    self.sender.start()  # a follower never sends: the leader does
                    self.charts.start()
                    self.leadership.start_pick_up()
                self._ticking = True

    def _stop_leading(self) -> None:
        """The Lease is lost: stop ticking and sending at once (`canary-bot serve` exits
        instead, see bot/ha.py; this is for a runtime embedded in a test or a tool)."""
        self.scheduler.stop()
        self.sender.stop()
        self.charts.stop()

    def stop(self) -> None:
        if self.leadership is not None:
            self.leadership.stop()  # hands the Lease back: another replica leads at once
        with self._lifecycle:
            self._stopping.set()
        if self._startup.is_alive():
            self._startup.join(timeout=STARTUP_JOIN_TIMEOUT_S)
        self.scheduler.stop()
        self.directory.stop()
        self._after_ack.shutdown(wait=True)
        self.engine.close()
        self.sender.stop()
        self.charts.stop()
        self._renderer.close()
        self.store.close()


def ha_enabled(config: Config, env: Mapping[str, str]) -> bool:
    """Several replicas and a Lease only with a shared database (`store.url` or
    `CANARY_STORE_URL`); SQLite keeps one replica and no Lease."""
    return store_url(config.store.url, env) is not None


def _directory(config: Config, secrets: Secrets, *, clock: Clock) -> Directory:
    """Group memberships, refreshed in the background (never before an acknowledgement),
    with a client of their own that has no rate-limit retry handler: a refresh never sleeps on
    Retry-After (the next round tries again), so stopping the bot is never held up."""
    client = WebClient(
        token=secrets.bot_token,
        base_url=secrets.slack_api_url,
        timeout=10,
        retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=1)],
    )
    return Directory(
        client,
        clock=clock,
        max_age=config.slack.group_cache_max_age,
        groups=(*config.slack.deployers, *config.slack.approvers),
    )


def environment() -> Mapping[str, str]:
    return os.environ
