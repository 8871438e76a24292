"""Everything `canary-bot demo` runs, on 127.0.0.1: cluster, Slack, traffic, metrics and the bot.

The sandbox gives the emulated cluster (with `shop/checkout`), the Slack Web API emulator and
the production bot over HTTP. On top of it the demo adds live traffic: a synthetic exporter whose
canary share follows the pods the bot really runs, measured by a real Prometheus when the binary
is installed, else read directly through the same `MetricsProvider` protocol. The rules are real
ones, so breaking the canary (a higher error rate) makes the bot roll back and page on-call.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from types import TracebackType

from canary_sandbox.sandbox import ALICE, BOB, CAROL, MALLORY, RELEASE_CHANNEL, SRE_GROUP, Sandbox
from canary_sandbox.traffic_weights import canary_weight_from_cluster
from emulators.direct_metrics import DirectMetrics
from emulators.prometheus import PrometheusServer, find_prometheus_binary
from emulators.slack import SlackDriver, SlackEmulator
from emulators.traffic import TrafficExporter

log = logging.getLogger(__name__)

NAMESPACE, SERVICE = "shop", "checkout"
ONCALL_GROUP = "S0ONCALL"
CLUSTER_NAME = "demo-cluster"
ERROR_RATE_LIMIT = 0.05

# Who is who: the page's user picker and the scripted scenario both rely on these roles.
PEOPLE = {
    ALICE: ("alice", "Alice", "deployer"),
    BOB: ("bob", "Bob", "deployer · SRE approver"),
    CAROL: ("carol", "Carol", "deployer · SRE approver · on-call"),
    MALLORY: ("mallory", "Mallory", "no rights here"),
}
GROUP_HANDLES = {SRE_GROUP: "sre", ONCALL_GROUP: "oncall"}
CHANNEL_NAMES = {RELEASE_CHANNEL: "releases"}

HEALTHY = {"stable": (0.002, 45.0), "canary": (0.003, 48.0)}  # (error rate, latency ms)
BROKEN = (0.30, 140.0)

DEMO_CONFIG = textwrap.dedent(
    f"""\
    slack:
      release_channels: [{RELEASE_CHANNEL}]
      oncall: {ONCALL_GROUP}
      deployers: [{ALICE}, {BOB}, {CAROL}]
      approvers: [{SRE_GROUP}]
    cluster_name: {CLUSTER_NAME}
    defaults:
      steps: [25, 50, 75]
      step_interval: 3s
      analysis_interval: 1s
      analysis_window: 10s
      progress_deadline: 30s
      min_step_interval: 1s
      allow_overrides:
        deployers: [steps, interval]
        approvers: [steps, interval, promote]
      rules:
        - {{metric: error_rate, above: {ERROR_RATE_LIMIT}, for: 5s}}
        - {{metric: latency_p99_ms, above: 800, for: 5s}}
    services:
      {SERVICE}:
        namespace: {NAMESPACE}
        deployment: {SERVICE}
        container: app
        strategy: replicas
        environment: production
    """
)


class DemoWorld:
    """Start with `start()` (or `with`); `prometheus=None` uses Prometheus when it is installed."""

    def __init__(self, *, workdir: Path, prometheus: bool | None = None) -> None:
        self.sandbox = Sandbox(workdir=workdir, config_text=DEMO_CONFIG)
        self.sandbox.slack.users = {
            user: {"name": handle, "real_name": name, "title": role}
            for user, (handle, name, role) in PEOPLE.items()
        }
        self.weight_of = canary_weight_from_cluster(self.sandbox.kube)
        self.exporter = TrafficExporter(weight_of=self.weight_of)
        self._require_prometheus = bool(prometheus)
        self._binary = find_prometheus_binary() if prometheus is not False else None
        if prometheus and self._binary is None:
            raise FileNotFoundError("no prometheus binary: apt-get install prometheus")
        self.prometheus: PrometheusServer | None = None
        self.direct: DirectMetrics | None = None
        self.canary_broken = False

    def start(self) -> DemoWorld:
        """Traffic, metrics, emulators, then the bot; stops what it started if a part fails."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.exporter.add_service(NAMESPACE, SERVICE, deployment=SERVICE, rps=40.0)
        self.break_canary(False)
        address = self.exporter.start()
        url = self._start_prometheus(address) if self._binary is not None else None
        if url is not None:
            self.sandbox.config_text = DEMO_CONFIG + f"prometheus:\n  url: {url}\n"
        else:
            self.direct = DirectMetrics(self.exporter)
            self.direct.start()
            self.sandbox.metrics_provider = self.direct
        self.sandbox.start()
        self.sandbox.start_bot()

    def _start_prometheus(self, target: str) -> str | None:
        """Prometheus scraping the traffic; None (read directly) if it will not start."""
        assert self._binary is not None
        self.prometheus = PrometheusServer(
            targets=[target], scrape_interval="1s", binary=self._binary
        )
        try:
            url = self.prometheus.start()
            # Until the first scrape every metric is "no data" and the first step would wait.
            self.prometheus.wait_until_scraped()
        except (RuntimeError, TimeoutError, OSError) as error:
            if self._require_prometheus:
                raise
            log.warning("Prometheus did not start, reading the traffic directly: %s", error)
            self.prometheus.close()
            self.prometheus = None
            return None
        return url

    def stop(self) -> None:
        self.sandbox.stop()
        if self.direct is not None:
            self.direct.stop()
        if self.prometheus is not None:
            self.prometheus.close()
        self.exporter.stop()

    def __enter__(self) -> DemoWorld:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- what the demo controls

    def break_canary(self, broken: bool = True) -> None:
        """Make the canary fail (or heal it) from now on; the bot finds out through its rules."""
        for track, (error_rate, latency_ms) in HEALTHY.items():
            if broken and track == "canary":
                error_rate, latency_ms = BROKEN
            self.exporter.set_track(
                NAMESPACE, SERVICE, track, error_rate=error_rate, latency_ms=latency_ms
            )
        self.canary_broken = broken

    def canary_error_rate(self) -> float:
        return BROKEN[0] if self.canary_broken else HEALTHY["canary"][0]

    def canary_weight(self) -> float:
        """The share of requests the canary really serves now, in percent."""
        return self.weight_of(NAMESPACE, SERVICE)

    @property
    def metrics_backend(self) -> str:
        if self.prometheus is not None:
            return f"Prometheus at {self.prometheus.url}"
        return "read directly from the traffic generator (no Prometheus)"

    @property
    def slack(self) -> SlackEmulator:
        return self.sandbox.slack

    @property
    def driver(self) -> SlackDriver:
        return self.sandbox.driver
