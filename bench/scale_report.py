"""What `bench/scale.py` prints: one size's table and targets, and the sizes side by side.

Each size runs in a process of its own (`python bench/scale.py --rollouts N`), so each has its
own peak RSS; `sizes` starts them one after the other and reads back the JSON each wrote.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

# Slack's published limits (https://api.slack.com/apis/rate-limits): chat.update is Tier 3,
# about 50 a minute per workspace; chat.postMessage about 1 a second per channel. Every card
# and thread of this benchmark is in one release channel, so its posts share that channel's.
SLACK_LIMITS_PER_MINUTE = {"chat.update": 50.0, "chat.postMessage": 60.0}
TARGET_QUERIES = 10
# rollouts -> (tick wall seconds, peak RSS MiB)
TARGETS = {1000: (1.0, 250.0), 5000: (5.0, 500.0)}


def slack_per_minute(ticks: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Slack calls per minute by method over a run of ticks, at the beat's own pace."""
    if not ticks:
        return {}
    minutes = max(ticks[-1]["ended"] - ticks[0]["began"], 1e-9) / 60
    calls: Counter[str] = Counter()
    for tick in ticks:
        calls.update(tick["slack_by_method"])
    return {method: round(n / minutes, 1) for method, n in sorted(calls.items())}


def tick_rows(label: str, ticks: Sequence[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            f"{label} {i + 1}",
            t["queries"],
            t["tick_seconds"],
            t["send_seconds"],
            t["cpu_seconds"],
            t["in_promql_seconds"],
            t["in_kube_seconds"],
            t["kube_reads"],
            t["kube_writes"],
            t["slack_calls"],
        ]
        for i, t in enumerate(ticks)
    ]


def print_slack(title: str, per_minute: dict[str, float]) -> None:
    rows = []
    for method in sorted(set(per_minute) | set(SLACK_LIMITS_PER_MINUTE)):
        limit = SLACK_LIMITS_PER_MINUTE.get(method)
        rate = per_minute.get(method, 0.0)
        verdict = "-" if limit is None else ("within" if rate <= limit else "OVER")
        rows.append([method, rate, "-" if limit is None else limit, verdict])
    print(f"\nSlack calls per minute, {title}")
    print(common.table(["method", "calls/min", "Slack's limit/min", "vs limit"], rows))


def report(*, started: dict[str, Any], figures: dict[str, Any]) -> int:
    ticks, no_data = figures["ticks"], figures["no_data"]
    rows = tick_rows("setup", figures["setup_ticks"])
    rows += tick_rows("warm-up", figures.get("warm_up_ticks", []))
    rows += tick_rows("tick", ticks)
    rows += tick_rows("no data", no_data.get("ticks", []))
    headers = ["beat", "PromQL", "tick wall s", "Slack round s", "CPU s", "in PromQL s"]
    headers += ["in kube s"]
    print()
    print(common.table([*headers, "kube reads", "kube writes", "Slack calls"], rows))
    data = figures["prometheus_data_before_ticks"]
    print(
        f"\nPrometheus held data for {data['services_with_data']} of {figures['rollouts']} "
        f"services before the measured ticks; {figures['rollouts_with_fresh_data']} rollouts "
        f"had canary and stable values in their latest measurement. One real step chart costs "
        f"{figures['one_chart_cpu_seconds']:.2f} s of CPU (the setup ticks used a placeholder)."
    )
    figures["slack_per_minute"] = slack_per_minute(ticks)
    print_slack("with data (measured ticks)", figures["slack_per_minute"])
    if no_data:
        figures["slack_per_minute_no_data"] = slack_per_minute(no_data["ticks"])
        print_slack(
            f"with no data (Prometheus held data for "
            f"{no_data['prometheus']['services_with_data']} services)",
            figures["slack_per_minute_no_data"],
        )
    for line in figures["profile_of_one_tick"]:
        print(line)
    print_naive(figures)
    common.report(
        f"scale-{figures['rollouts']}",
        started=started,
        targets=targets_of(figures),
        figures=figures,
        notes=[
            f"{figures['rollouts']} rollouts started through Engine.start, not slash commands",
            "cluster emulator with validation on; canary share fixed in the exporter",
            "tick wall: Engine.tick_all (measuring and every rollout's tick); the Slack round "
            "(the outbox sender, a thread of its own in the bot) is timed apart",
            "setup ticks (every rollout reaching step 1) used a placeholder chart",
        ],
    )
    return 0


def targets_of(figures: dict[str, Any]) -> list[common.Target]:
    ticks, n = figures["ticks"], figures["rollouts"]
    found = [
        common.Target(
            "PromQL queries per tick (max)", max(t["queries"] for t in ticks), TARGET_QUERIES, ""
        )
    ]
    if n in TARGETS:
        seconds, rss = TARGETS[n]
        found += [
            common.Target(
                f"analysis tick wall time at {n} rollouts (max of {len(ticks)})",
                max(t["tick_seconds"] for t in ticks),
                seconds,
                "s",
            ),
            common.Target(
                f"peak RSS of the bot process at {n} rollouts",
                figures["rss_mib"]["peak"],
                rss,
                "MiB",
            ),
        ]
    return found


def print_naive(figures: dict[str, Any]) -> None:
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
    print(f"naive / batched: {query_ratio:,.0f}x the queries, {wall_ratio:,.0f}x the wall time.")


# ----------------------------------------------------------------- the sizes side by side


def sizes(args: argparse.Namespace, counts: Sequence[int], *, script: Path) -> int:
    """Each size in its own process, then one table of them all with the targets."""
    started = common.machine()
    common.header(f"scale: {', '.join(map(str, counts))} active rollouts", started)
    runs: dict[int, dict[str, Any]] = {}
    for n in counts:
        print(f"\n===== {n} rollouts =====", flush=True)
        command = [sys.executable, str(script), "--rollouts", str(n), "--ticks", str(args.ticks)]
        command += ["--naive-rollouts", str(args.naive_rollouts or min(n, 100))]
        if args.profile and n == 1000:
            command.append("--profile")
        subprocess.run(command, check=True)
        result = common.RESULTS / f"scale-{n}.json"
        runs[n] = json.loads(result.read_text())["figures"]
    summary_targets = summary(runs)
    common.report(
        "scale",
        started=started,
        targets=summary_targets,
        figures={str(n): {"summary": _brief(f), **f} for n, f in runs.items()},
        notes=["each size ran in a process of its own"],
    )
    for n in counts:  # each size's figures are in the summary file now
        (common.RESULTS / f"scale-{n}.json").unlink(missing_ok=True)
    return 0


def summary(runs: dict[int, dict[str, Any]]) -> list[common.Target]:
    rows = []
    for n, f in runs.items():
        b = _brief(f)
        rows.append(
            [
                *(n, b["had_data"], b["tick_wall_s"], b["slack_round_s"], b["tick_cpu_s"]),
                b["promql"],
                *(b["kube_reads"], b["kube_writes"], b["rss_mib"], _rates(b["slack_per_minute"])),
            ]
        )
        if b.get("no_data"):
            nd = b["no_data"]
            rows.append(
                [
                    *(f"{n}, no data", nd["had_data"], nd["tick_wall_s"], nd["slack_round_s"]),
                    *(nd["tick_cpu_s"], "-"),
                    *(nd["kube_reads"], nd["kube_writes"], "-", _rates(nd["slack_per_minute"])),
                ]
            )
    print("\n===== side by side (max over the measured ticks) =====")
    headers = ["rollouts", "with data", "tick wall s", "Slack round s", "bot CPU s", "PromQL"]
    headers += ["kube reads"]
    headers += ["kube writes", "peak RSS MiB", "Slack calls/min by method"]
    print(common.table(headers, rows))
    print("Slack's limits: chat.update ~50/min per workspace, chat.postMessage ~60/min per channel")
    found: list[common.Target] = []
    for f in runs.values():
        found += targets_of(f)
    reads = {n: _brief(f)["kube_reads"] for n, f in runs.items()}
    spread = max(reads.values()) - min(reads.values())
    print(f"Kubernetes reads per steady tick by size: {reads}")
    found.append(common.Target("kube reads per tick, most minus fewest over sizes", spread, 0, ""))
    return found


def _brief(f: dict[str, Any]) -> dict[str, Any]:
    ticks = f["ticks"]
    brief = {
        "had_data": f"{f['rollouts_with_fresh_data']}/{f['rollouts']}",
        "tick_wall_s": max(t["tick_seconds"] for t in ticks),
        "slack_round_s": max(t["send_seconds"] for t in ticks),
        "tick_cpu_s": max(t["cpu_seconds"] for t in ticks),
        "promql": max(t["queries"] for t in ticks),
        "kube_reads": max(t["kube_reads"] for t in ticks),
        "kube_writes": max(t["kube_writes"] for t in ticks),
        "rss_mib": f["rss_mib"]["peak"],
        "slack_per_minute": f.get("slack_per_minute") or slack_per_minute(ticks),
    }
    no_data = (f.get("no_data") or {}).get("ticks")
    if no_data:
        brief["no_data"] = {
            "had_data": f"{f['no_data']['prometheus']['services_with_data']}/{f['rollouts']}",
            "tick_wall_s": max(t["tick_seconds"] for t in no_data),
            "slack_round_s": max(t["send_seconds"] for t in no_data),
            "tick_cpu_s": max(t["cpu_seconds"] for t in no_data),
            "kube_reads": max(t["kube_reads"] for t in no_data),
            "kube_writes": max(t["kube_writes"] for t in no_data),
            "slack_per_minute": slack_per_minute(no_data),
        }
    return brief


def _rates(per_minute: dict[str, float]) -> str:
    return ", ".join(f"{m} {r:g}" for m, r in per_minute.items()) or "none"
