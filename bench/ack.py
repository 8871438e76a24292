"""Acknowledgement latency: N concurrent signed slash commands against `canary-bot serve`.

Slack gives a slash command 3 s to be answered; the bot promises far less (issue 8: p99 <= 100 ms
at N = 50 on a 2-core machine). The bot runs as in production, a separate `canary-bot serve`
process (waitress, Bolt, SQLite) pointed at the cluster and Slack emulators of a sandbox. A
separate load process fires each round's N requests at once (a barrier releases N threads on
open connections), so the client's own Python never shares a GIL with the bot or the emulators.

Command mix, half and half in every round: `/canary status checkout` (answered from SQLite; the
bot then renders a snapshot with a chart of the active checkout rollout into its thread) and
`/canary start svc-NNN v2.3.5` of a service never started before (acknowledged after the fast
checks, then the bot creates the canary and posts the card). After each round the script waits
for that background work to finish, so rounds do not pile up.

Run: `python bench/ack.py` (about 50 s); `--rounds-scale 2` doubles the rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import itertools
import multiprocessing
import re
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import common  # first: puts this clone on sys.path
import requests
import yaml

from canary_sandbox.sandbox import (
    ALICE,
    RELEASE_CHANNEL,
    SANDBOX_CONFIG,
    SIGNING_SECRET,
    Sandbox,
    stable_deployment,
)
from emulators.prometheus import free_port
from emulators.slack import payloads

LEVELS = (1, 10, 50)
ROUNDS = {1: 20, 10: 5, 50: 5}
P99_TARGET_MS = 100.0
NEW_TAG = "v2.3.5"

Request = tuple[str, bytes, dict[str, str]]  # (command kind, body, headers)


def config_text(services: list[str], *, prometheus_url: str) -> str:
    """The sandbox's config with `services` added and production-like rules.

    The analysis beat is set long (10 m) so that the hundreds of rollouts this benchmark starts
    are not analysed in the background while later rounds are timed; steps never advance.
    """
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["prometheus"] = {"url": prometheus_url, "timeout": "1s"}
    config["defaults"].update(
        steps=[5, 25, 50],
        step_interval="1h",
        analysis_interval="10m",
        # Every asked-for snapshot is rendered: the chart work after the ack is what is timed.
        snapshot_min_interval="0s",
        rules=[
            {"metric": "error_rate", "above": 0.01, "for": "2m"},
            {"metric": "latency_avg_ms", "above": 500, "for": "2m"},
        ],
    )
    for name in services:
        config["services"][name] = {
            "namespace": "shop",
            "deployment": name,
            "container": "app",
            "strategy": "replicas",
            "environment": "production",
        }
    return yaml.safe_dump(config, sort_keys=False)


def signed_command(box: Sandbox, text: str) -> tuple[bytes, dict[str, str]]:
    """A `/canary` request exactly as Slack signs it (what `SlackDriver.command` sends)."""
    app = payloads.AppIdentity(
        team_id="T0CANARY",
        team_domain=box.slack.team_domain,
        api_app_id="A0CANARY",
        verification_token="canary-verification-token",
    )
    form = payloads.slash_command(
        app,
        command="/canary",
        text=text,
        user=ALICE,
        user_name=box.slack.user_name(ALICE),
        channel=RELEASE_CHANNEL,
        channel_name=box.slack.channel_name(RELEASE_CHANNEL),
        response_url=box.slack.new_response_url(channel=RELEASE_CHANNEL, user=ALICE),
        trigger=payloads.trigger_id(),
    )
    body = urlencode(form).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(
        SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256
    ).hexdigest()
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={signature}",
    }


# --------------------------------------------------------------------------- the load process


def fire(port: int, batch: list[Request]) -> list[tuple[str, int, float, str]]:
    """Send every request at the same moment; (kind, status, seconds to response, text).

    Runs in the load process. Connections are opened before the barrier, so the time measured
    is from sending the request to having the whole HTTP response, as Slack would see it.
    """
    barrier = threading.Barrier(len(batch))
    results: list[tuple[str, int, float, str]] = [("", 0, 0.0, "")] * len(batch)

    def one(index: int, request: Request) -> None:
        kind, body, headers = request
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.connect()
        try:
            barrier.wait(timeout=10)
            started = time.perf_counter()
            connection.request("POST", "/slack/events", body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
            results[index] = (kind, response.status, time.perf_counter() - started, text)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i, request)) for i, request in enumerate(batch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


# --------------------------------------------------------------------------- the bot process


def server_side_buckets(port: int) -> dict[float, float]:
    """The bot's own `canary_bot_slack_ack_seconds` histogram (admin port): count per bound."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    buckets: dict[float, float] = {}
    for match in re.finditer(
        r'^canary_bot_slack_ack_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE
    ):
        buckets[float(match.group(1))] = float(match.group(2))
    return buckets


def within(before: dict[float, float], after: dict[float, float], bound: float) -> float:
    """Share of the requests between two scrapes that the bot answered within `bound` s."""
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    return (after[bound] - before.get(bound, 0.0)) / total if total else float("nan")


def run(args: argparse.Namespace) -> int:
    started = common.machine()
    common.header("ack: concurrent slash commands against `canary-bot serve`", started)
    rounds = {n: max(1, round(r * args.rounds_scale)) for n, r in ROUNDS.items()}
    starts_needed = sum(n * r for n, r in rounds.items()) // 2 + len(LEVELS) + 2
    services = [f"svc-{i:03d}" for i in range(starts_needed)]
    with tempfile.TemporaryDirectory(prefix="bench-ack-") as tmp:
        box = Sandbox(
            workdir=Path(tmp),
            config_text=config_text(services, prometheus_url=f"http://127.0.0.1:{free_port()}"),
        )
        box.start()
        bot: subprocess.Popen[bytes] | None = None
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            for name in services:
                box.kube.seed(
                    stable_deployment(
                        name=name, replicas=4, image=f"registry.example.com/shop/{name}:v2.3.4"
                    )
                )
            port, admin_port = free_port(), free_port()
            log = (Path(tmp) / "bot.log").open("wb")
            bot = subprocess.Popen(
                box.serve_command(port=port, admin_port=admin_port),
                env=box.process_env(),
                cwd=common.ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            common.wait_until(
                lambda: _healthy(port), timeout=30, what="canary-bot serve to answer /healthz"
            )
            figures = measure(
                box,
                bot=bot,
                port=port,
                admin_port=admin_port,
                pool=pool,
                rounds=rounds,
                services=services,
            )
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if bot is not None:
                common.stop_process(bot)
            box.stop()
    level = figures["levels"][str(LEVELS[-1])]
    targets = [common.Target(f"p99 at N = {LEVELS[-1]}", level["p99_ms"], P99_TARGET_MS, "ms")]
    common.report(
        "ack",
        started=started,
        targets=targets,
        figures=figures,
        notes=[
            "command mix per round: half `/canary status checkout` (active rollout; snapshot "
            "and chart rendered after the ack), half `/canary start svc-NNN v2.3.5` of distinct "
            "services (canary created and card posted after the ack)",
            "time measured by the client from sending the request to the complete HTTP 200",
        ],
    )
    return 0


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def measure(
    box: Sandbox,
    *,
    bot: subprocess.Popen[bytes],
    port: int,
    admin_port: int,
    pool: ProcessPoolExecutor,
    rounds: dict[int, int],
    services: list[str],
) -> dict[str, Any]:
    fresh = iter(services)
    turn = itertools.count()

    def settle() -> None:
        common.wait_quiet(
            lambda: (len(box.slack.calls), len(box.kube.writes)),
            quiet=0.5,
            timeout=60,
            what="the bot's work after the acknowledgements",
        )

    # Warm-up (not timed): the checkout rollout that `status` reports on, and one of each kind.
    warm = [("start", *signed_command(box, f"start checkout {NEW_TAG}"))]
    pool.submit(fire, port, warm).result()
    common.wait_until(
        lambda: box.slack.messages(RELEASE_CHANNEL), timeout=30, what="the checkout card"
    )
    pool.submit(fire, port, batch_for(box, 2, fresh, turn)).result()
    settle()

    levels: dict[str, Any] = {}
    rows = []
    for n in LEVELS:
        latencies: list[float] = []
        by_kind: dict[str, list[float]] = defaultdict(list)
        statuses: dict[int, int] = defaultdict(int)
        replies: dict[str, int] = defaultdict(int)
        before = server_side_buckets(admin_port)
        cpu_before = common.cpu_seconds(bot.pid)
        wall_before = time.monotonic()
        for _ in range(rounds[n]):
            for kind, status, seconds, text in pool.submit(
                fire, port, batch_for(box, n, fresh, turn)
            ).result():
                latencies.append(seconds * 1000)
                by_kind[kind].append(seconds * 1000)
                statuses[status] += 1
                replies[_reply_kind(kind, text)] += 1
            settle()
        after = server_side_buckets(admin_port)
        by_command = {
            kind: round(common.percentile(values, 99), 1) for kind, values in by_kind.items()
        }
        bot_side = within(before, after, 0.1)
        level: dict[str, Any] = {
            "n": n,
            "rounds": rounds[n],
            "requests": len(latencies),
            "p50_ms": round(common.percentile(latencies, 50), 1),
            "p95_ms": round(common.percentile(latencies, 95), 1),
            "p99_ms": round(common.percentile(latencies, 99), 1),
            "max_ms": round(max(latencies), 1),
            "by_command_p99_ms": by_command,
            "http_statuses": dict(statuses),
            "replies": dict(replies),
            "server_side_within_100ms": round(bot_side, 3),
            "bot_cpu_seconds": round(common.cpu_seconds(bot.pid) - cpu_before, 2),
            "wall_seconds": round(time.monotonic() - wall_before, 1),
        }
        levels[str(n)] = level
        rows.append(
            [
                n,
                rounds[n],
                level["requests"],
                level["p50_ms"],
                level["p95_ms"],
                level["p99_ms"],
                level["max_ms"],
                by_command.get("status", float("nan")),
                by_command.get("start", float("nan")),
                f"{100 * bot_side:.0f}%",
            ]
        )
    print()
    print(
        common.table(
            [
                "N",
                "rounds",
                "requests",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "p99 status",
                "p99 start",
                "bot-side <= 100 ms",
            ],
            rows,
        )
    )
    for n in LEVELS:
        level = levels[str(n)]
        print(f"  N={n}: HTTP {level['http_statuses']}, replies {level['replies']}")
    return {"levels": levels, "bot_peak_rss_mib": round(common.peak_rss_mib(bot.pid), 1)}


def batch_for(box: Sandbox, n: int, fresh: Iterator[str], turn: Iterator[int]) -> list[Request]:
    """N signed requests, alternating status of checkout and start of a fresh service (the
    alternation runs on across rounds, so N = 1 gets both kinds too)."""
    batch: list[Request] = []
    for _ in range(n):
        if next(turn) % 2 == 0:
            batch.append(("status", *signed_command(box, "status checkout")))
        else:
            batch.append(("start", *signed_command(box, f"start {next(fresh)} {NEW_TAG}")))
    return batch


def _reply_kind(kind: str, text: str) -> str:
    """What the acknowledgement said, to show the commands were acted on, not refused."""
    if kind == "start":
        return "start: starting" if "Starting a canary" in text else "start: refused"
    return "status: card" if "checkout" in text else "status: other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds-scale", type=float, default=1.0, help="multiply the rounds per level"
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
