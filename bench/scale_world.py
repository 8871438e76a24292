"""The processes `bench/scale.py` keeps apart from the bot it measures.

What the bot talks to runs in helper processes so that its CPU, memory and GIL are not the
bot's: one holds the cluster emulator (with the stable Deployments) and the Slack emulator, the
other the synthetic traffic exporter. Each reports its addresses on a pipe, then waits for
"stop"; the cluster helper also answers "counts" (Slack calls by method; the requests the
cluster emulator received, reads (GET) and writes apart).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from canary_sandbox.sandbox import BOB, BOT_TOKEN, CAROL, SRE_GROUP, stable_deployment
from emulators.kube import KubeEmulator
from emulators.slack import SlackEmulator
from emulators.traffic import TrafficExporter

NAMESPACE = "shop"
CANARY_WEIGHT = 25.0  # step 1 (10 %) of 4 replicas: 1 canary pod of 4
SPAWN = multiprocessing.get_context("spawn")


def world(conn: Connection, workdir: str, services: list[str]) -> None:
    """The cluster and Slack emulators, until told to stop; answers "counts" on the pipe."""
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
                requests = kube.requests()
                reads = sum(n for (method, _), n in requests.items() if method == "GET")
                conn.send(
                    {
                        "slack": dict(calls),
                        "kube_reads": reads,
                        "kube_writes": sum(requests.values()) - reads,
                    }
                )
    finally:
        slack.stop()
        kube.stop()
        conn.send("stopped")


def traffic(conn: Connection, services: list[str]) -> None:
    """The synthetic exporter, canary at its step-1 share for every service, until told to stop.

    It runs apart from the cluster emulator because rendering the series of 1,000 services
    takes about a second of CPU per scrape, which in the emulator's process would slow its
    answers to the bot. So
    the canary's share is the one every rollout here holds (step 1: 1 of 4 pods), not read
    from the cluster.
    """
    # Only the series the `replicas` strategy reads (app metrics and cAdvisor): the Istio
    # and NGINX ones would only load the exporter and Prometheus on the same 2 cores.
    exporter = TrafficExporter(
        weight_of=lambda namespace, service: CANARY_WEIGHT, flavours=("generic", "cadvisor")
    )
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
