"""Per-round records for `bench/ack.py`: what the bot did while each round was answered.

The p99 of 1,000 answers is the slowest round or two of 50, so each round keeps its slowest
answer next to every server's CPU during it, the CPU of the bot's chart process, and the Slack
calls and Kubernetes requests the bot made meanwhile (from the emulators' records), whichever
server the round was for: the bot's background work competes with all of them for the cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import common  # first: puts this clone on sys.path

from canary_sandbox.sandbox import Sandbox

# The third server: the bare Bolt app, acknowledging with the bot's own status answer. Not a
# target: it shows what answering with a message at all costs beside the empty ack.
ANSWER = "bare-answer"


def activity(box: Sandbox, pids: dict[str, int]) -> dict[str, Any]:
    """What the servers and the bot's chart process have done so far, and the clocks now."""
    return {
        "at": time.monotonic(),
        "wall": time.time(),
        "cpu": {name: common.cpu_seconds(pid) for name, pid in pids.items()},
        "charts_cpu": sum(common.cpu_seconds(child) for child in _children(pids["bot"])),
        "slack_calls": len(box.slack.calls),
        "kube_writes": len(box.kube.writes_snapshot()),
        "kube_requests": sum(box.kube.requests().values()),
    }


def activity_during(
    box: Sandbox,
    pids: dict[str, int],
    before: dict[str, Any],
    after: dict[str, Any],
    *,
    server: str,
) -> dict[str, Any]:
    """One round's record: the CPU each process used meanwhile and the bot's Slack calls
    (by method) and Kubernetes requests, whichever server the round was for (the bot's
    background work competes with both for the 2 cores)."""
    calls = box.slack.calls[before["slack_calls"] : after["slack_calls"]]
    methods: dict[str, int] = {}
    for call in calls:
        methods[call.method] = methods.get(call.method, 0) + 1
    return {
        "server": server,
        "wall_ms": round((after["at"] - before["at"]) * 1000, 1),
        "cpu_ms": {name: round((after["cpu"][name] - before["cpu"][name]) * 1000) for name in pids},
        "chart_process_cpu_ms": round((after["charts_cpu"] - before["charts_cpu"]) * 1000),
        "slack_calls": methods,
        "kube_writes": after["kube_writes"] - before["kube_writes"],
        "kube_requests": after["kube_requests"] - before["kube_requests"],
    }


def _children(pid: int) -> list[int]:
    """The bot's child processes (the chart renderer), from /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return [child for child in children if Path(f"/proc/{child}").exists()]


def slowest_rounds(records: list[dict[str, Any]], count: int = 4) -> list[str]:
    """The slowest rounds of each server, each with the bot's work beside it: the p99 of
    1,000 answers is set by the slowest of the 20 rounds of 50."""
    lines = []
    for server in ("bot", "bare", ANSWER):
        mine = [r for r in records if r["server"] == server]
        for r in sorted(mine, key=lambda r: -r["max_ms"])[:count]:
            slack = ", ".join(f"{m} {n}" for m, n in sorted(r["slack_calls"].items())) or "none"
            lines.append(
                f"{server} round {r['round']:2d}: slowest {r['max_ms']:6.1f} ms; CPU "
                f"{r['cpu_ms'][server]} ms (bot {r['cpu_ms']['bot']} ms), chart process "
                f"{r['chart_process_cpu_ms']} ms; Slack calls: {slack}; Kubernetes requests "
                f"{r['kube_requests']} ({r['kube_writes']} writes)"
            )
        quiet = [r["max_ms"] for r in mine if not _busy(r)]
        busy = [r["max_ms"] for r in mine if _busy(r)]
        lines.append(
            f"{server}: {len(busy)} rounds met bot background work (Slack calls, Kubernetes "
            f"requests or a chart), slowest answer median {_median(busy)} ms; "
            f"{len(quiet)} did not, median {_median(quiet)} ms"
        )
    return lines


def _busy(record: dict[str, Any]) -> bool:
    return bool(record["slack_calls"] or record["kube_requests"] or record["chart_process_cpu_ms"])


def _median(values: list[float]) -> str:
    return f"{common.percentile(values, 50):.1f}" if values else "-"
