"""A whole canary-bot world on loopback: cluster and Slack emulators plus the real bot.

`canary-bot demo` and the scenario tests both stand on this, so what the demo shows is what the
tests prove. The bot inside is the production `Runtime` and `HttpServer`; only the addresses it
is given (SLACK_API_URL, a kubeconfig) point at the emulators.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import config as k8s_config

from bot.config_loader import load_config_text
from bot.runtime import Runtime, Secrets
from bot.server import AdminServer, HttpServer
from emulators.kube import KubeEmulator
from emulators.slack import SlackDriver, SlackEmulator
from rollout.analysis import MetricsProvider
from rollout.config import Config, SlackRateLimits
from rollout.ports import Clock

SIGNING_SECRET = "sandbox-signing-secret-0123456789"
BOT_TOKEN = "xoxb-sandbox-bot-token"
RELEASE_CHANNEL = "C0RELEASES"
READY_TIMEOUT_S = 60.0
ALICE, BOB, CAROL, MALLORY = "U01ALICE", "U02BOB", "U03CAROL", "U04MALLORY"
SRE_GROUP = "S0SRE"
STABLE_IMAGE = "registry.example.com/shop/checkout:v2.3.4"

SANDBOX_CONFIG = textwrap.dedent(
    f"""\
    slack:
      release_channels: [{RELEASE_CHANNEL}]
      oncall: S0ONCALL
      deployers: [{ALICE}, {BOB}, {CAROL}]
      approvers: [{SRE_GROUP}]
    cluster_name: sandbox
    defaults:
      steps: [25, 50, 75]
      step_interval: 2s
      analysis_interval: 1s
      progress_deadline: 30s
      rules: []
      min_step_interval: 1s
      allow_overrides:
        deployers: [steps, interval]
        approvers: [steps, interval, promote]
    services:
      checkout:
        namespace: shop
        deployment: checkout
        container: app
        strategy: replicas
        environment: production
    """
)


def without_pinning(config_text: str) -> str:
    """The sandbox's images live in no registry, so digest pinning (on by default) is turned
    off unless the config says `pin_digest` itself (tests that run a real registry do)."""
    if "pin_digest" in config_text:
        return config_text
    data = yaml.safe_load(config_text) or {}
    defaults = data.get("defaults")
    data["defaults"] = {**(defaults if isinstance(defaults, dict) else {}), "pin_digest": False}
    return str(yaml.safe_dump(data, sort_keys=False))


def stable_deployment(
    name: str = "checkout",
    *,
    namespace: str | None = "shop",
    replicas: int = 4,
    image: str = STABLE_IMAGE,
    track: str | None = None,
) -> dict[str, Any]:
    """A service's stable Deployment: one container `app` serving on 8080, pods labelled and
    selected by `app: <name>`.

    The one Deployment manifest of the sandbox, the demo, the benchmarks and the tests.
    `namespace=None` leaves it out, for a test that creates it through the API in a namespace of
    its own; `track` labels the pods, and selects them, with `track: <track>`, as the strategies
    that route by Service selector need.
    """
    labels = {"app": name}
    pods = {**labels, "track": track} if track is not None else dict(labels)
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(pods)},
            "template": {
                "metadata": {"labels": dict(pods)},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"containerPort": 8080}]}
                    ]
                },
            },
        },
    }


class Sandbox:
    def __init__(
        self,
        *,
        workdir: Path,
        config_text: str = SANDBOX_CONFIG,
        ready_delay: float = 0.2,
        crd_dir: Path | None = None,
        metrics_provider: MetricsProvider | None = None,
        seed: bool = True,
    ) -> None:
        self.workdir = workdir
        self.kube = KubeEmulator(crd_dir=crd_dir, ready_delay=ready_delay)
        self.slack = SlackEmulator(
            bot_token=BOT_TOKEN, usergroups={SRE_GROUP: [BOB, CAROL], "S0ONCALL": [CAROL]}
        )
        self.config_text = config_text
        self.metrics_provider = metrics_provider
        self._seed = seed
        self.runtime: Runtime | None = None
        self.server: HttpServer | None = None
        self.admin: AdminServer | None = None
        self._driver: SlackDriver | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Sandbox:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kube.start()
        self.slack.start()
        self.kube.write_kubeconfig(self.kubeconfig)
        if self._seed:
            self.kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
            self.kube.seed(stable_deployment())
        text = without_pinning(self.config_text)
        self.config_path.write_text(text.rstrip() + "\n" + self._store_section())
        return self

    def start_bot(self, *, clock: Clock | None = None, wait_ready: bool = True) -> HttpServer:
        """Start the bot as `serve` does: both servers listen, then start-up reconciles in the
        background. By default this waits until the bot is ready (reconciled), which is what
        most tests mean by "the bot is up"; `wait_ready=False` returns as soon as it listens.
        `clock` lets a test move the bot's time on."""
        config = _unpaced(self.config)
        api_client = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))
        self.runtime = Runtime(
            config=config,
            secrets=Secrets.from_env(self.bot_env()),
            api_client=api_client,
            metrics_provider=self.metrics_provider,
            clock=clock,
        )
        self.admin = AdminServer(self.runtime, host="127.0.0.1", port=0)
        self.admin.start()
        self.server = HttpServer(self.runtime, host="127.0.0.1", port=0)
        self.server.start()
        self.runtime.start()
        self._driver = SlackDriver(
            bot_url=f"{self.server.url}/slack/events",
            signing_secret=SIGNING_SECRET,
            emulator=self.slack,
        )
        if wait_ready and not self.runtime.wait_ready(timeout=READY_TIMEOUT_S):
            raise RuntimeError(f"the bot was not ready within {READY_TIMEOUT_S:.0f}s")
        return self.server

    def stop_bot(self) -> None:
        for server in (self.server, self.admin):
            if server is not None:
                server.stop()
        self.server = self.admin = None
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None

    def drain(self) -> None:
        """Wait until the in-process bot has done all it started after answering requests."""
        if self.runtime is None:
            raise RuntimeError("the bot is not running in this sandbox; call start_bot()")
        self.runtime.drain()

    def stop(self) -> None:
        self.stop_bot()
        self.slack.stop()
        self.kube.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- settings

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig.yaml"

    @property
    def config_path(self) -> Path:
        return self.workdir / "canary-bot.yaml"

    @property
    def db_path(self) -> Path:
        return self.workdir / "canary.db"

    @property
    def config(self) -> Config:
        return load_config_text(self.config_path.read_text(), source=str(self.config_path))

    def _store_section(self) -> str:
        return f"store:\n  path: {self.db_path}\n"

    def bot_env(self) -> Mapping[str, str]:
        """The environment a `canary-bot serve` process needs to live in this sandbox."""
        return {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.api_url,
            "KUBECONFIG": str(self.kubeconfig),
            "CANARY_CONFIG": str(self.config_path),
        }

    def serve_command(self, *, port: int, admin_port: int = 0) -> list[str]:
        """`canary-bot serve` as a separate process (for tests that kill it); admin port 0
        picks any free one (pass a port to ask `/readyz` or `/metrics`)."""
        return [
            sys.executable,
            "-m",
            "bot.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
        ]

    def process_env(self) -> dict[str, str]:
        return {**os.environ, **self.bot_env(), "CANARY_LOG_LEVEL": "WARNING"}

    def driver_for(self, url: str) -> SlackDriver:
        return SlackDriver(
            bot_url=f"{url}/slack/events", signing_secret=SIGNING_SECRET, emulator=self.slack
        )

    @property
    def driver(self) -> SlackDriver:
        if self._driver is None:
            raise RuntimeError("the bot is not running in this sandbox; call start_bot()")
        return self._driver


# What the in-process bot allows itself per Slack method, unless the config says otherwise.
# The emulator enforces no rate limits unless a test asks it to (tests/test_slack_budget.py
# proves the budget against Slack's real limits), so the sandbox's bot need not pace itself
# like a production bot: scenario tests and the demo then run at the speed of the rollout.
UNPACED = SlackRateLimits(
    chat_update_per_minute=10_000,
    post_message_per_channel_per_second=100,
    file_uploads_per_minute=10_000,
)


def _unpaced(config: Config) -> Config:
    if "rate_limits" in config.slack.model_fields_set:
        return config
    slack = config.slack.model_copy(update={"rate_limits": UNPACED})
    return config.model_copy(update={"slack": slack})
