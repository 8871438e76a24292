"""Acknowledgement latency: the bot next to a bare Bolt app, N = 50 concurrent `/canary status`.

Slack gives a slash command 3 s; the README promises p99 <= 100 ms at N = 50 on 2 cores, and
within 1.3x of what Bolt itself costs here. So in the same run, with the same signed requests,
the script measures two servers side by side, round by round in turn:
- the floor: a bare Bolt app with one listener that only acknowledges, on the bot's own HTTP
  server (Flask + waitress, same threads; `bench/ack_bare.py`), as a separate process;
- the bot: `canary-bot serve` as in production (waitress, Bolt, SQLite), pointed at the cluster
  and Slack emulators of a sandbox and at a real Prometheus scraping a synthetic exporter.
- for comparison (no target), the same bare app acknowledging with the bot's own status answer:
  what answering with a message at all costs a plain Bolt app.
A separate load process fires each round's N requests at once (a barrier releases N threads on
open connections), so the client's own Python never shares a GIL with the servers. The servers
take their rounds in turn, the order turned by one every round, and each round's record keeps
what the bot did meanwhile (its CPU, its chart process's CPU, its Slack calls and Kubernetes
requests), so the slowest rounds, which set the p99, can be explained.

Two phases: idle (one rollout sits at its first step: `status checkout`), and during a rollout
(`busy` moves a step every second: weight writes, step messages, snapshots with charts, card
refreshes, all in the bot's process; `status busy`). `snapshot_min_interval` keeps its default,
so about one asked-for snapshot a minute is rendered after an acknowledgement.

Run: `python bench/ack.py` (about 1 min); `--rounds 20` for more samples per phase and server.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import multiprocessing
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import common  # first: puts this clone on sys.path
import requests
import yaml
from ack_rounds import ANSWER, activity, activity_during, slowest_rounds

from canary_sandbox.sandbox import (
    ALICE,
    RELEASE_CHANNEL,
    SANDBOX_CONFIG,
    SIGNING_SECRET,
    Sandbox,
    stable_deployment,
)
from canary_sandbox.traffic_weights import canary_weight_from_cluster
from emulators.prometheus import PrometheusServer, free_port
from emulators.slack import payloads
from emulators.traffic import TrafficExporter

N = 50
P99_TARGET_MS = 100.0
FLOOR_RATIO = 1.3
NEW_TAG = "v2.3.5"
BUSY_STEPS = list(range(2, 100, 2))  # 49 steps, one a second: busy for the whole phase

Request = tuple[bytes, dict[str, str]]  # (body, headers)


def config_text(*, prometheus_url: str) -> str:
    """The sandbox's config: `checkout` sits at its first step (idle), `busy` moves a step a
    second with a rule judged on real Prometheus data (so each step has a snapshot and chart)."""
    config = yaml.safe_load(SANDBOX_CONFIG)
    config["prometheus"] = {"url": prometheus_url, "timeout": "2s"}
    config["defaults"].update(
        steps=[5, 25, 50], step_interval="1h", analysis_interval="10m", analysis_window="10s"
    )
    config["services"]["busy"] = {
        "namespace": "shop",
        "deployment": "busy",
        "container": "app",
        "strategy": "replicas",
        "environment": "staging",
        "steps": BUSY_STEPS,
        "step_interval": "1s",
        "analysis_interval": "1s",
        "approval": False,
        "on_no_data": "ignore",
        "rules": [{"metric": "error_rate", "above": 0.5, "for": "0s"}],
    }
    return yaml.safe_dump(config, sort_keys=False)


def signed_command(box: Sandbox, text: str) -> Request:
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


def fire(port: int, batch: list[Request]) -> list[tuple[int, float]]:
    """Send every request at the same moment; (status, seconds to the complete response).

    Runs in the load process. Connections are opened before the barrier, so the time measured
    is from sending the request to having the whole HTTP response, as Slack would see it.
    """
    barrier = threading.Barrier(len(batch))
    results: list[tuple[int, float]] = [(0, 0.0)] * len(batch)

    def one(index: int, request: Request) -> None:
        body, headers = request
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.connect()
        try:
            barrier.wait(timeout=10)
            started = time.perf_counter()
            connection.request("POST", "/slack/events", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            results[index] = (response.status, time.perf_counter() - started)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i, request)) for i, request in enumerate(batch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


# --------------------------------------------------------------------------- the servers


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _spawn(command: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env=env,
        cwd=common.ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def run(args: argparse.Namespace) -> int:
    started = common.machine()
    common.header("ack: bare Bolt app vs the bot, N = 50 concurrent `/canary status`", started)
    with tempfile.TemporaryDirectory(prefix="bench-ack-") as tmp:
        box = Sandbox(workdir=Path(tmp), config_text="")
        exporter = TrafficExporter(weight_of=canary_weight_from_cluster(box.kube))
        prometheus = PrometheusServer(targets=[exporter.start()], scrape_interval="1s")
        processes: list[subprocess.Popen[bytes]] = []
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            prometheus.start()
            box.config_text = config_text(prometheus_url=prometheus.url)
            box.start()
            exporter.add_service("shop", "busy", deployment="busy", rps=40.0)
            box.kube.seed(
                stable_deployment(
                    name="busy", replicas=4, image="registry.example.com/shop/busy:v1.0.0"
                )
            )
            ports = {"bot": free_port(), "bare": free_port(), ANSWER: free_port()}
            env = box.process_env()
            processes.append(
                _spawn(box.serve_command(port=ports["bot"]), env=env, log=Path(tmp) / "bot.log")
            )
            bare = [sys.executable, str(Path(__file__).with_name("ack_bare.py"))]
            processes.append(
                _spawn(
                    [*bare, str(ports["bare"]), box.slack.api_url],
                    env=env,
                    log=Path(tmp) / "bare.log",
                )
            )
            for name in ("bot", "bare"):
                port = ports[name]
                common.wait_until(
                    lambda port=port: _healthy(port), timeout=30, what=f"{name} /healthz"
                )
            # Warm-up (not timed): the checkout rollout that sits at its first step; the
            # bot's answer to `status checkout` is what the third server answers with.
            answer = Path(tmp) / "answer.json"
            answer.write_text(start_checkout(box, port=ports["bot"], pool=pool))
            processes.append(
                _spawn(
                    [*bare, str(ports[ANSWER]), box.slack.api_url, str(answer)],
                    env=env,
                    log=Path(tmp) / "answer.log",
                )
            )
            common.wait_until(
                lambda: _healthy(ports[ANSWER]), timeout=30, what=f"{ANSWER} /healthz"
            )
            pids = {name: process.pid for name, process in zip(ports, processes, strict=True)}
            figures = measure(
                box, ports=ports, bot=processes[0], pids=pids, pool=pool, rounds=args.rounds
            )
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for process in processes:
                common.stop_process(process)
            box.stop()
            prometheus.stop()
            exporter.stop()
    return report(figures, started=started)


def start_checkout(box: Sandbox, *, port: int, pool: ProcessPoolExecutor) -> str:
    """Start the rollout that sits at its first step; the bot's `status checkout` answer
    (the JSON body Slack would receive), once its card is up."""
    pool.submit(fire, port, [signed_command(box, f"start checkout {NEW_TAG}")]).result()
    common.wait_until(lambda: _thread_of(box, "checkout"), timeout=30, what="the checkout card")
    for _ in range(2):  # the second, as in the rounds: with the "no new snapshot" note
        body, headers = signed_command(box, "status checkout")
        answer = requests.post(
            f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers, timeout=10
        )
        answer.raise_for_status()
    return answer.text


def measure(
    box: Sandbox,
    *,
    ports: dict[str, int],
    bot: subprocess.Popen[bytes],
    pids: dict[str, int],
    pool: ProcessPoolExecutor,
    rounds: int,
) -> dict[str, Any]:
    def settle() -> None:
        common.wait_quiet(
            lambda: (len(box.slack.calls), len(box.kube.writes)),
            quiet=0.5,
            timeout=60,
            what="the bot's work after the acknowledgements",
        )

    # Warm-up (not timed): one round each.
    settle()
    for port in ports.values():
        pool.submit(fire, port, [signed_command(box, "status checkout") for _ in range(N)]).result()
    settle()

    phases: dict[str, Any] = {}
    phases["idle"] = _phase(
        box, ports=ports, bot=bot, pids=pids, pool=pool, rounds=rounds, text="checkout"
    )
    settle()
    # During a rollout: `busy` moves a step a second; measured once it has begun moving.
    pool.submit(fire, ports["bot"], [signed_command(box, f"start busy {NEW_TAG}")]).result()
    common.wait_until(lambda: _steps_posted(box) >= 2, timeout=60, what="busy at step 2")
    steps_before, calls_before = _steps_posted(box), len(box.slack.calls)
    phases["rollout"] = _phase(
        box, ports=ports, bot=bot, pids=pids, pool=pool, rounds=rounds, text="busy"
    )
    phases["rollout"]["steps_during"] = _steps_posted(box) - steps_before
    phases["rollout"]["slack_calls_during"] = len(box.slack.calls) - calls_before
    return {"n": N, "rounds": rounds, "phases": phases}


def _phase(
    box: Sandbox,
    *,
    ports: dict[str, int],
    bot: subprocess.Popen[bytes],
    pids: dict[str, int],
    pool: ProcessPoolExecutor,
    rounds: int,
    text: str,
) -> dict[str, Any]:
    """`rounds` rounds of N requests per server, in turn, the order turned by one every round
    (bot, bare, answer; bare, answer, bot; ...): the round after a bot round meets whatever
    the bot left for after its answers, so no server always follows the bot; a short pause
    between rounds lets the bot's after-ack work run."""
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    statuses: dict[str, dict[int, int]] = {name: {} for name in ports}
    # Each server's CPU while its rounds are answered (not in the pauses): per request, what
    # the 50 requests of a round queue behind on the server's one GIL.
    round_cpu: dict[str, float] = {name: 0.0 for name in ports}
    # The slowest request of each round: one slow round of 50 sets the p99 of 1,000 alone.
    round_max: dict[str, list[float]] = {name: [] for name in ports}
    # Per round, what else the bot did meanwhile (ack_rounds.py): what sets the slow rounds.
    records: list[dict[str, Any]] = []
    cpu_before, wall_before = common.cpu_seconds(bot.pid), time.monotonic()
    for index in range(rounds):
        servers = list(ports.items())
        shift = index % len(servers)
        for name, port in servers[shift:] + servers[:shift]:
            batch = [signed_command(box, f"status {text}") for _ in range(N)]
            before = activity(box, pids)
            answers = pool.submit(fire, port, batch).result()
            after = activity(box, pids)
            record = activity_during(box, pids, before, after, server=name)
            for status, seconds in answers:
                latencies[name].append(seconds * 1000)
                statuses[name][status] = statuses[name].get(status, 0) + 1
            round_max[name].append(round(max(s for _, s in answers) * 1000, 1))
            round_cpu[name] += after["cpu"][name] - before["cpu"][name]
            records.append({"round": index, "max_ms": round_max[name][-1], **record})
            time.sleep(0.3)
    figures: dict[str, Any] = {"command": f"/canary status {text}"}
    for name, values in latencies.items():
        figures[name] = {
            "requests": len(values),
            "p50_ms": round(common.percentile(values, 50), 1),
            "p99_ms": round(common.percentile(values, 99), 1),
            "max_ms": round(max(values), 1),
            "http_statuses": statuses[name],
            "cpu_ms_per_request": round(round_cpu[name] * 1000 / len(values), 2),
            "round_max_ms": round_max[name],
        }
    figures["ratio_p99"] = round(figures["bot"]["p99_ms"] / figures["bare"]["p99_ms"], 2)
    figures["ratio_p99_same_answer"] = round(
        figures["bot"]["p99_ms"] / figures[ANSWER]["p99_ms"], 2
    )
    figures["bot_cpu_seconds"] = round(common.cpu_seconds(bot.pid) - cpu_before, 2)
    figures["wall_seconds"] = round(time.monotonic() - wall_before, 1)
    figures["rounds"] = records
    return figures


def _thread_of(box: Sandbox, service: str) -> bool:
    return any(service in m.text for m in box.slack.messages(RELEASE_CHANNEL))


def _steps_posted(box: Sandbox) -> int:
    """Step messages the bot has posted in the busy rollout's thread so far."""
    for root in box.slack.messages(RELEASE_CHANNEL):
        if "busy" in root.text:
            return sum("Step" in m.text for m in box.slack.thread(RELEASE_CHANNEL, root.ts))
    return 0


def report(figures: dict[str, Any], *, started: dict[str, Any]) -> int:
    rows, targets = [], []
    for phase, data in figures["phases"].items():
        for name in ("bare", ANSWER, "bot"):
            side = data[name]
            rows.append(
                [
                    phase,
                    name,
                    side["requests"],
                    side["p50_ms"],
                    side["p99_ms"],
                    side["max_ms"],
                    side["cpu_ms_per_request"],
                ]
            )
        rows.append([phase, "bot / bare (p99)", "", "", data["ratio_p99"], "", ""])
        rows.append([phase, f"bot / {ANSWER} (p99)", "", "", data["ratio_p99_same_answer"], "", ""])
        targets.append(
            common.Target(f"bot p99 {phase}", data["bot"]["p99_ms"], P99_TARGET_MS, "ms")
        )
        targets.append(common.Target(f"bot/bare p99 {phase}", data["ratio_p99"], FLOOR_RATIO, "x"))
    print()
    headings = ["phase", "server", "requests", "p50 ms", "p99 ms", "max ms", "CPU ms/request"]
    print(common.table(headings, rows))
    for phase, data in figures["phases"].items():
        print(f"  {phase}: the slowest rounds and what the bot did meanwhile")
        for line in slowest_rounds(data["rounds"]):
            print(f"    {line}")
    busy = figures["phases"]["rollout"]
    print(
        f"  during the rollout phase: {busy['steps_during']} steps reached, "
        f"{busy['slack_calls_during']} Slack calls made by the bot"
    )
    common.report(
        "ack",
        started=started,
        targets=targets,
        figures=figures,
        notes=[
            f"N = {N} concurrent signed `/canary status <service>` per round, rounds in turn "
            "to the bare Bolt app (one listener that only acks, same Flask + waitress server) "
            "and to `canary-bot serve`",
            f"{ANSWER}: the same bare Bolt app acknowledging with the bot's own status answer "
            "(ack(**answer): Bolt builds and serialises it per request, as a plain Bolt app "
            "would); shown for comparison, no target",
            "time measured by the client from sending the request to the complete HTTP 200",
        ],
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds per phase and server")
    return run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
