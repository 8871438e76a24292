"""Scale: analysis ticks over 1,000 active rollouts measured in a real Prometheus.

The bot's engine runs in this process (the production `Runtime`, its scheduler not started, and
what start-up built kept out of garbage collections as `canary-bot serve` keeps it), so
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
ticks. Warm-up ticks follow until every rule has its window of samples to judge on (its `for`
and 3 intervals: 27 ticks with DESIGN.md's example rules), so the measured ticks are those of a
bot that has run for a while, not its first few.

In the same run the naive way is measured on the same rollouts: one query per built-in query,
rollout and track, built from the same query templates (`rollout.analysis.queries`) and sent
through the same `PrometheusProvider`; the ratio of queries and wall time is printed.

Before measuring, the script asks Prometheus how many of the services it holds data for and
waits (with a deadline) until it holds all of them; when it does not, it says so plainly and
the table shows how many rollouts had data, so a loaded machine cannot quietly turn the
figures into those of "no data". At 1,000 rollouts (`--no-data-ticks`) it then stops the
exporter, waits until Prometheus has no data left for any of them, and measures again: the
ticks of 1,000 rollouts held for missing data, and their Slack calls per minute.

Run: `python bench/scale.py` runs 100, 1,000 and 5,000 rollouts, each in a process of its own
(so each has its own peak RSS), and prints them side by side with the targets (15-25 minutes);
`--rollouts 200` measures one size, `--profile` prints where one more tick spent its time (the
pool's threads included).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import common  # first: puts this clone on sys.path
import scale_report
import yaml
from kubernetes import config as k8s_config
from scale_measuring import (
    CountingProvider,
    KubeTimer,
    chart_cost,
    compare_with_naive,
    profile_summary,
    profiling_ticks,
    target_of,
    wait_for_data,
    warm_up_ticks,
    with_fresh_data,
)
from scale_world import NAMESPACE, ready, start_child, stop_child, traffic, world

from bot.config_loader import load_config_text
from bot.runtime import Runtime, Secrets
from canary_sandbox.sandbox import ALICE, BOT_TOKEN, RELEASE_CHANNEL, SANDBOX_CONFIG, SIGNING_SECRET
from emulators.prometheus import PrometheusServer
from rollout.engine import StartRequest

ANALYSIS_INTERVAL = 5.0
# (scrape interval, analysis window): 5,000 services are 600,000 series, which the exporter
# cannot render every 5 s on 2 shared cores; scraped every 20 s, a 60 s window keeps 3 samples.
SCRAPING = {True: ("5s", "30s"), False: ("20s", "60s")}
MAX_SETUP_TICKS = 15
DATA_DEADLINE_S = 180.0
SIZES = (100, 1000, 5000)
# A 1x1 PNG: the placeholder chart of the setup tick (see the module docstring).
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def scraping(rollouts: int) -> tuple[str, str]:
    return SCRAPING[rollouts <= 1000]


def config_text(services: Sequence[str], *, prometheus_url: str, db: Path) -> str:
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["prometheus"] = {"url": prometheus_url, "timeout": "10s"}
    config["store"] = {"path": str(db)}
    config["defaults"].update(
        steps=[10, 50],
        step_interval="1h",
        analysis_interval=f"{ANALYSIS_INTERVAL:g}s",
        analysis_window=scraping(len(services))[1],
        progress_deadline="10m",
        pin_digest=False,  # the emulated images live in no registry
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
            prometheus = PrometheusServer(
                targets=[exporter], scrape_interval=scraping(len(services))[0]
            )
            prometheus.start()
            prometheus.wait_until_scraped(timeout=60)
            data = wait_for_data(prometheus.url, len(services), deadline=DATA_DEADLINE_S)

            def without_data() -> dict[str, Any]:
                stop_child(*helpers[1])  # the exporter: its series go stale at the next scrape
                return wait_for_data(prometheus.url, 0, deadline=DATA_DEADLINE_S)

            def with_data() -> dict[str, Any]:
                return wait_for_data(prometheus.url, len(services), deadline=DATA_DEADLINE_S)

            figures = measure(
                args,
                addresses=addresses,
                prometheus_url=prometheus.url,
                world=world_conn,
                db=Path(tmp) / "canary.db",
                services=services,
                without_data=without_data,
                with_data=with_data,
            )
            figures["prometheus_data_before_measuring"] = data
        finally:
            if prometheus is not None:
                prometheus.close()
            for process, conn in helpers:
                stop_child(process, conn)
    return scale_report.report(started=started, figures=figures)


def measure(
    args: argparse.Namespace,
    *,
    addresses: dict[str, str],
    prometheus_url: str,
    world: Connection,
    db: Path,
    services: list[str],
    without_data: Callable[[], dict[str, Any]],
    with_data: Callable[[], dict[str, Any]],
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
    # Snapshots get a placeholder chart (a real one is timed apart: see `chart_cost`).
    runtime = Runtime(
        config=config,
        secrets=secrets,
        api_client=api_client,
        metrics_provider=provider,
        render_chart=lambda rollout, at, title: TINY_PNG,
    )
    # As `canary-bot serve` does once start-up has built the runtime (bot/cli.py): what it
    # built is kept out of garbage collections. Without it each collection during a tick also
    # walked some 220,000 start-up objects: 0.1-0.25 s of CPU a tick at 1,000 rollouts that
    # the bot as deployed does not spend.
    gc.collect()
    gc.freeze()
    try:
        ticker = Ticker(runtime, provider=provider, kube_timer=kube_timer, world=world)
        figures = exercise(
            args, runtime=runtime, ticker=ticker, without_data=without_data, with_data=with_data
        )
        figures["rss_mib"]["before_runtime"] = round(rss_before, 1)
        return figures
    finally:
        runtime.stop()


class Ticker:
    """Runs `tick_all` once the rollouts are due again and records what one tick cost."""

    def _beat(self) -> None:
        """One beat as the bot runs it: the analysis tick (measuring, then every rollout's
        tick on the pool), then the messages they queued (the outbox sender's round, which
        runs on a thread of its own in the bot); each is timed."""
        began = time.perf_counter()
        self._runtime.engine.tick_all(wait_for_ticks=True)
        self.tick_seconds = time.perf_counter() - began
        self._runtime.sender.send_due()
        self.send_seconds = time.perf_counter() - began - self.tick_seconds

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
        self.thread_profiles: list[cProfile.Profile] = []
        self.tick_seconds = self.send_seconds = 0.0

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
        began = time.time()
        wall, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            with profiling_ticks(runtime.engine) as threads:
                profile.runcall(self._beat)
            self.thread_profiles = threads
        else:
            self._beat()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = self._counts()
        slack = Counter(after["slack"])
        slack.subtract(before["slack"])
        return {
            "queries": provider.queries_issued - queries,
            "wall_seconds": round(wall, 3),
            "tick_seconds": round(self.tick_seconds, 3),
            "send_seconds": round(self.send_seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "in_promql_seconds": round(provider.seconds - in_promql, 3),
            "in_kube_seconds": round(self._kube_timer.seconds - in_kube, 3),
            "kube_calls": runtime.kube_calls - kube_calls,
            "kube_reads": after["kube_reads"] - before["kube_reads"],
            "kube_writes": after["kube_writes"] - before["kube_writes"],
            "began": began,
            "ended": time.time(),
            "slack_calls": sum(slack.values()),
            "slack_by_method": {method: n for method, n in sorted(slack.items()) if n},
        }


def exercise(
    args: argparse.Namespace,
    *,
    runtime: Runtime,
    ticker: Ticker,
    without_data: Callable[[], dict[str, Any]],
    with_data: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    engine, n = runtime.engine, args.rollouts
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        requests = [
            StartRequest(service=s, image="v2.3.5", by=ALICE, channel=RELEASE_CHANNEL)
            for s in runtime.config.services
        ]
        list(pool.map(engine.start, requests))
    start_seconds = time.perf_counter() - began
    rss_after_start = peak_rss_mib()
    print(f"started {n} rollouts through Engine.start in {start_seconds:.1f} s")

    # Setup: every rollout reaches step 1 (its snapshot gets a placeholder chart), then ticks
    # until one changes nothing (the first ones update cards as verdicts settle).
    setup: list[dict[str, Any]] = []
    while len(setup) < MAX_SETUP_TICKS:
        setup.append(ticker.tick())
        # Settled: nothing more to change in the cluster. Card redraws are not waited
        # for: they are what the measured ticks show.
        settled = setup[-1]["kube_writes"] == 0
        if settled and all(r.step_ready for r in engine.store.active()):
            break
    print(f"setup: {len(setup)} tick(s) until every rollout was at step 1, no cluster writes")

    warm_up_count = warm_up_ticks(runtime.config, given=args.warm_up, done=len(setup))
    warm_up = [ticker.tick() for _ in range(warm_up_count)]
    if warm_up:
        print(f"warm-up: {len(warm_up)} tick(s), until every rule has its window of samples")
    data_before_ticks = with_data()  # again: a loaded machine may have lost scrapes since
    ticks = [ticker.tick() for _ in range(args.ticks)]
    rss_peak = rss_after_ticks = peak_rss_mib()
    profile_lines: list[str] = []
    if args.profile:
        profile = cProfile.Profile()
        ticker.tick(profile=profile)
        profile_lines = profile_summary(profile, ticker.thread_profiles)
    with_data = with_fresh_data(runtime, engine.store.active())
    no_data: dict[str, Any] = {}
    if args.no_data_ticks:
        no_data["prometheus"] = without_data()
        no_data["ticks"] = [ticker.tick() for _ in range(args.no_data_ticks)]
        rss_peak = max(rss_peak, peak_rss_mib())

    active = engine.store.active()
    window = next(iter(runtime.config.services.values())).policy.analysis_window
    targets = [target_of(r, window=window) for r in active]
    return {
        "rollouts": n,
        "start_seconds": round(start_seconds, 1),
        "setup_ticks": setup,
        "warm_up_ticks": warm_up,
        "ticks": ticks,
        "rollouts_with_fresh_data": with_data,
        "no_data": no_data,
        "prometheus_data_before_ticks": data_before_ticks,
        "rss_mib": {
            "peak": round(rss_peak, 1),
            "peak_after_starts": round(rss_after_start, 1),
            # Before --profile's tick (its per-thread profiles are the bench's memory).
            "peak_after_measured_ticks": round(rss_after_ticks, 1),
        },
        "one_chart_cpu_seconds": chart_cost(runtime, active[0]),
        "profile_of_one_tick": profile_lines,
        **compare_with_naive(ticker_provider_url(runtime), targets, sample=args.naive_rollouts),
    }


def ticker_provider_url(runtime: Runtime) -> str:
    return runtime.config.prometheus.url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rollouts", type=int, default=0, help="measure this one size (default: 100, 1000, 5000)"
    )
    parser.add_argument(
        "--no-data-ticks",
        type=int,
        default=-1,
        help="ticks measured after Prometheus lost all data (default: 8 at 1,000 rollouts)",
    )
    parser.add_argument("--ticks", type=int, default=5, help="measured analysis ticks")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=-1,
        help="ticks before the measured ones (default: until the rules' window of samples is full)",
    )
    parser.add_argument(
        "--naive-rollouts",
        type=int,
        default=0,
        help="measure the naive way on this many rollouts and scale up (0: all of them)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one more tick and print where it went"
    )
    args = parser.parse_args()
    if not args.rollouts:
        return scale_report.sizes(args, SIZES, script=Path(__file__))
    if args.no_data_ticks < 0:
        args.no_data_ticks = 8 if args.rollouts == 1000 else 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
