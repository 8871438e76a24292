"""Failover: seconds from SIGKILL of the leader to the new leader's first tick and next step.

Three `canary-bot serve` processes share one PostgreSQL database (Debian's server, started in
a temporary directory) and lead by a Lease on the Kubernetes emulator; a real Prometheus
scrapes the synthetic exporter, so every analysis tick stores a measurement. A rollout of ten
2 s steps runs (no approval; a new one starts when it ends). Each run waits for a step to reach
the cluster, SIGKILLs the leader at once (no Lease handed back), and measures:

- to first tick: until the first measurement stored after the kill (the new leader's beat);
- to next step: until the canary's next replica count reaches the cluster. The next step fell
  due during the outage (2 s after the last), so this is the new leader's first tick plus its
  cluster calls.

The killed replica is restarted (as Kubernetes restarts a pod) once the new leader has acted.
Median and worst of 10 runs, printed next to the lease settings. Default: the test settings
(lease 3 s, renew deadline 2 s, retry 1 s); `--production` for DESIGN.md's (15 s, 10 s, 2 s).

Run: `python bench/failover.py` (about 2 min), `python bench/failover.py --production`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common  # first: puts this clone on sys.path

from canary_sandbox.sandbox import BOB, RELEASE_CHANNEL, STABLE_IMAGE
from canary_sandbox.traffic_weights import canary_weight_from_cluster
from emulators.prometheus import PrometheusServer
from emulators.traffic import TrafficExporter
from rollout.stores import Store, open_store
from tests.ha.harness import HaWorld, Settings, ha_world
from tests.postgres_server import PostgresServer

STEPS = tuple(range(5, 100, 10))  # ten steps
TEST = Settings(steps=STEPS, approval=False)
PRODUCTION = Settings(
    lease_duration=15.0, renew_deadline=10.0, retry_period=2.0, steps=STEPS, approval=False
)


def canary_scales(world: HaWorld) -> int:
    return sum(
        1
        for w in world.sandbox.kube.writes
        if w.name == "checkout-canary" and w.subresource == "scale" and w.status == 200
    )


def step_gap_without_kills(world: HaWorld, kills: list[float]) -> float:
    """How long one step takes to the next when no kill falls between them: a step's
    interval counts from when a tick sees it ready, and its rule needs fresh samples."""
    times = [
        w.at
        for w in world.sandbox.kube.writes
        if w.name == "checkout-canary" and w.subresource == "scale" and w.status == 200
    ]
    gaps = [
        b - a
        for a, b in itertools.pairwise(times)
        if not any(a <= k <= b for k in kills) and b - a < 60
    ]
    return statistics.median(gaps) if gaps else float("nan")


def ensure_rollout(world: HaWorld, store: Store, started: list[int]) -> str:
    """An active rollout with at least two steps to go (a new one when the last ends)."""
    active = store.active_for("checkout")
    if active is not None and active.step_index < len(STEPS) - 2:
        return active.id
    common.wait_until(lambda: store.active_for("checkout") is None, timeout=120, what="the end")
    image = STABLE_IMAGE.replace(":v2.3.4", f":v3.0.{len(started)}")
    started.append(1)
    reply = world.driver().command(f"start checkout {image}", user=BOB, channel=RELEASE_CHANNEL)
    assert reply.status == 200, reply.body
    rollout = common.wait_until(
        lambda: store.active_for("checkout"), timeout=30, what="the start saved"
    )
    return rollout.id


def one_run(world: HaWorld, store: Store, started: list[int], kills: list[float]) -> dict[str, Any]:
    ensure_rollout(world, store, started)
    scaled = canary_scales(world)
    common.wait_until(lambda: canary_scales(world) > scaled, timeout=60, what="a step")
    leader = world.leader()
    killed_at = datetime.now(UTC)
    kills.append(time.time())
    t0 = time.monotonic()
    leader.kill()
    scaled = canary_scales(world)
    rollout = store.active_for("checkout")
    assert rollout is not None
    common.wait_until(
        lambda: store.measurements(rollout.id, since=killed_at), timeout=120, what="a tick"
    )
    tick = time.monotonic() - t0
    common.wait_until(lambda: canary_scales(world) > scaled, timeout=120, what="the next step")
    step = time.monotonic() - t0
    new = world.leader(other_than=leader.name)
    leader.start()
    common.wait_until(leader.ready, timeout=60, what="the killed replica back")
    return {
        "killed": leader.name,
        "new_leader": new.name,
        "to_first_tick_s": tick,
        "to_next_step_s": step,
    }


@contextlib.contextmanager
def failover_world(settings: Settings) -> Iterator[tuple[HaWorld, Store]]:
    """PostgreSQL, Prometheus scraping the exporter, and three replicas; all stopped after."""
    database = PostgresServer()
    weight: dict[str, Callable[[str, str], float]] = {}
    exporter = TrafficExporter(weight_of=lambda ns, svc: weight["of"](ns, svc) if weight else 0.0)
    exporter.add_service("shop", "checkout", deployment="checkout", rps=40.0)
    exporter.start()
    prometheus = PrometheusServer(targets=[exporter.address], scrape_interval="1s")
    try:
        database.start()
        url = database.database()
        prometheus.start()
        prometheus.wait_until_scraped()
        where = f"@127.0.0.1:{database.port}/"
        with (
            tempfile.TemporaryDirectory(prefix="failover-") as tmp,
            ha_world(
                Path(tmp),
                database=("127.0.0.1", database.port),
                store_url_template=url.replace(where, "@127.0.0.1:{port}/"),
                prometheus_url=prometheus.url,
                settings=settings,
            ) as world,
        ):
            weight["of"] = canary_weight_from_cluster(world.sandbox.kube)
            store = open_store(path=Path(tmp) / "unused.db", url=url)
            try:
                yield world, store
            finally:
                store.close()
    finally:
        prometheus.close()
        exporter.stop()
        database.stop()


def describe(settings: Settings) -> str:
    return (
        f"lease_duration {settings.lease_duration:g}s, "
        f"renew_deadline {settings.renew_deadline:g}s, retry_period {settings.retry_period:g}s, "
        f"analysis_interval {settings.analysis_interval:g}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--production", action="store_true", help="lease 15s, renew 10s, retry 2s")
    args = parser.parse_args()
    settings = PRODUCTION if args.production else TEST
    machine = common.machine()
    common.header("failover: SIGKILL of the leader -> first tick, next step", machine)
    print(describe(settings))
    runs: list[dict[str, Any]] = []
    with failover_world(settings) as (world, store):
        world.leader()
        world.all_ready()
        started: list[int] = []
        kills: list[float] = []
        for n in range(args.runs):
            run = one_run(world, store, started, kills)
            runs.append(run)
            print(
                f"run {n + 1}: {run['killed']} killed, {run['new_leader']} leads; first tick "
                f"{run['to_first_tick_s']:.2f}s, next step {run['to_next_step_s']:.2f}s"
            )
        baseline = step_gap_without_kills(world, kills)
    print(f"a step without a failover: median {baseline:.2f}s from one to the next")
    summarise(settings, runs, machine=machine, production=args.production, baseline=baseline)
    return 0


def summarise(
    settings: Settings,
    runs: list[dict[str, Any]],
    *,
    machine: dict[str, Any],
    production: bool,
    baseline: float,
) -> None:
    ticks = [r["to_first_tick_s"] for r in runs]
    steps = [r["to_next_step_s"] for r in runs]
    rows = [
        ["to first tick", statistics.median(ticks), max(ticks)],
        ["to next step", statistics.median(steps), max(steps)],
        ["(a step to the next, no failover)", baseline, float("nan")],
    ]
    print()
    print(describe(settings))
    print(common.table(["from SIGKILL of the leader", "median s", "worst s"], rows))
    bound = settings.lease_duration + settings.retry_period + settings.analysis_interval
    common.report(
        "failover-production" if production else "failover",
        started=machine,
        targets=[
            common.Target(
                f"worst seconds to the new leader's first tick ({len(runs)} kills)",
                round(max(ticks), 2),
                bound,
                "s",
            )
        ],
        figures={
            "lease_duration_s": settings.lease_duration,
            "renew_deadline_s": settings.renew_deadline,
            "retry_period_s": settings.retry_period,
            "analysis_interval_s": settings.analysis_interval,
            "runs": runs,
            "median_to_first_tick_s": round(statistics.median(ticks), 2),
            "worst_to_first_tick_s": round(max(ticks), 2),
            "median_to_next_step_s": round(statistics.median(steps), 2),
            "worst_to_next_step_s": round(max(steps), 2),
            "median_step_to_step_without_failover_s": round(baseline, 2),
        },
        notes=[
            "target: lease duration + retry period + one analysis interval (a candidate "
            "counts the lease from when it last saw it change, up to one retry period late)",
            "the killed leader hands nothing back (SIGKILL); a graceful stop (SIGTERM) hands "
            "the Lease over at once",
        ],
    )


if __name__ == "__main__":
    raise SystemExit(main())
