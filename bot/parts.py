"""What the runtime builds from the configuration and the environment before wiring it.

Split out of bot/runtime.py (which wires the parts together) because these are checks and
small factories with no life of their own: Slack's secrets and Web API client, the store, the
Kubernetes client, the traffic routers, Prometheus access, group memberships, and whether this
is a replicated (HA) deployment. Each refuses bad
settings with a StartupError naming what is wrong, before anything starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from kubernetes import client as k8s
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler

from bot.ha import bounded_transactions
from bot.kube import load_api_client, without_retries
from bot.logging_setup import install_redaction
from bot.prometheus import PrometheusSetupError, prometheus_access
from handlers.auth import Directory
from rollout.analysis import PrometheusProvider
from rollout.config import Config
from rollout.kube import KubeGateway
from rollout.ports import Clock
from rollout.stores import Store, open_store, store_url
from rollout.traffic.base import TrafficRouter
from rollout.traffic.registry import STRATEGIES

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
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


def slack_client(secrets: Secrets) -> WebClient:
    return WebClient(
        token=secrets.bot_token,
        base_url=secrets.slack_api_url,
        timeout=SLACK_TIMEOUT_SECONDS,
        retry_handlers=[],
    )


def open_bot_store(config: Config, env: Mapping[str, str]) -> Store:
    """SQLite, or the database `store.url` (or `CANARY_STORE_URL`) names: its password never
    reaches a log line, and its transactions never idle past the renew deadline (bot/ha.py)."""
    url = store_url(config.store.url, env)
    install_redaction(*url_passwords(url))
    return open_store(
        path=config.store.path,
        url=bounded_transactions(url, config.ha.renew_deadline) if url else None,
    )


def kube_client(
    api_client: k8s.ApiClient | None, config: Config, *, identity: str
) -> k8s.ApiClient:
    """The Kubernetes client without the library's retries (each call has one deadline),
    naming this replica in its User-Agent (the API server's audit log)."""
    client = without_retries(api_client or load_api_client(context=config.kubernetes.context))
    client.user_agent = f"canary-bot ({identity})"
    return client


def shortest_interval(config: Config) -> timedelta:
    """The beat's interval: the shortest analysis interval of any service."""
    return min(
        [config.defaults.analysis_interval]
        + [s.policy.analysis_interval for s in config.services.values()]
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


def prometheus(config: Config, env: Mapping[str, str], *, timeout: timedelta) -> PrometheusProvider:
    try:
        access = prometheus_access(config.prometheus, env)
    except PrometheusSetupError as error:
        raise StartupError(str(error)) from None
    secrets = (access.bearer_token, access.basic_auth[1] if access.basic_auth else None)
    install_redaction(*secrets)  # never in a log line, whatever a library prints
    return PrometheusProvider(config.prometheus.url, timeout=timeout, access=access)


def ha_enabled(config: Config, env: Mapping[str, str]) -> bool:
    """Several replicas and a Lease only with a shared database (`store.url` or
    `CANARY_STORE_URL`); SQLite keeps one replica and no Lease."""
    return store_url(config.store.url, env) is not None


def directory(config: Config, secrets: Secrets, *, clock: Clock) -> Directory:
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


def url_passwords(url: str | None) -> tuple[str, ...]:
    """The password in a database URL (`postgresql+psycopg://user:password@host/db`), as
    written and decoded, to be redacted from logs: a driver's error may quote either."""
    if not url:
        return ()
    try:
        written = urlsplit(url).password
    except ValueError:
        return ()
    return (written, unquote(written)) if written else ()


def environment() -> Mapping[str, str]:
    return os.environ
