"""Rollback: seconds from the first Prometheus scrape that shows a breach to traffic on stable.

The bot runs as in production, a separate `canary-bot serve` process, with one rollback rule
(`error_rate above 5 % for 0s`) judged every `analysis_interval: 5s` over a 10 s window. A real
Prometheus scrapes the synthetic exporter every second; the exporter splits each service's
requests by the canary's share of ready pods in the emulated cluster, so what Prometheus
records follows what the bot does.

Each run starts a rollout of a fresh service with a slash command, waits until the canary's
traffic shows in Prometheus and a random part of an analysis interval more (so the breach
lands anywhere in the bot's beat), then makes the canary fail half of its requests. From then
on the script polls Prometheus every 10 ms with the very query the bot uses for the canary's
error rate, and the cluster: the clock starts when Prometheus first shows the rate beyond the
threshold and stops when the canary Deployment is gone (or at 0 replicas) and the stable one has
its original replica count back. The on-call alert's time is recorded too. Median of 5 runs.

Every run is done twice, side by side: once with a quiet Slack, once with a 429 storm (Slack
answers every chat.postMessage and chat.update with 429 and `Retry-After: 10` from just before
the breach until traffic is back on stable). The cluster must not notice the difference; the
alert comes after the Retry-After.

Then the same is measured at scale (`--others`, 1,000 by default): a new bot and cluster with
1,000 other rollouts started (slash commands) and held at their first step, each with traffic
of its own in Prometheus (a second exporter, in a process of its own and scraped every 5 s,
because 120,000 series cannot be rendered every second beside the bot on 2 cores), so every
beat ticks 1,000 rollouts besides the one that breaks. Quiet Slack only; same target.

Run: `python bench/rollback.py` (about 8 min); `--runs 9` for more runs, `--others 0` to skip
the run at scale.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import common  # first: puts this clone on sys.path
import requests
import yaml
from scale_world import ready, start_child, stop_child, traffic

from canary_sandbox.sandbox import (
    ALICE,
    RELEASE_CHANNEL,
    SANDBOX_CONFIG,
    Sandbox,
    stable_deployment,
)
from canary_sandbox.traffic_weights import canary_weight_from_cluster
from emulators.prometheus import PrometheusServer, free_port
from emulators.traffic import TrafficExporter
from rollout.analysis import AnalysisTarget, PrometheusProvider
from rollout.analysis.batch import BatchQuery
from rollout.analysis.queries import GENERIC, REQUESTS
from rollout.analysis.types import Track

NAMESPACE = "shop"
INTERVAL_S = 5.0
WINDOW_S = 10
THRESHOLD = 0.05
BROKEN_ERROR_RATE = 0.5
REPLICAS = 4
TARGET_S = INTERVAL_S + 2.0


def config_text(services: list[str], *, prometheus_url: str) -> str:
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["prometheus"] = {"url": prometheus_url, "timeout": "2s"}
    config["defaults"].update(
        steps=[25, 50, 75],
        step_interval="1h",
        analysis_interval=f"{INTERVAL_S:g}s",
        analysis_window=f"{WINDOW_S}s",
        rules=[{"metric": "error_rate", "above": THRESHOLD, "for": "0s"}],
    )
    config["services"] = {
        name: {
            "namespace": NAMESPACE,
            "deployment": name,
            "container": "app",
            "strategy": "replicas",
            "environment": "production",
        }
        for name in services
    }
    return yaml.safe_dump(config, sort_keys=False)


class CanaryErrorRate:
    """The canary's error rate as the bot queries it (its batched query, for one service)."""

    def __init__(self, url: str, service: str) -> None:
        self._provider = PrometheusProvider(url)
        target = AnalysisTarget(
            rollout_id=service,
            service=service,
            namespace=NAMESPACE,
            deployment=service,
            strategy="replicas",
            ingress=None,
            window=timedelta(seconds=WINDOW_S),
        )
        self._requests = BatchQuery(GENERIC, REQUESTS, target.window, (target,))
        self._service = service

    def _canary(self, metric: str) -> float | None:
        measured = self._requests.split(self._provider.query(self._requests.promql))
        canary: tuple[str, str, Track] = (self._service, metric, "canary")
        return measured.get(canary)

    def error_rate(self) -> float | None:
        return self._canary("error_rate")

    def request_rate(self) -> float | None:
        return self._canary("request_rate")


def on_stable(box: Sandbox, service: str) -> bool:
    canary = box.kube.get("apps/v1", "Deployment", NAMESPACE, f"{service}-canary")
    stable = box.kube.get("apps/v1", "Deployment", NAMESPACE, service)
    assert stable is not None
    canary_gone = canary is None or int(canary["spec"].get("replicas", 1)) == 0
    return canary_gone and int(stable["spec"].get("replicas", 1)) == REPLICAS


def stable_ready(box: Sandbox, service: str) -> bool:
    stable = box.kube.get("apps/v1", "Deployment", NAMESPACE, service)
    assert stable is not None
    return int((stable.get("status") or {}).get("readyReplicas", 0) or 0) == REPLICAS


def one_run(
    box: Sandbox,
    *,
    bot_url: str,
    prometheus_url: str,
    exporter: TrafficExporter,
    service: str,
    delay: float,
    storm: bool,
) -> dict[str, Any]:
    metrics = CanaryErrorRate(prometheus_url, service)
    exporter.set_track(NAMESPACE, service, "canary", error_rate=0.0, latency_ms=50.0)
    seen = {message.ts for message in box.slack.messages(RELEASE_CHANNEL)}
    reply = box.driver_for(bot_url).command(
        f"start {service} v2.3.5", user=ALICE, channel=RELEASE_CHANNEL
    )
    if reply.status != 200:
        raise RuntimeError(f"start of {service} answered {reply.status}: {reply.body}")
    common.wait_until(
        lambda: (metrics.request_rate() or 0) > 0,
        timeout=30,
        every=0.2,
        what=f"canary traffic of {service} in Prometheus",
    )
    time.sleep(delay)
    common.wait_until(lambda: _quiet(box, service), timeout=30, what="the start's messages sent")
    if storm:
        faults = box.slack.faults
        faults.methods = frozenset({"chat.postMessage", "chat.update"})
        faults.retry_after = 10
        faults.rate_limit_rate = 1.0

    exporter.set_track(NAMESPACE, service, "canary", error_rate=BROKEN_ERROR_RATE)
    broken_at = time.time()
    visible_at: float | None = None
    back_at: float | None = None
    deadline = time.monotonic() + 60
    while back_at is None and time.monotonic() < deadline:
        if visible_at is None and (metrics.error_rate() or 0) > THRESHOLD:
            visible_at = time.time()
        if on_stable(box, service):
            back_at = time.time()
        time.sleep(0.01)
    box.slack.faults.rate_limit_rate = 0.0
    if back_at is None:
        raise TimeoutError(f"{service}: no rollback within 60 s of the breach")
    if visible_at is None:  # the bot was quicker than the poll that would have seen it
        visible_at = back_at
    ready_at = common.wait_until(
        lambda: stable_ready(box, service) and time.time(), timeout=30, what="stable pods ready"
    )
    # The run's new top-level messages: its status card, then the alert. With many other
    # rollouts the alert may queue behind their messages: then it is reported as not seen.
    try:
        alert = common.wait_until(
            lambda: [
                m
                for m in box.slack.messages(RELEASE_CHANNEL)
                if m.ts not in seen and not m.is_reply and service in m.text
            ][1:],
            timeout=60,
            what=f"the on-call alert for {service}",
        )[0]
        alert_at = next(
            call.wall
            for call in box.slack.calls_to("chat.postMessage")
            if call.response.get("ts") == alert.ts
        )
    except TimeoutError:
        alert_at = math.nan
    return {
        "service": service,
        "slack": "429 storm" if storm else "quiet",
        "breach_set_to_visible_s": round(visible_at - broken_at, 2),
        "visible_to_traffic_on_stable_s": round(back_at - visible_at, 2),
        "visible_to_stable_pods_ready_s": round(ready_at - visible_at, 2),
        "visible_to_alert_posted_s": round(alert_at - visible_at, 2),
    }


def run(args: argparse.Namespace) -> int:
    started = common.machine()
    common.header("rollback: breach visible in Prometheus -> traffic back on stable", started)
    chance = random.Random(args.seed)
    services = [f"pay-{i + 1}" for i in range(args.runs)] + [
        f"storm-{i + 1}" for i in range(args.runs)
    ]
    runs = phase(services, others=0, chance=chance)
    if args.others:
        print(f"\nagain with {args.others} other active rollouts (quiet Slack):")
        scale = [f"busy-{i + 1}" for i in range(args.runs)]
        runs += phase(scale, others=args.others, chance=chance)
    return report(runs, started=started)


def phase(services: list[str], *, others: int, chance: random.Random) -> list[dict[str, Any]]:
    """One bot, cluster and Prometheus: `others` rollouts started and held, then one run per
    service in `services` (a `storm-` one with a Slack 429 storm)."""
    background = [f"bg-{i:04d}" for i in range(others)]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        box = Sandbox(workdir=Path(tmp), config_text="")
        exporter = TrafficExporter(weight_of=canary_weight_from_cluster(box.kube))
        prometheus: PrometheusServer | None = None
        bot: subprocess.Popen[bytes] | None = None
        helper = start_child(traffic, background) if background else None
        try:
            for name in services:
                exporter.add_service(NAMESPACE, name, deployment=name, rps=40.0)
            slow = [ready(helper[1], what="the others' exporter")["exporter"]] if helper else []
            prometheus = PrometheusServer(
                targets=[exporter.start()], scrape_interval="1s", slow_targets=slow
            )
            prometheus.start()
            box.config_text = config_text(services + background, prometheus_url=prometheus.url)
            box.start()
            for name in services + background:
                image = f"registry.example.com/{NAMESPACE}/{name}:v2.3.4"
                box.kube.seed(stable_deployment(name=name, replicas=REPLICAS, image=image))
            prometheus.wait_until_scraped(timeout=60)
            port = free_port()
            bot = subprocess.Popen(
                box.serve_command(port=port),
                env=box.process_env(),
                cwd=common.ROOT,
                stdout=(Path(tmp) / "bot.log").open("wb"),
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            bot_url = f"http://127.0.0.1:{port}"
            common.wait_until(
                lambda: _healthy(bot_url), timeout=30, what="canary-bot serve to answer /healthz"
            )
            if background:
                start_others(box, bot_url=bot_url, services=background)
            for service in services:
                result = one_run(
                    box,
                    bot_url=bot_url,
                    prometheus_url=prometheus.url,
                    exporter=exporter,
                    service=service,
                    delay=chance.uniform(0, INTERVAL_S),
                    storm=service.startswith("storm-"),
                )
                result["others"] = others
                print(
                    f"  {service} (Slack {result['slack']}, {others} others): breach visible "
                    f"-> traffic on stable {result['visible_to_traffic_on_stable_s']:.2f} s"
                )
                runs.append(result)
        finally:
            if bot is not None:
                common.stop_process(bot)
            box.stop()
            if prometheus is not None:
                prometheus.close()
            exporter.stop()
            if helper is not None:
                stop_child(*helper)
    return runs


def start_others(box: Sandbox, *, bot_url: str, services: list[str]) -> None:
    """Start every other rollout with a slash command (4 at a time) and wait until each has
    its canary pods ready, so every beat from now on ticks them all."""
    began = time.monotonic()
    driver = box.driver_for(bot_url)

    def start(service: str) -> None:
        reply = driver.command(f"start {service} v2.3.5", user=ALICE, channel=RELEASE_CHANNEL)
        if reply.status != 200:
            raise RuntimeError(f"start of {service} answered {reply.status}: {reply.body}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(start, services))

    def canaries_ready() -> bool:
        found = box.kube.list("apps/v1", "Deployment", NAMESPACE)
        ready = sum(
            1
            for d in found
            if d["metadata"]["name"].endswith("-canary")
            and int((d.get("status") or {}).get("readyReplicas", 0) or 0) >= 1
        )
        return ready >= len(services)

    common.wait_until(canaries_ready, timeout=600, every=1.0, what="the others' canaries ready")
    print(f"  {len(services)} other rollouts started and ready in {time.monotonic() - began:.0f} s")


def _quiet(box: Sandbox, service: str) -> bool:
    """No Slack call about `service` for a moment: its start's messages are out (so a storm
    hits only the breach's messages; the other rollouts' calls do not count)."""
    calls = [
        call
        for call in box.slack.calls_to("chat.postMessage") + box.slack.calls_to("chat.update")
        if service in json.dumps(call.args, default=str)
    ]
    return not calls or time.time() - max(call.wall for call in calls) > 1.0


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def report(runs: list[dict[str, Any]], *, started: dict[str, Any]) -> int:
    columns = [
        ("visible_to_traffic_on_stable_s", "-> traffic on stable s"),
        ("visible_to_stable_pods_ready_s", "-> stable pods ready s"),
        ("visible_to_alert_posted_s", "-> alert posted s"),
        ("breach_set_to_visible_s", "(breach set -> visible s)"),
    ]
    medians: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for run in runs:
        run["group"] = run["slack"] + (f", {run['others']} others" if run.get("others") else "")
    rows: list[list[object]] = [
        [run["service"], run["group"], *(float(run[key]) for key, _ in columns)] for run in runs
    ]
    for group in dict.fromkeys(run["group"] for run in runs):
        chosen = [run for run in runs if run["group"] == group]
        counts[group] = len(chosen)
        medians[group] = {
            key: round(statistics.median(run[key] for run in chosen), 2) for key, _ in columns
        }
        rows.append(["median", group, *(medians[group][key] for key, _ in columns)])
    print()
    print(common.table(["run", "Slack", *(title for _, title in columns)], rows))
    common.report(
        "rollback",
        started=started,
        targets=[
            common.Target(
                f"median seconds, breach visible -> traffic on stable, Slack {group} "
                f"({counts[group]} runs)",
                medians[group]["visible_to_traffic_on_stable_s"],
                TARGET_S,
                "s",
            )
            for group in medians
        ],
        figures={
            "analysis_interval_s": INTERVAL_S,
            "window_s": WINDOW_S,
            "scrape_interval_s": 1,
            "runs": runs,
            "median": medians,
        },
        notes=[
            "traffic on stable: canary Deployment deleted or at 0 replicas and the stable one "
            f"back at {REPLICAS}",
            "the breach lands at a random point of the bot's 5 s beat, so single runs range "
            "from near 0 to about one interval",
            "429 storm: every chat.postMessage and chat.update answered 429 with Retry-After: "
            "10 from just before the breach until traffic is on stable",
        ],
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=8, help="for the breach's random delays")
    parser.add_argument(
        "--others", type=int, default=1000, help="other active rollouts in the run at scale"
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
