"""Cost of a rollout: Slack Web API and Kubernetes API calls per step, by method and verb.

One rollout of `checkout` goes all the way (start, three steps, approval, promotion) and a
second one is rolled back by a breached rule, in a sandbox: the production runtime against the
cluster and Slack emulators, commands and clicks sent as signed HTTP requests, metrics read by
`DirectMetrics` from the synthetic exporter (no Prometheus needed: this benchmark counts calls,
it does not time them). The scheduler is not started; the script runs each analysis tick itself,
so every call is attributed to the step that caused it:

- Slack calls: the Slack emulator's record of every Web API call, by method;
- Kubernetes calls: every HTTP request of the bot's Kubernetes client, by verb and resource
  (it agrees with the runtime's own `kube_calls` counter, which the table's total shows), and
  the writes among them as the cluster emulator logged them.

A change that makes the bot chattier shows as a larger number in the table.

Run: `python bench/cost.py` (about 30 s).
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import common  # first: puts this clone on sys.path
import yaml
from kubernetes import config as k8s_config

from bot.runtime import Runtime, Secrets
from bot.server import HttpServer
from canary_sandbox.sandbox import ALICE, BOB, RELEASE_CHANNEL, SANDBOX_CONFIG, Sandbox
from canary_sandbox.traffic_weights import canary_weight_from_cluster
from emulators.direct_metrics import DirectMetrics
from emulators.slack import SlackDriver
from emulators.traffic import TrafficExporter
from rollout.model import Phase, Rollout

INTERVAL_S = 1.0
VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def config_text() -> str:
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["defaults"].update(
        steps=[25, 50, 75],
        step_interval="2s",
        analysis_interval=f"{INTERVAL_S:g}s",
        analysis_window="5s",
        rules=[
            {"metric": "error_rate", "above": 0.05, "for": "0s"},
            {"metric": "latency_avg_ms", "above": 500, "for": "2s"},
        ],
    )
    return yaml.safe_dump(config, sort_keys=False)


class KubeRequests:
    """Every HTTP request the bot's Kubernetes client sends, as (verb, resource)."""

    def __init__(self, api_client: Any) -> None:
        self.log: list[tuple[str, str]] = []
        send = api_client.request

        def recorded(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.log.append(_verb_and_resource(method, url))
            return send(method, url, *args, **kwargs)

        api_client.request = recorded


def _verb_and_resource(method: str, url: str) -> tuple[str, str]:
    """`GET .../namespaces/shop/deployments/checkout` -> ("get", "deployments")."""
    parts = urlsplit(url).path.strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2 :]
    else:
        rest = parts[3:] if parts[0] == "apis" else parts[2:]
    resource = "/".join([rest[0], *rest[2:3]]) if rest else "?"  # plural[/subresource]
    named = len(rest) > 1
    verb = VERBS.get(method.upper()) or ("get" if named else "list")
    return verb, resource


class Meter:
    """Snapshots of every counter, and the calls made since a snapshot."""

    def __init__(self, box: Sandbox, runtime: Runtime, kube: KubeRequests) -> None:
        self._box, self._runtime, self._kube = box, runtime, kube

    def mark(self) -> tuple[int, int, int, int]:
        return (
            len(self._box.slack.calls),
            len(self._kube.log),
            len(self._box.kube.writes),
            self._runtime.kube_calls,
        )

    def since(self, mark: tuple[int, int, int, int]) -> dict[str, Any]:
        slack_from, kube_from, writes_from, calls_from = mark
        slack = Counter(call.method for call in self._box.slack.calls[slack_from:])
        kube = Counter(f"{verb} {what}" for verb, what in self._kube.log[kube_from:])
        writes = Counter(
            f"{w.method} {w.kind}" + (f"/{w.subresource}" if w.subresource else "")
            for w in self._box.kube.writes[writes_from:]
        )
        return {
            "slack": dict(sorted(slack.items())),
            "kube": dict(sorted(kube.items())),
            "kube_writes": dict(sorted(writes.items())),
            "kube_calls_counter": self._runtime.kube_calls - calls_from,
        }


class Scenario:
    """Drives the rollouts and records one row of calls per step."""

    def __init__(self, box: Sandbox, runtime: Runtime, meter: Meter, driver: SlackDriver) -> None:
        self.box, self.runtime, self.meter, self.driver = box, runtime, meter, driver
        self.rows: list[dict[str, Any]] = []
        self.prefix = ""
        self._steady: list[dict[str, Any]] = []
        self._last_tick = 0.0

    def settle(self) -> None:
        common.wait_quiet(
            lambda: (len(self.box.slack.calls), self.runtime.kube_calls),
            quiet=0.5,
            timeout=30,
            what="the bot's work after the acknowledgement",
        )

    def record(self, label: str, action: Callable[[], object], *, background: bool) -> None:
        mark = self.meter.mark()
        action()
        if background:
            self.settle()
        self.rows.append({"step": self.prefix + label, **self.meter.since(mark)})

    def whole(self, label: str, play: Callable[[], None]) -> None:
        """Play one rollout and add a row with everything it cost, quiet ticks included."""
        mark = self.meter.mark()
        play()
        self.rows.append({"step": label, **self.meter.since(mark)})

    def rollout(self) -> Rollout:
        found = self.runtime.store.history("checkout", limit=1)
        return found[0]

    def tick(self) -> None:
        """One analysis tick, labelled by what it changed; quiet ticks are averaged."""
        pause = self._last_tick + INTERVAL_S - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last_tick = time.monotonic()
        before = self.rollout()
        mark = self.meter.mark()
        # The beat's ticks, then the sender's round: the messages the tick queued go out.
        self.runtime.engine.tick_all(wait_for_ticks=True)
        self.send_queued()
        calls = self.meter.since(mark)
        label = describe(before, self.rollout())
        if label is None:
            self._steady.append(calls)
        else:
            self.rows.append({"step": self.prefix + label, **calls})

    def send_queued(self, timeout: float = 30.0) -> None:
        """The sender's and the chart worker's rounds until nothing queued is left: the Slack
        budget paces messages to a channel (one a second by default), so one round may leave
        some for later."""
        deadline = time.monotonic() + timeout
        while self.runtime.store.outbox(states=("queued",)):
            wait = min(self.runtime.sender.send_due(), self.runtime.charts.work_due())
            if time.monotonic() > deadline:
                raise TimeoutError(f"messages still queued after {timeout:g} s")
            time.sleep(min(max(wait, 0.01), 0.5))

    def tick_until(self, done: Callable[[Rollout], bool], *, what: str, limit: int = 40) -> None:
        for _ in range(limit):
            if done(self.rollout()):
                return
            self.tick()
        raise TimeoutError(f"no {what} after {limit} ticks")

    def steady_row(self) -> dict[str, Any]:
        """The mean of the ticks that changed nothing (one rollout active)."""
        n = max(1, len(self._steady))
        total: dict[str, Counter[str]] = {"slack": Counter(), "kube": Counter()}
        writes: Counter[str] = Counter()
        for calls in self._steady:
            total["slack"].update(calls["slack"])
            total["kube"].update(calls["kube"])
            writes.update(calls["kube_writes"])
        return {
            "step": f"analysis tick, no change (mean of {len(self._steady)})",
            "slack": {k: round(v / n, 2) for k, v in sorted(total["slack"].items())},
            "kube": {k: round(v / n, 2) for k, v in sorted(total["kube"].items())},
            "kube_writes": {k: round(v / n, 2) for k, v in sorted(writes.items())},
            "kube_calls_counter": round(sum(c["kube_calls_counter"] for c in self._steady) / n, 2),
        }


def describe(before: Rollout, after: Rollout) -> str | None:
    """What a tick did to the rollout, or None when it changed nothing that shows."""
    step = f"step {after.step_index + 1}"
    if after.phase != before.phase:
        return {
            Phase.AWAITING_APPROVAL: "approval requested",
            Phase.SUCCEEDED: "promotion finished (canary removed)",
            Phase.ROLLED_BACK: "rule breached: rolled back, on-call alerted",
            Phase.ROLLING_BACK: "rule breached: rolling back",
        }.get(after.phase, f"{before.phase.value} -> {after.phase.value}")
    if after.step_index != before.step_index:
        return f"{step}: weight {after.plan.steps[after.step_index]} % set"
    if after.step_ready and not before.step_ready:
        return f"{step} reached: announced, snapshot and chart"
    if after.verdict != before.verdict:
        return f"verdict {before.verdict} -> {after.verdict} (card)"
    if after.weight != before.weight:
        return f"weight in effect {before.weight:g} -> {after.weight:g} % (card)"
    return None


def run(args: argparse.Namespace) -> int:
    started = common.machine()
    common.header("cost: Slack and Kubernetes API calls per rollout step", started)
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        box = Sandbox(workdir=Path(tmp), config_text=config_text(), ready_delay=0.1)
        exporter = TrafficExporter(weight_of=canary_weight_from_cluster(box.kube))
        exporter.add_service("shop", "checkout", deployment="checkout", rps=40.0)
        metrics = DirectMetrics(exporter)
        server: HttpServer | None = None
        runtime: Runtime | None = None
        try:
            metrics.start()
            box.start()
            api_client = k8s_config.new_client_from_config(config_file=str(box.kubeconfig))
            kube = KubeRequests(api_client)
            runtime = Runtime(
                config=box.config,
                secrets=Secrets.from_env(box.bot_env()),
                api_client=api_client,
                metrics_provider=metrics,
            )
            # What Runtime.start does, but without the scheduler: the approvers' user group
            # read from Slack, and the cluster reconciled.
            runtime.directory.start()
            runtime.engine.reconcile()
            server = HttpServer(runtime, host="127.0.0.1", port=0)
            server.start()
            scenario = Scenario(box, runtime, Meter(box, runtime, kube), box.driver_for(server.url))
            play(scenario, exporter)
            rows = [*scenario.rows, scenario.steady_row()]
        finally:
            if server is not None:
                server.stop()
            if runtime is not None:
                runtime.stop()
            box.stop()
            metrics.stop()
    return report(rows, started=started)


def play(scenario: Scenario, exporter: TrafficExporter) -> None:
    scenario.prefix = "1: "
    scenario.whole("rollout 1 in all (start to promoted)", lambda: promoted(scenario))
    scenario.prefix = "2: "
    scenario.whole(
        "rollout 2 in all (start to rolled back)", lambda: rolled_back(scenario, exporter)
    )


def promoted(scenario: Scenario) -> None:
    """Start, three steps, approval, promotion."""
    scenario.record(
        "/canary start (ack, canary created, card)",
        lambda: scenario.driver.command(
            "start checkout v2.3.5", user=ALICE, channel=RELEASE_CHANNEL
        ),
        background=True,
    )
    scenario.tick_until(lambda r: r.phase == Phase.AWAITING_APPROVAL, what="approval request")
    approval = scenario.box.slack.message(RELEASE_CHANNEL, scenario.rollout().approval_ts or "")
    assert approval is not None, "no approval message"
    scenario.record(
        "Approve click (promotion begins)",
        lambda: scenario.driver.click(message=approval, action_id="approve", user=BOB),
        background=True,
    )
    scenario.tick_until(lambda r: r.phase == Phase.SUCCEEDED, what="promotion")


def rolled_back(scenario: Scenario, exporter: TrafficExporter) -> None:
    """Start, step 1, then the canary fails half its requests: a rule breaches."""
    scenario.record(
        "/canary start (ack, canary created, card)",
        lambda: scenario.driver.command(
            "start checkout v2.3.6", user=ALICE, channel=RELEASE_CHANNEL
        ),
        background=True,
    )
    scenario.tick_until(lambda r: r.step_ready, what="step 1 of the second rollout")
    exporter.set_track("shop", "checkout", "canary", error_rate=0.5)
    scenario.tick_until(lambda r: r.phase.is_terminal, what="rollback")


def compact(counts: dict[str, float]) -> str:
    return ", ".join(f"{name} {n:g}" for name, n in counts.items()) or "-"


def report(rows: list[dict[str, Any]], *, started: dict[str, Any]) -> int:
    print()
    print(
        common.table(
            ["step", "Slack", "kube", "kube writes"],
            [
                [
                    row["step"],
                    round(sum(row["slack"].values()), 2),
                    round(sum(row["kube"].values()), 2),
                    round(sum(row["kube_writes"].values()), 2),
                ]
                for row in rows
            ],
        )
    )
    print("\nBy Slack method and Kubernetes verb:")
    for row in rows:
        print(f"  {row['step']}")
        print(
            textwrap.fill(
                compact(row["slack"]),
                96,
                initial_indent="    Slack: ",
                subsequent_indent="           ",
            )
        )
        print(
            textwrap.fill(
                compact(row["kube"]),
                96,
                initial_indent="    kube:  ",
                subsequent_indent="           ",
            )
        )
    mismatched = [
        row["step"]
        for row in rows
        if abs(sum(row["kube"].values()) - row["kube_calls_counter"]) > 0.01
    ]
    print(
        "\nKubernetes requests counted here agree with the runtime's kube_calls counter: "
        + ("yes" if not mismatched else f"NO, in {', '.join(mismatched)}")
    )
    common.report(
        "cost",
        started=started,
        targets=[],
        figures={"steps": rows, "kube_counts_disagree_with_runtime_counter": mismatched},
        notes=[
            "no targets: the figures are a baseline, so that chattier changes show",
            f"one analysis tick every {INTERVAL_S:g} s, steps every 2 s, metrics from the "
            "exporter through DirectMetrics",
            "auth.test is Bolt's one-time check of the token at the first request",
        ],
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
