"""Scale: analysis ticks over 1,000 active rollouts measured in a real Prometheus.

The bot's engine runs in this process (the production `Runtime`, its scheduler not started), so
`tick_all` is timed directly: wall time, this process's CPU time, the time spent waiting for
Prometheus and for the Kubernetes API, PromQL queries, Kubernetes and Slack calls, and the
process's peak RSS. What the bot talks to runs elsewhere, so that it neither counts as the bot's
CPU or memory nor shares its GIL: one helper process holds the cluster emulator (1,000
Deployments, validation on) and the Slack emulator; another the synthetic traffic exporter
(about 120 series per service); a real Prometheus scrapes the exporter every 5 s.

Rollouts are started through `Engine.start` directly (1,000 slash commands would only measure
the acknowledgement path again, which `bench/ack.py` does). Setup ticks then bring every
rollout to step 1; their 1,000 step snapshots get a placeholder chart, because a real chart
costs about 0.2 s of CPU (the figure is printed) and no rollout changes step in the measured
ticks.

In the same run the naive way is measured on the same rollouts: one query per metric, rollout
and track, built from the same query templates (`rollout.analysis.queries`) and sent through
the same `PrometheusProvider`; the ratio of queries and wall time is printed.

Run: `python bench/scale.py` (about 4 minutes); `--rollouts 200` for a quicker look,
`--profile` to print where one more tick spent its time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import multiprocessing
import pstats
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from unittest import mock

import common  # first: puts this clone on sys.path
import yaml
from kubernetes import config as k8s_config

from bot.config_loader import load_config_text
from bot.runtime import Runtime, Secrets
from bot.sandbox import (
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    RELEASE_CHANNEL,
    SANDBOX_CONFIG,
    SIGNING_SECRET,
    SRE_GROUP,
    stable_deployment,
)
from emulators.kube import KubeEmulator
from emulators.prometheus import PrometheusServer
from emulators.slack import SlackEmulator
from emulators.traffic import TrafficExporter
from handlers.charts import rollout_chart
from rollout.analysis import AnalysisTarget, Analyzer, Measurement, PrometheusProvider, Series
from rollout.analysis.queries import FAMILIES, Family, flavour_of
from rollout.analysis.templates import prometheus_duration
from rollout.analysis.types import TRACKS, Track, TrackValues
from rollout.engine import StartRequest
from rollout.model import Rollout

NAMESPACE = "shop"
ANALYSIS_INTERVAL = 5.0
WINDOW = "30s"
SCRAPE_INTERVAL = "5s"
CANARY_WEIGHT = 25.0  # step 1 (10 %) of 4 replicas: 1 canary pod of 4
MAX_SETUP_TICKS = 15
SPAWN = multiprocessing.get_context("spawn")
TARGET_QUERIES, TARGET_SECONDS, TARGET_RSS_MIB = 10, 2.0, 250.0
# A 1x1 PNG: the placeholder chart of the setup tick (see the module docstring).
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class CountingProvider(PrometheusProvider):
    """The bot's provider, also adding up the time spent waiting for Prometheus."""

    seconds = 0.0

    def query(self, promql: str) -> list[Series]:
        started = time.perf_counter()
        try:
            return super().query(promql)
        finally:
            self.seconds += time.perf_counter() - started


# --------------------------------------------------------------------------- helper processes


def world(conn: Connection, workdir: str, services: list[str]) -> None:
    """The cluster and Slack emulators, until told to stop; answers "counts" on the pipe."""
    common.answer_kube_requests_at_once()
    kube = KubeEmulator(ready_delay=0.2)
    slack = SlackEmulator(bot_token=BOT_TOKEN, usergroups={SRE_GROUP: [BOB, CAROL]})
    try:
        kube.start()
        slack.start()
        kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        for name in services:
            image = f"registry.example.com/{NAMESPACE}/{name}:v2.3.4"
            kube.seed(stable_deployment(namespace=NAMESPACE, name=name, replicas=4, image=image))
        kubeconfig = kube.write_kubeconfig(Path(workdir) / "kubeconfig.yaml")
        conn.send({"kubeconfig": str(kubeconfig), "slack": slack.api_url})
        while (message := conn.recv()) != "stop":
            if message == "counts":
                calls = Counter(call.method for call in slack.calls)
                conn.send({"slack": dict(calls), "kube_writes": len(kube.writes)})
    finally:
        slack.stop()
        kube.stop()
        conn.send("stopped")


def traffic(conn: Connection, services: list[str]) -> None:
    """The synthetic exporter, canary at its step-1 share for every service, until told to stop.

    It runs apart from the cluster emulator because rendering 120,000 series takes about 1.6 s
    of CPU per scrape, which in the emulator's process would slow its answers to the bot. So
    the canary's share is the one every rollout here holds (step 1: 1 of 4 pods), not read
    from the cluster.
    """
    exporter = TrafficExporter(weight_of=lambda namespace, service: CANARY_WEIGHT)
    try:
        for name in services:
            exporter.add_service(NAMESPACE, name, deployment=name, rps=20.0)
        conn.send({"exporter": exporter.start()})
        while conn.recv() != "stop":
            pass
    finally:
        exporter.stop()
        conn.send("stopped")


def start_child(target: Callable[..., None], *args: object) -> tuple[BaseProcess, Connection]:
    ours, theirs = SPAWN.Pipe()
    process = SPAWN.Process(target=target, args=(theirs, *args), daemon=True)
    process.start()
    return process, ours


def ready(conn: Connection, *, what: str) -> dict[str, str]:
    if not conn.poll(120):
        raise TimeoutError(f"{what} did not start within 120 s")
    answer: dict[str, str] = conn.recv()
    return answer


def stop_child(process: BaseProcess, conn: Connection) -> None:
    """Ask the helper to stop (it stops its servers), then make sure it is gone."""
    with contextlib.suppress(OSError):
        conn.send("stop")
        if conn.poll(30):
            conn.recv()
    process.join(timeout=10)
    if process.is_alive():
        process.terminate()
        process.join(timeout=10)


class KubeTimer:
    """Adds up the time the bot's Kubernetes client spends in HTTP requests."""

    def __init__(self, api_client: Any) -> None:
        self.seconds = 0.0
        send = api_client.request

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return send(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        api_client.request = timed


# --------------------------------------------------------------------------- the bot


def config_text(services: Sequence[str], *, prometheus_url: str, db: Path) -> str:
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["prometheus"] = {"url": prometheus_url, "timeout": "10s"}
    config["store"] = {"path": str(db)}
    config["defaults"].update(
        steps=[10, 50],
        step_interval="1h",
        analysis_interval=f"{ANALYSIS_INTERVAL:g}s",
        analysis_window=WINDOW,
        progress_deadline="10m",
        rules=[  # DESIGN.md's example rules
            {"metric": "error_rate", "above": 0.01, "for": "2m"},
            {"metric": "latency_avg_ms", "above": 500, "for": "2m"},
            {"metric": "success_rate", "below": 0.999, "for": "0s"},
        ],
    )
    config["services"] = {
        name: {
            "namespace": NAMESPACE,
            "deployment": name,
            "container": "app",
            "strategy": "replicas",
            "environment": "staging",
        }
        for name in services
    }
    return yaml.safe_dump(config, sort_keys=False)


def target_of(rollout: Rollout, *, window: timedelta) -> AnalysisTarget:
    """What the engine measures for a rollout (the same fields as `Engine._target`)."""
    return AnalysisTarget(
        rollout_id=rollout.id,
        service=rollout.service,
        namespace=rollout.namespace,
        deployment=rollout.deployment,
        strategy=rollout.strategy,
        ingress=None,
        window=window,
    )


# --------------------------------------------------------------------------- the naive way

Slot = tuple[str, str, Track]  # (rollout, metric, track)


def naive_selector(family: Family, target: AnalysisTarget, track: Track) -> str:
    """The batched selector narrowed to one rollout and one track."""
    if family.name == "cadvisor":
        # The batched query's own pod pattern: `<deployment>-<replicaset hash>-<suffix>`.
        pods = f"{target.deployment_of(track)}-[a-z0-9]+-[a-z0-9]+"
        return f'namespace="{target.namespace}",pod=~"{pods}"'
    return f'namespace="{target.namespace}",service="{target.service}",track="{track}"'


def naive_measure(
    provider: PrometheusProvider, targets: Sequence[AnalysisTarget]
) -> dict[Slot, float | None]:
    """One query per metric, rollout and track, with the same templates and provider."""
    values: dict[Slot, float | None] = {}
    for target in targets:
        window = prometheus_duration(target.window)
        for family in FAMILIES[flavour_of(target.strategy)]:
            for metric in family.metrics:
                for track in TRACKS:
                    promql = family.build(
                        family, metric, naive_selector(family, target, track), window
                    )
                    series = provider.query(promql)
                    values[(target.rollout_id, metric, track)] = (
                        series[0].value if len(series) == 1 else None
                    )
    return values


def batched_values(measured: dict[str, Measurement]) -> dict[Slot, float | None]:
    values: dict[Slot, float | None] = {}
    for rollout_id, measurement in measured.items():
        for metric, pair in measurement.values.items():
            for track in TRACKS:
                values[(rollout_id, metric, track)] = TrackValues.of(pair, track)
    return values


# --------------------------------------------------------------------------- the run


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(args: argparse.Namespace) -> int:
    started = common.machine()
    common.header(f"scale: analysis ticks over {args.rollouts} active rollouts", started)
    services = [f"svc-{i:04d}" for i in range(args.rollouts)]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        helpers = [start_child(world, tmp, services), start_child(traffic, services)]
        prometheus: PrometheusServer | None = None
        try:
            (_, world_conn), (_, traffic_conn) = helpers
            addresses = ready(world_conn, what="the cluster and Slack emulators")
            exporter = ready(traffic_conn, what="the traffic exporter")["exporter"]
            prometheus = PrometheusServer(targets=[exporter], scrape_interval=SCRAPE_INTERVAL)
            prometheus.start()
            prometheus.wait_until_scraped(timeout=60)
            figures = measure(
                args,
                addresses=addresses,
                prometheus_url=prometheus.url,
                world=world_conn,
                db=Path(tmp) / "canary.db",
                services=services,
            )
        finally:
            if prometheus is not None:
                prometheus.close()
            for process, conn in helpers:
                stop_child(process, conn)
    return report(started=started, figures=figures)


def measure(
    args: argparse.Namespace,
    *,
    addresses: dict[str, str],
    prometheus_url: str,
    world: Connection,
    db: Path,
    services: list[str],
) -> dict[str, Any]:
    """Build the production runtime (scheduler not started) and measure its ticks."""
    config = load_config_text(
        config_text(services, prometheus_url=prometheus_url, db=db), source="bench/scale.py"
    )
    rss_before = peak_rss_mib()
    provider = CountingProvider(prometheus_url, timeout=timedelta(seconds=10))
    api_client = k8s_config.new_client_from_config(config_file=addresses["kubeconfig"])
    kube_timer = KubeTimer(api_client)
    secrets = Secrets.from_env(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": addresses["slack"],
        }
    )
    runtime = Runtime(
        config=config, secrets=secrets, api_client=api_client, metrics_provider=provider
    )
    try:
        ticker = Ticker(runtime, provider=provider, kube_timer=kube_timer, world=world)
        figures = exercise(args, runtime=runtime, ticker=ticker)
        figures["rss_mib"]["before_runtime"] = round(rss_before, 1)
        return figures
    finally:
        runtime.stop()


class Ticker:
    """Runs `tick_all` once the rollouts are due again and records what one tick cost."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        provider: CountingProvider,
        kube_timer: KubeTimer,
        world: Connection,
    ) -> None:
        self._runtime = runtime
        self._provider = provider
        self._kube_timer = kube_timer
        self._world = world
        self._last = time.monotonic() - ANALYSIS_INTERVAL

    def _counts(self) -> dict[str, Any]:
        self._world.send("counts")
        answer: dict[str, Any] = self._world.recv()
        return answer

    def tick(self, *, profile: cProfile.Profile | None = None) -> dict[str, Any]:
        pause = self._last + ANALYSIS_INTERVAL - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last = time.monotonic()
        runtime, provider = self._runtime, self._provider
        queries, in_promql = provider.queries_issued, provider.seconds
        kube_calls, in_kube = runtime.kube_calls, self._kube_timer.seconds
        before = self._counts()
        wall, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.runcall(runtime.engine.tick_all)
        else:
            runtime.engine.tick_all()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = self._counts()
        slack = Counter(after["slack"])
        slack.subtract(before["slack"])
        return {
            "queries": provider.queries_issued - queries,
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 3),
            "in_promql_seconds": round(provider.seconds - in_promql, 3),
            "in_kube_seconds": round(self._kube_timer.seconds - in_kube, 3),
            "kube_calls": runtime.kube_calls - kube_calls,
            "kube_writes": after["kube_writes"] - before["kube_writes"],
            "slack_calls": sum(slack.values()),
            "slack_by_method": {method: n for method, n in sorted(slack.items()) if n},
        }


def exercise(args: argparse.Namespace, *, runtime: Runtime, ticker: Ticker) -> dict[str, Any]:
    engine, n = runtime.engine, args.rollouts
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        requests = [
            StartRequest(service=s, image="v2.3.5", by=ALICE, channel=RELEASE_CHANNEL)
            for s in runtime.config.services
        ]
        list(pool.map(engine.start, requests))
    start_seconds = time.perf_counter() - began
    print(f"started {n} rollouts through Engine.start in {start_seconds:.1f} s")

    # Setup: every rollout reaches step 1 (its snapshot gets a placeholder chart), then ticks
    # until one changes nothing (the first ones update cards as verdicts settle).
    setup: list[dict[str, Any]] = []
    with mock.patch("bot.notifier.rollout_chart", return_value=TINY_PNG):
        while len(setup) < MAX_SETUP_TICKS:
            setup.append(ticker.tick())
            settled = setup[-1]["slack_calls"] == 0 and setup[-1]["kube_writes"] == 0
            if settled and all(r.step_ready for r in engine.store.active()):
                break
    print(f"setup: {len(setup)} tick(s) until every rollout was at step 1 and settled")

    ticks = [ticker.tick() for _ in range(args.ticks)]
    rss_peak = peak_rss_mib()
    profile_lines: list[str] = []
    if args.profile:
        profile = cProfile.Profile()
        ticker.tick(profile=profile)
        profile_lines = profile_summary(profile)

    active = engine.store.active()
    window = next(iter(runtime.config.services.values())).policy.analysis_window
    targets = [target_of(r, window=window) for r in active]
    return {
        "rollouts": n,
        "start_seconds": round(start_seconds, 1),
        "setup_ticks": setup,
        "ticks": ticks,
        "rollouts_with_fresh_data": with_fresh_data(runtime, active),
        "rss_mib": {"peak": round(rss_peak, 1)},
        "one_chart_cpu_seconds": chart_cost(runtime, active[0]),
        "profile_of_one_tick": profile_lines,
        **compare_with_naive(ticker_provider_url(runtime), targets, sample=args.naive_rollouts),
    }


def ticker_provider_url(runtime: Runtime) -> str:
    return runtime.config.prometheus.url


def with_fresh_data(runtime: Runtime, active: Sequence[Rollout]) -> int:
    """Rollouts whose latest measurement has both tracks of the rules' metrics."""
    since = datetime.now(UTC) - timedelta(seconds=4 * ANALYSIS_INTERVAL)
    count = 0
    for rollout in active:
        rows = runtime.engine.store.measurements(rollout.id, since=since)
        latest = Measurement.from_json(rows[-1]) if rows else None
        if latest is not None and all(
            latest.get(metric).of(track) is not None
            for metric in ("error_rate", "success_rate", "latency_avg_ms")
            for track in TRACKS
        ):
            count += 1
    return count


def chart_cost(runtime: Runtime, rollout: Rollout) -> float:
    """CPU seconds of one real step chart over this rollout's measurements so far."""
    history = [
        Measurement.from_json(row)
        for row in runtime.engine.store.measurements(rollout.id, since=rollout.created_at)
    ]
    cpu = time.process_time()
    rollout_chart(measurements=history, steps=[], title="one chart", now=datetime.now(UTC))
    return round(time.process_time() - cpu, 3)


def profile_summary(profile: cProfile.Profile) -> list[str]:
    """The functions of the bot that took the most time in the profiled tick (cumulative)."""
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(r"(rollout|bot|handlers)/", 25)
    return [line for line in out.getvalue().splitlines() if line.strip()]


def compare_with_naive(url: str, targets: list[AnalysisTarget], *, sample: int) -> dict[str, Any]:
    batched_provider = CountingProvider(url, timeout=timedelta(seconds=10))
    wall = time.perf_counter()
    batched = batched_values(Analyzer(batched_provider).measure(targets, now=datetime.now(UTC)))
    batched_wall = time.perf_counter() - wall

    measured = targets[:sample] if sample else targets
    naive_provider = CountingProvider(url, timeout=timedelta(seconds=10))
    wall = time.perf_counter()
    naive = naive_measure(naive_provider, measured)
    naive_wall = time.perf_counter() - wall
    scale = len(targets) / len(measured)
    both = [k for k, v in naive.items() if v is not None and batched.get(k) is not None]
    differ = [k for k in both if not _close(naive[k], batched[k])]
    return {
        "batched_measure": {
            "queries": batched_provider.queries_issued,
            "wall_seconds": round(batched_wall, 3),
        },
        "naive_measure": {
            "rollouts_measured": len(measured),
            "queries": naive_provider.queries_issued,
            "wall_seconds": round(naive_wall, 3),
            "queries_for_all": round(naive_provider.queries_issued * scale),
            "wall_seconds_for_all": round(naive_wall * scale, 1),
            "values_with_data": len(both),
            "values_differing_over_5pct": len(differ),
            "differing_examples": [
                {"slot": list(k), "naive": naive[k], "batched": batched[k]} for k in differ[:3]
            ],
        },
    }


def _close(a: float | None, b: float | None) -> bool:
    assert a is not None and b is not None
    return abs(a - b) <= 0.05 * max(abs(a), abs(b), 1e-9)


def report(*, started: dict[str, Any], figures: dict[str, Any]) -> int:
    ticks = figures["ticks"]
    rows = [
        [
            label,
            t["queries"],
            t["wall_seconds"],
            t["cpu_seconds"],
            t["in_promql_seconds"],
            t["in_kube_seconds"],
            t["kube_calls"],
            t["kube_writes"],
            t["slack_calls"],
        ]
        for label, t in [(f"setup {i + 1}", t) for i, t in enumerate(figures["setup_ticks"])]
        + [(f"tick {i + 1}", t) for i, t in enumerate(ticks)]
    ]
    print()
    print(
        common.table(
            [
                "tick",
                "PromQL",
                "wall s",
                "CPU s",
                "in PromQL s",
                "in kube s",
                "kube calls",
                "kube writes",
                "Slack calls",
            ],
            rows,
        )
    )
    print(
        f"\n{figures['rollouts_with_fresh_data']} of {figures['rollouts']} rollouts had canary "
        f"and stable values in their latest measurement. One real step chart costs "
        f"{figures['one_chart_cpu_seconds']:.2f} s of CPU (the setup ticks used a placeholder)."
    )
    for line in figures["profile_of_one_tick"]:
        print(line)
    batched, naive = figures["batched_measure"], figures["naive_measure"]
    print()
    print(
        common.table(
            ["measuring every rollout once", "queries", "wall s"],
            [
                ["batched (the bot)", batched["queries"], batched["wall_seconds"]],
                [
                    f"naive ({naive['rollouts_measured']} rollouts measured)",
                    naive["queries"],
                    naive["wall_seconds"],
                ],
                [
                    f"naive, for all {figures['rollouts']}",
                    naive["queries_for_all"],
                    naive["wall_seconds_for_all"],
                ],
            ],
        )
    )
    query_ratio = naive["queries_for_all"] / max(1, batched["queries"])
    wall_ratio = naive["wall_seconds_for_all"] / max(1e-9, batched["wall_seconds"])
    figures["naive_over_batched"] = {
        "queries": round(query_ratio, 1),
        "wall_time": round(wall_ratio, 1),
    }
    print(
        f"naive / batched: {query_ratio:,.0f}x the queries, {wall_ratio:,.0f}x the wall time "
        f"({naive['values_with_data']} values compared; {naive['values_differing_over_5pct']} "
        f"differ by more than 5 %: the data moves on between the two runs)"
    )
    targets = [
        common.Target(
            "PromQL queries per tick (max)", max(t["queries"] for t in ticks), TARGET_QUERIES, ""
        ),
        common.Target(
            f"wall time per tick (max of {len(ticks)})",
            max(t["wall_seconds"] for t in ticks),
            TARGET_SECONDS,
            "s",
        ),
        common.Target(
            "peak RSS of the bot process", figures["rss_mib"]["peak"], TARGET_RSS_MIB, "MiB"
        ),
    ]
    common.report(
        "scale",
        started=started,
        targets=targets,
        figures=figures,
        notes=[
            f"{figures['rollouts']} rollouts started through Engine.start, not slash commands",
            f"cluster emulator with validation on; Prometheus scrapes every {SCRAPE_INTERVAL}; "
            f"canary share fixed at {CANARY_WEIGHT:g} % in the exporter",
            "setup ticks (every rollout reaching step 1) used a placeholder chart",
        ],
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=5, help="measured analysis ticks")
    parser.add_argument(
        "--naive-rollouts",
        type=int,
        default=0,
        help="measure the naive way on this many rollouts and scale up (0: all of them)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one more tick and print where it went"
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
