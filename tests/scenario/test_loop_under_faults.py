"""The control loop against slow and failing dependencies (issue: the loop itself is where
time went).

- One rollout whose Kubernetes requests all hang (and its namespace's, which a beat LISTs)
  delays no other rollout's rollback, its own calls end at their deadline, and it carries on
  once the API answers again.
- Slack answering 429 with Retry-After: 10 at the moment of a breach delays the rollback by
  nothing, and every message still arrives exactly once afterwards.
- With 3 s of latency on every Kubernetes request, commands and clicks are acknowledged within
  Slack's 3 s limit.

Rollback time is asserted against DESIGN.md's contract (`analysis_interval` + 2 s, from the
moment the breach is visible in the metrics the bot reads). That bound is the product's
promise, not a benchmark: before these changes the same runs took 10 s and more
(bench/rollback.py measures the figures).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from canary_sandbox.sandbox import (
    ALICE,
    BOB,
    CAROL,
    RELEASE_CHANNEL,
    SANDBOX_CONFIG,
    Sandbox,
    stable_deployment,
)
from canary_sandbox.traffic_weights import canary_weight_from_cluster
from emulators.direct_metrics import DirectMetrics
from emulators.slack import Message
from emulators.slack.blocks import find_button
from emulators.slack.driver import DriverResponse
from emulators.traffic import TrafficExporter
from rollout.analysis import AnalysisTarget, Analyzer
from rollout.model import Phase, Rollout
from tests.reliability.support import wait_for

INTERVAL_S = 1.0
REPLICAS = 4
THRESHOLD = 0.05
REQUEST_TIMEOUT_S = 3.0
SLACK_LIMIT_S = 3.0


def config_text(services: dict[str, dict[str, object]], *, rules: bool) -> str:
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["kubernetes"] = {"request_timeout": f"{REQUEST_TIMEOUT_S:g}s"}
    config["defaults"].update(
        steps=[25, 50, 75],
        step_interval="1h",
        analysis_interval=f"{INTERVAL_S:g}s",
        analysis_window="3s",
        progress_deadline="5m",
        rules=[{"metric": "error_rate", "above": THRESHOLD, "for": "0s"}] if rules else [],
    )
    config["services"] = {
        name: {
            "namespace": "shop",
            "deployment": name,
            "container": "app",
            "strategy": "replicas",
            "environment": "production",
            **extra,
        }
        for name, extra in services.items()
    }
    return yaml.safe_dump(config, sort_keys=False)


def namespace_of(services: dict[str, dict[str, object]], name: str) -> str:
    return str(services[name].get("namespace", "shop"))


@dataclass
class World:
    sandbox: Sandbox
    exporter: TrafficExporter
    metrics: DirectMetrics
    namespaces: dict[str, str]

    def latest(self, service: str) -> Rollout | None:
        assert self.sandbox.runtime is not None
        found = self.sandbox.runtime.store.history(service, limit=1)
        return found[0] if found else None

    def start(self, service: str) -> Rollout:
        reply = self.sandbox.driver.command(
            f"start {service} v2.4.0", user=BOB, channel=RELEASE_CHANNEL
        )
        assert reply.status == 200 and "Starting" in reply.body, reply.body
        return wait_for(
            lambda: (r := self.latest(service)) is not None and r.step_ready and r,
            what=f"{service}'s first step",
        )

    def breach_visible(self, service: str) -> bool:
        """Is the canary's error rate beyond the threshold in what the bot measures?"""
        target = AnalysisTarget(
            rollout_id=service,
            service=service,
            namespace=self.namespaces[service],
            deployment=service,
            strategy="replicas",
            ingress=None,
            window=timedelta(seconds=3),
        )
        measured = Analyzer(self.metrics).measure([target], now=datetime.now(UTC))[service]
        rate = measured.values["error_rate"].canary
        return rate is not None and rate > THRESHOLD

    def on_stable(self, service: str) -> bool:
        kube = self.sandbox.kube
        namespace = self.namespaces[service]
        canary = kube.get("apps/v1", "Deployment", namespace, f"{service}-canary")
        stable = kube.get("apps/v1", "Deployment", namespace, service)
        assert stable is not None
        gone = canary is None or int(canary["spec"].get("replicas", 1)) == 0
        return gone and int(stable["spec"]["replicas"]) == REPLICAS

    def break_canary(self, service: str) -> tuple[float, float]:
        """Make the canary fail half its requests; returns (breach visible, traffic on stable)
        as monotonic times."""
        self.exporter.set_track(self.namespaces[service], service, "canary", error_rate=0.5)
        visible = wait_for(
            lambda: self.breach_visible(service) and time.monotonic(),
            what=f"{service}'s breach in the metrics",
            interval=0.02,
        )
        back = wait_for(
            lambda: self.on_stable(service) and time.monotonic(),
            what=f"{service} back on stable",
            interval=0.005,
        )
        return visible, back


def make_world(tmp_path: Path, services: dict[str, dict[str, object]], *, rules: bool) -> World:
    sandbox = Sandbox(
        workdir=tmp_path / "sandbox", config_text=config_text(services, rules=rules), seed=False
    )
    exporter = TrafficExporter(weight_of=canary_weight_from_cluster(sandbox.kube))
    namespaces = {name: namespace_of(services, name) for name in services}
    for name, namespace in namespaces.items():
        exporter.add_service(namespace, name, deployment=name, rps=40.0)
        exporter.set_track(namespace, name, "canary", error_rate=0.0, latency_ms=50.0)
    metrics = DirectMetrics(exporter, interval=0.1)
    sandbox.metrics_provider = metrics
    sandbox.start()
    for namespace in sorted(set(namespaces.values())):
        sandbox.kube.seed(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    for name, namespace in namespaces.items():
        sandbox.kube.seed(stable_deployment(name=name, namespace=namespace, replicas=REPLICAS))
    metrics.start()
    sandbox.start_bot()
    return World(sandbox=sandbox, exporter=exporter, metrics=metrics, namespaces=namespaces)


@pytest.fixture
def two_services(tmp_path: Path) -> Iterator[World]:
    # cart in a namespace of its own: a beat reads each namespace with one LIST, so what hangs
    # "about cart" is its namespace's LIST as well as its own calls.
    world = make_world(tmp_path, {"checkout": {}, "cart": {"namespace": "cart"}}, rules=True)
    try:
        yield world
    finally:
        world.sandbox.kube.faults.release()
        world.metrics.stop()
        world.sandbox.stop()


@pytest.mark.timeout(120)
def test_a_rollout_whose_api_calls_hang_delays_no_other_rollback(two_services: World) -> None:
    world = two_services
    sandbox = world.sandbox
    assert sandbox.runtime is not None
    world.start("checkout")
    world.start("cart")

    # Every request about cart (its Deployment, its canary) now gets no answer at all.
    registry = sandbox.runtime.metrics.registry
    sandbox.kube.faults.hold("cart")
    wait_for(lambda: sandbox.kube.faults.held_now > 0, what="a tick of cart stuck on a call")

    visible, back = world.break_canary("checkout")
    assert back - visible <= INTERVAL_S + 2.0, f"checkout back on stable after {back - visible}s"
    checkout = wait_for(
        lambda: (r := world.latest("checkout")) and r.phase == Phase.ROLLED_BACK and r,
        what="checkout rolled back",
    )
    assert checkout.reason is not None and "error_rate" in checkout.reason

    # cart's calls end at their deadline (counted as such), and cart is still there, active.
    wait_for(
        lambda: registry.get_sample_value(
            "canary_bot_deadlines_exceeded_total", {"dependency": "kubernetes"}
        ),
        what="a deadline counted for cart's calls",
    )
    audited = [
        row["detail"]
        for row in sandbox.runtime.store.audit_rows()
        if row["action"] == "deadline exceeded"
    ]
    assert audited and all(detail.startswith("kubernetes: ") for detail in audited), audited
    assert all("cart" in detail for detail in audited), audited
    cart = world.latest("cart")
    assert cart is not None and cart.phase == Phase.PROGRESSING

    # Once the API answers again, cart carries on: a rollback goes all the way through.
    sandbox.kube.faults.release()
    reply = sandbox.driver.command("rollback cart", user=ALICE, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    wait_for(lambda: world.on_stable("cart"), what="cart back on stable", timeout=60)
    wait_for(
        lambda: (r := world.latest("cart")) and r.phase == Phase.ROLLED_BACK,
        what="cart rolled back",
        timeout=60,
    )


@pytest.fixture
def one_service(tmp_path: Path) -> Iterator[World]:
    world = make_world(tmp_path, {"checkout": {}}, rules=True)
    try:
        yield world
    finally:
        world.metrics.stop()
        world.sandbox.stop()


@pytest.mark.timeout(120)
def test_a_slack_429_storm_at_a_breach_delays_the_rollback_by_nothing(one_service: World) -> None:
    world = one_service
    sandbox = world.sandbox
    assert sandbox.runtime is not None
    rollout = world.start("checkout")
    wait_for(lambda: not sandbox.runtime.store.unsent(), what="the step's messages sent")  # type: ignore[union-attr]

    faults = sandbox.slack.faults
    faults.methods = frozenset({"chat.postMessage", "chat.update"})
    faults.retry_after = 10
    faults.rate_limit_rate = 1.0
    visible, back = world.break_canary("checkout")
    assert back - visible <= INTERVAL_S + 2.0, f"back on stable after {back - visible}s"
    wait_for(
        lambda: any(
            call.error == "ratelimited"
            for method in faults.methods or ()
            for call in sandbox.slack.calls_to(method)
        ),
        what="Slack answering 429",
    )
    faults.rate_limit_rate = 0.0

    # Every message arrives, after the Retry-After, exactly once.
    wait_for(
        lambda: (r := world.latest("checkout")) and r.phase == Phase.ROLLED_BACK,
        what="rolled back",
    )
    wait_for(lambda: not sandbox.runtime.store.unsent(), what="every message sent", timeout=60)  # type: ignore[union-attr]
    # Every post carries its outbox key in its metadata (the chart uploads carry none).
    posted = [
        *sandbox.slack.messages(RELEASE_CHANNEL),
        *sandbox.slack.thread(RELEASE_CHANNEL, rollout.thread_ts or ""),
    ]
    keys = [key for m in posted if (key := (m.metadata or {}).get("event_payload", {}).get("key"))]
    assert len(keys) == len(set(keys)), keys
    assert "finished:rolled_back" in keys
    assert any(str(k).startswith("RollbackStarted:") for k in keys), keys
    assert any(str(k).startswith("alert:") for k in keys), keys
    alerts = [m for m in sandbox.slack.messages(RELEASE_CHANNEL) if "S0ONCALL" in m.text]
    assert len(alerts) == 1, [m.text for m in alerts]


@pytest.fixture
def slow_cluster(tmp_path: Path) -> Iterator[World]:
    world = make_world(
        tmp_path,
        {"checkout": {"steps": [25], "step_interval": "1s"}, "cart": {}},
        rules=False,
    )
    try:
        yield world
    finally:
        world.sandbox.kube.faults.reset()
        world.metrics.stop()
        world.sandbox.stop()


@pytest.mark.timeout(300)
def test_commands_and_clicks_are_acknowledged_in_time_with_a_slow_api(slow_cluster: World) -> None:
    world = slow_cluster
    sandbox = world.sandbox
    world.start("cart")
    checkout = wait_for(
        lambda: (
            (r := world.latest("checkout") or world.start("checkout"))
            and r.phase == Phase.AWAITING_APPROVAL
            and r
        ),
        what="checkout awaiting approval",
    )
    approval = wait_for(
        lambda: next(
            (
                m
                for m in sandbox.slack.thread(RELEASE_CHANNEL, checkout.thread_ts or "")
                if find_button(m.blocks, "approve") is not None
            ),
            None,
        ),
        what="the approval request",
    )

    sandbox.kube.faults.latency = 3.0
    elapsed = _acknowledgements(world, approval, times=20)
    figures = {name: _p99_and_max(times) for name, times in elapsed.items()}
    print(f"acknowledgements with 3 s Kubernetes latency: {figures}")
    # Slack shows the user an error for any answer later than 3 s: that is the one bound
    # asserted here (the p99 figures above are for the report, not for pass/fail).
    slow = {name: max(times) for name, times in elapsed.items() if max(times) >= SLACK_LIMIT_S}
    assert not slow, slow
    # And the effects followed through the loop: approved and promoting, cart rolling back.
    wait_for(
        lambda: (r := world.latest("checkout")) and r.phase in (Phase.PROMOTING, Phase.SUCCEEDED),
        what="checkout promoting",
    )
    wait_for(
        lambda: (r := world.latest("cart")) and r.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK),
        what="cart rolling back",
    )


def _acknowledgements(world: World, approval: Message, *, times: int) -> dict[str, list[float]]:
    """Seconds to Slack's HTTP answer, `times` of each command and of the Approve click."""
    driver = world.sandbox.driver

    def command(text: str) -> DriverResponse:
        return driver.command(text, user=ALICE, channel=RELEASE_CHANNEL)

    sends: dict[str, Callable[[], DriverResponse]] = {
        "status": lambda: command("status cart"),
        "approve": lambda: driver.click(message=approval, action_id="approve", user=CAROL),
        "pause": lambda: command("pause cart"),
        "rollback": lambda: command("rollback cart"),
    }
    elapsed: dict[str, list[float]] = {}
    for name, send in sends.items():
        for _ in range(times):
            reply = send()
            assert reply.status == 200, reply.body
            elapsed.setdefault(name, []).append(reply.elapsed)
    return elapsed


def _p99_and_max(times: list[float]) -> str:
    p99 = sorted(times)[int(0.99 * (len(times) - 1))]
    return f"p99 {p99 * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
