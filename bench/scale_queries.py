"""Prometheus's own time for each built-in query of one analysis tick, at N rollouts.

`bench/scale.py` times what the bot waits for; this says where Prometheus spends that time. The
same world as `scale.py` (the synthetic exporter of N services, scraped every 5 s with a 30 s
window up to 1,000 services, every 20 s with a 60 s window above) and the bot's own batched
queries (`rollout.analysis.batch.plan`), each asked alone, one after the other, with
`stats=all`: Prometheus's evaluation time (`evalTotalTime`), the samples it read, the series it
answered and the answer's size, per round, and their sum per tick. A round in which a query
found fewer series than rollouts x tracks is reported (a missed scrape on a loaded machine).

Run: `python bench/scale_queries.py --rollouts 1000 --rounds 5` (2-3 minutes; 5,000: ~10).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta
from typing import Any

import common  # first: puts this clone on sys.path
import requests
from scale import scraping
from scale_world import NAMESPACE, ready, start_child, stop_child, traffic

from emulators.prometheus import PrometheusServer
from rollout.analysis import AnalysisTarget
from rollout.analysis.batch import plan


def queries(rollouts: int) -> list[tuple[str, str]]:
    """(query, PromQL) of one tick over `rollouts` services, as the bot builds them."""
    window = timedelta(seconds=int(scraping(rollouts)[1].rstrip("s")))
    targets = [
        AnalysisTarget(
            rollout_id=name,
            service=name,
            namespace=NAMESPACE,
            deployment=name,
            strategy="replicas",
            ingress=None,
            window=window,
        )
        for name in (f"svc-{i:04d}" for i in range(rollouts))
    ]
    return [(batch.query, batch.promql) for batch in plan(targets)[0]]


def ask(url: str, promql: str) -> dict[str, Any]:
    answer = requests.post(
        f"{url}/api/v1/query", data={"query": promql, "stats": "all"}, timeout=120
    )
    data = answer.json()["data"]
    return {
        "eval_seconds": data["stats"]["timings"]["evalTotalTime"],
        "samples": data["stats"]["samples"]["totalQueryableSamples"],
        "series": len(data["result"]),
        "bytes": len(answer.content),
    }


def run(args: argparse.Namespace) -> int:
    started = common.machine()
    common.header(f"scale_queries: Prometheus's time per query at {args.rollouts}", started)
    services = [f"svc-{i:04d}" for i in range(args.rollouts)]
    scrape, window = scraping(args.rollouts)
    helper = start_child(traffic, services)
    prometheus: PrometheusServer | None = None
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        exporter = ready(helper[1], what="the traffic exporter")["exporter"]
        prometheus = PrometheusServer(targets=[exporter], scrape_interval=scrape)
        prometheus.start()
        prometheus.wait_until_scraped(timeout=300)
        time.sleep(int(window.rstrip("s")) + 5)  # a whole window of samples
        tick = queries(args.rollouts)
        for _ in range(args.rounds):
            rounds.append({name: ask(prometheus.url, promql) for name, promql in tick})
    finally:
        if prometheus is not None:
            prometheus.close()
        stop_child(*helper)
    return report(args, started=started, rounds=rounds)


def report(
    args: argparse.Namespace, *, started: dict[str, Any], rounds: list[dict[str, dict[str, Any]]]
) -> int:
    full = 2 * args.rollouts
    rows = []
    for name in rounds[0]:
        evals = [r[name]["eval_seconds"] for r in rounds]
        rows.append(
            [
                name,
                f"{statistics.median(evals):.3f}",
                f"{min(evals):.3f}-{max(evals):.3f}",
                max(r[name]["samples"] for r in rounds),
                min(r[name]["series"] for r in rounds),
                rounds[0][name]["bytes"],
            ]
        )
    totals = [sum(q["eval_seconds"] for q in r.values()) for r in rounds]
    rows.append(
        [
            "(a tick)",
            f"{statistics.median(totals):.3f}",
            f"{min(totals):.3f}-{max(totals):.3f}",
            "",
            "",
            "",
        ]
    )
    print(
        common.table(
            ["query", "eval s (median)", "eval s (range)", "samples", "series (min)", "bytes"],
            rows,
        )
    )
    short = [
        i
        for i, r in enumerate(rounds)
        if any(q["series"] < full and q["series"] for q in r.values())
    ]
    print(f"rounds with a query short of {full} series (missed scrapes): {short or 'none'}")
    common.report(
        f"scale-queries-{args.rollouts}",
        started=started,
        targets=[],
        figures={"rollouts": args.rollouts, "rounds": rounds},
        notes=[
            "evaluation time is Prometheus's own (`stats=all`, evalTotalTime), each query alone"
        ],
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
